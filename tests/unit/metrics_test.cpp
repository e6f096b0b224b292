// Metrics: the latency buckets and status codes of RouteWorkerStats::record, and the two
// renderings of ServerMetrics (JSON that parses, Prometheus text that follows the 0.0.4 grammar).
#include "metrics/metrics.hpp"

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <map>
#include <memory>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

using trellis::Counter;
using trellis::kLatencyBounds;
using trellis::RouteWorkerStats;
using trellis::ServerMetrics;

namespace {

constexpr size_t kBuckets = kLatencyBounds.size() + 1;

// Which bucket one record() of `latency_ns` lands in (-1 if none or several changed).
int bucket_of(uint64_t latency_ns) {
    auto stats = std::make_unique<RouteWorkerStats>();
    stats->record(200, latency_ns);
    int found = -1;
    for (size_t b = 0; b < kBuckets; ++b) {
        if (stats->latency_buckets[b].get() == 0)
            continue;
        if (found != -1 || stats->latency_buckets[b].get() != 1)
            return -1;
        found = static_cast<int>(b);
    }
    return found;
}

uint64_t bound_ns(size_t b) {
    return static_cast<uint64_t>(std::llround(kLatencyBounds[b] * 1e9));
}

std::vector<std::string> lines_of(const std::string &text) {
    std::vector<std::string> lines;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);)
        lines.push_back(line);
    return lines;
}

bool contains(const std::string &haystack, const std::string &needle) {
    return haystack.find(needle) != std::string::npos;
}

// A server's metrics with two workers, two routes (one retired) and a pool.
struct Fixture {
    ServerMetrics metrics{2};
    Counter queued, busy, rejected;
    trellis::RouteStats *api = nullptr;
    trellis::RouteStats *odd = nullptr;
    trellis::RouteStats *retired = nullptr;

    Fixture() {
        trellis::WorkerStats &w0 = metrics.worker(0);
        trellis::WorkerStats &w1 = metrics.worker(1);
        w0.connections_accepted.add(10);
        w1.connections_accepted.add(5);
        w0.connections_rejected.add(1);
        w1.connections_rejected.add(2);
        w0.connections_open.add(4);
        w1.connections_open.add(3);
        w0.connections_tls.add(2);
        w1.connections_tls.add(1);
        w0.connections_active.add(1);
        w1.connections_active.add(1);
        w0.requests.add(30);
        w1.requests.add(12);
        w0.responses_by_class[2].add(25);
        w1.responses_by_class[2].add(10);
        w0.responses_by_class[4].add(4);
        w1.responses_by_class[5].add(3);
        w0.bytes_in.add(1000);
        w1.bytes_in.add(234);
        w0.bytes_out.add(5000);
        w1.bytes_out.add(678);

        api = metrics.route("*", "/api", "echo");
        api->per_worker[0].record(200, 300'000);          // 0.3 ms: bucket 0
        api->per_worker[1].record(200, 2'000'000);        // 2 ms: bucket 2
        api->per_worker[1].record(404, 40'000'000);       // 40 ms: bucket 6
        api->per_worker[0].record(503, 7'000'000'000ull); // 7 s: +Inf
        odd = metrics.route("a\"b\\c\nd", "/p\"q", "x\\y");
        odd->per_worker[0].record(200, 1'000'000); // 1 ms: bucket 1 (le is inclusive)
        retired = metrics.route("*", "/old", "hello");
        retired->per_worker[0].record(200, 1);
        metrics.set_active_routes({api, odd});

        queued.add(3);
        busy.add(2);
        rejected.add(7);
        metrics.set_pool({4, 64, &queued, &busy, &rejected});
        metrics.set_generation(5, 4, 1);
    }
};

// The Prometheus text format 0.0.4, one line at a time.
const std::string kName = "[a-zA-Z_:][a-zA-Z0-9_:]*";
const std::string kLabel = "[a-zA-Z_][a-zA-Z0-9_]*=\"(?:[^\"\\\\\\n]|\\\\[\\\\\"n])*\"";
const std::string kValue = "(?:[-+]?(?:[0-9]+(?:\\.[0-9]*)?|\\.[0-9]+)(?:[eE][-+]?[0-9]+)?|[-+]?Inf|NaN)";
const std::regex kHelpLine("# HELP (" + kName + ") (?:[^\\\\\\n]|\\\\[\\\\n])*");
const std::regex kTypeLine("# TYPE (" + kName + ") (counter|gauge|histogram|summary|untyped)");
const std::regex kSampleLine("(" + kName + ")(?:\\{(?:" + kLabel + "(?:," + kLabel + ")*)?\\})? (" + kValue +
                             ")(?: -?[0-9]+)?");

} // namespace

TEST_CASE("metrics: record() buckets latency by the upper bounds, inclusive") {
    CHECK(bucket_of(0) == 0);
    for (size_t b = 0; b < kLatencyBounds.size(); ++b) {
        CAPTURE(b);
        CHECK(bucket_of(bound_ns(b)) == static_cast<int>(b));         // on the bound: this bucket
        CHECK(bucket_of(bound_ns(b) + 1) == static_cast<int>(b + 1)); // just above: the next
        if (b > 0)
            CHECK(bucket_of(bound_ns(b - 1) + (bound_ns(b) - bound_ns(b - 1)) / 2) == static_cast<int>(b));
    }
    CHECK(bucket_of(5'000'000'000ull) == 11);
    CHECK(bucket_of(5'000'000'001ull) == 12); // +Inf
    CHECK(bucket_of(3'600'000'000'000ull) == 12);
}

TEST_CASE("metrics: record() counts status codes and sums latency") {
    auto stats = std::make_unique<RouteWorkerStats>();
    stats->record(200, 1000);
    stats->record(200, 2000);
    stats->record(404, 3000);
    stats->record(100, 10);
    stats->record(599, 20);
    stats->record(99, 30);  // out of range: no code counted
    stats->record(600, 40); // ditto
    stats->record(-1, 50);
    auto code = [&](int status) { return stats->by_code[status - RouteWorkerStats::kMinCode].get(); };
    CHECK(code(200) == 2u);
    CHECK(code(404) == 1u);
    CHECK(code(100) == 1u);
    CHECK(code(599) == 1u);
    CHECK(code(500) == 0u);
    uint64_t codes = 0;
    for (const Counter &c : stats->by_code)
        codes += c.get();
    CHECK(codes == 5u);
    // Every record() has a latency, whatever its code.
    uint64_t recorded = 0;
    for (const Counter &c : stats->latency_buckets)
        recorded += c.get();
    CHECK(recorded == 8u);
    CHECK(stats->latency_buckets[0].get() == 8u); // all under 0.5 ms
    CHECK(stats->latency_sum_ns.get() == 6150u);
}

TEST_CASE("metrics: Counter add and sub") {
    Counter c;
    CHECK(c.get() == 0u);
    c.add();
    c.add(41);
    CHECK(c.get() == 42u);
    c.sub();
    c.sub(40);
    CHECK(c.get() == 1u);
}

TEST_CASE("metrics: route() keeps one RouteStats per host, prefix and plugin") {
    ServerMetrics metrics(3);
    trellis::RouteStats *a = metrics.route("*", "/a", "p");
    CHECK(metrics.route("*", "/a", "p") == a);
    CHECK(metrics.route("*", "/a", "q") != a);
    CHECK(metrics.route("h", "/a", "p") != a);
    CHECK(a->per_worker.size() == 3u);
    CHECK(a->host == "*");
    CHECK(a->prefix == "/a");
    CHECK(a->plugin == "p");
}

TEST_CASE("metrics: render_json") {
    Fixture f;
    std::string text = f.metrics.render_json();
    INFO(text);
    nlohmann::json j;
    REQUIRE_NOTHROW(j = nlohmann::json::parse(text));

    SUBCASE("server, connections, requests, bytes: summed over the workers") {
        CHECK(j["uptime_seconds"].is_number());
        CHECK(j["uptime_seconds"].get<double>() >= 0.0);
        CHECK(j["generation"] == 5);
        CHECK(j["reloads"] == 4);
        CHECK(j["reload_failures"] == 1);
        const nlohmann::json &c = j["connections"];
        CHECK(c["open"] == 7);
        CHECK(c["active"] == 2);
        CHECK(c["idle"] == 5);
        CHECK(c["tls"] == 3);
        CHECK(c["plain"] == 4);
        CHECK(c["accepted"] == 15);
        CHECK(c["rejected"] == 3);
        const nlohmann::json &r = j["requests"];
        CHECK(r["total"] == 42);
        CHECK(r["1xx"] == 0);
        CHECK(r["2xx"] == 35);
        CHECK(r["3xx"] == 0);
        CHECK(r["4xx"] == 4);
        CHECK(r["5xx"] == 3);
        CHECK(j["bytes"]["in"] == 1234);
        CHECK(j["bytes"]["out"] == 5678);
    }
    SUBCASE("thread pool") {
        const nlohmann::json &p = j["thread_pool"];
        CHECK(p["threads"] == 4);
        CHECK(p["queue"] == 64);
        CHECK(p["queued"] == 3);
        CHECK(p["busy"] == 2);
        CHECK(p["rejected"] == 7);
    }
    SUBCASE("workers, each its own") {
        REQUIRE(j["workers"].is_array());
        REQUIRE(j["workers"].size() == 2);
        CHECK(j["workers"][0]["index"] == 0);
        CHECK(j["workers"][0]["connections"] == 4);
        CHECK(j["workers"][0]["requests"] == 30);
        CHECK(j["workers"][0]["bytes_in"] == 1000);
        CHECK(j["workers"][0]["bytes_out"] == 5000);
        CHECK(j["workers"][1]["index"] == 1);
        CHECK(j["workers"][1]["connections"] == 3);
        CHECK(j["workers"][1]["requests"] == 12);
        CHECK(j["workers"][1]["bytes_in"] == 234);
        CHECK(j["workers"][1]["bytes_out"] == 678);
    }
    SUBCASE("routes: active ones only, codes and a cumulative histogram") {
        REQUIRE(j["routes"].is_array());
        REQUIRE(j["routes"].size() == 2); // "/old" is retired
        const nlohmann::json *api = nullptr, *odd = nullptr;
        for (const nlohmann::json &r : j["routes"]) {
            CHECK(r["prefix"] != "/old");
            if (r["prefix"] == "/api")
                api = &r;
            if (r["prefix"] == "/p\"q")
                odd = &r;
        }
        REQUIRE(api != nullptr);
        CHECK((*api)["host"] == "*");
        CHECK((*api)["plugin"] == "echo");
        CHECK((*api)["requests"] == 4);
        CHECK((*api)["codes"] == nlohmann::json{{"200", 2}, {"404", 1}, {"503", 1}});
        const nlohmann::json &latency = (*api)["latency"];
        REQUIRE(latency["buckets"].size() == kLatencyBounds.size());
        for (size_t b = 0; b < kLatencyBounds.size(); ++b)
            CHECK(latency["buckets"][b].get<double>() == doctest::Approx(kLatencyBounds[b]));
        CHECK(latency["counts"] == nlohmann::json{1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3}); // +Inf: count
        CHECK(latency["count"] == 4);
        CHECK(latency["sum_seconds"].get<double>() == doctest::Approx(7.0423).epsilon(1e-9));

        REQUIRE(odd != nullptr); // quotes, backslashes and a newline survive the round trip
        CHECK((*odd)["host"] == "a\"b\\c\nd");
        CHECK((*odd)["plugin"] == "x\\y");
        CHECK((*odd)["codes"] == nlohmann::json{{"200", 1}});
        CHECK((*odd)["latency"]["counts"][0] == 0);
        CHECK((*odd)["latency"]["counts"][1] == 1);
    }
    SUBCASE("control characters in names are escaped") {
        ServerMetrics m(1);
        m.set_active_routes({m.route(std::string("h\x01\t", 3), "/", "p")});
        nlohmann::json k;
        REQUIRE_NOTHROW(k = nlohmann::json::parse(m.render_json()));
        CHECK(k["routes"][0]["host"] == std::string("h\x01\t", 3));
        CHECK(k["thread_pool"]["queued"] == 0); // no pool set: zeros, not a crash
        CHECK(k["routes"][0]["codes"] == nlohmann::json::object());
    }
}

TEST_CASE("metrics: render_prometheus follows the text format") {
    Fixture f;
    std::string text = f.metrics.render_prometheus();
    INFO(text);
    REQUIRE(!text.empty());
    CHECK(text.back() == '\n');

    // Every line is a HELP, a TYPE or a sample; every sample belongs to a family typed before it,
    // each family is typed once.
    std::map<std::string, std::string> types;
    std::set<std::string> helped;
    std::map<std::string, std::string> samples; // "name{labels}" -> value
    for (const std::string &line : lines_of(text)) {
        CAPTURE(line);
        std::smatch m;
        if (std::regex_match(line, m, kHelpLine)) {
            CHECK(helped.insert(m[1]).second);
        } else if (std::regex_match(line, m, kTypeLine)) {
            CHECK(types.emplace(m[1], m[2]).second);
            CHECK(helped.count(m[1]) == 1); // HELP comes first
        } else if (std::regex_match(line, m, kSampleLine)) {
            std::string name = m[1];
            std::string family = name;
            for (const char *suffix : {"_bucket", "_sum", "_count"}) {
                std::string s = suffix;
                if (!types.count(name) && name.size() > s.size() &&
                    name.compare(name.size() - s.size(), s.size(), s) == 0 &&
                    types.count(name.substr(0, name.size() - s.size())) &&
                    types[name.substr(0, name.size() - s.size())] == "histogram")
                    family = name.substr(0, name.size() - s.size());
            }
            CHECK(types.count(family) == 1);
            std::string key = line.substr(0, line.rfind(' '));
            CHECK(samples.emplace(key, m[2]).second); // no duplicate series
        } else {
            FAIL_CHECK("not a text-format line");
        }
    }

    SUBCASE("families and types") {
        CHECK(types["trellis_uptime_seconds"] == "gauge");
        CHECK(types["trellis_reloads_total"] == "counter");
        CHECK(types["trellis_connections_open"] == "gauge");
        CHECK(types["trellis_requests_total"] == "counter");
        CHECK(types["trellis_request_duration_seconds"] == "histogram");
        CHECK(types["trellis_thread_pool_rejected_total"] == "counter");
    }
    SUBCASE("values summed over the workers") {
        CHECK(samples["trellis_generation"] == "5");
        CHECK(samples["trellis_reloads_total"] == "4");
        CHECK(samples["trellis_reload_failures_total"] == "1");
        CHECK(samples["trellis_connections_open{transport=\"plain\"}"] == "4");
        CHECK(samples["trellis_connections_open{transport=\"tls\"}"] == "3");
        CHECK(samples["trellis_connections_idle"] == "5");
        CHECK(samples["trellis_connections_accepted_total"] == "15");
        CHECK(samples["trellis_connections_rejected_total"] == "3");
        CHECK(samples["trellis_bytes_received_total"] == "1234");
        CHECK(samples["trellis_bytes_sent_total"] == "5678");
        CHECK(samples["trellis_responses_total{class=\"2xx\"}"] == "35");
        CHECK(samples["trellis_responses_total{class=\"4xx\"}"] == "4");
        CHECK(samples["trellis_responses_total{class=\"5xx\"}"] == "3");
        CHECK(samples["trellis_worker_requests_total{worker=\"0\"}"] == "30");
        CHECK(samples["trellis_worker_requests_total{worker=\"1\"}"] == "12");
        CHECK(samples["trellis_thread_pool_threads"] == "4");
        CHECK(samples["trellis_thread_pool_queued"] == "3");
        CHECK(samples["trellis_thread_pool_busy"] == "2");
        CHECK(samples["trellis_thread_pool_rejected_total"] == "7");
    }
    SUBCASE("requests by route and code; retired routes left out") {
        const std::string api = "host=\"*\",route=\"/api\",plugin=\"echo\"";
        CHECK(samples["trellis_requests_total{" + api + ",code=\"200\"}"] == "2");
        CHECK(samples["trellis_requests_total{" + api + ",code=\"404\"}"] == "1");
        CHECK(samples["trellis_requests_total{" + api + ",code=\"503\"}"] == "1");
        CHECK(samples.count("trellis_requests_total{" + api + ",code=\"500\"}") == 0);
        CHECK_FALSE(contains(text, "/old"));
    }
    SUBCASE("a cumulative histogram ending at +Inf = count") {
        const std::string api = "host=\"*\",route=\"/api\",plugin=\"echo\"";
        auto bucket = [&](const std::string &le) {
            return samples["trellis_request_duration_seconds_bucket{" + api + ",le=\"" + le + "\"}"];
        };
        CHECK(bucket("0.0005") == "1");
        CHECK(bucket("0.001") == "1");
        CHECK(bucket("0.0025") == "2");
        CHECK(bucket("0.05") == "3");
        CHECK(bucket("5") == "3");
        CHECK(bucket("+Inf") == "4");
        CHECK(samples["trellis_request_duration_seconds_count{" + api + "}"] == "4");
        CHECK(std::stod(samples["trellis_request_duration_seconds_sum{" + api + "}"]) ==
              doctest::Approx(7.0423).epsilon(1e-9));
        size_t buckets = 0;
        for (const auto &[key, value] : samples)
            buckets += key.rfind("trellis_request_duration_seconds_bucket{" + api, 0) == 0;
        CHECK(buckets == kBuckets);
    }
    SUBCASE("label values escape quotes, backslashes and newlines") {
        const std::string odd = "host=\"a\\\"b\\\\c\\nd\",route=\"/p\\\"q\",plugin=\"x\\\\y\"";
        CHECK(samples["trellis_requests_total{" + odd + ",code=\"200\"}"] == "1");
        CHECK(samples["trellis_request_duration_seconds_bucket{" + odd + ",le=\"0.001\"}"] == "1");
        CHECK(samples["trellis_request_duration_seconds_count{" + odd + "}"] == "1");
    }
}
