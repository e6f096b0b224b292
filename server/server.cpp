#include "server.hpp"

#include "generation.hpp"
#include "listen_sockets.hpp"
#include "listener.hpp"
#include "log/access_log.hpp"
#include "log/log.hpp"
#include "metrics/metrics.hpp"
#include "plugin/loader.hpp"
#include "router.hpp"
#include "service/notify.hpp"
#include "service/upgrade.hpp"
#include "thread_pool.hpp"
#include "transport/factory.hpp"
#include "worker.hpp"

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>
#include <uv.h>

namespace trellis {
namespace {

// Each connection needs a descriptor: raise the soft limit as far as the hard one allows, and keep
// max_connections below it with a margin (listeners, log files, plugins' files, files being sent),
// so the server pauses accepts at its own cap before accept() ever fails with EMFILE.
// `at_start`: also log the limits when nothing was lowered (a reload says only what changed).
void raise_fd_limit(uint32_t &max_connections, bool at_start) {
    struct rlimit limit;
    if (getrlimit(RLIMIT_NOFILE, &limit) != 0)
        return;
    if (limit.rlim_cur < limit.rlim_max) {
        limit.rlim_cur = limit.rlim_max;
        setrlimit(RLIMIT_NOFILE, &limit);
        getrlimit(RLIMIT_NOFILE, &limit);
    }
    if (limit.rlim_cur == RLIM_INFINITY) {
        if (at_start)
            SERVER_LOG_INFO("file descriptor limit: unlimited; limits.max_connections %u", max_connections);
        return;
    }
    rlim_t margin = limit.rlim_cur >= 1024 ? 128 : limit.rlim_cur / 4;
    rlim_t room = limit.rlim_cur - margin;
    if (static_cast<rlim_t>(max_connections) > room) {
        SERVER_LOG_WARN("file descriptor limit %lu: limits.max_connections lowered from %u to %lu",
                        static_cast<unsigned long>(limit.rlim_cur), max_connections,
                        static_cast<unsigned long>(room));
        max_connections = static_cast<uint32_t>(room);
    }
    if (at_start)
        SERVER_LOG_INFO("file descriptor limit: %lu; limits.max_connections %u",
                        static_cast<unsigned long>(limit.rlim_cur), max_connections);
}

struct MainLoop {
    Server *server;
    uv_loop_t loop;
    uv_signal_t sigint, sigterm, sighup, sigusr1, sigusr2;
    BinaryUpgrade *upgrade = nullptr;
    uv_async_t worker_exited;
    uv_async_t worker_started;
    std::atomic<size_t> started{0};
    uv_async_t generation_released;
    std::vector<std::unique_ptr<Worker>> *workers;
    std::atomic<size_t> exited{0};
    bool stopping = false;
};

// `service_stops`: false when a new binary took over (SIGUSR2): the service goes on.
void stop_workers(MainLoop &main, bool service_stops = true) {
    if (main.stopping)
        return;
    main.stopping = true;
    if (service_stops)
        notify_service_manager("STOPPING=1"); // a signal's drain, or a worker that ended on its own
    main.server->close_listening_copies();
    for (auto &worker : *main.workers)
        worker->stop();
}

// The main loop of the running server, for workers to wake (null when not running).
std::atomic<uv_async_t *> g_generation_released{nullptr};

} // namespace

namespace {

AddressSet loopback_addresses() {
    AddressSet loopback;
    for (const char *address : {"127.0.0.0/8", "::1", "unix"})
        loopback.add(address);
    return loopback;
}

} // namespace

std::shared_ptr<Generation> build_generation(const Config &config, const Generation *previous,
                                             ServerMetrics *metrics, uint64_t number) {
    auto generation = std::make_shared<Generation>();
    generation->number = number;
    generation->limits = config.limits;
    generation->health_path = config.health_path;
    generation->plugins.load(config.plugins, config.base_dir, previous ? &previous->plugins : nullptr);
    std::vector<Route> routes;
    std::vector<RouteStats *> stats;
    for (size_t i = 0; i < config.routes.size(); ++i) {
        const RouteConfig &rc = config.routes[i];
        Route route{rc.host, rc.prefix, generation->plugins.find(rc.plugin)};
        uint32_t flags = route.plugin->flags();
        route.blocking = rc.blocking || (flags & TRELLIS_BLOCKING);
        // A private plugin (the server's own state) answers the machine it runs on unless the
        // route says whom else.
        route.restricted = rc.has_allow || (flags & TRELLIS_PRIVATE);
        route.allow = rc.has_allow ? rc.allow : loopback_addresses();
        if (!rc.has_allow && (flags & TRELLIS_PRIVATE) && metrics) // said at start and reload, not --check
            SERVER_LOG_INFO("route %s: plugin \"%s\" is private: loopback clients only (\"allow\" on the "
                            "route lists others)",
                            rc.prefix.c_str(), rc.plugin.c_str());
        route.config_json = rc.config_json;
        if (route.blocking && (flags & TRELLIS_STREAM_BODY))
            throw StartupError(
                config.source_path + ": /routes/" + std::to_string(i) + "/blocking: plugin \"" + rc.plugin +
                "\" streams request bodies (TRELLIS_STREAM_BODY) on the event loop and cannot be "
                "blocking");
        if (metrics) {
            route.stats = metrics->route(rc.host, rc.prefix, rc.plugin);
            stats.push_back(route.stats);
        }
        routes.push_back(std::move(route));
    }
    bool body_streamers = false;
    for (const Route &route : routes)
        body_streamers = body_streamers || (route.plugin->flags() & TRELLIS_STREAM_BODY);
    generation->router = std::make_unique<Router>(std::move(routes));
    generation->router->set_has_body_streamers(body_streamers);
    if (metrics)
        metrics->set_active_routes(stats);
    return generation;
}

namespace {

// What a start would find about the files the server writes, found without writing them.
void check_log_files(const Config &config) {
    // The same words as the start's own failure to open ("error_log PATH: cannot open: ..."),
    // after the JSON pointer.
    auto check = [&config](const std::string &path, const char *key) {
        std::string reason;
        if (!log_file_writable(path, reason))
            throw StartupError(config.source_path + ": /" + key + ": " + key + " " + path +
                               ": cannot open: " + reason);
    };
    if (config.access_log.target == AccessLogConfig::Target::File)
        check(config.access_log.path, "access_log");
    if (!config.error_log.to_stderr())
        check(config.error_log.path, "error_log");
}

} // namespace

void check_configuration(const Config &config) {
    check_log_files(config);
    build_generation(config, nullptr, nullptr, 1);
    for (const ListenConfig &listen : config.listen)
        if (listen.transport != TransportKind::Plain)
            check_tls(listen.tls);
}

Server::Server(Config config) : config_(std::move(config)) {}

Server::~Server() {
    for (auto &worker : workers_)
        worker->join();
    workers_.clear();
    close_listening_copies();
    // A Unix socket's file goes with the last process serving it, not with one that handed it on.
    if (served_ && !handed_over_)
        for (const std::string &path : bound_unix_paths_)
            unlink(path.c_str());
    listeners_.clear();
    if (thread_pool_)
        thread_pool_->stop(config_.limits.shutdown_timeout_ms); // run() made sure it can
    // After every worker and pool thread: hooks must not outlive their library.
    retired_.clear();
    generation_.reset();
}

void Server::start() {
    set_log_level(config_.log_level);
    check_log_files(config_);
    if (!config_.error_log.to_stderr()) {
        std::string error;
        if (!open_error_log(config_.error_log.path, error))
            throw StartupError(error);
    }
    raise_fd_limit(config_.limits.max_connections, true);

    metrics_ = std::make_unique<ServerMetrics>(config_.workers);
    generation_ = build_generation(config_, nullptr, metrics_.get(), 1);
    thread_pool_ = std::make_unique<ThreadPool>(config_.thread_pool.threads, config_.thread_pool.queue);
    metrics_->set_pool(thread_pool_->stats());
    if (config_.access_log.target == AccessLogConfig::Target::Stdout) {
        access_log_ = std::make_unique<AccessLog>(STDOUT_FILENO, config_.access_log.format);
    } else if (config_.access_log.target == AccessLogConfig::Target::File) {
        try {
            access_log_ = std::make_unique<AccessLog>(config_.access_log.path, config_.access_log.format);
        } catch (const std::exception &e) {
            throw StartupError(e.what());
        }
    }
    // Certificates first: a bad one stops the start before any socket is opened.
    for (const ListenConfig &listen : config_.listen) {
        auto settings = std::make_unique<ListenerSettings>();
        settings->config = listen;
        if (listen.transport != TransportKind::Plain)
            settings->tls = load_tls(listen.tls);
        listeners_.push_back(std::move(settings));
    }
    WorkerShared shared;
    shared.access_log = access_log_.get();
    shared.open_connections = &open_connections_;
    shared.metrics = metrics_.get();
    shared.thread_pool = thread_pool_.get();
    shared.on_generation_released = [](void *) {
        if (uv_async_t *async = g_generation_released.load())
            uv_async_send(async);
    };
    for (unsigned i = 0; i < config_.workers; ++i)
        workers_.push_back(std::make_unique<Worker>(i, config_, generation_, shared));
    open_listeners();
}

void Server::open_listeners() {
    // Every address is checked before any is bound, so a busy one leaves nothing half-open.
    InheritedSockets inherited = take_inherited_sockets();
    std::vector<std::vector<int>> sockets(listeners_.size());
    for (size_t i = 0; i < listeners_.size(); ++i) {
        sockets[i] = claim_inherited(inherited, listeners_[i]->config, i);
        if (sockets[i].empty())
            ensure_address_free(listeners_[i]->config);
    }
    for (int fd : inherited.fds) {
        SERVER_LOG_WARN("inherited listening socket %d matches no \"listen\" entry; closed", fd);
        ::close(fd);
    }
    for (size_t i = 0; i < listeners_.size(); ++i) {
        ListenerSettings &settings = *listeners_[i];
        const ListenConfig &config = settings.config;
        bool inherited_any = !sockets[i].empty();
        if (!inherited_any && !config.unix_path.empty()) {
            sockets[i].push_back(bind_unix_socket(config));
            bound_unix_paths_.push_back(config.unix_path);
        } else if (!inherited_any) {
            // Each worker its own socket: the kernel spreads connections with no accept lock.
            uint16_t port = config.port;
            for (size_t w = 0; w < workers_.size(); ++w) {
                sockets[i].push_back(bind_tcp_socket(config, port));
                port = bound_port(sockets[i].back());
            }
        } else if (!config.unix_path.empty() && inherited.from_upgrade) {
            bound_unix_paths_.push_back(config.unix_path); // ours now; systemd's .socket keeps its own
        }
        settings.bound_port = bound_port(sockets[i].front());
        // The main thread keeps a copy of each, for a new binary to inherit (SIGUSR2).
        for (int fd : sockets[i])
            if (int copy = fcntl(fd, F_DUPFD_CLOEXEC, 3); copy >= 0)
                settings.sockets.push_back(copy);
        // Every socket goes to a worker; a worker with none of its own accepts from a copy of
        // one (a Unix socket, or fewer sockets inherited than there are workers now).
        size_t count = std::max(sockets[i].size(), workers_.size());
        for (size_t s = 0; s < count; ++s) {
            int fd = s < sockets[i].size() ? sockets[i][s]
                                           : fcntl(sockets[i][s % sockets[i].size()], F_DUPFD_CLOEXEC, 3);
            if (fd < 0)
                throw StartupError("listen " + listener_url(config, settings.bound_port) + ": " +
                                   strerror(errno));
            workers_[s % workers_.size()]->listen(settings, fd);
        }
    }
    // "listening on" is said only once all of them are.
    for (auto &settings : listeners_)
        SERVER_LOG_INFO(
            "listening on %s%s", listener_url(settings->config, settings->bound_port).c_str(),
            settings->config.transport == TransportKind::Auto ? " (plain HTTP and TLS on one port)" : "");
}

std::vector<ListeningSocket> Server::listening_sockets() const {
    std::vector<ListeningSocket> sockets;
    for (size_t i = 0; i < listeners_.size(); ++i)
        for (int fd : listeners_[i]->sockets)
            sockets.push_back({fd, inherited_name(i)});
    return sockets;
}

void Server::close_listening_copies() {
    // The kernel queues connections on a listening socket while any descriptor of it is open.
    for (auto &settings : listeners_) {
        for (int fd : settings->sockets)
            ::close(fd);
        settings->sockets.clear();
    }
}

void Server::reload() {
    SERVER_LOG_INFO("SIGHUP: reloading configuration from %s", config_.source_path.c_str());
    Config next;
    bool same_listeners = false;
    try {
        next = load_config(config_.source_path);
        raise_fd_limit(next.limits.max_connections, false);
        std::shared_ptr<Generation> generation =
            build_generation(next, generation_.get(), metrics_.get(), generation_->number + 1);
        std::vector<std::string> restart_only = restart_only_changes(config_, next);
        same_listeners = std::find(restart_only.begin(), restart_only.end(), "listen") == restart_only.end();
        if (!restart_only.empty()) {
            std::string keys;
            for (const std::string &key : restart_only)
                keys += (keys.empty() ? "" : ", ") + key;
            SERVER_LOG_WARN("reload: %s changed and take%s effect at the next restart; the rest is "
                            "applied now",
                            keys.c_str(), restart_only.size() == 1 ? "s" : "");
        }
        retired_.push_back(generation_);
        generation_ = generation;
        for (auto &worker : workers_)
            worker->adopt(generation_);
        set_log_level(next.log_level);
        config_.plugin_dir = next.plugin_dir;
        config_.plugins = next.plugins;
        config_.routes = next.routes;
        config_.limits = next.limits;
        config_.log_level = next.log_level;
        ++reloads_;
        metrics_->set_generation(generation_->number, reloads_, reload_failures_);
        SERVER_LOG_INFO("reload: generation %llu active (%zu plugins, %zu routes)",
                        static_cast<unsigned long long>(generation_->number),
                        generation_->plugins.instances().size(), generation_->router->size());
    } catch (const std::exception &e) {
        ++reload_failures_;
        metrics_->set_generation(generation_->number, reloads_, reload_failures_);
        SERVER_LOG_ERROR("reload failed: %s; keeping generation %llu", e.what(),
                         static_cast<unsigned long long>(generation_->number));
        return;
    }
    // The listeners' TLS settings (all but hsts) come from the new reading when the listeners
    // themselves are unchanged; a listen change waits for the restart, TLS included.
    if (same_listeners)
        for (size_t i = 0; i < config_.listen.size(); ++i) {
            std::string hsts = config_.listen[i].tls.hsts;
            bool offer_h2 = config_.listen[i].tls.offer_h2; // http2 waits for a restart
            config_.listen[i].tls = next.listen[i].tls;
            config_.listen[i].tls.hsts = hsts;
            config_.listen[i].tls.offer_h2 = offer_h2;
        }
    reload_certificates();
    collect_generations();
}

void Server::reopen_logs() {
    bool any = false;
    if (!config_.error_log.to_stderr()) {
        any = true;
        std::string error;
        if (reopen_error_log(error))
            SERVER_LOG_INFO("SIGUSR1: reopened error log %s", config_.error_log.path.c_str());
        else
            SERVER_LOG_ERROR("SIGUSR1: cannot reopen error log: %s; still writing to the old file",
                             error.c_str());
    }
    // The access log's writer thread reopens it once what is queued is written, and logs it.
    if (access_log_ && access_log_->reopen())
        any = true;
    if (!any)
        SERVER_LOG_INFO("SIGUSR1: no log file to reopen (the logs go to stdout and stderr)");
}

void Server::collect_generations() {
    // A generation only the server still references has no worker and no request left on it.
    std::erase_if(retired_, [](const std::shared_ptr<const Generation> &g) { return g.use_count() == 1; });
}

void Server::reload_certificates() {
    bool any_tls = false;
    for (const auto &settings : listeners_)
        any_tls = any_tls || settings->tls != nullptr;
    if (!any_tls)
        return;
    SERVER_LOG_INFO("SIGHUP: reloading certificates");
    for (size_t i = 0; i < listeners_.size(); ++i) {
        ListenerSettings &settings = *listeners_[i];
        if (!settings.tls)
            continue;
        std::string where = listener_url(settings.config, settings.bound_port);
        try {
            // Everything is built here first, so a failure leaves every worker on the old state.
            // Unchanged certificates keep the sessions and ticket keys: clients resume as before.
            std::shared_ptr<TlsContext> context = load_tls(config_.listen[i].tls, settings.tls.get());
            std::vector<std::shared_ptr<const WorkerTls>> per_worker;
            for (unsigned w = 0; w < workers_.size(); ++w)
                per_worker.push_back(make_worker_tls(context, w));
            for (unsigned w = 0; w < workers_.size(); ++w)
                workers_[w]->replace_tls(settings, std::move(per_worker[w]));
            bool kept = keeps_sessions_of(*context, *settings.tls);
            settings.tls = context;
            try {
                if (kept && rotate_ticket_key(*context))
                    SERVER_LOG_INFO("tls: %s: a new key from ticket_key_file; tickets under the previous one "
                                    "still resume",
                                    where.c_str());
            } catch (const std::exception &e) { // the file changed again since the reload read it
                SERVER_LOG_ERROR("%s: %s; it keeps its ticket key", where.c_str(), e.what());
            }
            for (const std::string &certificate : describe_certificates(*context))
                SERVER_LOG_INFO("tls: %s now serves %s", where.c_str(), certificate.c_str());
            SERVER_LOG_INFO("tls: %s %s", where.c_str(),
                            kept ? "keeps its TLS sessions and ticket keys"
                                 : "starts with no TLS sessions (a certificate, key or client CA changed)");
        } catch (const std::exception &e) {
            SERVER_LOG_ERROR("%s: %s; it keeps its previous certificates", where.c_str(), e.what());
        }
    }
}

int Server::run() {
    MainLoop main;
    main.server = this;
    main.workers = &workers_;
    uv_loop_init(&main.loop);
    main.sigint.data = main.sigterm.data = main.sighup.data = main.sigusr1.data = main.sigusr2.data =
        main.worker_exited.data = main.worker_started.data = &main;
    // SIGUSR2: a new binary takes the sockets over; once it serves, this process drains.
    BinaryUpgrade upgrade(
        &main.loop,
        [](pid_t pid, void *data) {
            auto &m = *static_cast<MainLoop *>(data);
            m.server->sockets_handed_over();
            // systemd follows the new process (NotifyAccess=all lets it say READY=1 itself).
            notify_service_manager("MAINPID=" + std::to_string(pid));
            stop_workers(m, false);
        },
        &main);
    main.upgrade = &upgrade;
    main.generation_released.data = &main;
    uv_async_init(&main.loop, &main.generation_released, [](uv_async_t *handle) {
        static_cast<MainLoop *>(handle->data)->server->collect_generations();
    });
    g_generation_released = &main.generation_released;
    uv_signal_init(&main.loop, &main.sigint);
    uv_signal_init(&main.loop, &main.sigterm);
    uv_signal_init(&main.loop, &main.sighup);
    uv_signal_init(&main.loop, &main.sigusr1);
    uv_signal_init(&main.loop, &main.sigusr2);
    auto on_signal = [](uv_signal_t *handle, int signum) {
        SERVER_LOG_INFO("%s: shutting down", signum == SIGINT ? "SIGINT" : "SIGTERM");
        stop_workers(*static_cast<MainLoop *>(handle->data));
    };
    uv_signal_start(&main.sigint, on_signal, SIGINT);
    uv_signal_start(&main.sigterm, on_signal, SIGTERM);
    uv_signal_start(
        &main.sighup,
        [](uv_signal_t *handle, int) {
            auto &m = *static_cast<MainLoop *>(handle->data);
            if (m.stopping)
                return;
            notify_reloading();
            m.server->reload();
            notify_service_manager("READY=1"); // the old generation still serves when a reload fails
        },
        SIGHUP);
    // logrotate: the files were renamed; write on under their paths again.
    uv_signal_start(
        &main.sigusr1,
        [](uv_signal_t *handle, int) { static_cast<MainLoop *>(handle->data)->server->reopen_logs(); },
        SIGUSR1);
    uv_signal_start(
        &main.sigusr2,
        [](uv_signal_t *handle, int) {
            auto &m = *static_cast<MainLoop *>(handle->data);
            if (m.stopping) {
                SERVER_LOG_WARN("SIGUSR2: this process is already stopping; no upgrade");
                return;
            }
            if (m.upgrade->in_progress()) {
                SERVER_LOG_WARN("SIGUSR2: an upgrade is already in progress");
                return;
            }
            m.upgrade->start(m.server->listening_sockets());
        },
        SIGUSR2);
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
            uv_close(reinterpret_cast<uv_handle_t *>(&m.sigusr1), nullptr);
            uv_close(reinterpret_cast<uv_handle_t *>(&m.sigusr2), nullptr);
            m.upgrade->close();
            uv_close(reinterpret_cast<uv_handle_t *>(&m.worker_exited), nullptr);
            if (!uv_is_closing(reinterpret_cast<uv_handle_t *>(&m.worker_started)))
                uv_close(reinterpret_cast<uv_handle_t *>(&m.worker_started), nullptr);
            g_generation_released = nullptr;
            uv_close(reinterpret_cast<uv_handle_t *>(&m.generation_released), nullptr);
        }
    });
    // Ready once every worker runs its plugins: a plugin that fails to start on a worker stops the
    // server before a service manager, or the process this one upgrades, is told it serves.
    uv_async_init(&main.loop, &main.worker_started, [](uv_async_t *handle) {
        auto &m = *static_cast<MainLoop *>(handle->data);
        if (m.started.load() != m.workers->size() || m.stopping)
            return;
        uv_close(reinterpret_cast<uv_handle_t *>(handle), nullptr);
        m.server->now_serving();
        notify_service_manager("READY=1");
        tell_old_process_ready(); // when this process is a SIGUSR2 upgrade's new one
    });
    for (auto &worker : workers_)
        worker->start(
            [](void *data) {
                auto &m = *static_cast<MainLoop *>(data);
                m.started.fetch_add(1);
                uv_async_send(&m.worker_started);
            },
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
    // A blocking handler that never returns still runs plugin code: unloading it would pull the
    // code from under that thread, so the process ends here without unloading anything.
    if (thread_pool_ && !thread_pool_->stop(config_.limits.shutdown_timeout_ms)) {
        SERVER_LOG_ERROR("blocking handlers still running after %u ms; exiting without unloading plugins",
                         config_.limits.shutdown_timeout_ms);
        access_log_.reset(); // flushes
        fflush(stderr);
        _exit(ok ? 0 : 1);
    }
    SERVER_LOG_INFO("stopped");
    return ok ? 0 : 1;
}

} // namespace trellis
