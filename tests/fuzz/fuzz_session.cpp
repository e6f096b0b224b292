// libFuzzer harness: the HTTP/1 session (trellis::Connection) fed arbitrary bytes over an in-memory
// transport, on a real libuv loop with a WorkerContext, as tests/unit/connection_test.cpp drives it.
//
// Input: 4 control bytes, then the bytes the client sends.
//   [0] flags: bit 0 EOF after the input, bit 1 small limits (1 KiB head, 64-byte body),
//       bit 2 the worker starts draining (shutdown) somewhere in the input, bits 3-4 access log
//       (0/3 off, 1 combined, 2 JSON, written to /dev/null), bit 5 a reset instead of an EOF,
//       bit 6 the connection's current timeout expires once somewhere in the input (as the
//       worker's timer would fire it: 408, or a close), bit 7 the listener redirects plain
//       requests to https (308; "same-host" or a fixed URL by the seed's parity)
//   [1] read sizes: 0 = as much as the connection's buffer takes, else 1..[1] bytes per read
//   [2] writes: bits 0-1 the budget a write may take (0 unlimited; 1 1..16 bytes; 2 1..1024;
//       3 nothing before the first on_writable, then 1..256), bits 2-7 how often the client reads
//       (on_writable) between two of its sends
//   [3] seed of the generator that picks the sizes
// So partial reads, pipelining at every boundary and backpressure (responses left unwritten while
// more requests arrive) are all explored; the seed corpus (corpus/session/) adds the HTTP itself.
//
// Routes, on in-process plugins (no dlopen):
//   *           /echo       echo: 200 (or ?status=NNN) with the request body, or its path when it
//                           has none ('H' written as 'h');
//                           /echo/stream streams it (response_start/write/end); /echo/fail returns
//                           TRELLIS_ERROR; /echo/silent returns OK without answering; ?hn=&hv= add
//                           a response header (the host must refuse CR, LF, NUL)
//   example.com /echo       decline (the "*" route then answers)
//   *           /d          decline, then / declines too: 404
//   *           /           decline: 404
//
// Invariants checked after every input (abort() on failure, so libFuzzer reports it):
//   - the transport is never written after close() or after shutdown_write(), nor closed twice;
//   - the output is a sequence of whole responses, each "HTTP/1.1 NNN ..." with a head of CRLF
//     lines without stray CR, LF or NUL, framed by its Content-Length (0 bytes for HEAD), 1xx, 204
//     and 304 without a body (a reset, or a send timeout, may cut the last one short);
//   - nothing follows a response that says "Connection: close";
//   - an open connection is always on one of the worker's timeout lists (or nothing would ever
//     close it);
//   - there are no more final responses than request heads the input could hold (an empty line
//     each) plus one error answer;
//   - after abort() the worker has no connection left and the loop closes (uv_loop_close == 0).
// FUZZ_SESSION_PRINT=1 in the environment prints each input's output (to see what a file does).
#include "http1/connection.hpp"
#include "log/access_log.hpp"
#include "log/log.hpp"
#include "mailbox.hpp"
#include "plugin/loader.hpp"
#include "router.hpp"
#include "worker_context.hpp"

#include <trellis/plugin.h>

#include <algorithm>
#include <arpa/inet.h>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <memory>
#include <string>
#include <string_view>
#include <unistd.h>
#include <uv.h>
#include <vector>

using trellis::Connection;
using trellis::Transport;
using trellis::TransportEvents;
using trellis::WorkerContext;

namespace {

[[noreturn]] void fail(const char *what, std::string_view detail = {}) {
    fprintf(stderr, "fuzz_session: invariant broken: %s\n", what);
    if (!detail.empty())
        fprintf(stderr, "--- output (%zu bytes) ---\n%.*s\n---\n", detail.size(),
                static_cast<int>(detail.size()), detail.data());
    abort();
}

// xorshift64*: sizes and budgets from the seed byte, the same for the same input.
struct Random {
    uint64_t state;
    explicit Random(uint8_t seed) : state(0x9E3779B97F4A7C15ull ^ (uint64_t{seed} << 17) ^ seed) {}
    uint32_t next() {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        return static_cast<uint32_t>((state * 0x2545F4914F6CDD1Dull) >> 32);
    }
    // 1..max
    size_t upto(size_t max) { return max <= 1 ? 1 : 1 + next() % max; }
};

// ---------------------------------------------------------------------------------------------
// The transport: records what is written, takes at most `budget` bytes.

class FakeTransport final : public Transport {
  public:
    TransportEvents *events = nullptr;
    std::string written;
    size_t budget = SIZE_MAX; // bytes still taken before -EAGAIN (SIZE_MAX: unlimited)
    bool reading = false;
    bool want_write = false;
    bool shut = false;
    bool closed = false;

    void hand_over(TransportEvents *e) override { events = e; }
    void start(TransportEvents *e) override {
        if (events)
            fail("Transport::start called twice");
        events = e;
        reading = true;
    }
    void set_reading(bool on) override { reading = on; }
    void want_writable(bool on) override { want_write = on; }
    ssize_t write(const struct iovec *iov, int count) override {
        check_open("write");
        std::string data;
        for (int i = 0; i < count; ++i)
            data.append(static_cast<const char *>(iov[i].iov_base), iov[i].iov_len);
        return take(data);
    }
    ssize_t send_file(int fd, int64_t offset, size_t length) override {
        check_open("send_file");
        std::string data(length, '\0');
        ssize_t n = pread(fd, data.data(), length, offset);
        if (n < 0)
            return -errno;
        data.resize(static_cast<size_t>(n));
        return take(data);
    }
    void shutdown_write() override {
        if (closed)
            fail("shutdown_write after close");
        shut = true;
    }
    void close() override {
        if (closed)
            fail("Transport::close called twice");
        closed = true;
        reading = false;
        want_write = false;
    }
    const char *name() const override { return "fake"; }

  private:
    void check_open(const char *call) const {
        if (closed)
            fail(call, "after close()");
        if (shut)
            fail(call, "after shutdown_write(): nothing may follow the FIN");
    }
    ssize_t take(const std::string &data) {
        if (data.empty())
            return 0;
        if (budget == 0)
            return -EAGAIN;
        size_t n = std::min(data.size(), budget);
        written.append(data, 0, n);
        if (budget != SIZE_MAX)
            budget -= n;
        return static_cast<ssize_t>(n);
    }
};

// ---------------------------------------------------------------------------------------------
// In-process plugins.

const trellis_host *host() {
    return trellis::host_table();
}

std::string_view view(trellis_str s) {
    return {s.data ? s.data : "", s.len};
}

// The body with 'H' written as 'h': no echoed body can pass for a status line ("HTTP/1.1 "), so
// the output can be split into responses without knowing which requests were HEAD.
std::string defanged(std::string_view text) {
    std::string out(text);
    std::replace(out.begin(), out.end(), 'H', 'h');
    return out;
}

int echo_on_request(void *, trellis_request *req) {
    const trellis_host *h = host();
    // Read everything the host offers, so its accessors run on every request the fuzzer makes.
    size_t bytes = view(h->request_method(req)).size() + view(h->request_target(req)).size() +
                   view(h->request_path(req)).size() + view(h->request_query(req)).size() +
                   view(h->request_host(req)).size() + view(h->request_route_prefix(req)).size();
    size_t headers = h->request_header_count(req);
    for (size_t i = 0; i <= headers; ++i) { // one past the end: must say 0
        trellis_str name, value;
        if (h->request_header_at(req, i, &name, &value))
            bytes += name.len + value.len;
        else if (i < headers)
            fail("request_header_at refused an index below request_header_count");
    }
    trellis_str value;
    if (h->request_header(req, "content-type", 12, &value))
        bytes += value.len;
    char peer[64];
    bytes += h->request_peer(req, peer, sizeof peer);
    trellis_transport_info info{};
    info.struct_size = sizeof info;
    h->request_transport(req, &info);
    (void)bytes;

    std::string_view below = view(h->request_path_below(req));
    if (below == "/fail")
        return TRELLIS_ERROR;
    if (below == "/silent")
        return TRELLIS_OK; // without answering: the host answers 500

    if (h->request_version(req) != 10 && h->request_version(req) != 11)
        fail("request_version is neither 10 nor 11");
    int status = 200;
    char buf[256];
    long n = h->request_query_param(req, "status", 6, buf, sizeof buf);
    if (n > 0 && n <= 3) {
        status = 0;
        for (long i = 0; i < n; ++i)
            status = buf[i] >= '0' && buf[i] <= '9' ? status * 10 + (buf[i] - '0') : -1000;
        if (status < 200 || status > 999)
            status = 200;
    }
    char name[256];
    long name_len = h->request_query_param(req, "hn", 2, name, sizeof name);
    long value_len = h->request_query_param(req, "hv", 2, buf, sizeof buf);
    if (name_len >= 0 && value_len >= 0)
        h->response_header(req, name, static_cast<size_t>(std::min<long>(name_len, sizeof name)), buf,
                           static_cast<size_t>(std::min<long>(value_len, sizeof buf)));

    // The body, or the path when there is none (so GET and HEAD answers differ in length too).
    std::string_view body_in = view(h->request_body(req));
    std::string body = defanged(body_in.empty() ? view(h->request_path(req)) : body_in);
    if (below == "/stream" && h->response_start(req, status, static_cast<int64_t>(body.size())) == 0) {
        for (size_t at = 0; at < body.size(); at += 7)
            if (h->response_write(req, body.data() + at, std::min<size_t>(7, body.size() - at)) < 0)
                fail("response_write failed on a started response");
        if (h->response_end(req) != 0)
            fail("response_end failed on a started response");
        return TRELLIS_OK;
    }
    if (h->respond(req, status, body.data(), body.size()) != 0)
        fail("respond failed on an unanswered request");
    return TRELLIS_OK;
}

int decline_on_request(void *, trellis_request *) {
    return TRELLIS_DECLINED;
}

int plugin_create(const trellis_host *, trellis_plugin_ctx *, const char *, size_t, void **instance, char *,
                  size_t) {
    *instance = nullptr;
    return TRELLIS_OK;
}

void plugin_destroy(void *) {}

trellis_plugin descriptor(const char *name, int (*on_request)(void *, trellis_request *)) {
    trellis_plugin d{};
    d.abi_version = TRELLIS_ABI_VERSION;
    d.struct_size = sizeof d;
    d.name = name;
    d.version = "fuzz";
    d.create = plugin_create;
    d.destroy = plugin_destroy;
    d.on_request = on_request;
    return d;
}

struct Plugins {
    trellis_plugin echo_descriptor = descriptor("echo", echo_on_request);
    trellis_plugin decline_descriptor = descriptor("decline", decline_on_request);
    trellis::PluginInstance echo, decline;
    std::unique_ptr<trellis::Router> router;
    std::unique_ptr<trellis::AccessLog> combined, json;
    trellis::ListenConfig redirect_same_host, redirect_fixed;

    Plugins() {
        echo.plugin = &echo_descriptor;
        echo.ctx.name = "echo";
        decline.plugin = &decline_descriptor;
        decline.ctx.name = "decline";
        router = std::make_unique<trellis::Router>(std::vector<trellis::Route>{
            {"*", "/echo", &echo},
            {"example.com", "/echo", &decline},
            {"*", "/d", &decline},
            {"*", "/", &decline},
        });
        int null_fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
        if (null_fd < 0)
            fail("cannot open /dev/null");
        combined = std::make_unique<trellis::AccessLog>(null_fd, trellis::AccessLogFormat::Combined);
        json = std::make_unique<trellis::AccessLog>(null_fd, trellis::AccessLogFormat::Json);
        // Debug lines format what the client sent: run that code too, into /dev/null.
        std::string error;
        if (!trellis::open_error_log("/dev/null", error))
            fail("cannot send the error log to /dev/null", error);
        trellis::set_log_level(trellis::LogLevel::Debug);
        // This harness drives the HTTP/1.1 session: HTTP/2's preface would hand the transport to
        // another connection object, which the invariants below do not follow.
        redirect_same_host.http2.enabled = redirect_fixed.http2.enabled = false;
        redirect_same_host.redirect_to_https.kind = trellis::RedirectToHttps::Kind::SameHost;
        redirect_fixed.redirect_to_https = {trellis::RedirectToHttps::Kind::Origin,
                                            "https://example.com:8443"};
    }
};

// Built once; never destroyed (the AccessLog writer threads run until exit).
Plugins &plugins() {
    static Plugins *instance = new Plugins;
    return *instance;
}

// ---------------------------------------------------------------------------------------------
// Checking the output.

struct Response {
    int status = 0;
    std::string_view head; // status line and header lines, CRLF-separated, without the final CRLF
    bool close = false;
    bool has_length = false;
    uint64_t length = 0;
};

// The head starting at `pos`, or false when the bytes there are not one.
bool parse_head(std::string_view out, size_t pos, Response &r, size_t &head_end) {
    size_t end = out.find("\r\n\r\n", pos);
    if (end == std::string_view::npos || out.compare(pos, 9, "HTTP/1.1 ") != 0 || end - pos < 12)
        return false;
    r = Response{};
    r.head = out.substr(pos, end - pos);
    head_end = end + 4;
    std::string_view code = r.head.substr(9, 3);
    for (char c : code)
        if (c < '0' || c > '9')
            fail("status code is not three digits", out);
    r.status = (code[0] - '0') * 100 + (code[1] - '0') * 10 + (code[2] - '0');
    if (r.head.size() > 12 && r.head[12] != ' ')
        fail("no space after the status code", out);
    size_t at = 0;
    while (at <= r.head.size()) {
        size_t next = r.head.find("\r\n", at);
        std::string_view line =
            r.head.substr(at, next == std::string_view::npos ? std::string_view::npos : next - at);
        if (line.find_first_of(std::string_view("\r\n\0", 3)) != std::string_view::npos)
            fail("CR, LF or NUL inside a response head line", out);
        if (at > 0) {
            size_t colon = line.find(": ");
            if (colon == std::string_view::npos || colon == 0)
                fail("a response header line without \"name: \"", out);
            std::string_view name = line.substr(0, colon), value = line.substr(colon + 2);
            if (trellis::iequals(name, "connection") && trellis::iequals(value, "close"))
                r.close = true;
            if (trellis::iequals(name, "content-length")) {
                if (r.has_length)
                    fail("two Content-Length headers", out);
                r.has_length = true;
                if (value.empty() || value.size() > 15)
                    fail("bad Content-Length", out);
                for (char c : value) {
                    if (c < '0' || c > '9')
                        fail("bad Content-Length", out);
                    r.length = r.length * 10 + static_cast<uint64_t>(c - '0');
                }
            }
            if (trellis::iequals(name, "transfer-encoding"))
                fail("Transfer-Encoding in a response of the harness's plugins", out);
        }
        if (next == std::string_view::npos)
            break;
        at = next + 2;
    }
    return true;
}

// True when a response (or, in an output cut short, the start of one) or the end is at `pos`.
bool at_response_or_end(std::string_view out, size_t pos, bool complete) {
    if (pos > out.size())
        return false;
    std::string_view rest = out.substr(pos), status = "HTTP/1.1 ";
    if (rest.size() >= status.size() || complete)
        return rest.empty() || rest.substr(0, status.size()) == status;
    return status.substr(0, rest.size()) == rest;
}

// `complete`: every response was written out (false when the client reset the connection, or a
// send timeout closed it, while some were still queued: the last one may then be cut anywhere).
void check_output(std::string_view in, std::string_view out, bool complete) {
    if (out.empty())
        return;
    if (out.compare(0, 9, "HTTP/1.1 ") != 0 && (complete || out.size() >= 9))
        fail("output does not start with \"HTTP/1.1 \"", out);
    // Each request head needs an empty line; one more answer may be an error about bytes that never
    // formed a head (an HTTP/0.9 line, garbage, a head over the limit).
    size_t heads = 1;
    for (size_t i = 0; i + 1 < in.size(); ++i)
        heads += in[i] == '\n' &&
                 (in[i + 1] == '\n' || (in[i + 1] == '\r' && i + 2 < in.size() && in[i + 2] == '\n'));
    size_t finals = 0;
    size_t pos = 0;
    while (pos < out.size()) {
        Response r;
        size_t body_start;
        if (!parse_head(out, pos, r, body_start)) {
            if (!complete && out.find("\r\n\r\n", pos) == std::string_view::npos)
                break; // a head cut short
            fail("bytes that are not a response head", out.substr(pos));
        }
        bool bodiless = r.status < 200 || r.status == 204 || r.status == 304;
        if (bodiless) {
            if (r.has_length && r.status < 200)
                fail("Content-Length on a 1xx response", out);
            pos = body_start;
        } else {
            if (!r.has_length)
                fail("a response with a body but no Content-Length", out);
            // The whole body, or none (HEAD). A body never starts with "HTTP/1.1 " (defanged), so
            // at most one of the two can be followed by a response or the end.
            if (body_start + r.length <= out.size() &&
                at_response_or_end(out, body_start + r.length, complete))
                pos = body_start + r.length;
            else if (at_response_or_end(out, body_start, complete))
                pos = body_start;
            else if (!complete && body_start + r.length > out.size())
                break; // a body cut short
            else
                fail("a response body that does not match its Content-Length", out);
        }
        if (r.status >= 200)
            ++finals;
        if (r.close && pos != out.size())
            fail("bytes after a response that says \"Connection: close\"", out);
    }
    if (finals > heads)
        fail("more responses than requests", out);
}

// ---------------------------------------------------------------------------------------------
// One connection on its own loop.

struct Options {
    bool eof = false;
    bool reset = false;
    bool small_limits = false;
    bool drain = false;
    bool timeout = false;
    bool redirect = false;
    int access_log = 0; // 0 off, 1 combined, 2 JSON
    size_t max_read = 0;
    int budget_mode = 0;
    uint32_t writable_chance = 0; // of 64, before each send
};

struct Run {
    const Options &options;
    Random random;
    uv_loop_t loop;
    std::atomic<uint32_t> open_connections{1};
    std::unique_ptr<WorkerContext> context;
    FakeTransport fake;
    Connection *conn = nullptr; // valid while !fake.closed
    bool timed_out = false;     // a timeout expired (a send timeout drops what is not written)

    Run(const Options &o, uint8_t seed) : options(o), random(seed) {
        if (uv_loop_init(&loop) != 0)
            fail("uv_loop_init");
        trellis::Limits limits;
        if (options.small_limits) {
            limits.max_header_bytes = 1024;
            limits.max_body_bytes = 64;
        } else {
            limits.max_header_bytes = 8192;
            limits.max_body_bytes = 65536;
        }
        trellis::AccessLog *sink = options.access_log == 1   ? plugins().combined.get()
                                   : options.access_log == 2 ? plugins().json.get()
                                                             : nullptr;
        context = std::make_unique<WorkerContext>(&loop, 0, limits, sink, &open_connections);
        context->router = plugins().router.get();
        if (options.budget_mode == 3)
            fake.budget = 0;
        sockaddr_in peer{};
        peer.sin_family = AF_INET;
        peer.sin_port = htons(40000);
        inet_pton(AF_INET, "127.0.0.1", &peer.sin_addr);
        const trellis::ListenConfig *listen = nullptr;
        if (options.redirect)
            listen = seed % 2 ? &plugins().redirect_fixed : &plugins().redirect_same_host;
        conn = Connection::start(*context, &fake, reinterpret_cast<const sockaddr *>(&peer), listen);
        if (!conn || fake.events != conn)
            fail("Connection::start did not start the transport");
    }

    bool alive() const { return !fake.closed; }

    // An open connection waits on exactly one timeout list: without one nothing would close it.
    void check_timeout_list() const {
        if (!alive())
            return;
        const trellis::TimeoutNode *node = conn;
        for (int i = 0; i < trellis::Timeouts::kLists; ++i)
            if (node->list == &context->timeout_list(static_cast<trellis::TimeoutKind>(i)))
                return;
        fail("an open connection is on no timeout list");
    }

    // Expires the timeout the connection waits on, as the worker's timer does: off the list, then
    // on_timeout.
    void expire_timeout() {
        for (int i = 0; i < trellis::Timeouts::kLists; ++i) {
            auto kind = static_cast<trellis::TimeoutKind>(i);
            if (conn->list == &context->timeout_list(kind)) {
                trellis::TimeoutList::remove(*conn);
                conn->on_timeout(kind);
                return;
            }
        }
    }

    size_t grant() {
        switch (options.budget_mode) {
        case 1:
            return random.upto(16);
        case 2:
            return random.upto(1024);
        case 3:
            return random.upto(256);
        default:
            return SIZE_MAX;
        }
    }

    // The client reads what the server has for it.
    void writable() {
        if (fake.budget != SIZE_MAX)
            fake.budget = grant();
        conn->on_writable();
    }

    void feed(std::string_view bytes) {
        size_t fed = 0;
        bool drained = false;
        size_t drain_at = options.drain ? random.next() % (bytes.size() + 1) : SIZE_MAX;
        size_t timeout_at = options.timeout ? random.next() % (bytes.size() + 1) : SIZE_MAX;
        // Each step sends or lets the client read; a step that can do neither ends the input (the
        // connection no longer reads, and has nothing to write).
        for (size_t steps = 0; fed < bytes.size() && alive(); ++steps) {
            check_timeout_list();
            if (steps > 1000000)
                fail("no progress: the connection neither reads nor writes");
            if (!drained && fed >= drain_at) {
                drained = true;
                context->draining = true;
                conn->begin_drain();
                continue;
            }
            if (!timed_out && fed >= timeout_at) {
                timed_out = true;
                expire_timeout();
                continue;
            }
            if (fake.want_write && random.next() % 64 < options.writable_chance) {
                writable();
                continue;
            }
            std::span<char> span = fake.reading ? conn->on_read_buffer() : std::span<char>();
            if (span.empty()) {
                if (fake.want_write) {
                    writable();
                    continue;
                }
                // Not reading and nothing to write: a real client would wait for a timeout. With no
                // plugin holding a request, a connection that still reads must take bytes.
                if (fake.reading)
                    fail("the connection reads but offers no buffer, with nothing to write");
                break;
            }
            size_t n = std::min(span.size(), bytes.size() - fed);
            if (options.max_read)
                n = std::min(n, random.upto(options.max_read));
            memcpy(span.data(), bytes.data() + fed, n);
            conn->on_read(n);
            fed += n;
        }
    }

    // The client reads everything that is left.
    void drain_output() {
        fake.budget = SIZE_MAX;
        for (int i = 0; i < 3 && alive() && fake.want_write; ++i)
            conn->on_writable();
        if (alive() && fake.want_write)
            fail("output still blocked after unlimited on_writable");
        check_timeout_list();
    }

    // Ends the connection and checks the loop closes cleanly.
    void finish() {
        if (alive())
            conn->abort();
        if (!fake.closed)
            fail("abort() did not close the transport");
        if (context->connections != 0)
            fail("the worker still counts a connection after abort()");
        context->timeouts.close();
        context->access_log.close();
        context->mailbox->close();
        uv_run(&loop, UV_RUN_DEFAULT);
        if (uv_loop_close(&loop) != 0)
            fail("uv_loop_close: handles left open on the loop");
        context.reset();
    }
};

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 4)
        return 0;
    Options options;
    options.eof = data[0] & 1;
    options.small_limits = data[0] & 2;
    options.drain = data[0] & 4;
    options.access_log = (data[0] >> 3) & 3;
    if (options.access_log == 3)
        options.access_log = 0;
    options.reset = data[0] & 32;
    options.timeout = data[0] & 64;
    options.redirect = data[0] & 128;
    options.max_read = data[1];
    options.budget_mode = data[2] & 3;
    options.writable_chance = data[2] >> 2;
    std::string_view input(reinterpret_cast<const char *>(data) + 4, size - 4);

    Run run(options, data[3]);
    if (options.budget_mode == 1 || options.budget_mode == 2)
        run.fake.budget = run.grant();
    run.feed(input);
    if (run.alive() && (options.eof || options.reset))
        run.conn->on_read_end(options.reset ? -ECONNRESET : 0);
    if (run.alive())
        run.drain_output();
    std::string output = run.fake.written;
    run.finish();
    static const bool print = getenv("FUZZ_SESSION_PRINT") != nullptr;
    if (print) // to see what an input does: FUZZ_SESSION_PRINT=1 ./fuzz_session FILE
        fprintf(stderr, "--- %zu bytes in, %zu bytes out ---\n%s\n", input.size(), output.size(),
                output.c_str());
    check_output(input, output, !options.reset && !run.timed_out);
    return 0;
}
