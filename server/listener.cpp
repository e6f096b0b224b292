#include "listener.hpp"

#include "errors.hpp"
#include "http1/connection.hpp"
#include "log/log.hpp"
#include "transport/factory.hpp"
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

std::string listener_url(const ListenConfig &config, uint16_t port) {
    bool v6 = config.address.find(':') != std::string::npos;
    const char *scheme = config.transport == TransportKind::Tls ? "https://" : "http://";
    return scheme + (v6 ? "[" + config.address + "]" : config.address) + ":" + std::to_string(port);
}

namespace {

// The socket address of a listener; the configuration has checked the syntax.
socklen_t socket_address(const ListenConfig &config, uint16_t port, sockaddr_storage &address) {
    address = {};
    if (uv_ip4_addr(config.address.c_str(), port, reinterpret_cast<sockaddr_in *>(&address)) == 0)
        return sizeof(sockaddr_in);
    if (uv_ip6_addr(config.address.c_str(), port, reinterpret_cast<sockaddr_in6 *>(&address)) == 0)
        return sizeof(sockaddr_in6);
    throw StartupError("listen " + config.address + ": not an IPv4 or IPv6 address");
}

} // namespace

void ensure_address_free(const ListenConfig &config) {
    if (config.port == 0)
        return; // the kernel picks a port no one holds
    // The workers bind with SO_REUSEPORT, which the kernel also grants to any other process of
    // the same user already on this port: two servers would then split the connections between
    // them without a word. A socket without SO_REUSEPORT is refused by any holder, ours included,
    // so bind one first, alone, and let it go before the workers bind theirs.
    sockaddr_storage address;
    socklen_t length = socket_address(config, config.port, address);
    std::string where = listener_url(config, config.port);
    int fd = socket(address.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        throw StartupError("listen " + where + ": socket: " + strerror(errno));
    int on = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on); // a TIME_WAIT is not a holder
    int rc = bind(fd, reinterpret_cast<sockaddr *>(&address), length);
    int error = errno;
    ::close(fd);
    if (rc != 0)
        throw StartupError("listen " + where + ": " + strerror(error));
}

Listener *Listener::open(WorkerContext &worker, const ListenerSettings &settings,
                         std::shared_ptr<const WorkerTls> tls, uint16_t port) {
    const ListenConfig &config = settings.config;
    sockaddr_storage address;
    socklen_t length = socket_address(config, port, address);
    auto *v4 = reinterpret_cast<sockaddr_in *>(&address);
    auto *v6 = reinterpret_cast<sockaddr_in6 *>(&address);
    std::string where = listener_url(config, port);
    int fd = socket(address.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        throw StartupError("listen " + where + ": socket: " + strerror(errno));
    int on = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof on) != 0 ||
        bind(fd, reinterpret_cast<sockaddr *>(&address), length) != 0 || listen(fd, SOMAXCONN) != 0) {
        std::string why = strerror(errno);
        ::close(fd);
        throw StartupError("listen " + where + ": " + why);
    }
    // Accepted sockets inherit TCP_NODELAY from the listener: one setsockopt here, none per connection.
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
    if (getsockname(fd, reinterpret_cast<sockaddr *>(&address), &length) == 0)
        port = ntohs(address.ss_family == AF_INET ? v4->sin_port : v6->sin6_port);

    // In the worker's epoll set with its connections: accepting needs no turn of libuv.
    auto *listener = new Listener(worker, settings, std::move(tls), fd, port);
    listener->resume_timer_.data = listener;
    uv_timer_init(worker.loop(), &listener->resume_timer_);
    if (!worker.poller.watch(fd, listener, 0, EPOLLIN)) {
        std::string why = strerror(errno);
        uv_close(reinterpret_cast<uv_handle_t *>(&listener->resume_timer_), uv_on_close);
        throw StartupError("listen " + where + ": epoll: " + why);
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
    Transport *transport = create_transport(worker_.poller, fd, settings_.config.transport, tls_);
    if (!transport) {
        worker_.open_connections->fetch_sub(1, std::memory_order_relaxed);
        return;
    }
    Connection::start(worker_, transport, peer, &settings_.config);
}

} // namespace trellis
