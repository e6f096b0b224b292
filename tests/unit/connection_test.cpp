// The HTTP session (Connection) over a fake transport, with the real hello and echo plugins behind
// a real Router, on a real (but never blocking) libuv loop.
#include "http/http_date.hpp"
#include "http1/connection.hpp"
#include "mailbox.hpp"
#include "plugin/loader.hpp"
#include "router.hpp"
#include "worker_context.hpp"

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <arpa/inet.h>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstring>
#include <memory>
#include <string>
#include <unistd.h>
#include <vector>

using trellis::Connection;
using trellis::Limits;
using trellis::Transport;
using trellis::TransportEvents;
using trellis::WorkerContext;

namespace {

// ---------------------------------------------------------------------------------------------
// A transport that records everything.

class FakeTransport final : public Transport {
  public:
    TransportEvents *events = nullptr;
    std::string written; // every byte taken by write() and send_file(), in order
    int write_calls = 0; // including calls answered with -EAGAIN
    int sendfile_calls = 0;
    size_t budget = SIZE_MAX; // bytes still taken before -EAGAIN (SIZE_MAX: unlimited)
    int eagain_count = 0;
    bool reading = false;
    bool want_write = false;
    int want_write_on_calls = 0;
    bool shut = false; // shutdown_write() was called
    bool closed = false;
    size_t written_at_shutdown = 0;
    ssize_t fail_with = 0; // when set, write() and send_file() return this negative errno

    void hand_over(TransportEvents *e) override { events = e; }
    void start(TransportEvents *e) override {
        CHECK(events == nullptr); // once
        events = e;
        reading = true;
    }
    void set_reading(bool on) override { reading = on; }
    void want_writable(bool on) override {
        want_write = on;
        if (on)
            ++want_write_on_calls;
    }
    ssize_t write(const struct iovec *iov, int count) override {
        ++write_calls;
        CHECK_FALSE(closed);
        CHECK_FALSE(shut); // nothing may follow the FIN
        std::string data;
        for (int i = 0; i < count; ++i)
            data.append(static_cast<const char *>(iov[i].iov_base), iov[i].iov_len);
        return take(data);
    }
    ssize_t send_file(int fd, int64_t offset, size_t length) override {
        ++sendfile_calls;
        CHECK_FALSE(closed);
        std::string data(length, '\0');
        ssize_t n = pread(fd, data.data(), length, offset);
        if (n < 0)
            return -errno;
        data.resize(static_cast<size_t>(n));
        return take(data);
    }
    void shutdown_write() override {
        CHECK_FALSE(closed);
        shut = true;
        written_at_shutdown = written.size();
    }
    void close() override {
        CHECK_FALSE(closed); // once
        closed = true;
        reading = false;
    }
    const char *name() const override { return "fake"; }

  private:
    ssize_t take(const std::string &data) {
        if (fail_with)
            return fail_with;
        if (data.empty())
            return 0;
        if (budget == 0) {
            ++eagain_count;
            return -EAGAIN;
        }
        size_t n = std::min(data.size(), budget);
        written.append(data, 0, n);
        if (budget != SIZE_MAX)
            budget -= n;
        return static_cast<ssize_t>(n);
    }
};

// ---------------------------------------------------------------------------------------------
// Plugins and routes, loaded once for the whole run.

struct Plugins {
    trellis::PluginSet set;
    std::unique_ptr<trellis::Router> router;
    Plugins() {
        std::string dir = TRELLIS_PLUGIN_DIR;
        set.load({{"hello", dir + "/hello.so", "{}"}, {"echo", dir + "/echo.so", "{}"}}, ".");
        trellis::PluginInstance *hello = set.find("hello");
        trellis::PluginInstance *echo = set.find("echo");
        REQUIRE(hello != nullptr);
        REQUIRE(echo != nullptr);
        router = std::make_unique<trellis::Router>(std::vector<trellis::Route>{
            {"*", "/hello", hello},
            {"*", "/echo", echo},
        });
    }
};

Plugins &plugins() {
    static Plugins instance;
    return instance;
}

Limits small_limits() {
    Limits limits;
    limits.max_header_bytes = 1024;
    limits.max_body_bytes = 100;
    return limits;
}

// ---------------------------------------------------------------------------------------------
// One connection on its own loop and worker context.

struct Session {
    uv_loop_t loop;
    std::atomic<uint32_t> open_connections{1};
    std::unique_ptr<WorkerContext> context;
    FakeTransport fake;
    Connection *conn = nullptr; // valid while alive()
    bool finished = false;

    explicit Session(const Limits &limits = Limits{}) {
        REQUIRE(uv_loop_init(&loop) == 0);
        context = std::make_unique<WorkerContext>(&loop, 0, limits, nullptr, &open_connections);
        context->router = plugins().router.get();
        sockaddr_in peer{};
        peer.sin_family = AF_INET;
        peer.sin_port = htons(40000);
        inet_pton(AF_INET, "127.0.0.1", &peer.sin_addr);
        conn = Connection::start(*context, &fake, reinterpret_cast<const sockaddr *>(&peer));
        REQUIRE(conn != nullptr);
        CHECK(fake.events == conn);
    }
    Session(const Session &) = delete;
    ~Session() { finish(); }

    bool alive() const { return !fake.closed; }

    // Delivers `bytes` as one read (more only if the offered buffer is smaller), the way a transport
    // does: into the span from on_read_buffer(), then on_read(n). Returns how many were taken.
    size_t read(std::string_view bytes) {
        size_t fed = 0;
        while (fed < bytes.size() && alive() && fake.reading) {
            std::span<char> span = conn->on_read_buffer();
            if (span.empty())
                break;
            size_t n = std::min(span.size(), bytes.size() - fed);
            memcpy(span.data(), bytes.data() + fed, n);
            conn->on_read(n);
            fed += n;
        }
        return fed;
    }
    void read_all(std::string_view bytes) { CHECK(read(bytes) == bytes.size()); }

    void eof() {
        REQUIRE(alive());
        conn->on_read_end(0);
    }

    // Which timeout list the connection is on (-1: none).
    int timeout_kind() const {
        if (!alive())
            return -1;
        const trellis::TimeoutNode *node = conn;
        for (int i = 0; i < trellis::Timeouts::kLists; ++i)
            if (node->list == &context->timeout_list(static_cast<trellis::TimeoutKind>(i)))
                return i;
        return -1;
    }

    // Runs the loop for `ms` (the worker's own timers do not keep it alive).
    void run_for(uint64_t ms) {
        uv_timer_t stop;
        uv_timer_init(&loop, &stop);
        uv_timer_start(
            &stop, [](uv_timer_t *) {}, ms, 0);
        uv_run(&loop, UV_RUN_DEFAULT);
        uv_close(reinterpret_cast<uv_handle_t *>(&stop), nullptr);
        uv_run(&loop, UV_RUN_ONCE);
    }

    // Ends the connection if still open and checks the loop closes cleanly.
    void finish() {
        if (finished)
            return;
        finished = true;
        if (alive())
            conn->abort();
        CHECK(fake.closed);
        CHECK(context->connections == 0);
        context->timeouts.close();
        context->access_log.close();
        context->mailbox->close();
        uv_run(&loop, UV_RUN_DEFAULT);
        CHECK(uv_loop_close(&loop) == 0);
    }
};

// ---------------------------------------------------------------------------------------------
// Reading responses back.

struct Response {
    int status = 0;
    std::string status_line;
    std::vector<std::pair<std::string, std::string>> headers;
    std::string body;

    int count(std::string_view name) const {
        int n = 0;
        for (const auto &[key, value] : headers)
            n += trellis::iequals(key, name) ? 1 : 0;
        return n;
    }
    std::string header(std::string_view name) const {
        for (const auto &[key, value] : headers)
            if (trellis::iequals(key, name))
                return value;
        return "<none>";
    }
    nlohmann::json json() const { return nlohmann::json::parse(body); }
};

// Splits a byte stream into responses; bodies are framed by Content-Length (none for 1xx, 204,
// 304, or HEAD when `head_only`). Whatever does not form a whole response is left in *rest.
std::vector<Response> parse_responses(const std::string &data, std::string *rest = nullptr,
                                      bool head_only = false) {
    std::vector<Response> out;
    size_t pos = 0;
    while (pos < data.size()) {
        size_t end = data.find("\r\n\r\n", pos);
        if (end == std::string::npos)
            break;
        Response r;
        std::string head = data.substr(pos, end - pos);
        size_t line_end = head.find("\r\n");
        r.status_line = head.substr(0, line_end);
        if (r.status_line.size() < 12 || r.status_line.compare(0, 9, "HTTP/1.1 ") != 0)
            break;
        r.status = std::stoi(r.status_line.substr(9, 3));
        size_t at = line_end == std::string::npos ? head.size() : line_end + 2;
        while (at < head.size()) {
            size_t next = head.find("\r\n", at);
            std::string line = head.substr(at, next == std::string::npos ? std::string::npos : next - at);
            size_t colon = line.find(": ");
            r.headers.emplace_back(line.substr(0, colon),
                                   colon == std::string::npos ? "" : line.substr(colon + 2));
            at = next == std::string::npos ? head.size() : next + 2;
        }
        size_t body_start = end + 4;
        size_t length = 0;
        bool bodiless = r.status < 200 || r.status == 204 || r.status == 304 || head_only;
        if (!bodiless && r.count("content-length"))
            length = std::stoul(r.header("content-length"));
        if (body_start + length > data.size())
            break;
        r.body = data.substr(body_start, length);
        out.push_back(std::move(r));
        pos = body_start + length;
    }
    if (rest)
        *rest = data.substr(pos);
    else
        CHECK_MESSAGE(pos == data.size(), "unparsed output: " << data.substr(pos));
    return out;
}

std::vector<Response> responses(const Session &s) {
    return parse_responses(s.fake.written);
}

std::string get(std::string_view path, std::string_view extra = "") {
    return "GET " + std::string(path) + " HTTP/1.1\r\nHost: example.com\r\n" + std::string(extra) + "\r\n";
}

bool contains(const std::string &haystack, std::string_view needle) {
    return haystack.find(needle) != std::string::npos;
}

// Three pipelined requests: a GET, a POST with Content-Length, a chunked POST.
const std::string kPipeline =
    "GET /echo/one?x=1 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: unit\r\n\r\n"
    "POST /echo/two HTTP/1.1\r\nHost: Example.com:8080\r\nContent-Type: text/plain\r\n"
    "Content-Length: 11\r\nX-Long-Header: 0123456789abcdefghijklmnopqrstuvwxyz\r\n\r\nhello world"
    "POST /echo/three HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\nX-After: yes\r\n\r\n"
    "5\r\nabcde\r\n3;ext=1\r\nfgh\r\n0\r\n\r\n";

struct Outcome {
    std::vector<int> statuses;
    std::vector<std::string> bodies;
    bool operator==(const Outcome &) const = default;
};

// What the connection answers when `input` arrives cut at `cuts` (each a read boundary).
Outcome outcome_of(const std::string &input, const std::vector<size_t> &cuts) {
    Session s;
    size_t from = 0;
    for (size_t cut : cuts) {
        s.read_all(std::string_view(input).substr(from, cut - from));
        from = cut;
    }
    s.read_all(std::string_view(input).substr(from));
    Outcome o;
    for (const Response &r : responses(s)) {
        o.statuses.push_back(r.status);
        o.bodies.push_back(r.body);
    }
    return o;
}

std::string describe(const Outcome &o) {
    std::string text;
    for (size_t i = 0; i < o.statuses.size(); ++i)
        text += std::to_string(o.statuses[i]) + " " + o.bodies[i];
    return text;
}

} // namespace

// =============================================================================================

TEST_CASE("connection: a single GET /hello") {
    Session s;
    s.read_all("GET /hello HTTP/1.1\r\nHost: example.com\r\n\r\n");
    std::vector<Response> rs = responses(s);
    REQUIRE(rs.size() == 1);
    const Response &r = rs[0];
    CHECK(r.status_line == "HTTP/1.1 200 OK");
    CHECK(r.header("Content-Length") == "13");
    CHECK(r.body == "Hello, World!");
    CHECK(r.header("Content-Type") == "text/plain");
    CHECK(r.header("Server") == "trellis");
    CHECK(r.count("Date") == 1);
    std::string date = r.header("Date");
    CHECK(date.size() == trellis::kHttpDateLength);
    time_t when = trellis::parse_http_date(date);
    CHECK(when != -1);
    CHECK(std::abs(static_cast<long>(when - time(nullptr))) <= 2);
    CHECK(r.count("Connection") == 0); // HTTP/1.1 keep-alive is implicit
    CHECK(s.fake.write_calls == 1);
    CHECK(s.alive());
    CHECK_FALSE(s.fake.shut);
    CHECK(s.fake.reading);
    CHECK(s.timeout_kind() == trellis::kKeepaliveTimeout);
    CHECK(s.context->stats.requests.get() == 1);
    CHECK(s.context->stats.responses_by_class[2].get() == 1);

    SUBCASE("the connection serves a second request") {
        s.read_all("HEAD /hello HTTP/1.1\r\nHost: example.com\r\n\r\n");
        std::string rest;
        std::vector<Response> all = parse_responses(s.fake.written, &rest);
        REQUIRE(all.size() == 1); // the HEAD response has no body; parse it on its own
        std::vector<Response> head =
            parse_responses(s.fake.written.substr(s.fake.written.find("Hello, World!") + 13), nullptr, true);
        REQUIRE(head.size() == 1);
        CHECK(head[0].status == 200);
        CHECK(head[0].header("Content-Length") == "13");
        CHECK(head[0].body.empty());
        CHECK(s.fake.write_calls == 2);
    }
    SUBCASE("an unrouted path is 404") {
        s.read_all(get("/nothing/here"));
        std::vector<Response> all = responses(s);
        REQUIRE(all.size() == 2);
        CHECK(all[1].status == 404);
        CHECK(all[1].body == "404 Not Found\n");
        CHECK(s.alive());
    }
}

TEST_CASE("connection: echo sees the request as sent") {
    Session s;
    s.read_all("GET /echo/a/b?q=1&r=2 HTTP/1.1\r\nHost: WWW.Example.COM:8080\r\nX-Test: v\r\n\r\n");
    std::vector<Response> rs = responses(s);
    REQUIRE(rs.size() == 1);
    CHECK(rs[0].status == 200);
    CHECK(rs[0].header("Content-Type") == "application/json");
    nlohmann::json j = rs[0].json();
    CHECK(j["method"] == "GET");
    CHECK(j["target"] == "/echo/a/b?q=1&r=2");
    CHECK(j["path"] == "/echo/a/b");
    CHECK(j["query"] == "q=1&r=2");
    CHECK(j["version"] == "HTTP/1.1");
    CHECK(j["host"] == "www.example.com");
    CHECK(j["headers"] == nlohmann::json::parse(R"([["Host", "WWW.Example.COM:8080"], ["X-Test", "v"]])"));
    CHECK(j["body"] == "");
    CHECK(j["peer"] == "127.0.0.1:40000");
    CHECK(j["route_prefix"] == "/echo");
    CHECK(j["path_below"] == "/a/b");
}

TEST_CASE("connection: 16 pipelined GETs in one read") {
    Session s;
    std::string input;
    for (int i = 0; i < 16; ++i)
        input += get("/echo/req" + std::to_string(i));
    s.read_all(input);
    std::vector<Response> rs = responses(s);
    REQUIRE(rs.size() == 16);
    for (int i = 0; i < 16; ++i) {
        CAPTURE(i);
        CHECK(rs[static_cast<size_t>(i)].status == 200);
        CHECK(rs[static_cast<size_t>(i)].json()["path"] == "/echo/req" + std::to_string(i));
    }
    CHECK(s.fake.write_calls == 1); // the whole batch leaves in one write
    CHECK(s.context->stats.requests.get() == 16);
    CHECK(s.alive());
    CHECK(s.timeout_kind() == trellis::kKeepaliveTimeout);
}

// Cuts between a head and the end of its body once corrupted the head; see the regression test
// "connection: a body arriving after its head keeps the head intact" below.
TEST_CASE("connection: pipelined input parses the same however it is cut") {
    const Outcome reference = outcome_of(kPipeline, {});
    REQUIRE(reference.statuses == std::vector<int>{200, 200, 200});
    {
        nlohmann::json one = nlohmann::json::parse(reference.bodies[0]);
        nlohmann::json two = nlohmann::json::parse(reference.bodies[1]);
        nlohmann::json three = nlohmann::json::parse(reference.bodies[2]);
        CHECK(one["path"] == "/echo/one");
        CHECK(one["query"] == "x=1");
        CHECK(two["method"] == "POST");
        CHECK(two["body"] == "hello world");
        CHECK(two["host"] == "example.com");
        CHECK(two["headers"].size() == 4);
        CHECK(two["headers"][3][1] == "0123456789abcdefghijklmnopqrstuvwxyz");
        CHECK(three["body"] == "abcdefgh");
        CHECK(three["headers"][2] == nlohmann::json::parse(R"(["X-After", "yes"])"));
    }

    SUBCASE("two reads, cut at every offset") {
        std::vector<size_t> bad;
        std::string first_bad;
        for (size_t cut = 1; cut < kPipeline.size(); ++cut) {
            Outcome o = outcome_of(kPipeline, {cut});
            if (!(o == reference)) {
                if (bad.empty())
                    first_bad = describe(o);
                bad.push_back(cut);
            }
        }
        INFO("offsets that differ: " << doctest::toString(bad.size()) << " of " << kPipeline.size() - 1
                                     << "; first at " << (bad.empty() ? 0 : bad[0]) << ", giving:\n"
                                     << first_bad << "\nexpected:\n"
                                     << describe(reference));
        CHECK(bad.empty());
    }
    SUBCASE("one byte per read") {
        std::vector<size_t> cuts;
        for (size_t cut = 1; cut < kPipeline.size(); ++cut)
            cuts.push_back(cut);
        Outcome o = outcome_of(kPipeline, cuts);
        INFO("got:\n" << describe(o) << "\nexpected:\n" << describe(reference));
        CHECK(o == reference);
    }
    SUBCASE("three reads: the head of the POST cut, then its body cut") {
        // The second request's head and body boundaries within kPipeline.
        size_t head_start = kPipeline.find("POST /echo/two");
        size_t body_start = kPipeline.find("hello world");
        size_t body_end = body_start + 11;
        std::vector<std::pair<size_t, size_t>> bad;
        std::string first_bad;
        for (size_t a = head_start + 1; a < body_start; a += 3) {
            for (size_t b = std::max(a + 1, body_start); b < body_end; ++b) {
                Outcome o = outcome_of(kPipeline, {a, b});
                if (!(o == reference)) {
                    if (bad.empty())
                        first_bad = describe(o);
                    bad.emplace_back(a, b);
                }
            }
        }
        INFO("cut pairs that differ: " << bad.size() << "; first at (" << (bad.empty() ? 0 : bad[0].first)
                                       << ", " << (bad.empty() ? 0 : bad[0].second) << "), giving:\n"
                                       << first_bad << "\nexpected:\n"
                                       << describe(reference));
        CHECK(bad.empty());
    }
}

// ---------------------------------------------------------------------------------------------
// Regression: headers_complete() recorded where the current llhttp_execute() call started as the
// end of the head, so compacting the buffer while the body streamed in dropped the rest of the
// head and later reads overwrote it (method, target and headers then read as body bytes).
TEST_CASE("connection: a body arriving after its head keeps the head intact") {
    Session s;
    const std::string body(60, 'Z'); // long enough to overwrite the request line and the headers
    s.read_all(
        "POST /echo/upload HTTP/1.1\r\nHost: example.com\r\nContent-Length: 60\r\nX-Token: abc\r\n\r\n");
    s.read_all(body);
    std::vector<Response> rs = responses(s);
    REQUIRE(rs.size() == 1);
    REQUIRE(rs[0].status == 200);
    nlohmann::json j = rs[0].json();
    CHECK(j["body"] == body);           // the body itself is copied out, so it survives
    CHECK(j["path"] == "/echo/upload"); // so do path and host (copies made at head time)
    CHECK(j["host"] == "example.com");
    // These read the head's bytes in the read buffer, which the body has overwritten:
    CHECK(j["method"] == "POST");         // currently "ZZZZ"
    CHECK(j["target"] == "/echo/upload"); // currently "ZZZZZZZZZZZZ"
    CHECK(j["headers"] == nlohmann::json::parse(
                              R"([["Host", "example.com"], ["Content-Length", "60"], ["X-Token", "abc"]])"));

    SUBCASE("the same with Expect: 100-continue, where the body always comes later") {
        Session t;
        t.read_all("PUT /echo/x HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n");
        t.read_all("data");
        std::vector<Response> all = responses(t);
        REQUIRE(all.size() == 2);
        CHECK(all[1].json()["method"] == "PUT");
        CHECK(all[1].json()["target"] == "/echo/x");
    }
}

TEST_CASE("connection: chunked bodies") {
    Session s;
    s.read_all("POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
               "3\r\nabc\r\nA;name=value\r\n0123456789\r\n0\r\nX-Trailer: t\r\n\r\n" +
               get("/echo/after"));
    std::vector<Response> rs = responses(s);
    REQUIRE(rs.size() == 2);
    CHECK(rs[0].status == 200);
    CHECK(rs[0].json()["body"] == "abc0123456789");
    CHECK(rs[1].json()["path"] == "/echo/after");
    CHECK(s.alive());
}

TEST_CASE("connection: requests refused with an error status") {
    struct Case {
        const char *what;
        std::string input;
        int status;
    };
    const std::vector<Case> cases = {
        {"malformed request line", "\x01\x02\x03 garbage\r\n\r\n", 400},
        {"lowercase garbage", "garbage\r\n\r\n", 400},
        {"HTTP/1.1 without Host", "GET /echo HTTP/1.1\r\n\r\n", 400},
        {"two Host headers", "GET /echo HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400},
        {"obs-fold", "GET /echo HTTP/1.1\r\nHost: a\r\nX-Folded: one\r\n two\r\n\r\n", 400},
        {"TE gzip, chunked",
         "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501},
        {"TE gzip", "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 400},
        {"TE chunked, chunked",
         "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", 400},
        {"TE with HTTP/1.0", "POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
        {"HTTP/2.0", "GET /echo HTTP/2.0\r\nHost: a\r\n\r\n", 505},
        {"HTTP/3.0", "GET /echo HTTP/3.0\r\nHost: a\r\n\r\n", 505}, // HTTP/1.2 is 1.1 (test_45)
        {"too-long target", "GET /echo/" + std::string(1100, 'x') + " HTTP/1.1\r\nHost: a\r\n\r\n", 414},
        {"header over max_header_bytes",
         "GET /echo HTTP/1.1\r\nHost: a\r\nX-Big: " + std::string(1100, 'v') + "\r\n\r\n", 431},
        {"head over max_header_bytes in many headers",
         [] {
             std::string s = "GET /echo HTTP/1.1\r\nHost: a\r\n";
             for (int i = 0; i < 60; ++i)
                 s += "X-H" + std::to_string(i) + ": 0123456789\r\n";
             return s + "\r\n";
         }(),
         431},
        {"more than 128 headers",
         [] {
             std::string s = "GET /echo HTTP/1.1\r\nHost: a\r\n";
             for (int i = 0; i < 130; ++i)
                 s += "A: b\r\n";
             return s + "\r\n";
         }(),
         431},
        {"Content-Length over max_body_bytes",
         "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 101\r\n\r\n", 413},
        {"chunked body over max_body_bytes",
         "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n64\r\n" +
             std::string(100, 'b') + "\r\n1\r\nc\r\n0\r\n\r\n",
         413},
        {"CONNECT", "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", 405},
        {"unknown method", "BREW /pot HTTP/1.1\r\nHost: a\r\n\r\n", 501},
        {"Expect other than 100-continue", "GET /echo HTTP/1.1\r\nHost: a\r\nExpect: tea\r\n\r\n", 417},
        {"path above the root", "GET /echo/../../etc/passwd HTTP/1.1\r\nHost: a\r\n\r\n", 400},
        {"encoded slash", "GET /echo/a%2fb HTTP/1.1\r\nHost: a\r\n\r\n", 400},
        {"bad Host", "GET /echo HTTP/1.1\r\nHost: a b\r\n\r\n", 400},
        {"Host with a non-numeric port", "GET /echo HTTP/1.1\r\nHost: a:http\r\n\r\n", 400},
        {"target not starting with /", "GET echo HTTP/1.1\r\nHost: a\r\n\r\n", 400},
        {"conflicting Content-Length",
         "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400},
        {"Content-Length and chunked",
         "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
         400},
    };
    for (const Case &c : cases) {
        SUBCASE(c.what) {
            Session s(small_limits());
            s.read(c.input);
            std::vector<Response> rs = responses(s);
            REQUIRE(rs.size() == 1);
            CHECK(rs[0].status == c.status);
            CHECK(rs[0].header("Connection") == "close");
            CHECK(rs[0].body ==
                  std::to_string(c.status) + " " + std::string(rs[0].status_line.substr(13)) + "\n");
            CHECK(rs[0].header("Content-Type") == "text/plain; charset=utf-8");
            // Lingering close: FIN after the response, the socket stays open to drain input.
            CHECK(s.fake.shut);
            CHECK(s.fake.written_at_shutdown == s.fake.written.size());
            CHECK(s.alive());
            CHECK(s.timeout_kind() == trellis::kLingerTimeout);
            if (c.status == 405)
                CHECK(rs[0].header("Allow") == "GET, HEAD, POST, PUT, DELETE, OPTIONS");
        }
    }
}

TEST_CASE("connection: lingering after an error") {
    Session s(small_limits());
    s.read_all("garbage\r\n\r\n");
    REQUIRE(s.fake.shut);
    size_t written = s.fake.written.size();
    // Whatever the client still sends is read and dropped, never parsed.
    s.read_all(get("/hello"));
    s.read_all(get("/hello"));
    CHECK(s.fake.written.size() == written);
    CHECK(s.alive());
    SUBCASE("the client's EOF ends it") {
        s.eof();
        CHECK_FALSE(s.alive());
    }
    SUBCASE("the linger timeout ends it") {
        s.context->timeout_list(trellis::kLingerTimeout).set_duration(10);
        s.context->timeouts.start(*s.conn, s.context->timeout_list(trellis::kLingerTimeout));
        s.run_for(50);
        CHECK_FALSE(s.alive());
    }
}

TEST_CASE("connection: Expect: 100-continue") {
    Session s;
    s.read_all("POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
    CHECK(s.fake.written == "HTTP/1.1 100 Continue\r\n\r\n");
    CHECK(s.timeout_kind() == trellis::kBodyTimeout);
    s.read_all("hello");
    std::vector<Response> rs = responses(s);
    REQUIRE(rs.size() == 2);
    CHECK(rs[0].status == 100);
    CHECK(rs[1].status == 200);
    CHECK(rs[1].json()["body"] == "hello");

    SUBCASE("no 100 Continue without a body") {
        s.read_all("GET /hello HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n");
        std::vector<Response> all = responses(s);
        REQUIRE(all.size() == 3);
        CHECK(all[2].status == 200);
    }
    SUBCASE("no 100 Continue when the body is too large: 413 instead") {
        Session t(small_limits());
        t.read_all("POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\nExpect: 100-continue\r\n\r\n");
        std::vector<Response> all = responses(t);
        REQUIRE(all.size() == 1);
        CHECK(all[0].status == 413);
        CHECK_FALSE(contains(t.fake.written, "100 Continue"));
    }
}

TEST_CASE("connection: an error in the middle of a pipeline") {
    Session s;
    s.read_all(get("/echo/first") + "garbage\r\n\r\n" + get("/echo/third"));
    std::vector<Response> rs = responses(s);
    REQUIRE(rs.size() == 2);
    CHECK(rs[0].status == 200);
    CHECK(rs[0].json()["path"] == "/echo/first");
    CHECK(rs[0].count("Connection") == 0); // it was answered before the garbage was seen
    CHECK(rs[1].status == 400);
    CHECK(rs[1].header("Connection") == "close");
    CHECK_FALSE(contains(s.fake.written, "/echo/third"));
    CHECK(s.fake.shut);
    CHECK(s.context->stats.responses_by_class[2].get() == 1);
    CHECK(s.context->stats.responses_by_class[4].get() == 1);
}

TEST_CASE("connection: Connection header and HTTP versions") {
    SUBCASE("Connection: close") {
        Session s;
        s.read_all(get("/hello", "Connection: close\r\n") + get("/hello"));
        std::vector<Response> rs = responses(s);
        REQUIRE(rs.size() == 1); // nothing after the request that asked to close is answered
        CHECK(rs[0].status == 200);
        CHECK(rs[0].header("Connection") == "close");
        CHECK(s.fake.shut);
        CHECK(s.alive()); // lingering until the peer closes
        s.eof();
        CHECK_FALSE(s.alive());
    }
    SUBCASE("Connection: close with nothing after it closes at once, without lingering") {
        Session s;
        s.read_all(get("/hello", "Connection: close\r\n"));
        std::vector<Response> rs = responses(s);
        REQUIRE(rs.size() == 1);
        CHECK(rs[0].header("Connection") == "close");
        CHECK_FALSE(s.fake.shut);
        CHECK_FALSE(s.alive());
    }
    SUBCASE("HTTP/1.0 closes by default") {
        Session s;
        s.read_all("GET /echo HTTP/1.0\r\n\r\n");
        std::vector<Response> rs = responses(s);
        REQUIRE(rs.size() == 1);
        CHECK(rs[0].status_line == "HTTP/1.1 200 OK");
        CHECK(rs[0].header("Connection") == "close");
        CHECK(rs[0].json()["version"] == "HTTP/1.0");
        CHECK(rs[0].json()["host"] == "");
        CHECK_FALSE(s.fake.shut); // nothing came after it: closed at once, no lingering
        CHECK_FALSE(s.alive());
    }
    SUBCASE("HTTP/1.0 with Connection: keep-alive stays open") {
        Session s;
        s.read_all("GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        std::vector<Response> rs = responses(s);
        REQUIRE(rs.size() == 1);
        CHECK(rs[0].header("Connection") == "keep-alive");
        CHECK_FALSE(s.fake.shut);
        CHECK(s.timeout_kind() == trellis::kKeepaliveTimeout);
        s.read_all("GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        CHECK(responses(s).size() == 2);
        CHECK(s.alive());
    }
    SUBCASE("draining: every response says close") {
        Session s;
        s.context->draining = true;
        s.read_all(get("/hello"));
        std::vector<Response> rs = responses(s);
        REQUIRE(rs.size() == 1);
        CHECK(rs[0].header("Connection") == "close");
        CHECK(s.fake.shut);
    }
}

// The worker sets context.draining and then calls begin_drain() on every connection.
TEST_CASE("connection: begin_drain (server shutdown)") {
    Session s;
    SUBCASE("an idle connection stays for the worker to close, and a request on it gets close") {
        s.read_all(get("/hello"));
        s.context->draining = true;
        s.conn->begin_drain();
        REQUIRE(s.alive()); // Worker::check_drain closes idle ones once nothing else is left
        CHECK(s.conn->idle());
        s.read_all(get("/hello"));
        std::vector<Response> rs = responses(s);
        REQUIRE(rs.size() == 2);
        CHECK(rs[1].status == 200);
        CHECK(rs[1].header("Connection") == "close");
        CHECK(s.fake.shut);
    }
    SUBCASE("a response being written finishes, then the connection closes") {
        s.fake.budget = 0;
        s.read_all(get("/hello") + get("/hello"));
        s.context->draining = true;
        s.conn->begin_drain();
        CHECK(s.alive());
        s.fake.budget = SIZE_MAX;
        s.conn->on_writable();
        std::vector<Response> rs = responses(s);
        REQUIRE(rs.size() == 2); // both were answered before the drain began
        CHECK(rs[1].body == "Hello, World!");
        CHECK(s.fake.shut);
    }
    SUBCASE("a request half received is answered with Connection: close") {
        s.read_all("GET /hello HTTP/1.1\r\nHost: a\r\n");
        s.context->draining = true;
        s.conn->begin_drain();
        CHECK(s.fake.written.empty());
        REQUIRE(s.alive());
        s.read_all("\r\n" + get("/hello")); // a request pipelined behind it is not run
        std::vector<Response> rs = responses(s);
        REQUIRE(rs.size() == 1);
        CHECK(rs[0].status == 200);
        CHECK(rs[0].header("Connection") == "close");
        CHECK(s.fake.shut);
    }
    SUBCASE("a connection that has sent nothing yet is idle, for the worker to close") {
        s.context->draining = true;
        s.conn->begin_drain();
        REQUIRE(s.alive());
        CHECK(s.conn->idle());
        s.conn->abort(); // what Worker::check_drain does
        CHECK_FALSE(s.alive());
    }
}

TEST_CASE("connection: backpressure") {
    Session s;
    s.fake.budget = 10;
    s.read_all(get("/hello"));
    CHECK(s.fake.written.size() == 10);
    CHECK(s.fake.want_write);
    CHECK(s.fake.want_write_on_calls == 1);
    CHECK(s.fake.eagain_count == 1);
    CHECK(s.timeout_kind() == trellis::kSendTimeout);
    // While the response waits, the connection takes no more input.
    CHECK(s.conn->on_read_buffer().empty());

    SUBCASE("on_writable completes the response") {
        s.fake.budget = SIZE_MAX;
        s.conn->on_writable();
        std::vector<Response> rs = responses(s);
        REQUIRE(rs.size() == 1);
        CHECK(rs[0].status == 200);
        CHECK(rs[0].body == "Hello, World!");
        CHECK_FALSE(s.fake.want_write);
        CHECK(s.alive());
        CHECK(s.timeout_kind() == trellis::kKeepaliveTimeout);
        s.read_all(get("/hello")); // and reads again
        CHECK(responses(s).size() == 2);
    }
    SUBCASE("a few bytes at a time") {
        for (int i = 0; i < 100 && s.fake.want_write; ++i) {
            s.fake.budget = 7;
            s.conn->on_writable();
        }
        std::vector<Response> rs = responses(s);
        REQUIRE(rs.size() == 1);
        CHECK(rs[0].body == "Hello, World!");
        CHECK_FALSE(s.fake.want_write);
    }
    SUBCASE("pipelined input waits for the output, then is answered") {
        Session t;
        t.fake.budget = 10;
        t.read_all(get("/echo/1") + get("/echo/2"));
        CHECK(t.fake.want_write);
        t.fake.budget = SIZE_MAX;
        t.conn->on_writable();
        std::vector<Response> rs = responses(t);
        REQUIRE(rs.size() == 2);
        CHECK(rs[0].json()["path"] == "/echo/1");
        CHECK(rs[1].json()["path"] == "/echo/2");
    }
    SUBCASE("EOF while blocked: the response is finished, then the connection closes") {
        s.eof();
        CHECK(s.alive());
        s.fake.budget = SIZE_MAX;
        s.conn->on_writable();
        CHECK(responses(s).size() == 1);
        CHECK_FALSE(s.alive());
        CHECK_FALSE(s.fake.shut); // the peer is gone: no lingering
    }
    SUBCASE("a write error closes") {
        s.fake.fail_with = -EPIPE;
        s.conn->on_writable();
        CHECK_FALSE(s.alive());
    }
}

TEST_CASE("connection: EOF") {
    SUBCASE("on an idle connection closes it") {
        Session s;
        CHECK(s.timeout_kind() == trellis::kKeepaliveTimeout);
        s.eof();
        CHECK_FALSE(s.alive());
        CHECK(s.fake.written.empty());
        CHECK_FALSE(s.fake.shut);
    }
    SUBCASE("after an answered request closes it") {
        Session s;
        s.read_all(get("/hello"));
        s.eof();
        CHECK_FALSE(s.alive());
        CHECK(responses(s).size() == 1);
    }
    SUBCASE("in the middle of a request drops it") {
        Session s;
        s.read_all("GET /hello HTTP/1.1\r\nHo");
        CHECK(s.timeout_kind() == trellis::kHeaderTimeout);
        s.eof();
        CHECK_FALSE(s.alive());
        CHECK(s.fake.written.empty());
    }
    SUBCASE("a read error closes it") {
        Session s;
        s.read_all("GET /hello HTTP/1.1\r\n");
        s.conn->on_read_end(-ECONNRESET);
        CHECK_FALSE(s.alive());
        CHECK(s.fake.written.empty());
    }
}

TEST_CASE("connection: timeouts follow the state and expire") {
    Limits limits;
    limits.header_timeout_ms = 15;
    limits.body_timeout_ms = 15;
    limits.keepalive_timeout_ms = 15;

    SUBCASE("a head that never completes gets 408") {
        Session s(limits);
        s.read_all("GET /hello HTTP/1.1\r\nHost: a\r\n");
        CHECK(s.timeout_kind() == trellis::kHeaderTimeout);
        s.run_for(60);
        std::vector<Response> rs = responses(s);
        REQUIRE(rs.size() == 1);
        CHECK(rs[0].status == 408);
        CHECK(rs[0].header("Connection") == "close");
    }
    SUBCASE("a body that stops arriving gets 408") {
        Session s(limits);
        s.read_all("POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc");
        CHECK(s.timeout_kind() == trellis::kBodyTimeout);
        s.run_for(60);
        std::vector<Response> rs = responses(s);
        REQUIRE(rs.size() == 1);
        CHECK(rs[0].status == 408);
    }
    SUBCASE("an idle keep-alive connection closes silently") {
        Session s(limits);
        s.read_all(get("/hello"));
        CHECK(s.timeout_kind() == trellis::kKeepaliveTimeout);
        s.run_for(60);
        CHECK_FALSE(s.alive());
        CHECK(responses(s).size() == 1);
    }
}
