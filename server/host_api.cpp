// The trellis_host table: how plugins read requests and answer them. Every function checks its
// arguments, since a plugin bug must become an error code and a log line, not a crashed worker.
//
// Two paths: during on_request on the loop thread ("inline") an answer goes straight into the
// connection's output. Anywhere else (a pool thread, the plugin's own thread, or the loop after
// TRELLIS_ASYNC) it is staged in the request's HeldRequest under its mutex and the loop is woken
// through the worker's mailbox to apply it.
#include "exchange.hpp"
#include "held_request.hpp"
#include "http/path.hpp"
#include "http/request.hpp"
#include "log/log.hpp"
#include "mailbox.hpp"
#include "metrics/metrics.hpp"
#include "plugin/loader.hpp"
#include "responses.hpp"
#include "router.hpp"
#include "thread_pool.hpp"
#include "transport/transport.hpp"
#include "worker_context.hpp"

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace trellis {
namespace {

trellis_str to_str(std::string_view view) {
    return {view.data(), view.size()};
}

constexpr size_t kStreamHighWater = 64 * 1024; // TRELLIS_AGAIN past this much unwritten

// The loop thread inside this request's on_request: answers go straight to the connection.
bool is_inline(const trellis_request *r) {
    return WorkerContext::current() == r->exchange->worker && r->inline_call;
}

const char *plugin_name(const trellis_request *r) {
    return r->route && r->route->plugin ? r->route->plugin->name().c_str() : "?";
}

void warn_answered_twice(const trellis_request *r) {
    SERVER_LOG_WARN("plugin \"%s\" answered a request twice; the second answer is ignored", plugin_name(r));
}

void post(trellis_request *r, unsigned bits) {
    r->exchange->held.post(bits);
}

// Stages an answer given off the loop: `fill` sets its fields under the request's lock.
template <class Fill> int stage_answer(trellis_request *r, Fill fill) {
    bool answered_twice = false;
    int rc = r->exchange->held.stage(fill, answered_twice);
    if (answered_twice)
        warn_answered_twice(r);
    return rc;
}

trellis_str request_method(const trellis_request *r) {
    return to_str(r->str(r->method));
}
trellis_str request_target(const trellis_request *r) {
    return to_str(r->str(r->target));
}
trellis_str request_path(const trellis_request *r) {
    return to_str(r->path);
}
trellis_str request_query(const trellis_request *r) {
    return to_str(r->str(r->query));
}
trellis_str request_host(const trellis_request *r) {
    return to_str(r->host);
}
int request_version(const trellis_request *r) {
    return r->version;
}

int request_header(const trellis_request *r, const char *name, size_t name_len, trellis_str *value) {
    std::string_view found;
    if (!name || !r->header(std::string_view(name, name_len), found))
        return 0;
    if (value)
        *value = to_str(found);
    return 1;
}

size_t request_header_count(const trellis_request *r) {
    return r->header_count;
}

int request_header_at(const trellis_request *r, size_t index, trellis_str *name, trellis_str *value) {
    if (index >= r->header_count)
        return 0;
    if (name)
        *name = to_str(r->str(r->headers[index].name));
    if (value)
        *value = to_str(r->str(r->headers[index].value));
    return 1;
}

trellis_str request_body(const trellis_request *r) {
    return to_str(r->body);
}

size_t request_peer(const trellis_request *r, char *buf, size_t buf_len) {
    return buf && buf_len ? peer_text(r->exchange->client, buf, buf_len) : 0;
}

trellis_str request_route_prefix(const trellis_request *r) {
    return r->route ? to_str(r->route->prefix) : trellis_str{"", 0};
}
trellis_str request_path_below(const trellis_request *r) {
    return to_str(r->path_below);
}

bool header_text_ok(const char *text, size_t len) {
    for (size_t i = 0; i < len; ++i)
        if (text[i] == '\r' || text[i] == '\n' || text[i] == '\0')
            return false;
    return true;
}

int response_header(trellis_request *r, const char *name, size_t name_len, const char *value,
                    size_t value_len) {
    if (!name || name_len == 0 || (!value && value_len) || !header_text_ok(name, name_len) ||
        !header_text_ok(value, value_len))
        return -1;
    std::string_view n(name, name_len);
    for (std::string_view reserved : {"content-length", "transfer-encoding", "connection", "date", "server"})
        if (iequals(n, reserved))
            return -1;
    for (char c : n)
        if (c == ' ' || c == '\t' || c == ':')
            return -1;
    auto append = [&] {
        r->response_headers.append(name, name_len)
            .append(": ")
            .append(value ? value : "", value_len)
            .append("\r\n");
    };
    if (is_inline(r)) {
        if (r->answered)
            return -1;
        append();
        return 0;
    }
    return r->exchange->held.with_staged([&](StagedAnswer &staged) {
        if (staged.answered || staged.gone)
            return -1;
        append();
        return 0;
    });
}

int respond(trellis_request *r, int status, const char *body, size_t body_len) {
    if (status < 200 || status > 999 || (!body && body_len))
        return -1;
    std::string_view text(body ? body : "", body_len);
    if (!is_inline(r))
        return stage_answer(r, [&](StagedAnswer &staged) {
            staged.kind = StagedAnswer::Kind::Full;
            staged.status = status;
            staged.body.assign(text);
        });
    if (r->answered) {
        warn_answered_twice(r);
        return -1;
    }
    trellis::respond(*r->exchange, status, text);
    return 0;
}

// A plugin's bad call answers 500, on whichever path the request is.
void answer_500(trellis_request *r) {
    if (!is_inline(r))
        stage_answer(r, [](StagedAnswer &staged) {
            staged.kind = StagedAnswer::Kind::Full;
            staged.status = 500;
            staged.body = "500 Internal Server Error\n";
        });
    else if (!r->answered)
        respond_error(*r->exchange, 500);
}

int respond_file_with(trellis_request *r, const trellis_file_options *options) {
    if (!options)
        return -1;
    // Fields past the plugin's struct_size read as zero.
    // A struct too short to say which descriptor is a plugin bug: touch no descriptor at all.
    if (options->struct_size < offsetof(trellis_file_options, fd) + sizeof options->fd) {
        SERVER_LOG_ERROR("respond_file_with: options.struct_size (%u) does not reach fd",
                         static_cast<unsigned>(options->struct_size));
        answer_500(r);
        return -1;
    }
    trellis_file_options o = {};
    memcpy(&o, options, std::min<size_t>(options->struct_size, sizeof o));
    bool inline_call = is_inline(r);
    // 204 and 304 have no body to send a file in.
    if ((inline_call && r->answered) || o.status < 200 || o.status > 999 || o.status == 204 ||
        o.status == 304) {
        if (o.fd >= 0 && !o.borrow_fd)
            close(o.fd);
        if (inline_call && r->answered)
            warn_answered_twice(r);
        return -1;
    }
    if (!inline_call) {
        // Checked here, on the calling thread, so the plugin learns at once that the file is bad.
        struct stat st = {};
        if (o.fd < 0 || fstat(o.fd, &st) != 0 || !S_ISREG(st.st_mode)) {
            if (o.fd >= 0 && !o.borrow_fd)
                close(o.fd);
            answer_500(r);
            return -1;
        }
        // A borrowed descriptor may be closed once this returns: keep a duplicate.
        int fd = o.borrow_fd ? fcntl(o.fd, F_DUPFD_CLOEXEC, 0) : o.fd;
        if (fd < 0)
            return -1;
        int rc = stage_answer(r, [&](StagedAnswer &staged) {
            staged.kind = StagedAnswer::Kind::File;
            staged.file = FileResponse{};
            staged.file.status = o.status;
            staged.file.fd = fd;
            staged.file.max_ranges = o.max_ranges;
            staged.file_stat = st;
            staged.file.stat = &staged.file_stat; // re-pointed by the loop at its copy
        });
        if (rc != 0)
            close(fd);
        return rc;
    }
    if (o.fd < 0) {
        respond_error(*r->exchange, 500);
        return -1;
    }
    FileResponse file;
    file.status = o.status;
    file.fd = o.fd;
    file.borrowed = o.borrow_fd != 0;
    file.max_ranges = o.max_ranges;
    struct stat st = {};
    if (o.has_stat) {
        st.st_mode = S_IFREG;
        st.st_size = static_cast<off_t>(o.size);
        st.st_mtim.tv_sec = o.mtime_sec;
        st.st_mtim.tv_nsec = o.mtime_nsec;
        st.st_ino = o.inode;
        file.stat = &st;
    }
    return trellis::respond_file(*r->exchange, file) ? 0 : -1;
}

int respond_file(trellis_request *r, int status, int fd) {
    trellis_file_options options = {};
    options.struct_size = sizeof options;
    options.status = status;
    options.fd = fd;
    return respond_file_with(r, &options);
}

unsigned request_worker(const trellis_request *r) {
    return r->exchange->worker_index;
}

void log(trellis_plugin_ctx *ctx, trellis_log_level level, const char *message) {
    int value = static_cast<int>(level);
    LogLevel our = value <= 0 ? LogLevel::Debug : value >= 3 ? LogLevel::Error : static_cast<LogLevel>(value);
    // Each instance has its own rate limit, so a noisy plugin cannot silence the others.
    if (static_cast<int>(our) >= static_cast<int>(log_level()))
        log_format_site(ctx, our, "%s: %s", ctx ? ctx->name.c_str() : "plugin", message ? message : "");
}

trellis_str config_dir(trellis_plugin_ctx *ctx) {
    return ctx ? to_str(ctx->config_dir) : trellis_str{".", 1};
}

int request_transport(const trellis_request *r, trellis_transport_info *info) {
    const TlsFacts *facts = r->exchange->tls_facts.get();
    if (!info)
        return facts ? 1 : 0;
    trellis_transport_info full = {};
    full.struct_size = info->struct_size;
    full.name = facts ? trellis_str{"tls", 3} : trellis_str{"plain", 5};
    full.secure = facts ? 1 : 0;
    if (facts) {
        full.version = to_str(facts->version);
        full.cipher = to_str(facts->cipher);
        full.server_name = to_str(facts->server_name);
        full.alpn = to_str(facts->alpn);
        full.peer_certificate = facts->client_certificate ? 1 : 0;
        full.peer_subject = to_str(facts->client_subject);
        full.peer_san = to_str(facts->client_san);
        full.peer_fingerprint = to_str(facts->client_fingerprint);
        full.peer_verify = to_str(facts->client_verify);
    }
    // A plugin built against an older header has a smaller struct: fill only what it has.
    size_t size = info->struct_size < sizeof full ? info->struct_size : sizeof full;
    memcpy(info, &full, size);
    return full.secure;
}

void request_release(trellis_request *r) {
    HeldRequest &held = r->exchange->held;
    if (!held.release()) {
        SERVER_LOG_WARN("plugin \"%s\" released a request twice; the second release is ignored",
                        plugin_name(r));
        return;
    }
    if (!held.post(kMailReleased))
        keep_after_exit(r->exchange); // the worker has exited: nothing can take the request back
}

int response_start(trellis_request *r, int status, int64_t content_length) {
    if (status < 200 || status > 999 || status == 204 || status == 304)
        return -1;
    if (!is_inline(r))
        return stage_answer(r, [&](StagedAnswer &staged) {
            staged.kind = StagedAnswer::Kind::Stream;
            staged.status = status;
            staged.length = content_length < 0 ? -1 : content_length;
        });
    if (r->answered) {
        warn_answered_twice(r);
        return -1;
    }
    if (!start_stream(*r->exchange, status, content_length < 0 ? -1 : content_length))
        return -1;
    // A thread the request is handed to before on_request returns TRELLIS_ASYNC may write at once.
    r->exchange->held.with_staged([](StagedAnswer &staged) {
        staged.answered = staged.head_taken = true;
        staged.kind = StagedAnswer::Kind::Stream;
    });
    return 0;
}

int response_write(trellis_request *r, const char *data, size_t len) {
    if (!data && len)
        return -1;
    Exchange &ex = *r->exchange;
    if (is_inline(r)) {
        if (!ex.stream.active)
            return -1;
        if (stream_write(ex, std::string_view(data ? data : "", len)) <= kStreamHighWater)
            return 0;
        ex.notify_writable = true;
        return TRELLIS_AGAIN;
    }
    size_t backlog = 0;
    bool staged = ex.held.with_staged([&](StagedAnswer &st) {
        if (st.gone || !st.answered || st.kind != StagedAnswer::Kind::Stream || st.ended)
            return false;
        st.body.append(data ? data : "", len);
        backlog = st.body.size() + st.unsent;
        if (backlog > kStreamHighWater)
            st.want_writable = true;
        return true;
    });
    if (!staged)
        return -1;
    post(r, kMailStaged);
    return backlog > kStreamHighWater ? TRELLIS_AGAIN : 0;
}

int response_end(trellis_request *r) {
    Exchange &ex = *r->exchange;
    if (is_inline(r)) {
        if (!ex.stream.active)
            return -1;
        end_stream(ex);
        return 0;
    }
    bool staged = ex.held.with_staged([](StagedAnswer &st) {
        if (st.gone || !st.answered || st.kind != StagedAnswer::Kind::Stream || st.ended)
            return false;
        st.ended = true;
        return true;
    });
    if (!staged)
        return -1;
    post(r, kMailStaged);
    return 0;
}

void request_resume_body(trellis_request *r) {
    post(r, kMailResumeBody);
}

// One character of application/x-www-form-urlencoded text at `i`: "%41" -> 'A', '+' -> ' ' (a bad
// escape stays as it is); `i` is left on the last byte it took.
char form_char(std::string_view text, size_t &i) {
    char c = text[i];
    if (c == '+')
        return ' ';
    if (c == '%' && i + 2 < text.size() && hex_value(text[i + 1]) >= 0 && hex_value(text[i + 2]) >= 0) {
        c = static_cast<char>(hex_value(text[i + 1]) * 16 + hex_value(text[i + 2]));
        i += 2;
    }
    return c;
}

// Decodes form text. Writes at most buf_len bytes and returns the full decoded length.
size_t form_decode(std::string_view text, char *buf, size_t buf_len) {
    size_t n = 0;
    for (size_t i = 0; i < text.size(); ++i) {
        char c = form_char(text, i);
        if (n < buf_len)
            buf[n] = c;
        ++n;
    }
    return n;
}

// True when `encoded` decodes (as form_decode does) to exactly `wanted`, without a buffer.
bool form_equals(std::string_view encoded, std::string_view wanted) {
    size_t n = 0;
    for (size_t i = 0; i < encoded.size(); ++i, ++n) {
        char c = form_char(encoded, i);
        if (n >= wanted.size() || wanted[n] != c)
            return false;
    }
    return n == wanted.size();
}

long request_query_param(const trellis_request *r, const char *name, size_t name_len, char *buf,
                         size_t buf_len) {
    if (!name || (!buf && buf_len))
        return -1;
    std::string_view query = r->str(r->query);
    std::string_view wanted(name, name_len);
    while (!query.empty()) {
        size_t amp = query.find('&');
        std::string_view pair = query.substr(0, amp);
        query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
        size_t eq = pair.find('=');
        std::string_view key = pair.substr(0, eq);
        // Keys are compared decoded, so "a%5Bb%5D" finds "a[b]".
        if (!form_equals(key, wanted))
            continue;
        std::string_view value = eq == std::string_view::npos ? std::string_view() : pair.substr(eq + 1);
        return static_cast<long>(form_decode(value, buf, buf_len));
    }
    return -1;
}

int server_metrics(trellis_request *r, int format, trellis_str *out) {
    const ServerMetrics *metrics = r->exchange->metrics;
    if (!out || !metrics || (format != TRELLIS_METRICS_JSON && format != TRELLIS_METRICS_PROMETHEUS))
        return -1;
    r->scratch = format == TRELLIS_METRICS_JSON ? metrics->render_json() : metrics->render_prometheus();
    *out = to_str(r->scratch);
    return 0;
}

trellis_str request_route_config(const trellis_request *r) {
    return r->route ? to_str(r->route->config_json) : trellis_str{"", 0};
}

int thread_kind() {
    if (ThreadPool::on_pool_thread())
        return TRELLIS_THREAD_POOL;
    return WorkerContext::on_loop_thread() ? TRELLIS_THREAD_WORKER : TRELLIS_THREAD_OTHER;
}

const trellis_host kHost = {
    TRELLIS_ABI_VERSION,
    sizeof(trellis_host),
    request_method,
    request_target,
    request_path,
    request_query,
    request_host,
    request_version,
    request_header,
    request_header_count,
    request_header_at,
    request_body,
    request_peer,
    request_route_prefix,
    request_path_below,
    response_header,
    respond,
    respond_file,
    log,
    config_dir,
    request_transport,
    respond_file_with,
    request_worker,
    request_release,
    response_start,
    response_write,
    response_end,
    request_resume_body,
    request_query_param,
    server_metrics,
    request_route_config,
    thread_kind,
};

} // namespace

const trellis_host *host_table() {
    return &kHost;
}

} // namespace trellis
