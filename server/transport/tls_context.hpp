// TLS settings turned into mbedTLS objects. A TlsContext is loaded once per listener on the main
// thread and then only read: certificate chains, the client CA and its TlsSessionStore (the session
// cache and the ticket keys, which mbedTLS locks itself). Everything mbedTLS writes during a
// handshake is per worker (WorkerTls): the ssl_config, the DRBG and the private keys, whose ECP
// contexts cache precomputed tables on first use and so cannot be shared between threads.
#pragma once

#include "config/config.hpp"
#include "transport/ticket_keys.hpp"

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/pk.h>
#include <mbedtls/ssl.h>
#include <mbedtls/ssl_cache.h>
#include <mbedtls/ssl_ticket.h>
#include <mbedtls/x509_crt.h>

#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace trellis {

struct TlsCertificate {
    TlsCertificate();
    ~TlsCertificate();
    TlsCertificate(const TlsCertificate &) = delete;
    TlsCertificate &operator=(const TlsCertificate &) = delete;

    std::string cert_file;
    std::string key_file;
    std::string key_pem; // parsed again by each worker
    mbedtls_x509_crt chain;
    // Lower-case DNS names from the SANs (the CN when there are none); "*.example.com" wildcards.
    std::vector<std::string> names;

    bool covers(std::string_view host) const;
};

// What lets a client skip the full handshake: the session-id cache, the session-ticket keys and the
// DRBG that makes them. A certificate reload that changes nothing a session vouches for hands the
// store on to the new TlsContext (issue #10), so cached sessions, tickets and the keys' rotation
// schedule (mbedTLS rotates them itself every session_timeout_s) carry over.
class TlsSessionStore {
  public:
    // `identity`: a digest of the certificates, keys, client CA and session settings a session from
    // this store was made under; throws StartupError. The ticket keys come from
    // tls.ticket_key_file when it is set, else they are drawn here (and rotated by mbedTLS).
    static std::shared_ptr<TlsSessionStore> create(const TlsConfig &config, std::string identity);
    // A reload kept this store: tls.ticket_key_file is read again, and a new key rotates in (the
    // previous one still decrypts). True when the key changed; throws StartupError on a bad file.
    bool reload_ticket_key(const TlsConfig &config);
    ~TlsSessionStore();
    TlsSessionStore(const TlsSessionStore &) = delete;
    TlsSessionStore &operator=(const TlsSessionStore &) = delete;

    const std::string &identity() const { return identity_; }
    // Points a worker's ssl_config at the cache and the ticket callbacks, as the settings ask.
    void attach(mbedtls_ssl_config &config);

  private:
    TlsSessionStore(const TlsConfig &config, std::string identity);
    std::string identity_;
    bool cache_on_;
    bool tickets_on_;
    mbedtls_ssl_cache_context cache_;
    mbedtls_ssl_ticket_context ticket_;
    mbedtls_ctr_drbg_context ticket_drbg_;      // used by the ticket context under its own mutex
    std::unique_ptr<FileTicketKeys> file_keys_; // tls.ticket_key_file, in place of ticket_
};

class TlsContext {
  public:
    // Loads (or, with self_signed_if_missing, first creates) every certificate; throws
    // StartupError naming the file and the problem.
    // `check_only` (trellis --check): a missing pair that would be generated is fine, and
    // nothing is written.
    // `previous` (a reload): its session store is adopted when the certificates, keys and client CA
    // are byte for byte the same; otherwise resumed sessions would skip the new certificates.
    static std::shared_ptr<TlsContext> load(const TlsConfig &config, bool check_only = false,
                                            const TlsContext *previous = nullptr);
    ~TlsContext();
    TlsContext(const TlsContext &) = delete;
    TlsContext &operator=(const TlsContext &) = delete;

    const TlsConfig &config() const { return config_; }
    const std::vector<std::unique_ptr<TlsCertificate>> &certificates() const { return certificates_; }
    // The certificate for an SNI name: exact SAN match first, then wildcard, else the first.
    size_t pick(std::string_view server_name) const;
    // True when both resume the same sessions (a reload kept them).
    bool shares_sessions_with(const TlsContext &other) const { return sessions_ == other.sessions_; }
    bool reload_ticket_key() { return sessions_->reload_ticket_key(config_); }

  private:
    TlsContext(const TlsConfig &config);
    friend class WorkerTls;
    TlsConfig config_;
    std::vector<std::unique_ptr<TlsCertificate>> certificates_;
    mbedtls_x509_crt client_ca_;
    std::shared_ptr<TlsSessionStore> sessions_;
};

// Told by the SNI callback which name the client asked for and which certificate was chosen. The
// BIO context of every ssl_context on a WorkerTls config must point to one of these.
class TlsHandshakeObserver {
  public:
    virtual void on_server_name(std::string_view name, size_t certificate_index) = 0;

  protected:
    ~TlsHandshakeObserver() = default;
};

// Per worker: the ssl_config handshakes on that worker use.
class WorkerTls {
  public:
    WorkerTls(std::shared_ptr<const TlsContext> context, unsigned worker_index);
    ~WorkerTls();
    WorkerTls(const WorkerTls &) = delete;
    WorkerTls &operator=(const WorkerTls &) = delete;

    const mbedtls_ssl_config *ssl_config() const { return &config_; }
    const TlsContext &context() const { return *context_; }

  private:
    static int on_sni(void *self, mbedtls_ssl_context *ssl, const unsigned char *name, size_t length);
    // The certificates offered together with certificates_[index]: every one for the same names,
    // ECDSA first. mbedTLS then picks per cipher suite, so a client that takes ECDSA gets the
    // ECDSA certificate (a full handshake with P-256 costs mbedTLS 2.28 about 0.7 of one with
    // RSA-2048) and a client that only takes RSA gets the RSA one.
    void sort_key_pairs();
    std::shared_ptr<const TlsContext> context_;
    std::vector<std::vector<size_t>> key_pairs_; // per certificate index
    mbedtls_ctr_drbg_context drbg_;
    mbedtls_ssl_config config_;
    std::vector<std::unique_ptr<mbedtls_pk_context>> keys_;
};

// "MBEDTLS_ERR_...: text" for a log line.
std::string tls_error_text(int code);
// Hex SHA-256 of a certificate's DER, "ab:cd:..." as openssl prints it.
std::string certificate_fingerprint(const mbedtls_x509_crt &crt);

} // namespace trellis
