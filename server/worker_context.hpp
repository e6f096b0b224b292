// What a connection needs from the worker it lives on: limits, routes, timeouts, pooled buffers,
// the Date cache, the access log and counters. Kept apart from Worker (thread, listeners) so the
// HTTP session can be unit-tested on a bare loop.
#pragma once

#include "config/config.hpp"
#include "http/http_date.hpp"
#include "log/access_log.hpp"
#include "timeouts.hpp"

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

namespace trellis {

class Router;
struct ActiveSession;

enum TimeoutKind : int {
    kKeepaliveTimeout = 0, // idle between requests: close silently
    kHeaderTimeout,        // whole request head: 408
    kBodyTimeout,          // between reads of a body: 408
    kSendTimeout,          // between writes of a response: close
    kLingerTimeout,        // draining input after the last response: close
    kHandlerTimeout,       // a plugin holds the request: no deadline yet, keeps the list complete
};

struct WorkerStats {
    uint64_t connections_accepted = 0;
    uint64_t connections_rejected = 0; // over limits.max_connections
    uint64_t requests = 0;
    uint64_t responses_by_class[6] = {}; // index status / 100
};

// Pooled per-connection working state, lent to a connection only while it has work.
class SessionPool {
  public:
    explicit SessionPool(size_t read_buffer_size) : read_buffer_size_(read_buffer_size) {}
    ~SessionPool();
    SessionPool(const SessionPool &) = delete;
    SessionPool &operator=(const SessionPool &) = delete;
    ActiveSession *acquire();
    void release(ActiveSession *session);
    size_t read_buffer_size() const { return read_buffer_size_; }

  private:
    size_t read_buffer_size_;
    std::vector<ActiveSession *> free_;
};

class WorkerContext {
  public:
    WorkerContext(uv_loop_t *loop, unsigned index, const Limits &limits, AccessLog *access_log,
                  std::atomic<uint32_t> *open_connections);
    ~WorkerContext() = default;
    WorkerContext(const WorkerContext &) = delete;
    WorkerContext &operator=(const WorkerContext &) = delete;

    uv_loop_t *loop() const { return loop_; }
    unsigned index() const { return index_; }
    const Limits &limits() const { return limits_; }

    const Router *router = nullptr;
    Timeouts timeouts;
    SessionPool pool;
    DateCache date;
    AccessLogBuffer access_log;
    WorkerStats stats;
    // Set on shutdown: every response then says "Connection: close".
    bool draining = false;
    // Connections alive on this worker, and on all workers (for limits.max_connections).
    size_t connections = 0;
    std::atomic<uint32_t> *open_connections;
    // Called when `connections` drops to zero while draining.
    void (*on_drained)(void *data) = nullptr;
    void *on_drained_data = nullptr;

    TimeoutList &timeout_list(TimeoutKind kind) { return timeouts.list(kind); }

  private:
    static void on_timeout(TimeoutNode *node, int list_index, void *context);
    uv_loop_t *loop_;
    unsigned index_;
    Limits limits_;
};

} // namespace trellis
