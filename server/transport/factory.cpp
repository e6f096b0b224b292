#include "transport/factory.hpp"

#include "transport/plain.hpp"
#include "transport/tls.hpp"
#include "transport/tls_context.hpp"

namespace trellis {

std::shared_ptr<TlsContext> load_tls(const TlsConfig &config, const TlsContext *previous) {
    return TlsContext::load(config, false, previous);
}

void check_tls(const TlsConfig &config) {
    TlsContext::load(config, true);
}

std::vector<std::string> describe_certificates(const TlsContext &context) {
    std::vector<std::string> lines;
    for (const auto &cert : context.certificates())
        lines.push_back(cert->cert_file + " (SHA-256 fingerprint " + certificate_fingerprint(cert->chain) +
                        ")");
    return lines;
}

bool rotate_ticket_key(TlsContext &context) {
    return context.reload_ticket_key();
}

bool keeps_sessions_of(const TlsContext &now, const TlsContext &before) {
    return now.shares_sessions_with(before);
}

std::shared_ptr<const WorkerTls> make_worker_tls(std::shared_ptr<const TlsContext> context, unsigned worker) {
    return std::make_shared<WorkerTls>(std::move(context), worker);
}

Transport *create_transport(Poller &poller, int fd, TransportKind kind,
                            const std::shared_ptr<const WorkerTls> &tls) {
    if (kind == TransportKind::Plain || !tls)
        return PlainTransport::create(poller, fd);
    return TlsTransport::create(poller, fd, tls, kind == TransportKind::Auto);
}

} // namespace trellis
