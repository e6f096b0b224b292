// Trellis plugin helper for C++: header-only, compiled into the plugin, never crosses the ABI.
//
// A plugin is a class with a constructor taking (const trellis::Host &, std::string_view config)
// and an on_request(trellis::Request &) that returns trellis::Result (or void, meaning Ok):
//
//     struct Greeter {
//         Greeter(const trellis::Host &, std::string_view config_json) {}
//         trellis::Result on_request(trellis::Request &req) {
//             req.header("Content-Type", "text/plain");
//             req.respond(200, "hi from C++\n");
//             return trellis::Result::Ok;
//         }
//     };
//     TRELLIS_PLUGIN(Greeter, "greeter", "1.0")
//
// Optional members, used when present: on_worker_start(unsigned) -> bool, on_worker_stop(unsigned).
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

enum class Result { Ok = TRELLIS_OK, Declined = TRELLIS_DECLINED, Error = TRELLIS_ERROR };

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

  private:
    const trellis_host *host_;
    trellis_plugin_ctx *ctx_;
};

// A request handle for the duration of on_request. Views returned share the request's lifetime.
class Request {
  public:
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

    std::optional<std::string_view> header(std::string_view name) const {
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
    std::string peer() const {
        char buffer[64];
        size_t n = host_->request_peer(req_, buffer, sizeof buffer);
        return std::string(buffer, n);
    }

    // Adds a response header; false if the host refused it (see trellis_host.response_header).
    bool header(std::string_view name, std::string_view value) {
        return host_->response_header(req_, name.data(), name.size(), value.data(), value.size()) == 0;
    }
    bool respond(int status, std::string_view body) {
        answered_ = host_->respond(req_, status, body.data(), body.size()) == 0 || answered_;
        return answered_;
    }
    // Takes ownership of fd.
    bool respond_file(int status, int fd) {
        answered_ = host_->respond_file(req_, status, fd) == 0 || answered_;
        return answered_;
    }
    bool answered() const { return answered_; }
    trellis_request *raw() const { return req_; }

  private:
    static std::string_view view(trellis_str s) { return {s.data, s.len}; }
    const trellis_host *host_;
    trellis_request *req_;
    bool answered_ = false;
};

namespace detail {

template <class P> struct Instance {
    Host host;
    P plugin;
};

template <class P> Instance<P> *self(void *instance) {
    return static_cast<Instance<P> *>(instance);
}

template <class P>
int create(const trellis_host *host, trellis_plugin_ctx *ctx, const char *config, size_t config_len,
           void **instance, char *err, size_t err_len) {
    try {
        Host h(host, ctx);
        *instance = new Instance<P>{h, P(h, std::string_view(config, config_len))};
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
    }
    return TRELLIS_ERROR;
}

template <class P> void on_worker_stop(void *instance, unsigned worker) {
    Instance<P> *s = self<P>(instance);
    try {
        s->plugin.on_worker_stop(worker);
    } catch (const std::exception &e) {
        s->host.log(TRELLIS_LOG_ERROR, std::string("on_worker_stop threw: ") + e.what());
    }
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
