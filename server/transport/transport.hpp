// The byte stream between the peer and the HTTP session. The session never touches a socket or a
// libuv stream: it asks the transport to read into memory it provides and to write without
// blocking, so TLS can be slid in underneath without the session (or any plugin) knowing.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <sys/types.h>
#include <sys/uio.h>

namespace trellis {

// What a TLS transport knows about its peer, as plain text (never mbedTLS types). Empty strings
// where a fact does not apply.
struct TlsFacts {
    std::string version;     // "TLSv1.2"
    std::string cipher;      // "TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256"
    std::string server_name; // SNI, as sent
    std::string alpn;        // "http/1.1"
    bool client_certificate = false;
    std::string client_subject;     // "CN=alice, O=Example"
    std::string client_san;         // "DNS:a.example, DNS:b.example"
    std::string client_fingerprint; // SHA-256 of the DER, "AB:CD:..."
    std::string client_verify;      // "none", "ok", or the failures ("not trusted, expired")
};

// Implemented by the session that sits on a transport. Called on the worker thread.
class TransportEvents {
  public:
    // Where the next incoming bytes may go. An empty span means "no room now": the transport stops
    // asking until set_reading(true) is called again.
    virtual std::span<char> on_read_buffer() = 0;
    // `n` bytes were written into the span last returned by on_read_buffer(); n is 0 when the
    // transport asked for a buffer and then found nothing to read.
    virtual void on_read(size_t n) = 0;
    // The peer finished sending (status 0) or the stream failed (negative errno).
    virtual void on_read_end(int status) = 0;
    // After want_writable(true): write() will take bytes again.
    virtual void on_writable() = 0;

  protected:
    ~TransportEvents() = default;
};

class Transport {
  public:
    virtual ~Transport() = default;

    // Starts delivering events; called once.
    virtual void start(TransportEvents *events) = 0;
    // From now on events go to `events` (the protocol changed: HTTP/1.1 found HTTP/2's preface).
    virtual void hand_over(TransportEvents *events) = 0;
    virtual void set_reading(bool on) = 0;
    virtual void want_writable(bool on) = 0;
    // Non-blocking writes. Each returns how many bytes were taken (possibly fewer than offered),
    // -EAGAIN when nothing can be taken now (ask want_writable), or another negative errno when
    // the stream is broken.
    virtual ssize_t write(const struct iovec *iov, int count) = 0;
    virtual ssize_t send_file(int fd, int64_t offset, size_t length) = 0;
    // Sends the end of stream after everything written so far (FIN on TCP).
    virtual void shutdown_write() = 0;
    // Stops all events at once and frees the transport once libuv has let go of it. The caller
    // must not touch the transport afterwards.
    virtual void close() = 0;

    virtual const char *name() const = 0;

    // True when the peer has sent bytes not read yet (shutdown must not drop such a connection
    // as idle: a request is on its way).
    virtual bool has_unread_input() const { return false; }

    // TLS facts once the handshake is done; null on a plain connection.
    virtual const TlsFacts *tls_facts() { return nullptr; }
    // The same, as a reference that outlives the transport (for a request a plugin holds).
    virtual std::shared_ptr<const TlsFacts> shared_tls_facts() { return nullptr; }
    // True while no request can arrive yet (TLS handshake, or waiting for the first byte on an
    // "auto" listener): the connection applies the header deadline to it.
    virtual bool handshaking() const { return false; }
    // False when the TLS connection was set up (by SNI) for a certificate that does not cover
    // `host`, so the request belongs on another connection (421).
    virtual bool covers_host(std::string_view /*host*/) const { return true; }
};

} // namespace trellis
