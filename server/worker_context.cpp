#include "worker_context.hpp"

#include "held_answers.hpp"
#include "mailbox.hpp"

namespace trellis {

namespace {
// Room for the largest head we accept plus what arrives behind it in the same read.
size_t read_buffer_size(const Limits &limits) {
    return limits.max_header_bytes + SessionPool::kReadSlack;
}
thread_local WorkerContext *tls_current_worker = nullptr;
thread_local bool tls_loop_thread = false;
} // namespace

WorkerContext *WorkerContext::current() {
    return tls_current_worker;
}

void WorkerContext::mark_loop_thread() {
    tls_loop_thread = true;
}

bool WorkerContext::on_loop_thread() {
    return tls_loop_thread;
}

void WorkerContext::bind_thread() {
    tls_current_worker = this;
}

WorkerContext::WorkerContext(uv_loop_t *loop, unsigned index, const Limits &limits, AccessLog *sink,
                             std::atomic<uint32_t> *open, WorkerStats *external_stats)
    : own_stats_(external_stats ? nullptr : std::make_unique<WorkerStats>()),
      mailbox(std::make_shared<Mailbox>(loop, deliver_mail)), timeouts(loop, on_timeout, this), poller(loop),
      pool(read_buffer_size(limits), this), access_log(loop, sink),
      stats(external_stats ? *external_stats : *own_stats_), open_connections(open), loop_(loop),
      index_(index) {
    bind_thread(); // the worker thread binds again when it starts
    apply_limits(limits);
    timeouts.list(kLingerTimeout).set_duration(2000);
}

void WorkerContext::apply_limits(const Limits &limits) {
    limits_ = limits;
    timeouts.set_duration(kHandlerTimeout, limits.handler_timeout_ms);
    timeouts.set_duration(kKeepaliveTimeout, limits.keepalive_timeout_ms);
    timeouts.set_duration(kHeaderTimeout, limits.header_timeout_ms);
    timeouts.set_duration(kBodyTimeout, limits.body_timeout_ms);
    timeouts.set_duration(kSendTimeout, limits.send_timeout_ms);
    pool.set_read_buffer_size(read_buffer_size(limits));
}

WorkerContext::~WorkerContext() {
    if (tls_current_worker == this)
        tls_current_worker = nullptr;
}

void WorkerContext::connection_opened() {
    ++connections;
    stats.connections_accepted.add();
    stats.connections_open.add();
}

void WorkerContext::connection_closed(bool counted_tls) {
    // TLS first: a reader computing plain = open - tls never sees tls > open.
    if (counted_tls)
        stats.connections_tls.sub();
    stats.connections_open.sub();
    one_less_connection();
}

void WorkerContext::preconnection_closed(bool became_connection) {
    if (became_connection) {
        --connections; // the Connection has counted itself
        return;
    }
    one_less_connection();
}

void WorkerContext::one_less_connection() {
    if (open_connections)
        open_connections->fetch_sub(1, std::memory_order_relaxed);
    if (--connections == 0 && draining && on_drained)
        on_drained(on_drained_data);
    else if (draining && on_drain_progress)
        on_drain_progress(on_drained_data);
}

void WorkerContext::deliver_mail(MailSlot *slot, unsigned bits) {
    auto *ex = static_cast<Exchange *>(slot->receiver);
    if (!deliver_orphan_mail(*ex, bits))
        ex->owner->on_mail(*ex, bits);
}

void WorkerContext::on_timeout(TimeoutNode *node, int list_index, void *) {
    // Every node on a worker's lists is a connection.
    static_cast<ClientConnection *>(node)->on_timeout(static_cast<TimeoutKind>(list_index));
}

} // namespace trellis
