// Trellis plugin helper for C++: header-only, compiled into the plugin, never crosses the ABI.
//
// A plugin is a class with a constructor taking (const trellis::Host &, std::string_view config)
// and an on_request(trellis::Request &) that returns trellis::Result (or void, meaning Ok):
//
//     struct Greeter {
//         Greeter(const trellis::Host &, std::string_view config_json) {}
//         trellis::Result on_request(trellis::Request &req) {
//             req.add_response_header("Content-Type", "text/plain");
//             req.respond(200, "hi from C++\n");
//             return trellis::Result::Ok;
//         }
//     };
//     TRELLIS_PLUGIN(Greeter, "greeter", "1.0")
//
// Optional members, used when present: on_worker_start(unsigned) -> bool, on_worker_stop(unsigned),
// on_abort(trellis::Request &), on_writable(trellis::Request &),
// on_body(trellis::Request &, std::string_view data, bool last) -> trellis::Result, and
// `static constexpr uint32_t flags = TRELLIS_BLOCKING;` (or TRELLIS_STREAM_BODY).
//
// To answer later (from any thread), return trellis::Result::Async and keep the request in a
// trellis::AsyncRequest, which releases the handle when it goes out of scope (an exception thrown
// after taking one still answers 500: the release is then harmless):
//
//     trellis::Result on_request(trellis::Request &req) {
//         worker_queue_.push(trellis::AsyncRequest(req));   // answered by another thread
//         return trellis::Result::Async;
//     }
//
// Per-route settings (ABI 1.2): req.route_config() is the JSON text of the matched route's
// "config" ("" when it has none); req.thread_kind() tells a pool thread from an event loop.
//
// Exceptions never cross into the server: one thrown by the constructor fails create() with its
// what() as the message; one thrown by a hook is logged (with the instance name) and becomes
// TRELLIS_ERROR, which the server answers with 500 unless the request was already answered.
#ifndef TRELLIS_PLUGIN_HPP
#define TRELLIS_PLUGIN_HPP

#include <trellis/plugin.h>

#include <cstdio>
#include <exception>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>

namespace trellis {

enum class Result {
    Ok = TRELLIS_OK,
    Declined = TRELLIS_DECLINED,
    Error = TRELLIS_ERROR,
    Async = TRELLIS_ASYNC,
    Again = TRELLIS_AGAIN
};

// What response_write said: keep writing, wait for on_writable, or stop (client gone).
enum class WriteStatus { Ok, Again, Closed };

// The kind of thread calling (trellis_host.thread_kind); Unknown on a server before ABI 1.2.
enum class ThreadKind {
    Unknown = -1,
    Other = TRELLIS_THREAD_OTHER,   // the main thread (constructor, destructor) or a thread of the plugin's
    Worker = TRELLIS_THREAD_WORKER, // an event loop: never block
    Pool = TRELLIS_THREAD_POOL      // the server's thread pool (a blocking handler)
};

namespace detail {
inline ThreadKind thread_kind(const trellis_host *host) {
    if (!TRELLIS_HOST_HAS(host, thread_kind))
        return ThreadKind::Unknown;
    return static_cast<ThreadKind>(host->thread_kind());
}
} // namespace detail

// The host table and this instance's handle, for logging and resolving paths.
class Host {
  public:
    Host(const trellis_host *host, trellis_plugin_ctx *ctx) : host_(host), ctx_(ctx) {}
    const trellis_host *raw() const { return host_; }
    void log(trellis_log_level level, const std::string &message) const {
        host_->log(ctx_, level, message.c_str());
    }
    // Resolves a relative path from the plugin's config against the configuration's directory.
    std::string resolve(std::string_view path) const {
        if (!path.empty() && path.front() == '/')
            return std::string(path);
        trellis_str dir = host_->config_dir(ctx_);
        return std::string(dir.data, dir.len) + "/" + std::string(path);
    }
    // What kind of thread is calling (any thread).
    ThreadKind thread_kind() const { return detail::thread_kind(host_); }

  private:
    const trellis_host *host_;
    trellis_plugin_ctx *ctx_;
};

// A request handle. Views returned share the request's lifetime (see trellis_request in plugin.h).
class Request {
  public:
    Request() = default;
    Request(const trellis_host *host, trellis_request *req) : host_(host), req_(req) {}

    std::string_view method() const { return view(host_->request_method(req_)); }
    std::string_view target() const { return view(host_->request_target(req_)); }
    std::string_view path() const { return view(host_->request_path(req_)); }
    std::string_view query() const { return view(host_->request_query(req_)); }
    std::string_view host() const { return view(host_->request_host(req_)); }
    std::string_view body() const { return view(host_->request_body(req_)); }
    std::string_view route_prefix() const { return view(host_->request_route_prefix(req_)); }
    std::string_view path_below() const { return view(host_->request_path_below(req_)); }
    int version() const { return host_->request_version(req_); }

    // First request header named `name` (case-insensitive); nullopt when absent.
    std::optional<std::string_view> request_header(std::string_view name) const {
        trellis_str value;
        if (!host_->request_header(req_, name.data(), name.size(), &value))
            return std::nullopt;
        return view(value);
    }
    // Calls f(name, value) for every header line, in arrival order.
    template <class F> void for_each_header(F &&f) const {
        trellis_str name, value;
        for (size_t i = 0; host_->request_header_at(req_, i, &name, &value); ++i)
            f(view(name), view(value));
    }
    // Query parameter, percent-decoded; nullopt when absent.
    std::optional<std::string> query_param(std::string_view name) const {
        char buffer[256];
        long n = host_->request_query_param(req_, name.data(), name.size(), buffer, sizeof buffer);
        if (n < 0)
            return std::nullopt;
        if (static_cast<size_t>(n) <= sizeof buffer)
            return std::string(buffer, static_cast<size_t>(n));
        std::string value(static_cast<size_t>(n), '\0');
        host_->request_query_param(req_, name.data(), name.size(), value.data(), value.size());
        return value;
    }
    std::string peer() const {
        char buffer[64];
        size_t n = host_->request_peer(req_, buffer, sizeof buffer);
        return std::string(buffer, n);
    }

    // The JSON text of the matched route's "config" (routes[].config), "" when the route has none
    // (or the server is older than ABI 1.2). Lives as long as the request.
    std::string_view route_config() const {
        if (!TRELLIS_HOST_HAS(host_, request_route_config))
            return {};
        return view(host_->request_route_config(req_));
    }
    // What kind of thread is calling: Worker inline, Pool in a blocking handler, Other on a thread of
    // the plugin's own (after Result::Async).
    ThreadKind thread_kind() const { return detail::thread_kind(host_); }

    // Adds a response header (a second one with the same name adds a second line); false if the
    // host refused it (see trellis_host.response_header).
    bool add_response_header(std::string_view name, std::string_view value) {
        return host_->response_header(req_, name.data(), name.size(), value.data(), value.size()) == 0;
    }
    // Deprecated: the old overloads, one reading a request header and one adding a response header,
    // which read alike. Use request_header and add_response_header; these stay for existing plugins.
    std::optional<std::string_view> header(std::string_view name) const { return request_header(name); }
    bool header(std::string_view name, std::string_view value) { return add_response_header(name, value); }
    bool respond(int status, std::string_view body) {
        answered_ = host_->respond(req_, status, body.data(), body.size()) == 0 || answered_;
        return answered_;
    }
    // Takes ownership of fd.
    bool respond_file(int status, int fd) {
        answered_ = host_->respond_file(req_, status, fd) == 0 || answered_;
        return answered_;
    }
    // A streamed response: start (content_length -1: chunked), write, end.
    bool start(int status, int64_t content_length = -1) {
        answered_ = host_->response_start(req_, status, content_length) == 0 || answered_;
        return answered_;
    }
    WriteStatus write(std::string_view data) {
        int rc = host_->response_write(req_, data.data(), data.size());
        return rc == 0 ? WriteStatus::Ok : rc == TRELLIS_AGAIN ? WriteStatus::Again : WriteStatus::Closed;
    }
    bool end() { return host_->response_end(req_) == 0; }
    // After on_body returned Result::Again.
    void resume_body() { host_->request_resume_body(req_); }
    unsigned worker() const { return host_->request_worker(req_); }
    bool answered() const { return answered_; }
    trellis_request *raw() const { return req_; }
    const trellis_host *host_table() const { return host_; }

  private:
    static std::string_view view(trellis_str s) { return {s.data, s.len}; }
    const trellis_host *host_ = nullptr;
    trellis_request *req_ = nullptr;
    bool answered_ = false;
};

// Owns a request kept past on_request (which returned Result::Async): movable, usable from any
// one thread at a time, and released (trellis_host.request_release) when destroyed. A request
// released without an answer is answered 500 by the host.
class AsyncRequest {
  public:
    AsyncRequest() = default;
    explicit AsyncRequest(const Request &req) : request_(req.host_table(), req.raw()) {}
    AsyncRequest(AsyncRequest &&other) noexcept : request_(other.request_) { other.request_ = Request(); }
    AsyncRequest &operator=(AsyncRequest &&other) noexcept {
        if (this != &other) {
            release();
            request_ = other.request_;
            other.request_ = Request();
        }
        return *this;
    }
    AsyncRequest(const AsyncRequest &) = delete;
    AsyncRequest &operator=(const AsyncRequest &) = delete;
    ~AsyncRequest() { release(); }

    explicit operator bool() const { return request_.raw() != nullptr; }
    Request *operator->() { return &request_; }
    Request &operator*() { return request_; }
    void release() {
        if (request_.raw())
            request_.host_table()->request_release(request_.raw());
        request_ = Request();
    }

  private:
    Request request_;
};

namespace detail {

template <class P> struct Instance {
    // The plugin gets a reference to this Host, which lives as long as the plugin.
    Instance(const Host &h, std::string_view config) : host(h), plugin(host, config) {}
    Host host;
    P plugin;
};

template <class P> Instance<P> *self(void *instance) {
    return static_cast<Instance<P> *>(instance);
}

template <class P>
int create(const trellis_host *host, trellis_plugin_ctx *ctx, const char *config, size_t config_len,
           void **instance, char *err, size_t err_len) {
    // A class using ABI 1.1 hooks or flags needs a host that knows them (an older one would, say,
    // run a blocking handler on its event loop).
    constexpr bool needs_1_1 = requires {
        P::flags;
    }
    || requires(P & p, Request & r) {
        p.on_abort(r);
    }
    || requires(P & p, Request & r) {
        p.on_writable(r);
    }
    || requires(P & p, Request & r) {
        p.on_body(r, std::string_view(), true);
    };
    if (needs_1_1 && !TRELLIS_HOST_ABI_AT_LEAST(host, TRELLIS_ABI_MAJOR, 1)) {
        std::snprintf(err, err_len, "this plugin needs a server speaking ABI %d.1 or later",
                      TRELLIS_ABI_MAJOR);
        return TRELLIS_ERROR;
    }
    try {
        *instance = new Instance<P>(Host(host, ctx), std::string_view(config, config_len));
        return TRELLIS_OK;
    } catch (const std::exception &e) {
        std::snprintf(err, err_len, "%s", e.what());
    } catch (...) {
        std::snprintf(err, err_len, "unknown exception");
    }
    return TRELLIS_ERROR;
}

template <class P> void destroy(void *instance) {
    delete self<P>(instance);
}

template <class P> int on_request(void *instance, trellis_request *req) {
    Instance<P> *s = self<P>(instance);
    try {
        Request request(s->host.raw(), req);
        if constexpr (std::is_void_v<decltype(s->plugin.on_request(request))>) {
            s->plugin.on_request(request);
            return TRELLIS_OK;
        } else {
            return static_cast<int>(s->plugin.on_request(request));
        }
    } catch (const std::exception &e) {
        s->host.log(TRELLIS_LOG_ERROR, std::string("on_request threw: ") + e.what());
    } catch (...) {
        s->host.log(TRELLIS_LOG_ERROR, "on_request threw an unknown exception");
    }
    return TRELLIS_ERROR;
}

template <class P> int on_worker_start(void *instance, unsigned worker) {
    Instance<P> *s = self<P>(instance);
    try {
        return s->plugin.on_worker_start(worker) ? TRELLIS_OK : TRELLIS_ERROR;
    } catch (const std::exception &e) {
        s->host.log(TRELLIS_LOG_ERROR, std::string("on_worker_start threw: ") + e.what());
    } catch (...) {
        s->host.log(TRELLIS_LOG_ERROR, "on_worker_start threw an unknown exception");
    }
    return TRELLIS_ERROR;
}

template <class P> void on_worker_stop(void *instance, unsigned worker) {
    Instance<P> *s = self<P>(instance);
    try {
        s->plugin.on_worker_stop(worker);
    } catch (const std::exception &e) {
        s->host.log(TRELLIS_LOG_ERROR, std::string("on_worker_stop threw: ") + e.what());
    } catch (...) {
        s->host.log(TRELLIS_LOG_ERROR, "on_worker_stop threw an unknown exception");
    }
}

template <class P> void on_abort(void *instance, trellis_request *req) {
    Instance<P> *s = self<P>(instance);
    try {
        Request request(s->host.raw(), req);
        s->plugin.on_abort(request);
    } catch (const std::exception &e) {
        s->host.log(TRELLIS_LOG_ERROR, std::string("on_abort threw: ") + e.what());
    } catch (...) {
        s->host.log(TRELLIS_LOG_ERROR, "on_abort threw an unknown exception");
    }
}

template <class P> void on_writable(void *instance, trellis_request *req) {
    Instance<P> *s = self<P>(instance);
    try {
        Request request(s->host.raw(), req);
        s->plugin.on_writable(request);
    } catch (const std::exception &e) {
        s->host.log(TRELLIS_LOG_ERROR, std::string("on_writable threw: ") + e.what());
    } catch (...) {
        s->host.log(TRELLIS_LOG_ERROR, "on_writable threw an unknown exception");
    }
}

template <class P> int on_body(void *instance, trellis_request *req, const char *data, size_t len, int last) {
    Instance<P> *s = self<P>(instance);
    try {
        Request request(s->host.raw(), req);
        return static_cast<int>(s->plugin.on_body(request, std::string_view(data, len), last != 0));
    } catch (const std::exception &e) {
        s->host.log(TRELLIS_LOG_ERROR, std::string("on_body threw: ") + e.what());
    } catch (...) {
        s->host.log(TRELLIS_LOG_ERROR, "on_body threw an unknown exception");
    }
    return TRELLIS_ERROR;
}

template <class P> const trellis_plugin *descriptor(const char *name, const char *version) {
    static const trellis_plugin plugin = [&] {
        trellis_plugin d{};
        d.abi_version = TRELLIS_ABI_VERSION;
        d.struct_size = sizeof(trellis_plugin);
        d.name = name;
        d.version = version;
        d.create = create<P>;
        d.destroy = destroy<P>;
        d.on_request = on_request<P>;
        if constexpr (requires(P & p) { p.on_worker_start(0u); })
            d.on_worker_start = on_worker_start<P>;
        if constexpr (requires(P & p) { p.on_worker_stop(0u); })
            d.on_worker_stop = on_worker_stop<P>;
        if constexpr (requires(P & p, Request & r) { p.on_abort(r); })
            d.on_abort = on_abort<P>;
        if constexpr (requires(P & p, Request & r) { p.on_writable(r); })
            d.on_writable = on_writable<P>;
        if constexpr (requires(P & p, Request & r) { p.on_body(r, std::string_view(), true); })
            d.on_body = on_body<P>;
        if constexpr (requires { P::flags; })
            d.flags = P::flags;
        // ABI 1.2: `static constexpr const char *allow = "GET, HEAD";` names the methods on_request
        // answers, for the Allow of the server's own 405s on the plugin's routes (TRACE).
        if constexpr (requires { P::allow; })
            d.allow = P::allow;
        return d;
    }();
    return &plugin;
}

} // namespace detail
} // namespace trellis

// Exports the entry symbol for plugin class `Class`.
#define TRELLIS_PLUGIN(Class, name, version)                                                                 \
    extern "C" TRELLIS_EXPORT const trellis_plugin *trellis_plugin_entry(void) {                             \
        return ::trellis::detail::descriptor<Class>(name, version);                                          \
    }

#endif // TRELLIS_PLUGIN_HPP
