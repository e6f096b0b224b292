#include "service/notify.hpp"

#include "log/log.hpp"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

namespace trellis {

void notify_service_manager(std::string_view state) {
    const char *path = getenv("NOTIFY_SOCKET");
    if (!path || !*path)
        return;
    size_t length = strlen(path);
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    if ((path[0] != '/' && path[0] != '@') || length >= sizeof address.sun_path) {
        SERVER_LOG_DEBUG("NOTIFY_SOCKET %s: not a socket path; not notified", path);
        return;
    }
    memcpy(address.sun_path, path, length);
    if (path[0] == '@')
        address.sun_path[0] = '\0'; // the abstract namespace: the name is not NUL-terminated
    socklen_t address_length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + length);
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        SERVER_LOG_DEBUG("NOTIFY_SOCKET: socket: %s", strerror(errno));
        return;
    }
    if (sendto(fd, state.data(), state.size(), MSG_NOSIGNAL, reinterpret_cast<sockaddr *>(&address),
               address_length) < 0)
        SERVER_LOG_DEBUG("NOTIFY_SOCKET %s: %s", path, strerror(errno));
    close(fd);
}

void notify_reloading() {
    timespec now{};
    clock_gettime(CLOCK_MONOTONIC, &now);
    unsigned long long usec = static_cast<unsigned long long>(now.tv_sec) * 1000000ULL +
                              static_cast<unsigned long long>(now.tv_nsec) / 1000;
    notify_service_manager("RELOADING=1\nMONOTONIC_USEC=" + std::to_string(usec));
}

} // namespace trellis
