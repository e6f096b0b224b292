#include "listen_sockets.hpp"

#include "errors.hpp"
#include "log/log.hpp"

#include <arpa/inet.h>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <grp.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pwd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

namespace trellis {

std::string listener_url(const ListenConfig &config, uint16_t port) {
    if (!config.unix_path.empty())
        return (config.transport == TransportKind::Tls ? "https+unix:" : "unix:") + config.unix_path;
    bool v6 = config.address.find(':') != std::string::npos;
    const char *scheme = config.transport == TransportKind::Tls ? "https://" : "http://";
    return scheme + (v6 ? "[" + config.address + "]" : config.address) + ":" + std::to_string(port);
}

namespace {

// The socket address of a TCP listener; the configuration has checked the syntax.
socklen_t tcp_address(const ListenConfig &config, uint16_t port, sockaddr_storage &address) {
    address = {};
    std::string host = config.address.substr(0, config.address.find('%'));
    auto *v4 = reinterpret_cast<sockaddr_in *>(&address);
    auto *v6 = reinterpret_cast<sockaddr_in6 *>(&address);
    if (inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons(port);
        return sizeof(sockaddr_in);
    }
    address = {};
    if (inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons(port);
        if (size_t zone = config.address.find('%'); zone != std::string::npos)
            v6->sin6_scope_id = if_nametoindex(config.address.c_str() + zone + 1);
        return sizeof(sockaddr_in6);
    }
    throw StartupError("listen " + config.address + ": not an IPv4 or IPv6 address");
}

sockaddr_un unix_address(const ListenConfig &config) {
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    memcpy(address.sun_path, config.unix_path.c_str(), config.unix_path.size() + 1); // checked: < 108
    return address;
}

enum class UnixPath { Free, Stale, Live, NotASocket };

// Whether a server is behind an existing socket file: a connect answers that without a guess.
UnixPath probe_unix_path(const ListenConfig &config) {
    struct stat st;
    if (lstat(config.unix_path.c_str(), &st) != 0)
        return UnixPath::Free;
    if (!S_ISSOCK(st.st_mode))
        return UnixPath::NotASocket;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return UnixPath::Live; // cannot tell: do not remove it
    sockaddr_un address = unix_address(config);
    int rc = connect(fd, reinterpret_cast<sockaddr *>(&address), sizeof address);
    int error = errno;
    ::close(fd);
    return rc == 0 || error == EAGAIN ? UnixPath::Live
           : error == ECONNREFUSED    ? UnixPath::Stale
                                      : UnixPath::Live;
}

[[noreturn]] void fail(const ListenConfig &config, uint16_t port, const std::string &why) {
    throw StartupError("listen " + listener_url(config, port) + ": " + why);
}

bool same_address(const ListenConfig &config, const sockaddr_storage &bound) {
    sockaddr_storage wanted;
    tcp_address(config, 0, wanted);
    if (wanted.ss_family != bound.ss_family)
        return false;
    if (bound.ss_family == AF_INET)
        return memcmp(&reinterpret_cast<const sockaddr_in &>(wanted).sin_addr,
                      &reinterpret_cast<const sockaddr_in &>(bound).sin_addr, sizeof(in_addr)) == 0;
    return memcmp(&reinterpret_cast<const sockaddr_in6 &>(wanted).sin6_addr,
                  &reinterpret_cast<const sockaddr_in6 &>(bound).sin6_addr, sizeof(in6_addr)) == 0;
}

} // namespace

std::string inherited_name(size_t index) {
    return "listen" + std::to_string(index);
}

InheritedSockets take_inherited_sockets() {
    InheritedSockets inherited;
    const char *count = getenv("LISTEN_FDS");
    const char *pid = getenv("LISTEN_PID");
    const char *names = getenv("LISTEN_FDNAMES");
    // systemd names the process the sockets are for; a Trellis upgrade starts the new process
    // itself, so it cannot know the pid beforehand and says where they come from instead.
    inherited.from_upgrade = getenv("TRELLIS_UPGRADE_FROM") != nullptr;
    bool for_us = (pid && strtol(pid, nullptr, 10) == getpid()) || inherited.from_upgrade;
    int n = count && for_us ? atoi(count) : 0;
    std::string all_names = names ? names : "";
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDNAMES");
    unsetenv("TRELLIS_UPGRADE_FROM");
    size_t at = 0;
    for (int i = 0; i < n && i < 1024; ++i) {
        int fd = 3 + i;
        size_t colon = all_names.find(':', at);
        std::string name = at <= all_names.size() ? all_names.substr(at, colon - at) : "";
        at = colon == std::string::npos ? all_names.size() + 1 : colon + 1;
        int listening = 0;
        socklen_t length = sizeof listening;
        if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &length) != 0 || !listening) {
            SERVER_LOG_WARN("inherited descriptor %d is not a listening socket; ignored", fd);
            continue;
        }
        fcntl(fd, F_SETFD, FD_CLOEXEC);
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
        inherited.fds.push_back(fd);
        inherited.names.push_back(name);
    }
    return inherited;
}

std::vector<int> claim_inherited(InheritedSockets &inherited, const ListenConfig &config, size_t index) {
    std::vector<int> claimed;
    for (size_t i = 0; i < inherited.fds.size();) {
        sockaddr_storage bound{};
        socklen_t length = sizeof bound;
        bool match = false;
        if (getsockname(inherited.fds[i], reinterpret_cast<sockaddr *>(&bound), &length) == 0) {
            if (!config.unix_path.empty()) {
                match = bound.ss_family == AF_UNIX &&
                        config.unix_path == reinterpret_cast<const sockaddr_un &>(bound).sun_path;
            } else if (bound.ss_family == AF_INET || bound.ss_family == AF_INET6) {
                match = same_address(config, bound) &&
                        (config.port != 0 ? bound_port(inherited.fds[i]) == config.port
                                          : inherited.names[i] == inherited_name(index));
            }
        }
        if (match) {
            claimed.push_back(inherited.fds[i]);
            inherited.fds.erase(inherited.fds.begin() + static_cast<ptrdiff_t>(i));
            inherited.names.erase(inherited.names.begin() + static_cast<ptrdiff_t>(i));
        } else {
            ++i;
        }
    }
    return claimed;
}

void ensure_address_free(const ListenConfig &config) {
    if (!config.unix_path.empty()) {
        switch (probe_unix_path(config)) {
        case UnixPath::NotASocket:
            fail(config, 0, "exists and is not a socket");
        case UnixPath::Live:
            fail(config, 0, strerror(EADDRINUSE));
        default:
            return; // a stale socket is replaced when bound
        }
    }
    if (config.port == 0)
        return; // the kernel picks a port no one holds
    // The workers bind with SO_REUSEPORT, which the kernel also grants to any other process of
    // the same user already on this port: two servers would then split the connections between
    // them without a word. A socket without SO_REUSEPORT is refused by any holder, ours included,
    // so bind one first, alone, and let it go before the workers bind theirs.
    sockaddr_storage address;
    socklen_t length = tcp_address(config, config.port, address);
    int fd = socket(address.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        fail(config, config.port, std::string("socket: ") + strerror(errno));
    int on = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on); // a TIME_WAIT is not a holder
    int rc = bind(fd, reinterpret_cast<sockaddr *>(&address), length);
    int error = errno;
    ::close(fd);
    if (rc != 0)
        fail(config, config.port, strerror(error));
}

int bind_tcp_socket(const ListenConfig &config, uint16_t port) {
    sockaddr_storage address;
    socklen_t length = tcp_address(config, port, address);
    int fd = socket(address.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        fail(config, port, std::string("socket: ") + strerror(errno));
    int on = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof on) != 0 ||
        bind(fd, reinterpret_cast<sockaddr *>(&address), length) != 0 || listen(fd, SOMAXCONN) != 0) {
        std::string why = strerror(errno);
        ::close(fd);
        fail(config, port, why);
    }
    // Accepted sockets inherit TCP_NODELAY from the listener: one setsockopt here, none per connection.
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
    return fd;
}

int bind_unix_socket(const ListenConfig &config) {
    sockaddr_un address = unix_address(config);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        fail(config, 0, std::string("socket: ") + strerror(errno));
    int rc = bind(fd, reinterpret_cast<sockaddr *>(&address), sizeof address);
    if (rc != 0 && errno == EADDRINUSE && probe_unix_path(config) == UnixPath::Stale) {
        // Left by a process that died: no one answers behind it.
        unlink(config.unix_path.c_str());
        rc = bind(fd, reinterpret_cast<sockaddr *>(&address), sizeof address);
    }
    if (rc != 0) {
        int error = errno;
        ::close(fd);
        if (error == EADDRINUSE && probe_unix_path(config) == UnixPath::NotASocket)
            fail(config, 0, "exists and is not a socket");
        fail(config, 0, strerror(error));
    }
    // Before listen(): no client can connect while the permissions are still the umask's.
    std::string why;
    if (config.unix_mode >= 0 && chmod(config.unix_path.c_str(), static_cast<mode_t>(config.unix_mode)) != 0)
        why = std::string("chmod: ") + strerror(errno);
    if (why.empty() && (!config.unix_owner.empty() || !config.unix_group.empty())) {
        const passwd *user = config.unix_owner.empty() ? nullptr : getpwnam(config.unix_owner.c_str());
        const group *grp = config.unix_group.empty() ? nullptr : getgrnam(config.unix_group.c_str());
        if ((!config.unix_owner.empty() && !user) || (!config.unix_group.empty() && !grp))
            why = "owner or group no longer exists";
        else if (chown(config.unix_path.c_str(), user ? user->pw_uid : static_cast<uid_t>(-1),
                       grp ? grp->gr_gid : static_cast<gid_t>(-1)) != 0)
            why = std::string("chown: ") + strerror(errno);
    }
    if (why.empty() && listen(fd, SOMAXCONN) != 0)
        why = strerror(errno);
    if (!why.empty()) {
        ::close(fd);
        unlink(config.unix_path.c_str());
        fail(config, 0, why);
    }
    return fd;
}

uint16_t bound_port(int fd) {
    sockaddr_storage address{};
    socklen_t length = sizeof address;
    if (getsockname(fd, reinterpret_cast<sockaddr *>(&address), &length) != 0)
        return 0;
    if (address.ss_family == AF_INET)
        return ntohs(reinterpret_cast<const sockaddr_in &>(address).sin_port);
    if (address.ss_family == AF_INET6)
        return ntohs(reinterpret_cast<const sockaddr_in6 &>(address).sin6_port);
    return 0;
}

} // namespace trellis
