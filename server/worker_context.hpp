// What a connection needs from the worker it lives on: limits, routes, timeouts, pooled buffers,
// the Date cache, the access log and counters. Kept apart from Worker (thread, listeners) so the
// HTTP session can be unit-tested on a bare loop.
#pragma once

#include "config/config.hpp"
#include "http/http_date.hpp"
#include "log/access_log.hpp"
#include "metrics/metrics.hpp"
#include "timeouts.hpp"
#include "transport/poller.hpp"

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

namespace trellis {

class Router;
class Mailbox;
struct MailSlot;
class ServerMetrics;
class ThreadPool;
struct ActiveSession;
struct WorkerGeneration;

enum TimeoutKind : int {
    kKeepaliveTimeout = 0, // idle between requests: close silently
    kHeaderTimeout,        // whole request head: 408
    kBodyTimeout,          // between reads of a body: 408
    kSendTimeout,          // between writes of a response: close
    kLingerTimeout,        // draining input after the last response: close
    kHandlerTimeout,       // a plugin holds the request without answering: 504
};

// What the worker asks of every client connection, whatever its protocol. Each open connection
// sits on exactly one of the worker's timeout lists, which is how the worker finds them all.
class ClientConnection : public TimeoutNode {
  public:
    // A timeout of this connection expired (it has left its list).
    virtual void on_timeout(TimeoutKind kind) = 0;
    // Shutdown (or a reload, `reload` true): finish what is in progress, take nothing new.
    virtual void begin_drain(bool reload = false) = 0;
    // Shutdown deadline: close whatever state it is in.
    virtual void abort() = 0;
    // Nothing in progress (draining may close it).
    virtual bool idle() const = 0;

  protected:
    ~ClientConnection() = default;
};

// Pooled per-connection working state, lent to a connection only while it has work.
class WorkerContext;

class SessionPool {
  public:
    // Read buffers hold the largest head allowed plus this much of what arrives behind it.
    static constexpr size_t kReadSlack = 4096;

    SessionPool(size_t read_buffer_size, WorkerContext *owner)
        : read_buffer_size_(read_buffer_size), owner_(owner) {}
    ~SessionPool();
    SessionPool(const SessionPool &) = delete;
    SessionPool &operator=(const SessionPool &) = delete;
    ActiveSession *acquire();
    void release(ActiveSession *session);
    size_t read_buffer_size() const { return read_buffer_size_; }
    // Sessions made from now on get this size; those of another size are freed when released.
    void set_read_buffer_size(size_t size);

  private:
    size_t read_buffer_size_;
    WorkerContext *owner_;
    std::vector<ActiveSession *> free_;
};

class WorkerContext {
    std::unique_ptr<WorkerStats> own_stats_; // first: `stats` may refer to it

  public:
    // `stats` may be null (unit tests): the context then counts into its own.
    WorkerContext(uv_loop_t *loop, unsigned index, const Limits &limits, AccessLog *access_log,
                  std::atomic<uint32_t> *open_connections, WorkerStats *stats = nullptr);
    ~WorkerContext();
    WorkerContext(const WorkerContext &) = delete;
    WorkerContext &operator=(const WorkerContext &) = delete;

    uv_loop_t *loop() const { return loop_; }
    unsigned index() const { return index_; }
    const Limits &limits() const { return limits_; }
    // A reload's limits: timeouts started from now on and sessions taken from now on use them.
    void apply_limits(const Limits &limits);

    // The worker whose loop runs on the calling thread, or null (a plugin's or the pool's thread).
    static WorkerContext *current();
    // Makes this the calling thread's worker (the worker thread, when it starts).
    void bind_thread();
    // The calling thread runs a worker's event loop (Worker::run). Apart from current(), which the
    // thread that constructs a context also has (the main thread, for the workers it makes).
    static void mark_loop_thread();
    static bool on_loop_thread();

    const Router *router = nullptr;
    // The generation new requests take (null in tests that set `router` alone).
    WorkerGeneration *generation = nullptr;
    // A held request finished on `held_on`: the worker may retire that generation now.
    void (*on_generation_idle)(WorkerGeneration *held_on, void *data) = nullptr;
    void *on_generation_idle_data = nullptr;
    ThreadPool *thread_pool = nullptr;      // null: blocking handlers run inline (tests)
    const ServerMetrics *metrics = nullptr; // for the status plugin
    std::shared_ptr<Mailbox> mailbox;
    Timeouts timeouts;
    Poller poller; // the connections' sockets
    SessionPool pool;
    DateCache date;
    AccessLogBuffer access_log;
    WorkerStats &stats;
    // Set on shutdown: every response then says "Connection: close".
    bool draining = false;
    // Connections alive on this worker, and on all workers (for limits.max_connections).
    size_t connections = 0;
    std::atomic<uint32_t> *open_connections;
    // While draining: called when a connection closes (on_drain_progress) and when the last one
    // has (on_drained).
    void (*on_drain_progress)(void *data) = nullptr;
    void (*on_drained)(void *data) = nullptr;
    void *on_drained_data = nullptr;

    TimeoutList &timeout_list(TimeoutKind kind) { return timeouts.list(kind); }

    // A connection was accepted onto this worker / has closed (whatever protocol it spoke last;
    // `counted_tls`: it was counted in stats.connections_tls). Closing the last one of a draining
    // worker ends its drain.
    void connection_opened();
    void connection_closed(bool counted_tls);
    // A socket accepted but not a connection yet (its PROXY header is being read): it holds its
    // place in max_connections and keeps a drain waiting, like a connection. `became_connection`:
    // it goes on as a Connection, which counts itself from then on.
    void preconnection_opened() { ++connections; }
    void preconnection_closed(bool became_connection);

  private:
    void one_less_connection();
    static void on_timeout(TimeoutNode *node, int list_index, void *context);
    static void deliver_mail(MailSlot *slot, unsigned bits);
    uv_loop_t *loop_;
    unsigned index_;
    Limits limits_;
};

} // namespace trellis
