// Counters for the status plugin. Each counter has exactly one writer (the worker that owns it)
// and any number of readers: writes are a relaxed load + store (no locked instruction on the
// request path), reads sum every worker's copy when someone asks.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace trellis {

// A number written by one thread and read by others.
class Counter {
  public:
    void add(uint64_t n = 1) {
        value_.store(value_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
    }
    void sub(uint64_t n = 1) {
        value_.store(value_.load(std::memory_order_relaxed) - n, std::memory_order_relaxed);
    }
    uint64_t get() const { return value_.load(std::memory_order_relaxed); }

  private:
    std::atomic<uint64_t> value_{0};
};

// Upper bounds (seconds) of the latency histogram buckets; +Inf is implicit.
inline constexpr std::array<double, 12> kLatencyBounds = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                                          0.05,   0.1,   0.25,   0.5,   1.0,  5.0};

// One route's counters on one worker, on cache lines of their own.
struct alignas(64) RouteWorkerStats {
    static constexpr int kMinCode = 100, kMaxCode = 599;
    Counter by_code[kMaxCode - kMinCode + 1];
    Counter latency_buckets[kLatencyBounds.size() + 1]; // not cumulative; last is +Inf
    Counter latency_sum_ns;
    Counter loop_stalls; // plugin calls on the event loop past limits.loop_stall_warn_ms

    void record(int status, uint64_t latency_ns);
};

// A route's counters, kept across reloads as long as a route with the same host, prefix and
// plugin name exists (so Prometheus sees no reset when an unrelated route changes).
struct RouteStats {
    RouteStats(std::string host_name, std::string route_prefix, std::string plugin_name, unsigned workers)
        : host(std::move(host_name)), prefix(std::move(route_prefix)), plugin(std::move(plugin_name)),
          per_worker(workers) {}
    std::string host, prefix, plugin;
    std::vector<RouteWorkerStats> per_worker;
    bool active = true; // in the current generation
    // When a stall on this route was last logged (ms of the steady clock), on any worker: the
    // warning is said at most once a minute per route.
    std::atomic<uint64_t> last_stall_warning_ms{0};
};

// One worker's counters.
struct alignas(64) WorkerStats {
    Counter connections_accepted;
    Counter connections_rejected; // over limits.max_connections
    Counter proxy_refused;        // "proxy_protocol" listeners: an untrusted peer or a bad header
    Counter connections_open;
    Counter connections_tls;    // open and on TLS
    Counter connections_active; // open and holding a session (not idle)
    Counter connections_h2;     // open and speaking HTTP/2
    Counter requests;
    Counter requests_h2;           // of requests, those on HTTP/2 streams
    Counter responses_by_class[6]; // index status / 100
    Counter bytes_in;
    Counter bytes_out;
};

// What the thread pool reports.
struct PoolStats {
    unsigned threads = 0;
    size_t queue = 0;
    const Counter *queued = nullptr;
    const Counter *busy = nullptr;
    const Counter *rejected = nullptr;
};

// Everything the status plugin reports, owned by the server.
class ServerMetrics {
  public:
    explicit ServerMetrics(unsigned workers);
    WorkerStats &worker(unsigned index) { return *workers_[index]; }
    // The stats of a route (created on first use; main thread, at start or reload).
    RouteStats *route(const std::string &host, const std::string &prefix, const std::string &plugin);
    // Marks which routes the current generation has (main thread).
    void set_active_routes(const std::vector<RouteStats *> &routes);
    void set_pool(PoolStats pool) { pool_ = pool; }
    void set_generation(uint64_t generation, uint64_t reloads, uint64_t reload_failures);

    std::string render_json() const;
    std::string render_prometheus() const;

  private:
    void append_prometheus_server(std::string &out) const; // connections, bytes, pool, reloads
    void append_prometheus_routes(std::string &out) const; // per route: codes, durations, stalls

    std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();
    std::vector<std::unique_ptr<WorkerStats>> workers_;
    mutable std::mutex routes_mutex_; // guards the map's shape, not the counters
    std::map<std::string, std::unique_ptr<RouteStats>> routes_;
    PoolStats pool_;
    std::atomic<uint64_t> generation_{1}, reloads_{0}, reload_failures_{0};
};

} // namespace trellis
