// The transport layer as the rest of the server sees it: TLS settings loaded into an opaque
// context, per-worker TLS state, and one call that wraps an accepted socket in the transport its
// listener speaks. No mbedTLS type crosses this header: TLS is the transport's business.
#pragma once

#include "config/config.hpp"
#include "transport/poller.hpp"
#include "transport/transport.hpp"

#include <memory>
#include <string>
#include <uv.h>
#include <vector>

namespace trellis {

class TlsContext; // a listener's certificates, client CA and session store (transport/tls_context.hpp)
class WorkerTls;  // what one worker's handshakes write

// Loads (or, with self_signed_if_missing, first creates) a listener's certificates; throws
// StartupError naming the file and the problem. A reload passes the running context as
// `previous`: its TLS sessions and ticket keys are kept when the certificates, keys, client CA
// and session settings are unchanged.
std::shared_ptr<TlsContext> load_tls(const TlsConfig &config, const TlsContext *previous = nullptr);
// trellis --check: what load_tls would refuse, without writing a generated certificate.
void check_tls(const TlsConfig &config);
// One line per certificate served: "FILE (SHA-256 fingerprint ab:cd:...)".
std::vector<std::string> describe_certificates(const TlsContext &context);
// A reload put `context` in place, keeping the sessions of the one before: tls.ticket_key_file
// is read again, and a new key rotates in (the previous one still decrypts what it made). True
// when the key changed; throws StartupError on a bad file (the keys stay as they were).
bool rotate_ticket_key(TlsContext &context);
// Whether `now` kept the TLS sessions and ticket keys of `before` (a reload that changed nothing).
bool keeps_sessions_of(const TlsContext &now, const TlsContext &before);

// The state one worker's handshakes use (its ssl_config, DRBG and private keys).
std::shared_ptr<const WorkerTls> make_worker_tls(std::shared_ptr<const TlsContext> context, unsigned worker);

// Takes ownership of an accepted, non-blocking socket: plain for a plain listener, TLS for a tls
// one, and the first byte decides on an auto one. Null (the socket closed) when it cannot be set
// up. `tls` is null for plain listeners.
Transport *create_transport(Poller &poller, int fd, TransportKind kind,
                            const std::shared_ptr<const WorkerTls> &tls);

} // namespace trellis
