#include "exchange.hpp"

#include "log/access_log.hpp"
#include "metrics/metrics.hpp"
#include "router.hpp"
#include "worker_context.hpp"

#include <arpa/inet.h>
#include <cstdio>
#include <cstring>
#include <uv.h>

namespace trellis {
namespace {

void log_access(Exchange &ex, int status, uint64_t body_bytes) {
    WorkerContext &worker = *ex.worker;
    if (!worker.access_log.enabled())
        return;
    trellis_request &r = ex.request;
    char peer[64];
    size_t n = peer_address_text(ex.client, peer, sizeof peer); // the combined format wants no port
    AccessLogEntry entry;
    entry.peer_ip = std::string_view(peer, n);
    entry.method = r.str(r.method);
    entry.target = r.str(r.target);
    entry.version = r.version;
    entry.status = status;
    entry.body_bytes = body_bytes;
    r.header("referer", entry.referer);
    r.header("user-agent", entry.user_agent);
    if (ex.started_ns)
        entry.request_time_ns = static_cast<int64_t>(uv_hrtime() - ex.started_ns);
    worker.access_log.append(entry);
}

} // namespace

Exchange::Exchange(WorkerContext *owner_worker)
    : worker(owner_worker), worker_index(owner_worker ? owner_worker->index() : 0),
      metrics(owner_worker ? owner_worker->metrics : nullptr),
      held(this, owner_worker ? owner_worker->mailbox : nullptr) {
    request.exchange = this;
    memset(&peer, 0, sizeof peer);
    memset(&client, 0, sizeof client);
}

Exchange::~Exchange() {
    held.forget_mail(); // a plugin that released a request it did not hold may have left mail
}

void Exchange::reset() {
    request.reset();
    owner = nullptr;
    tls_facts.reset();
    router = nullptr;
    generation = nullptr;
    route_index = -1;
    route_stats = nullptr;
    started_ns = 0;
    stream = StreamState{};
    notify_writable = body_streamed = body_paused = false;
    held.reset();
}

void record_response(Exchange &ex, int status, uint64_t body_bytes) {
    if (ex.route_stats && ex.started_ns)
        ex.route_stats->per_worker[ex.worker->index()].record(status, uv_hrtime() - ex.started_ns);
    log_access(ex, status, body_bytes);
}

size_t peer_text(const sockaddr_in6 &peer, char *buf, size_t len) {
    char ip[INET6_ADDRSTRLEN + 8];
    size_t n = peer_address_text(peer, ip, sizeof ip);
    uint16_t port = ntohs(peer.sin6_port); // sin_port sits in the same bytes
    int written;
    if (peer.sin6_family == AF_UNIX || port == 0) // a Unix peer, or a client named by X-Forwarded-For
        written = snprintf(buf, len, "%.*s", static_cast<int>(n), ip);
    else if (peer.sin6_family == AF_INET6)
        written = snprintf(buf, len, "[%s]:%u", ip, port);
    else
        written = snprintf(buf, len, "%s:%u", ip, port);
    return written > 0 && static_cast<size_t>(written) < len ? static_cast<size_t>(written) : 0;
}

size_t peer_address_text(const sockaddr_in6 &peer, char *buf, size_t len) {
    const char *text = "?";
    char ip[INET6_ADDRSTRLEN] = "?";
    if (peer.sin6_family == AF_UNIX)
        text = "unix:";
    else if (peer.sin6_family == AF_INET6)
        text = inet_ntop(AF_INET6, &peer.sin6_addr, ip, sizeof ip) ? ip : "?";
    else
        text = inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in *>(&peer)->sin_addr, ip, sizeof ip)
                   ? ip
                   : "?";
    size_t n = strlen(text);
    if (n >= len)
        return 0;
    memcpy(buf, text, n + 1);
    return n;
}

} // namespace trellis
