#include "worker_context.hpp"

#include "connection.hpp"

namespace trellis {

namespace {
// Room for the largest head we accept plus what arrives behind it in the same read.
size_t read_buffer_size(const Limits &limits) {
    return limits.max_header_bytes + 4096;
}
} // namespace

WorkerContext::WorkerContext(uv_loop_t *loop, unsigned index, const Limits &limits, AccessLog *sink,
                             std::atomic<uint32_t> *open)
    : timeouts(loop, on_timeout, this), pool(read_buffer_size(limits)), access_log(loop, sink),
      open_connections(open), loop_(loop), index_(index), limits_(limits) {
    timeouts.list(kKeepaliveTimeout).set_duration(limits.keepalive_timeout_ms);
    timeouts.list(kHeaderTimeout).set_duration(limits.header_timeout_ms);
    timeouts.list(kBodyTimeout).set_duration(limits.body_timeout_ms);
    timeouts.list(kSendTimeout).set_duration(limits.send_timeout_ms);
    timeouts.list(kLingerTimeout).set_duration(2000);
    timeouts.list(kHandlerTimeout).set_duration(UINT32_MAX);
}

void WorkerContext::on_timeout(TimeoutNode *node, int list_index, void *) {
    // Every node on a worker's lists is a Connection (it inherits TimeoutNode).
    static_cast<Connection *>(node)->on_timeout(static_cast<TimeoutKind>(list_index));
}

} // namespace trellis
