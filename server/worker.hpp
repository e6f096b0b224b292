// One worker: a thread running its own uv_loop_t with its own listening sockets and connections.
// Nothing on the request path is shared with other workers except read-only configuration.
#pragma once

#include "config/config.hpp"
#include "worker_context.hpp"

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace trellis {

class Listener;
class WorkerTls;
struct ListenerSettings;
class ServerMetrics;
class ThreadPool;
struct Generation;
struct WorkerGeneration;

// What a worker shares with the server.
struct WorkerShared {
    AccessLog *access_log = nullptr;
    std::atomic<uint32_t> *open_connections = nullptr;
    ServerMetrics *metrics = nullptr;
    ThreadPool *thread_pool = nullptr;
    // Called on the worker's thread when it has let go of an old generation.
    void (*on_generation_released)(void *data) = nullptr;
    void *on_generation_released_data = nullptr;
};

class Worker {
  public:
    Worker(unsigned index, const Config &config, std::shared_ptr<const Generation> generation,
           const WorkerShared &shared);
    ~Worker();
    Worker(const Worker &) = delete;
    Worker &operator=(const Worker &) = delete;

    // Main thread, before start(): accepts from `fd`, a listening socket of `settings` (the
    // worker's from now on). Throws StartupError.
    void listen(const ListenerSettings &settings, int fd);
    // Starts the thread. On that thread, `on_started` is called once every plugin has started
    // on it (not if one failed), and `on_exit` after its loop has closed.
    void start(void (*on_started)(void *data), void (*on_exit)(void *data), void *data);
    // Any thread: stop accepting, finish in-flight responses, close idle connections, exit
    // (forcibly after limits.shutdown_timeout_ms).
    void stop();
    // Any thread: runs `task` on the worker's thread, soon (dropped once the worker stops).
    void post(std::function<void()> task);
    // Main thread, while running: new TLS state for the listeners of `settings` (post()ed).
    void replace_tls(const ListenerSettings &settings, std::shared_ptr<const WorkerTls> tls);
    // Main thread, while running: new requests take `generation` from now on (post()ed).
    void adopt(std::shared_ptr<const Generation> generation);
    void join();
    // False if a plugin's on_worker_start failed.
    bool started_ok() const { return started_ok_.load(); }

  private:
    void run();
    // Closes every handle left, runs the loop until they are gone, closes it (0 when clean).
    int close_loop();
    void on_stop();
    void close_all_connections(bool force);
    std::vector<ClientConnection *> all_connections() const;
    void on_drained();
    // Draining: once no connection has work left, closes the idle ones.
    void check_drain();
    // Loop thread: switch to a new generation; retire an old one once nothing runs on it.
    void switch_to(std::shared_ptr<const Generation> generation);
    void retire_if_idle(WorkerGeneration *generation);
    void start_plugins(const Generation &generation, const Generation *previous);
    static void uv_on_generation_idle(WorkerGeneration *generation, void *data);
    static void uv_on_stop(uv_async_t *async) noexcept;
    static void uv_on_post(uv_async_t *async) noexcept;
    static void uv_on_shutdown_timeout(uv_timer_t *timer) noexcept;

    unsigned index_;
    uint32_t shutdown_timeout_ms_;
    WorkerShared shared_;
    // Generations this worker still uses; the last one is current.
    std::vector<std::unique_ptr<WorkerGeneration>> generations_;
    uv_loop_t loop_;
    std::unique_ptr<WorkerContext> context_;
    std::vector<Listener *> listeners_;
    uv_async_t stop_async_;
    uv_async_t post_async_;
    std::mutex stop_mutex_; // stop() against the closing of stop_async_
    bool stop_open_ = true;
    std::mutex posted_mutex_;
    std::vector<std::function<void()>> posted_;
    bool accepting_posts_ = true; // under posted_mutex_
    uv_timer_t shutdown_timer_;
    uv_timer_t drain_grace_timer_; // checks the drain again once idle connections' grace is over
    bool stopping_ = false;
    bool sweeping_connections_ = false; // closing connections in a loop: check_drain must wait
    bool started_ = false;              // start() was called: run() owns closing the loop
    std::atomic<bool> started_ok_{true};
    void (*on_started_)(void *) = nullptr;
    void (*on_exit_)(void *) = nullptr;
    void *on_exit_data_ = nullptr;
    std::thread thread_;
};

} // namespace trellis
