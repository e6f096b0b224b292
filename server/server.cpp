#include "server.hpp"

#include "listener.hpp"
#include "log/access_log.hpp"
#include "log/log.hpp"
#include "plugin/loader.hpp"
#include "router.hpp"
#include "transport/tls_context.hpp"
#include "worker.hpp"

#include <csignal>
#include <sys/resource.h>
#include <uv.h>

namespace trellis {
namespace {

std::unique_ptr<Router> build_router(const Config &config, PluginSet &plugins) {
    std::vector<Route> routes;
    for (const RouteConfig &rc : config.routes)
        routes.push_back(Route{rc.host, rc.prefix, plugins.find(rc.plugin)});
    return std::make_unique<Router>(std::move(routes));
}

// Each connection needs a descriptor; raise the soft limit as far as the hard one allows.
void raise_fd_limit(uint32_t max_connections) {
    struct rlimit limit;
    if (getrlimit(RLIMIT_NOFILE, &limit) != 0)
        return;
    if (limit.rlim_cur < limit.rlim_max) {
        limit.rlim_cur = limit.rlim_max;
        setrlimit(RLIMIT_NOFILE, &limit);
        getrlimit(RLIMIT_NOFILE, &limit);
    }
    TRELLIS_LOG_DEBUG("file descriptor limit: %lu", static_cast<unsigned long>(limit.rlim_cur));
    if (limit.rlim_cur != RLIM_INFINITY && limit.rlim_cur < static_cast<rlim_t>(max_connections) + 64)
        TRELLIS_LOG_WARN("file descriptor limit %lu is below limits.max_connections (%u) plus a margin; "
                         "accepts pause when descriptors run out",
                         static_cast<unsigned long>(limit.rlim_cur), max_connections);
}

struct MainLoop {
    Server *server;
    uv_loop_t loop;
    uv_signal_t sigint, sigterm, sighup;
    uv_async_t worker_exited;
    std::vector<std::unique_ptr<Worker>> *workers;
    std::atomic<size_t> exited{0};
    bool stopping = false;
};

void stop_workers(MainLoop &main) {
    if (main.stopping)
        return;
    main.stopping = true;
    for (auto &worker : *main.workers)
        worker->stop();
}

} // namespace

void check_configuration(const Config &config) {
    PluginSet plugins;
    plugins.load(config.plugins, config.base_dir);
    for (const ListenConfig &listen : config.listen)
        if (listen.transport != TransportKind::Plain)
            TlsContext::load(listen.tls, true);
}

Server::Server(Config config) : config_(std::move(config)) {}

Server::~Server() {
    for (auto &worker : workers_)
        worker->join();
    workers_.clear();
    router_.reset();
    listeners_.clear();
    plugins_.reset(); // after every worker: hooks must not outlive their library
}

void Server::start() {
    LogLevel level = LogLevel::Info;
    parse_log_level(config_.log_level, level);
    set_log_level(level);
    raise_fd_limit(config_.limits.max_connections);

    plugins_ = std::make_unique<PluginSet>();
    plugins_->load(config_.plugins, config_.base_dir);
    router_ = build_router(config_, *plugins_);
    if (config_.access_log != "off") {
        try {
            access_log_ = std::make_unique<AccessLog>(config_.access_log);
        } catch (const std::exception &e) {
            throw StartupError(e.what());
        }
    }
    // Certificates first: a bad one stops the start before any socket is opened.
    for (const ListenConfig &listen : config_.listen) {
        auto settings = std::make_unique<ListenerSettings>();
        settings->config = listen;
        if (listen.transport != TransportKind::Plain)
            settings->tls = TlsContext::load(listen.tls);
        listeners_.push_back(std::move(settings));
    }
    for (unsigned i = 0; i < config_.workers; ++i)
        workers_.push_back(std::make_unique<Worker>(i, config_, router_.get(), plugins_.get(),
                                                    access_log_.get(), &open_connections_));
    // Then every socket; "listening on" is said only once all of them are.
    for (auto &settings : listeners_) {
        uint16_t port = settings->config.port;
        for (auto &worker : workers_)
            port = worker->listen(*settings, port);
        settings->bound_port = port;
    }
    for (auto &settings : listeners_)
        TRELLIS_LOG_INFO(
            "listening on %s%s", listener_url(settings->config, settings->bound_port).c_str(),
            settings->config.transport == TransportKind::Auto ? " (plain HTTP and TLS on one port)" : "");
}

void Server::reload_certificates() {
    TRELLIS_LOG_INFO("SIGHUP: reloading certificates");
    for (size_t i = 0; i < listeners_.size(); ++i) {
        ListenerSettings &settings = *listeners_[i];
        if (!settings.tls)
            continue;
        std::string where = listener_url(settings.config, settings.bound_port);
        try {
            // Everything is built here first, so a failure leaves every worker on the old state.
            std::shared_ptr<TlsContext> context = TlsContext::load(settings.config.tls);
            std::vector<std::shared_ptr<const WorkerTls>> per_worker;
            for (unsigned w = 0; w < workers_.size(); ++w)
                per_worker.push_back(std::make_shared<WorkerTls>(context, w));
            for (unsigned w = 0; w < workers_.size(); ++w)
                workers_[w]->replace_tls(i, std::move(per_worker[w]));
            settings.tls = context;
            for (const auto &cert : context->certificates())
                TRELLIS_LOG_INFO("tls: %s now serves %s (SHA-256 fingerprint %s)", where.c_str(),
                                 cert->cert_file.c_str(), certificate_fingerprint(cert->chain).c_str());
        } catch (const std::exception &e) {
            TRELLIS_LOG_ERROR("%s: %s; it keeps its previous certificates", where.c_str(), e.what());
        }
    }
}

int Server::run() {
    MainLoop main;
    main.server = this;
    main.workers = &workers_;
    uv_loop_init(&main.loop);
    main.sigint.data = main.sigterm.data = main.sighup.data = main.worker_exited.data = &main;
    uv_signal_init(&main.loop, &main.sigint);
    uv_signal_init(&main.loop, &main.sigterm);
    uv_signal_init(&main.loop, &main.sighup);
    auto on_signal = [](uv_signal_t *handle, int signum) {
        TRELLIS_LOG_INFO("%s: shutting down", signum == SIGINT ? "SIGINT" : "SIGTERM");
        stop_workers(*static_cast<MainLoop *>(handle->data));
    };
    uv_signal_start(&main.sigint, on_signal, SIGINT);
    uv_signal_start(&main.sigterm, on_signal, SIGTERM);
    uv_signal_start(
        &main.sighup,
        [](uv_signal_t *handle, int) {
            auto &m = *static_cast<MainLoop *>(handle->data);
            if (!m.stopping)
                m.server->reload_certificates();
        },
        SIGHUP);
    uv_async_init(&main.loop, &main.worker_exited, [](uv_async_t *handle) {
        auto &m = *static_cast<MainLoop *>(handle->data);
        // A worker that exits on its own (a plugin failed to start) takes the others with it.
        stop_workers(m);
        if (m.exited.load() == m.workers->size()) {
            // The last worker may still be inside its uv_async_send: join before closing the handle.
            for (auto &worker : *m.workers)
                worker->join();
            uv_close(reinterpret_cast<uv_handle_t *>(&m.sigint), nullptr);
            uv_close(reinterpret_cast<uv_handle_t *>(&m.sigterm), nullptr);
            uv_close(reinterpret_cast<uv_handle_t *>(&m.sighup), nullptr);
            uv_close(reinterpret_cast<uv_handle_t *>(&m.worker_exited), nullptr);
        }
    });
    for (auto &worker : workers_)
        worker->start(
            [](void *data) {
                auto &m = *static_cast<MainLoop *>(data);
                m.exited.fetch_add(1);
                uv_async_send(&m.worker_exited);
            },
            &main);
    uv_run(&main.loop, UV_RUN_DEFAULT);
    uv_loop_close(&main.loop);
    bool ok = true;
    for (auto &worker : workers_) {
        worker->join();
        ok = ok && worker->started_ok();
    }
    TRELLIS_LOG_INFO("stopped");
    return ok ? 0 : 1;
}

} // namespace trellis
