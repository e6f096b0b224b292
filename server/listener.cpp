#include "listener.hpp"

#include "errors.hpp"
#include "exchange.hpp"
#include "listen_sockets.hpp"
#include "log/log.hpp"
#include "proxy_header_reader.hpp"
#include "worker_context.hpp"

#include <arpa/inet.h>
#include <cerrno>
#include <cstring>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

namespace trellis {
namespace {

// Bounded accepts per wake-up, so a connection storm cannot starve the connections already open.
constexpr int kAcceptsPerWakeup = 64;
constexpr uint64_t kAcceptPauseMs = 100;

} // namespace

Listener *Listener::watch_socket(WorkerContext &worker, const ListenerSettings &settings,
                                 std::shared_ptr<const WorkerTls> tls, int fd) {
    // In the worker's epoll set with its connections: accepting needs no turn of libuv.
    auto *listener = new Listener(worker, settings, std::move(tls), fd);
    listener->resume_timer_.data = listener;
    uv_timer_init(worker.loop(), &listener->resume_timer_);
    if (!worker.poller.watch(fd, listener, 0, EPOLLIN)) {
        std::string why = strerror(errno);
        uv_close(reinterpret_cast<uv_handle_t *>(&listener->resume_timer_), uv_on_close);
        throw StartupError("listen " + listener_url(settings.config, settings.bound_port) +
                           ": epoll: " + why);
    }
    listener->watched_ = EPOLLIN;
    return listener;
}

void Listener::watch(uint32_t events) {
    if (worker_.poller.watch(fd_, this, watched_, events))
        watched_ = events;
}

void Listener::close() {
    watch(0);
    uv_close(reinterpret_cast<uv_handle_t *>(&resume_timer_), uv_on_close);
}

void Listener::uv_on_close(uv_handle_t *handle) noexcept {
    // Out of the epoll set since close(); libuv is done with the timer now.
    auto *self = static_cast<Listener *>(handle->data);
    ::close(self->fd_);
    delete self;
}

void Listener::on_epoll(uint32_t events) {
    if (events & EPOLLIN)
        on_readable();
}

void Listener::uv_on_resume(uv_timer_t *timer) noexcept {
    static_cast<Listener *>(timer->data)->watch(EPOLLIN);
}

void Listener::warn_at_limit() {
    // Once a second at most: a flood must not turn into a flood of log lines.
    uint64_t now = uv_now(worker_.loop());
    if (last_limit_warning_ms_ == 0 || now - last_limit_warning_ms_ >= 1000) {
        last_limit_warning_ms_ = now;
        SERVER_LOG_WARN("limits.max_connections (%u) reached: new connections wait (worker %u)",
                        worker_.limits().max_connections, worker_.index());
    }
}

void Listener::pause_accepting() {
    // Out of descriptors: accepting again at once would spin on EMFILE. Wait for some to close.
    watch(0);
    uv_timer_start(&resume_timer_, uv_on_resume, kAcceptPauseMs, 0);
}

void Listener::on_readable() {
    for (int i = 0; i < kAcceptsPerWakeup; ++i) {
        if (worker_.open_connections->load(std::memory_order_relaxed) >= worker_.limits().max_connections) {
            // At the cap, new clients wait in the kernel's backlog until connections close, instead
            // of being accepted only to be closed.
            warn_at_limit();
            pause_accepting();
            return;
        }
        sockaddr_storage peer;
        socklen_t length = sizeof peer;
        int fd = accept4(fd_, reinterpret_cast<sockaddr *>(&peer), &length, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            accept_one(fd, reinterpret_cast<sockaddr *>(&peer));
            continue;
        }
        if (errno == EINTR || errno == ECONNABORTED)
            continue;
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
            SERVER_LOG_WARN("accept: %s; pausing accepts for %lu ms", strerror(errno),
                            static_cast<unsigned long>(kAcceptPauseMs));
            pause_accepting();
        }
        return; // EAGAIN, or an error we cannot fix by retrying now
    }
}

void Listener::accept_one(int fd, const sockaddr *peer) {
    uint32_t open = worker_.open_connections->fetch_add(1, std::memory_order_relaxed);
    if (open >= worker_.limits().max_connections) {
        worker_.open_connections->fetch_sub(1, std::memory_order_relaxed);
        // Another worker took the last place between the check and this accept.
        worker_.stats.connections_rejected.add();
        ::close(fd);
        warn_at_limit();
        pause_accepting();
        return;
    }
    const ListenConfig &config = settings_.config;
    if (config.proxy_protocol) {
        // Only a trusted balancer may say whom a connection is for; anyone else is not heard.
        if (!config.trusted_proxies.contains(peer)) {
            refuse_untrusted(fd, peer);
            return;
        }
        ProxyHeaderReader::start(worker_, fd, peer, settings_, tls_);
        return;
    }
    start_connection(worker_, fd, settings_, tls_, peer);
}

void Listener::refuse_untrusted(int fd, const sockaddr *peer) {
    ::close(fd);
    worker_.open_connections->fetch_sub(1, std::memory_order_relaxed);
    worker_.stats.proxy_refused.add();
    // Once a second at most, like warn_at_limit: a scan must not become a flood of log lines.
    uint64_t now = uv_now(worker_.loop());
    if (last_untrusted_warning_ms_ == 0 || now - last_untrusted_warning_ms_ >= 1000) {
        last_untrusted_warning_ms_ = now;
        char text[64];
        sockaddr_in6 address{};
        memcpy(&address, peer, peer->sa_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in));
        text[peer_text(address, text, sizeof text)] = '\0';
        SERVER_LOG_WARN("%s: connection from %s closed: not in trusted_proxies, and this listener expects a "
                        "PROXY protocol header",
                        listener_url(settings_.config, settings_.bound_port).c_str(), text);
    }
}

} // namespace trellis
