#include "config/ticket_key_file.hpp"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace trellis {

std::string read_ticket_key_file(const std::string &path, std::string &error) {
    int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        error = path + ": " + strerror(errno);
        return {};
    }
    struct stat st;
    char buffer[81]; // one more than the longest good file, to tell it is too long
    ssize_t n = -1;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
        error = path + ": not a regular file";
    else if ((n = read(fd, buffer, sizeof buffer)) < 0)
        error = path + ": " + strerror(errno);
    close(fd);
    if (n < 0)
        return {};
    if (n != 80 && n != 48) {
        error = path + ": " + (n == 81 ? "more than 80" : std::to_string(n)) +
                " bytes; expected 80 random bytes (openssl rand 80 > " + path + ") or 48";
        return {};
    }
    return std::string(buffer, static_cast<size_t>(n));
}

} // namespace trellis
