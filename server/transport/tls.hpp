// TLS over a non-blocking socket with mbedTLS. The BIO callbacks call recv/send on the socket
// directly and turn EAGAIN into WANT_READ/WANT_WRITE. mbedTLS asks for a record's 5-byte header and
// then for its body: one recv of up to 16 KiB into a buffer the worker's connections share answers
// both (what is left when mbedTLS returns moves to the connection's own stash, which exists only
// while it holds bytes). On an "auto" listener the first byte decides (peeked, not consumed): 0x16 starts a
// TLS handshake, anything else makes this a plain transport for the rest of the connection.
#pragma once

#include "transport/plain.hpp"
#include "transport/tls_context.hpp"

#include <mbedtls/ssl.h>

#include <memory>

namespace trellis {

class TlsTransport final : public PlainTransport, public TlsHandshakeObserver {
  public:
    // Takes ownership of `fd`. With `allow_plain` (an "auto" listener), plain HTTP is served too.
    // `tls` is kept alive by the connection: a certificate reload must not pull the ssl_config
    // from under a handshake in progress.
    static TlsTransport *create(Poller &poller, int fd, std::shared_ptr<const WorkerTls> tls,
                                bool allow_plain);

    void set_reading(bool on) override;
    ssize_t write(const struct iovec *iov, int count) override;
    ssize_t send_file(int fd, int64_t offset, size_t length) override;
    void shutdown_write() override;
    const char *name() const override { return mode_ == Mode::Plain ? "plain" : "tls"; }
    const TlsFacts *tls_facts() override;
    std::shared_ptr<const TlsFacts> shared_tls_facts() override {
        return tls_facts() ? std::shared_ptr<const TlsFacts>(facts_) : nullptr;
    }
    bool handshaking() const override { return mode_ == Mode::Sniffing || mode_ == Mode::Handshake; }
    bool covers_host(std::string_view host) const override;
    bool has_unread_input() const override;

    void on_server_name(std::string_view name, size_t certificate_index) override;

  private:
    enum class Mode { Sniffing, Handshake, Tls, Plain };
    TlsTransport(Poller &poller, int fd, std::shared_ptr<const WorkerTls> tls, bool allow_plain);
    ~TlsTransport() override;
    void on_poll(int status, int events) override;
    bool start_tls();
    void continue_handshake();
    unsigned char refused_client_certificate() const;
    void read_tls();
    void fail(const char *what, int code);
    ssize_t write_record(const unsigned char *data, size_t length);
    static int bio_send(void *self, const unsigned char *data, size_t length);
    static int bio_recv(void *self, unsigned char *data, size_t length);
    int recv_socket(unsigned char *data, size_t length);
    void keep_read_ahead();
    bool input_waiting() const; // decrypted or read-ahead bytes the socket will not signal again

    struct Stash {
        std::unique_ptr<unsigned char[]> bytes;
        size_t begin = 0, end = 0;
    };

    std::shared_ptr<const WorkerTls> tls_;
    Mode mode_;
    bool handshake_wants_write_ = false;
    size_t pending_record_ = 0; // plaintext bytes in a record mbedTLS is still sending
    size_t certificate_index_ = 0;
    std::unique_ptr<mbedtls_ssl_context> ssl_;
    std::unique_ptr<Stash> stash_;    // read-ahead bytes past what mbedTLS took, until it takes them
    std::shared_ptr<TlsFacts> facts_; // shared: a request held by a plugin keeps it past the connection
};

} // namespace trellis
