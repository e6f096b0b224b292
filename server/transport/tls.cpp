#include "transport/tls.hpp"

#include "log/log.hpp"

#include <mbedtls/net_sockets.h>
#include <mbedtls/oid.h>
#include <mbedtls/x509.h>

#include <cerrno>
#include <cstring>
#include <sys/socket.h>
#include <unistd.h>

namespace trellis {
namespace {

constexpr unsigned char kTlsHandshakeRecord = 0x16;
// Plaintext per record; also the bound on what send_file reads ahead of the socket.
constexpr size_t kRecordBytes = 16384;

// One recv's worth of socket input, shared by the worker's connections: it holds bytes only while
// one connection is inside mbedTLS, and TlsTransport::keep_read_ahead empties it on the way out.
struct ReadAhead {
    unsigned char bytes[kRecordBytes];
    size_t begin = 0, end = 0;
};
thread_local ReadAhead read_ahead;

std::string describe_verify_flags(uint32_t flags) {
    if (flags == 0)
        return "ok";
    char text[512];
    int n = mbedtls_x509_crt_verify_info(text, sizeof text, "", flags);
    std::string out;
    for (int i = 0; i < n; ++i)
        out += text[i] == '\n' ? (i + 1 < n ? ", " : "") : std::string(1, text[i]);
    return out;
}

} // namespace

TlsTransport *TlsTransport::create(Poller &poller, int fd, std::shared_ptr<const WorkerTls> tls,
                                   bool allow_plain) {
    auto *transport = new TlsTransport(poller, fd, std::move(tls), allow_plain);
    if (!transport->attach()) {
        delete transport;
        return nullptr;
    }
    return transport;
}

TlsTransport::TlsTransport(Poller &poller, int fd, std::shared_ptr<const WorkerTls> tls, bool allow_plain)
    : PlainTransport(poller, fd), tls_(std::move(tls)),
      mode_(allow_plain ? Mode::Sniffing : Mode::Handshake) {}

TlsTransport::~TlsTransport() {
    if (ssl_)
        mbedtls_ssl_free(ssl_.get());
}

bool TlsTransport::start_tls() {
    ssl_ = std::make_unique<mbedtls_ssl_context>();
    mbedtls_ssl_init(ssl_.get());
    int rc = mbedtls_ssl_setup(ssl_.get(), tls_->ssl_config());
    if (rc != 0) {
        fail("setup", rc);
        return false;
    }
    // The BIO context is this object as a TlsHandshakeObserver: the SNI callback relies on it.
    mbedtls_ssl_set_bio(ssl_.get(), static_cast<TlsHandshakeObserver *>(this), bio_send, bio_recv, nullptr);
    mode_ = Mode::Handshake;
    return true;
}

int TlsTransport::bio_send(void *ctx, const unsigned char *data, size_t length) {
    auto *self = static_cast<TlsTransport *>(static_cast<TlsHandshakeObserver *>(ctx));
    for (;;) {
        ssize_t n = send(self->fd_, data, length, MSG_NOSIGNAL);
        if (n >= 0)
            return static_cast<int>(n);
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return MBEDTLS_ERR_SSL_WANT_WRITE;
        return MBEDTLS_ERR_NET_SEND_FAILED;
    }
}

int TlsTransport::bio_recv(void *ctx, unsigned char *data, size_t length) {
    auto *self = static_cast<TlsTransport *>(static_cast<TlsHandshakeObserver *>(ctx));
    // What is in hand first: the connection's stash, then the shared buffer (which, while this
    // connection is inside mbedTLS, can only hold its bytes). Only when both are empty the socket.
    if (Stash *stash = self->stash_.get()) {
        size_t n = std::min(length, stash->end - stash->begin);
        memcpy(data, stash->bytes.get() + stash->begin, n);
        stash->begin += n;
        if (stash->begin == stash->end)
            self->stash_.reset();
        return static_cast<int>(n);
    }
    ReadAhead &ahead = read_ahead;
    if (ahead.begin == ahead.end) {
        if (length >= sizeof ahead.bytes)
            return self->recv_socket(data, length);
        int n = self->recv_socket(ahead.bytes, sizeof ahead.bytes);
        if (n <= 0)
            return n;
        ahead.begin = 0;
        ahead.end = static_cast<size_t>(n);
    }
    size_t n = std::min(length, ahead.end - ahead.begin);
    memcpy(data, ahead.bytes + ahead.begin, n);
    ahead.begin += n;
    return static_cast<int>(n);
}

void TlsTransport::keep_read_ahead() {
    ReadAhead &ahead = read_ahead;
    if (ahead.begin == ahead.end)
        return;
    // Rare: more than mbedTLS wanted came in (pipelined records, a handshake flight). The stash is
    // empty here: bio_recv reads the socket only once it is used up.
    size_t n = ahead.end - ahead.begin;
    stash_ = std::make_unique<Stash>();
    stash_->bytes = std::make_unique<unsigned char[]>(n);
    memcpy(stash_->bytes.get(), ahead.bytes + ahead.begin, n);
    stash_->end = n;
    ahead.begin = ahead.end = 0;
}

bool TlsTransport::input_waiting() const {
    return stash_ || (ssl_ && mbedtls_ssl_get_bytes_avail(ssl_.get()) > 0);
}

bool TlsTransport::has_unread_input() const {
    return (mode_ != Mode::Plain && input_waiting()) || PlainTransport::has_unread_input();
}

int TlsTransport::recv_socket(unsigned char *data, size_t length) {
    for (;;) {
        ssize_t n = recv(fd_, data, length, 0);
        if (n >= 0)
            return static_cast<int>(n); // 0: EOF, which mbedTLS reports as a closed connection
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return MBEDTLS_ERR_SSL_WANT_READ;
        return MBEDTLS_ERR_NET_RECV_FAILED;
    }
}

void TlsTransport::fail(const char *what, int code) {
    // Bad handshakes are the client's business (scanners, wrong port, old clients): debug level.
    SERVER_LOG_DEBUG("tls %s failed: %s", what, tls_error_text(code).c_str());
    if (events_)
        events_->on_read_end(-EPROTO);
}

void TlsTransport::on_poll(int status, int events) {
    if (mode_ == Mode::Plain || status < 0) {
        PlainTransport::on_poll(status, events);
        return;
    }
    if (mode_ == Mode::Sniffing) {
        if (!(events & (UV_READABLE | UV_DISCONNECT)))
            return;
        unsigned char first;
        ssize_t n;
        do {
            n = recv(fd_, &first, 1, MSG_PEEK);
        } while (n < 0 && errno == EINTR);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
            if (events_)
                events_->on_read_end(n == 0 ? 0 : -errno);
            return;
        }
        if (n < 0)
            return;
        if (first != kTlsHandshakeRecord) {
            mode_ = Mode::Plain;
            PlainTransport::on_poll(status, events);
            return;
        }
        if (!start_tls())
            return;
    }
    if (mode_ == Mode::Handshake) {
        if (!ssl_ && !start_tls())
            return;
        continue_handshake();
        return;
    }
    // Mode::Tls
    if ((events & UV_WRITABLE) && writing_ && events_)
        events_->on_writable();
    if (closed_ || !events_)
        return;
    if (reading_ && ((events & (UV_READABLE | UV_DISCONNECT)) || spin_))
        read_tls();
}

// "optional" client auth (issue #10): mbedTLS's VERIFY_OPTIONAL completes the handshake whatever the
// certificate, so a certificate the client presented and that failed verification is refused here,
// as "required" would: the same fatal alert, sent before the server's Finished. No certificate at
// all (BADCERT_MISSING) is served. Returns the alert, or 0 to go on.
unsigned char TlsTransport::refused_client_certificate() const {
    if (tls_->context().config().client_auth != ClientAuth::Optional)
        return 0;
    uint32_t flags = mbedtls_ssl_get_verify_result(ssl_.get());
    if (flags == 0 || flags == MBEDTLS_X509_BADCERT_MISSING)
        return 0;
    // The alert mbedTLS itself sends for the same flags under "required"; the first match wins.
    static const struct {
        uint32_t flags;
        unsigned char alert;
    } kAlerts[] = {
        {MBEDTLS_X509_BADCERT_OTHER, MBEDTLS_SSL_ALERT_MSG_ACCESS_DENIED},
        {MBEDTLS_X509_BADCERT_CN_MISMATCH, MBEDTLS_SSL_ALERT_MSG_BAD_CERT},
        {MBEDTLS_X509_BADCERT_KEY_USAGE | MBEDTLS_X509_BADCERT_EXT_KEY_USAGE |
             MBEDTLS_X509_BADCERT_NS_CERT_TYPE | MBEDTLS_X509_BADCERT_BAD_PK | MBEDTLS_X509_BADCERT_BAD_KEY,
         MBEDTLS_SSL_ALERT_MSG_UNSUPPORTED_CERT},
        {MBEDTLS_X509_BADCERT_EXPIRED, MBEDTLS_SSL_ALERT_MSG_CERT_EXPIRED},
        {MBEDTLS_X509_BADCERT_REVOKED, MBEDTLS_SSL_ALERT_MSG_CERT_REVOKED},
        {MBEDTLS_X509_BADCERT_NOT_TRUSTED, MBEDTLS_SSL_ALERT_MSG_UNKNOWN_CA},
    };
    for (const auto &entry : kAlerts)
        if (flags & entry.flags)
            return entry.alert;
    return MBEDTLS_SSL_ALERT_MSG_CERT_UNKNOWN;
}

void TlsTransport::continue_handshake() {
    // mbedtls_ssl_handshake() is this loop; stepping it here lets the client's certificate be
    // judged right after it is parsed (the step that leaves the state at CLIENT_KEY_EXCHANGE).
    int rc = 0;
    while (rc == 0 && ssl_->state != MBEDTLS_SSL_HANDSHAKE_OVER) {
        rc = mbedtls_ssl_handshake_step(ssl_.get());
        keep_read_ahead();
        if (rc != 0 || ssl_->state != MBEDTLS_SSL_CLIENT_KEY_EXCHANGE)
            continue;
        if (unsigned char alert = refused_client_certificate()) {
            mbedtls_ssl_send_alert_message(ssl_.get(), MBEDTLS_SSL_ALERT_LEVEL_FATAL, alert);
            fail("handshake", MBEDTLS_ERR_X509_CERT_VERIFY_FAILED);
            return;
        }
    }
    if (rc == MBEDTLS_ERR_SSL_WANT_READ || rc == MBEDTLS_ERR_SSL_WANT_WRITE) {
        bool wants_write = rc == MBEDTLS_ERR_SSL_WANT_WRITE;
        if (wants_write != handshake_wants_write_) {
            handshake_wants_write_ = wants_write;
            set_spin(wants_write); // a write-blocked handshake resumes on writability
        }
        return;
    }
    if (rc != 0) {
        fail("handshake", rc);
        return;
    }
    mode_ = Mode::Tls;
    handshake_wants_write_ = false;
    set_spin(false);
    // The request may have come in the same flight as the Finished message.
    read_tls();
}

void TlsTransport::read_tls() {
    std::span<char> buffer = events_->on_read_buffer();
    if (closed_ || !events_)
        return;
    if (buffer.empty()) {
        PlainTransport::set_reading(false);
        set_spin(false);
        return;
    }
    int rc = mbedtls_ssl_read(ssl_.get(), reinterpret_cast<unsigned char *>(buffer.data()), buffer.size());
    keep_read_ahead();
    if (rc > 0) {
        // mbedTLS may hold more decrypted bytes than fitted, or the stash more records: the socket
        // will not say so.
        set_spin(input_waiting());
        events_->on_read(static_cast<size_t>(rc));
        return;
    }
    set_spin(false);
    if (rc == 0 || rc == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY) {
        events_->on_read_end(0);
    } else if (rc == MBEDTLS_ERR_SSL_WANT_READ || rc == MBEDTLS_ERR_SSL_WANT_WRITE) {
        events_->on_read(0);
    } else if (rc == MBEDTLS_ERR_NET_RECV_FAILED) {
        events_->on_read_end(-ECONNRESET);
    } else {
        fail("read", rc); // a renegotiation attempt (refused) lands here too
    }
}

void TlsTransport::set_reading(bool on) {
    PlainTransport::set_reading(on);
    if (mode_ == Mode::Tls)
        set_spin(on && input_waiting());
}

ssize_t TlsTransport::write_record(const unsigned char *data, size_t length) {
    // After WANT_WRITE the record holding these bytes is already encrypted and partly sent;
    // mbedTLS then only flushes it and reports its length, so call again with that length.
    size_t offer = pending_record_ ? pending_record_ : std::min(length, kRecordBytes);
    int rc = mbedtls_ssl_write(ssl_.get(), data, offer);
    if (rc > 0) {
        pending_record_ = 0;
        return rc;
    }
    if (rc == MBEDTLS_ERR_SSL_WANT_WRITE || rc == MBEDTLS_ERR_SSL_WANT_READ) {
        pending_record_ = offer;
        return -EAGAIN;
    }
    SERVER_LOG_DEBUG("tls write failed: %s", tls_error_text(rc).c_str());
    return -EPIPE;
}

ssize_t TlsTransport::write(const struct iovec *iov, int count) {
    if (mode_ == Mode::Plain)
        return PlainTransport::write(iov, count);
    if (mode_ != Mode::Tls)
        return -EAGAIN;
    size_t total = 0;
    for (int i = 0; i < count; ++i) {
        const auto *base = static_cast<const unsigned char *>(iov[i].iov_base);
        size_t done = 0;
        while (done < iov[i].iov_len) {
            ssize_t n = write_record(base + done, iov[i].iov_len - done);
            if (n < 0)
                return total > 0 ? static_cast<ssize_t>(total) : n;
            done += static_cast<size_t>(n);
            total += static_cast<size_t>(n);
        }
    }
    return static_cast<ssize_t>(total);
}

ssize_t TlsTransport::send_file(int fd, int64_t offset, size_t length) {
    if (mode_ == Mode::Plain)
        return PlainTransport::send_file(fd, offset, length);
    if (mode_ != Mode::Tls)
        return -EAGAIN;
    // One record at a time: at most 16 KiB of the file is in memory, and only while the socket
    // takes it (no sendfile through TLS).
    static thread_local unsigned char chunk[kRecordBytes];
    if (pending_record_)
        return write_record(chunk, pending_record_);
    ssize_t n;
    do {
        n = pread(fd, chunk, std::min(length, kRecordBytes), static_cast<off_t>(offset));
    } while (n < 0 && errno == EINTR);
    if (n <= 0)
        return n < 0 ? -errno : 0;
    return write_record(chunk, static_cast<size_t>(n));
}

void TlsTransport::shutdown_write() {
    if (mode_ == Mode::Tls)
        mbedtls_ssl_close_notify(ssl_.get()); // best effort: a full socket just loses the alert
    PlainTransport::shutdown_write();
}

void TlsTransport::on_server_name(std::string_view name, size_t certificate_index) {
    if (!facts_)
        facts_ = std::make_shared<TlsFacts>();
    facts_->server_name.assign(name);
    certificate_index_ = certificate_index;
}

bool TlsTransport::covers_host(std::string_view host) const {
    if (mode_ != Mode::Tls || !facts_ || facts_->server_name.empty() || host.empty())
        return true;
    if (host.size() == facts_->server_name.size()) {
        bool same = true;
        for (size_t i = 0; i < host.size() && same; ++i)
            same = (host[i] | 0x20) == (facts_->server_name[i] | 0x20);
        if (same)
            return true;
    }
    // Another name is fine as long as SNI would have picked this connection's certificate for it
    // too: 421 is for a host that another certificate (or its client-auth rules) serves.
    return tls_->context().pick(host) == certificate_index_;
}

const TlsFacts *TlsTransport::tls_facts() {
    if (mode_ != Mode::Tls)
        return nullptr;
    if (!facts_)
        facts_ = std::make_shared<TlsFacts>();
    if (!facts_->version.empty())
        return facts_.get();
    mbedtls_ssl_context *ssl = ssl_.get();
    facts_->version = mbedtls_ssl_get_version(ssl);
    facts_->cipher = mbedtls_ssl_get_ciphersuite(ssl);
    const char *alpn = mbedtls_ssl_get_alpn_protocol(ssl);
    facts_->alpn = alpn ? alpn : "";
    const mbedtls_x509_crt *peer = mbedtls_ssl_get_peer_cert(ssl);
    facts_->client_certificate = peer != nullptr;
    if (!peer) {
        facts_->client_verify = "none";
        return facts_.get();
    }
    char text[1024];
    if (mbedtls_x509_dn_gets(text, sizeof text, &peer->subject) > 0)
        facts_->client_subject = text;
    for (const mbedtls_x509_sequence *san = &peer->subject_alt_names; san && san->buf.p; san = san->next) {
        mbedtls_x509_subject_alternative_name name;
        if (mbedtls_x509_parse_subject_alt_name(&san->buf, &name) != 0 ||
            name.type != MBEDTLS_X509_SAN_DNS_NAME)
            continue;
        if (!facts_->client_san.empty())
            facts_->client_san += ", ";
        facts_->client_san += "DNS:";
        facts_->client_san.append(reinterpret_cast<const char *>(name.san.unstructured_name.p),
                                  name.san.unstructured_name.len);
    }
    facts_->client_fingerprint = certificate_fingerprint(*peer);
    facts_->client_verify = describe_verify_flags(mbedtls_ssl_get_verify_result(ssl));
    return facts_.get();
}

} // namespace trellis
