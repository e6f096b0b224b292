#include "metrics/metrics.hpp"

#include <algorithm>
#include <cinttypes>
#include <cstdio>

namespace trellis {
namespace {

void append_format(std::string &out, const char *format, auto... args) {
    char buffer[256];
    int n = snprintf(buffer, sizeof buffer, format, args...);
    if (n > 0)
        out.append(buffer,
                   static_cast<size_t>(n) < sizeof buffer ? static_cast<size_t>(n) : sizeof buffer - 1);
}

// JSON string body (without quotes).
void append_json_text(std::string &out, const std::string &text) {
    for (unsigned char c : text) {
        if (c == '"' || c == '\\') {
            out += '\\';
            out += static_cast<char>(c);
        } else if (c < 0x20) {
            append_format(out, "\\u%04x", c);
        } else {
            out += static_cast<char>(c);
        }
    }
}

// Prometheus label value (text format 0.0.4): backslash, double quote and newline escaped.
void append_label(std::string &out, const std::string &text) {
    for (char c : text) {
        if (c == '\\' || c == '"')
            out += '\\', out += c;
        else if (c == '\n')
            out += "\\n";
        else
            out += c;
    }
}

struct RouteTotals {
    uint64_t by_code[RouteWorkerStats::kMaxCode - RouteWorkerStats::kMinCode + 1] = {};
    uint64_t buckets[kLatencyBounds.size() + 1] = {};
    uint64_t sum_ns = 0;
    uint64_t count = 0;
    uint64_t loop_stalls = 0;
};

RouteTotals sum_route(const RouteStats &route) {
    RouteTotals t;
    for (const RouteWorkerStats &w : route.per_worker) {
        for (size_t i = 0; i < std::size(t.by_code); ++i)
            t.by_code[i] += w.by_code[i].get();
        for (size_t i = 0; i < std::size(t.buckets); ++i)
            t.buckets[i] += w.latency_buckets[i].get();
        t.sum_ns += w.latency_sum_ns.get();
        t.loop_stalls += w.loop_stalls.get();
    }
    for (uint64_t b : t.buckets)
        t.count += b;
    return t;
}

struct Totals {
    uint64_t accepted = 0, rejected = 0, open = 0, tls = 0, active = 0, requests = 0, in = 0, out = 0;
    uint64_t h2_open = 0, h2_requests = 0, proxy_refused = 0;
    uint64_t by_class[6] = {};
};

// The HELP and TYPE lines that open a metric family in the text exposition format.
void append_family(std::string &out, const char *name, const char *type, const char *help) {
    append_format(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

} // namespace

void RouteWorkerStats::record(int status, uint64_t latency_ns) {
    if (status >= kMinCode && status <= kMaxCode)
        by_code[status - kMinCode].add();
    double seconds = static_cast<double>(latency_ns) / 1e9;
    size_t bucket = 0;
    while (bucket < kLatencyBounds.size() && seconds > kLatencyBounds[bucket])
        ++bucket;
    latency_buckets[bucket].add();
    latency_sum_ns.add(latency_ns);
}

ServerMetrics::ServerMetrics(unsigned workers) {
    for (unsigned i = 0; i < workers; ++i)
        workers_.push_back(std::make_unique<WorkerStats>());
}

RouteStats *ServerMetrics::route(const std::string &host, const std::string &prefix,
                                 const std::string &plugin) {
    std::string key = host + '\n' + prefix + '\n' + plugin;
    std::lock_guard<std::mutex> lock(routes_mutex_);
    auto &slot = routes_[key];
    if (!slot)
        slot = std::make_unique<RouteStats>(host, prefix, plugin, static_cast<unsigned>(workers_.size()));
    return slot.get();
}

void ServerMetrics::set_active_routes(const std::vector<RouteStats *> &routes) {
    std::lock_guard<std::mutex> lock(routes_mutex_);
    for (auto &[key, stats] : routes_) {
        bool active = false;
        for (RouteStats *r : routes)
            active = active || r == stats.get();
        stats->active = active;
    }
}

void ServerMetrics::set_generation(uint64_t generation, uint64_t reloads, uint64_t reload_failures) {
    generation_ = generation;
    reloads_ = reloads;
    reload_failures_ = reload_failures;
}

// One worker's line in the JSON, read once: the totals are its sums, so they agree to the byte
// even while the workers go on counting.
struct WorkerLine {
    uint64_t open, requests, in, out;
};

static Totals sum_workers(const std::vector<std::unique_ptr<WorkerStats>> &workers,
                          std::vector<WorkerLine> *lines = nullptr) {
    Totals t;
    for (const auto &w : workers) {
        WorkerLine line{w->connections_open.get(), w->requests.get(), w->bytes_in.get(), w->bytes_out.get()};
        if (lines)
            lines->push_back(line);
        t.accepted += w->connections_accepted.get();
        t.rejected += w->connections_rejected.get();
        t.proxy_refused += w->proxy_refused.get();
        t.open += line.open;
        t.tls += w->connections_tls.get();
        t.active += w->connections_active.get();
        t.requests += line.requests;
        t.h2_open += w->connections_h2.get();
        t.h2_requests += w->requests_h2.get();
        t.in += line.in;
        t.out += line.out;
        for (int i = 0; i < 6; ++i)
            t.by_class[i] += w->responses_by_class[i].get();
    }
    return t;
}

std::string ServerMetrics::render_json() const {
    std::vector<WorkerLine> lines;
    lines.reserve(workers_.size());
    Totals t = sum_workers(workers_, &lines);
    t.tls = std::min(t.tls, t.open); // counters are read one by one while workers change them
    double uptime = std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
    uint64_t idle = t.open > t.active ? t.open - t.active : 0;
    std::string out;
    out.reserve(4096);
    append_format(out,
                  "{\"uptime_seconds\":%.3f,\"generation\":%" PRIu64 ",\"reloads\":%" PRIu64
                  ",\"reload_failures\":%" PRIu64 ",",
                  uptime, generation_.load(), reloads_.load(), reload_failures_.load());
    append_format(out,
                  "\"connections\":{\"open\":%" PRIu64 ",\"idle\":%" PRIu64 ",\"active\":%" PRIu64
                  ",\"plain\":%" PRIu64 ",\"tls\":%" PRIu64 ",\"h2\":%" PRIu64 ",\"accepted\":%" PRIu64
                  ",\"rejected\":%" PRIu64 ",\"proxy_refused\":%" PRIu64 "},",
                  t.open, idle, t.open - idle, t.open - t.tls, t.tls, std::min(t.h2_open, t.open), t.accepted,
                  t.rejected, t.proxy_refused);
    append_format(out, "\"requests\":{\"total\":%" PRIu64 ",\"h1\":%" PRIu64 ",\"h2\":%" PRIu64, t.requests,
                  t.requests - std::min(t.h2_requests, t.requests), t.h2_requests);
    for (int i = 1; i < 6; ++i)
        append_format(out, ",\"%dxx\":%" PRIu64, i, t.by_class[i]);
    append_format(out, "},\"bytes\":{\"in\":%" PRIu64 ",\"out\":%" PRIu64 "},", t.in, t.out);
    append_format(out,
                  "\"thread_pool\":{\"threads\":%u,\"queue\":%zu,\"queued\":%" PRIu64 ",\"busy\":%" PRIu64
                  ",\"rejected\":%" PRIu64 "},",
                  pool_.threads, pool_.queue, pool_.queued ? pool_.queued->get() : 0,
                  pool_.busy ? pool_.busy->get() : 0, pool_.rejected ? pool_.rejected->get() : 0);
    out += "\"workers\":[";
    for (size_t i = 0; i < lines.size(); ++i)
        append_format(out,
                      "%s{\"index\":%zu,\"connections\":%" PRIu64 ",\"requests\":%" PRIu64
                      ",\"bytes_in\":%" PRIu64 ",\"bytes_out\":%" PRIu64 "}",
                      i ? "," : "", i, lines[i].open, lines[i].requests, lines[i].in, lines[i].out);
    out += "],\"routes\":[";
    std::lock_guard<std::mutex> lock(routes_mutex_);
    bool first = true;
    for (const auto &[key, route] : routes_) {
        if (!route->active)
            continue;
        RouteTotals r = sum_route(*route);
        out += first ? "{\"host\":\"" : ",{\"host\":\"";
        first = false;
        append_json_text(out, route->host);
        out += "\",\"prefix\":\"";
        append_json_text(out, route->prefix);
        out += "\",\"plugin\":\"";
        append_json_text(out, route->plugin);
        append_format(out, "\",\"requests\":%" PRIu64 ",\"codes\":{", r.count);
        bool first_code = true;
        for (size_t c = 0; c < std::size(r.by_code); ++c)
            if (r.by_code[c]) {
                append_format(out, "%s\"%zu\":%" PRIu64, first_code ? "" : ",",
                              c + RouteWorkerStats::kMinCode, r.by_code[c]);
                first_code = false;
            }
        out += "},\"latency\":{\"buckets\":[";
        for (size_t b = 0; b < kLatencyBounds.size(); ++b)
            append_format(out, "%s%g", b ? "," : "", kLatencyBounds[b]);
        out += "],\"counts\":[";
        uint64_t cumulative = 0;
        for (size_t b = 0; b < kLatencyBounds.size(); ++b) {
            cumulative += r.buckets[b];
            append_format(out, "%s%" PRIu64, b ? "," : "", cumulative);
        }
        append_format(out, "],\"sum_seconds\":%.6f,\"count\":%" PRIu64 "},\"loop_stalls\":%" PRIu64 "}",
                      static_cast<double>(r.sum_ns) / 1e9, r.count, r.loop_stalls);
    }
    out += "]}\n";
    return out;
}

std::string ServerMetrics::render_prometheus() const {
    std::string out;
    out.reserve(8192);
    append_prometheus_server(out);
    append_prometheus_routes(out);
    return out;
}

void ServerMetrics::append_prometheus_server(std::string &out) const {
    Totals t = sum_workers(workers_);
    t.tls = std::min(t.tls, t.open); // counters are read one by one while workers change them
    double uptime = std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
    append_family(out, "trellis_uptime_seconds", "gauge", "Seconds since the server started.");
    append_format(out, "trellis_uptime_seconds %.3f\n", uptime);
    append_family(out, "trellis_generation", "gauge", "Configuration generation serving new requests.");
    append_format(out, "trellis_generation %" PRIu64 "\n", generation_.load());
    append_family(out, "trellis_reloads_total", "counter", "Successful configuration reloads.");
    append_format(out, "trellis_reloads_total %" PRIu64 "\n", reloads_.load());
    append_family(out, "trellis_reload_failures_total", "counter",
                  "Reloads refused because the new configuration failed.");
    append_format(out, "trellis_reload_failures_total %" PRIu64 "\n", reload_failures_.load());
    append_family(out, "trellis_connections_open", "gauge", "Open client connections, by transport.");
    append_format(out, "trellis_connections_open{transport=\"plain\"} %" PRIu64 "\n", t.open - t.tls);
    append_format(out, "trellis_connections_open{transport=\"tls\"} %" PRIu64 "\n", t.tls);
    append_family(out, "trellis_connections_protocol", "gauge", "Open client connections, by HTTP version.");
    uint64_t h2_open = std::min(t.h2_open, t.open);
    append_format(out, "trellis_connections_protocol{protocol=\"h1\"} %" PRIu64 "\n", t.open - h2_open);
    append_format(out, "trellis_connections_protocol{protocol=\"h2\"} %" PRIu64 "\n", h2_open);
    append_family(out, "trellis_requests_protocol_total", "counter",
                  "Requests (HTTP/2: streams) parsed, by HTTP version.");
    uint64_t h2_requests = std::min(t.h2_requests, t.requests);
    append_format(out, "trellis_requests_protocol_total{protocol=\"h1\"} %" PRIu64 "\n",
                  t.requests - h2_requests);
    append_format(out, "trellis_requests_protocol_total{protocol=\"h2\"} %" PRIu64 "\n", h2_requests);
    append_family(out, "trellis_connections_idle", "gauge", "Open connections waiting between requests.");
    append_format(out, "trellis_connections_idle %" PRIu64 "\n", t.open > t.active ? t.open - t.active : 0);
    append_family(out, "trellis_connections_accepted_total", "counter", "Connections accepted.");
    append_format(out, "trellis_connections_accepted_total %" PRIu64 "\n", t.accepted);
    append_family(out, "trellis_connections_rejected_total", "counter",
                  "Connections closed at once over limits.max_connections.");
    append_format(out, "trellis_connections_rejected_total %" PRIu64 "\n", t.rejected);
    append_family(out, "trellis_proxy_protocol_refused_total", "counter",
                  "Connections closed unanswered on a proxy_protocol listener: an untrusted peer, or a "
                  "malformed, truncated or slow PROXY header.");
    append_format(out, "trellis_proxy_protocol_refused_total %" PRIu64 "\n", t.proxy_refused);
    append_family(out, "trellis_bytes_received_total", "counter", "Bytes read from clients (after TLS).");
    append_format(out, "trellis_bytes_received_total %" PRIu64 "\n", t.in);
    append_family(out, "trellis_bytes_sent_total", "counter", "Bytes written to clients (before TLS).");
    append_format(out, "trellis_bytes_sent_total %" PRIu64 "\n", t.out);
    append_family(out, "trellis_responses_total", "counter", "Responses, by status class.");
    for (int i = 1; i < 6; ++i)
        append_format(out, "trellis_responses_total{class=\"%dxx\"} %" PRIu64 "\n", i, t.by_class[i]);
    append_family(out, "trellis_worker_requests_total", "counter", "Requests parsed, by worker thread.");
    for (size_t i = 0; i < workers_.size(); ++i)
        append_format(out, "trellis_worker_requests_total{worker=\"%zu\"} %" PRIu64 "\n", i,
                      workers_[i]->requests.get());
    append_family(out, "trellis_thread_pool_threads", "gauge",
                  "Threads of the pool that runs blocking handlers.");
    append_format(out, "trellis_thread_pool_threads %u\n", pool_.threads);
    append_family(out, "trellis_thread_pool_queued", "gauge", "Blocking requests waiting for a pool thread.");
    append_format(out, "trellis_thread_pool_queued %" PRIu64 "\n", pool_.queued ? pool_.queued->get() : 0);
    append_family(out, "trellis_thread_pool_busy", "gauge", "Pool threads running a handler.");
    append_format(out, "trellis_thread_pool_busy %" PRIu64 "\n", pool_.busy ? pool_.busy->get() : 0);
    append_family(out, "trellis_thread_pool_rejected_total", "counter",
                  "Blocking requests answered 503 because the queue was full.");
    append_format(out, "trellis_thread_pool_rejected_total %" PRIu64 "\n",
                  pool_.rejected ? pool_.rejected->get() : 0);
}

void ServerMetrics::append_prometheus_routes(std::string &out) const {
    std::lock_guard<std::mutex> lock(routes_mutex_);
    std::vector<std::pair<const RouteStats *, RouteTotals>> routes;
    for (const auto &[key, route] : routes_)
        if (route->active)
            routes.emplace_back(route.get(), sum_route(*route));
    auto labels = [&out](const RouteStats &route) {
        out += "host=\"";
        append_label(out, route.host);
        out += "\",route=\"";
        append_label(out, route.prefix);
        out += "\",plugin=\"";
        append_label(out, route.plugin);
        out += '"';
    };
    append_family(out, "trellis_requests_total", "counter", "Requests answered, by route and status code.");
    for (auto &[route, totals] : routes)
        for (size_t c = 0; c < std::size(totals.by_code); ++c)
            if (totals.by_code[c]) {
                out += "trellis_requests_total{";
                labels(*route);
                append_format(out, ",code=\"%zu\"} %" PRIu64 "\n", c + RouteWorkerStats::kMinCode,
                              totals.by_code[c]);
            }
    append_family(out, "trellis_request_duration_seconds", "histogram",
                  "Time from the complete request to the complete response being queued, by route.");
    for (auto &[route, totals] : routes) {
        uint64_t cumulative = 0;
        for (size_t b = 0; b <= kLatencyBounds.size(); ++b) {
            cumulative += totals.buckets[b];
            out += "trellis_request_duration_seconds_bucket{";
            labels(*route);
            if (b < kLatencyBounds.size())
                append_format(out, ",le=\"%g\"} %" PRIu64 "\n", kLatencyBounds[b], cumulative);
            else
                append_format(out, ",le=\"+Inf\"} %" PRIu64 "\n", cumulative);
        }
        out += "trellis_request_duration_seconds_sum{";
        labels(*route);
        append_format(out, "} %.6f\n", static_cast<double>(totals.sum_ns) / 1e9);
        out += "trellis_request_duration_seconds_count{";
        labels(*route);
        append_format(out, "} %" PRIu64 "\n", totals.count);
    }
    append_family(out, "trellis_loop_stalls_total", "counter",
                  "Plugin calls that held a worker's event loop past limits.loop_stall_warn_ms, by route.");
    for (auto &[route, totals] : routes) {
        out += "trellis_loop_stalls_total{";
        labels(*route);
        append_format(out, "} %" PRIu64 "\n", totals.loop_stalls);
    }
}

} // namespace trellis
