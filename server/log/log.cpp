#include "log/log.hpp"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <utility>

namespace trellis {
namespace {

std::atomic<int> g_level{static_cast<int>(LogLevel::Info)};
// Where lines go. A file's descriptor number never changes once set: SIGUSR1 puts the reopened
// file under the same number (dup3), so a writer never sees a closed or reused descriptor.
std::atomic<int> g_error_fd{STDERR_FILENO};
std::string g_error_log_path; // main thread only
LogRateLimiter g_limiter;
thread_local bool t_exempt_from_limit = false;
constexpr size_t kProbe = 8;

const char *level_name(LogLevel level) {
    switch (level) {
    case LogLevel::Debug:
        return "debug";
    case LogLevel::Info:
        return "info";
    case LogLevel::Warn:
        return "warn";
    case LogLevel::Error:
        return "error";
    }
    return "?";
}

} // namespace

void set_log_level(LogLevel level) {
    g_level.store(static_cast<int>(level));
}
LogLevel log_level() {
    return static_cast<LogLevel>(g_level.load(std::memory_order_relaxed));
}

namespace {

// "2026-11-25T17:26:45Z [info] message\n" into `line`; returns its length.
size_t format_line(LogLevel level, std::string_view message, char (&line)[4096]) {
    time_t now = time(nullptr);
    struct tm tm_utc;
    gmtime_r(&now, &tm_utc);
    size_t n = strftime(line, sizeof line, "%Y-%m-%dT%H:%M:%SZ ", &tm_utc);
    int head = snprintf(line + n, sizeof line - n, "[%s] ", level_name(level));
    n += static_cast<size_t>(head);
    size_t room = sizeof line - n - 1;
    size_t take = message.size() < room ? message.size() : room;
    for (size_t i = 0; i < take; ++i) {
        // One event, one line: a newline inside a message would let a client forge log lines.
        char c = message[i];
        line[n++] = (c == '\n' || c == '\r') ? ' ' : c;
    }
    line[n++] = '\n';
    return n;
}

void write_line(int fd, const char *line, size_t n) {
    ssize_t ignored = write(fd, line, n);
    (void)ignored;
}

uint64_t monotonic_second() {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return static_cast<uint64_t>(ts.tv_sec);
}

size_t slot_of(const void *site, size_t slots) {
    // Fibonacci hashing: string literals are close together, the multiply spreads them.
    uint64_t p = static_cast<uint64_t>(reinterpret_cast<uintptr_t>(site));
    return static_cast<size_t>((p * 0x9E3779B97F4A7C15ull) >> 32) % slots;
}

} // namespace

void log_message(LogLevel level, std::string_view message) {
    if (static_cast<int>(level) < g_level.load(std::memory_order_relaxed))
        return;
    char line[4096];
    size_t n = format_line(level, message, line);
    write_line(g_error_fd.load(std::memory_order_relaxed), line, n);
}

void log_fatal(std::string_view message) {
    char line[4096];
    size_t n = format_line(LogLevel::Error, message, line);
    int fd = g_error_fd.load();
    write_line(fd, line, n);
    if (fd != STDERR_FILENO)
        write_line(STDERR_FILENO, line, n);
}

namespace {

void log_limited(const void *site, LogLevel level, const char *fmt, va_list args) {
    uint64_t suppressed = 0;
    if (level != LogLevel::Debug && !t_exempt_from_limit &&
        !g_limiter.admit(site, monotonic_second(), suppressed))
        return;
    char message[3072];
    constexpr size_t kSuffixRoom = 64; // " (N similar messages suppressed)"
    int n = vsnprintf(message, sizeof message - kSuffixRoom, fmt, args);
    if (n < 0)
        return;
    size_t len = std::min(static_cast<size_t>(n), sizeof message - kSuffixRoom - 1);
    if (suppressed > 0)
        len += static_cast<size_t>(snprintf(message + len, kSuffixRoom, " (%llu similar messages suppressed)",
                                            static_cast<unsigned long long>(suppressed)));
    log_message(level, std::string_view(message, len));
}

} // namespace

void log_format(LogLevel level, const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    log_limited(fmt, level, fmt, args);
    va_end(args);
}

void log_format_site(const void *site, LogLevel level, const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    log_limited(site ? site : fmt, level, fmt, args);
    va_end(args);
}

void exempt_thread_from_log_limit() {
    t_exempt_from_limit = true;
}

bool LogRateLimiter::admit(const void *site, uint64_t second, uint64_t &suppressed) {
    size_t home = slot_of(site, kSlots);
    std::lock_guard<std::mutex> lock(mutex_);
    Slot *slot = &slots_[home]; // when the probe finds no room: share the home slot's budget
    for (size_t i = 0; i < kProbe; ++i) {
        Slot &candidate = slots_[(home + i) % kSlots];
        if (candidate.site == site || candidate.site == nullptr) {
            slot = &candidate;
            break;
        }
    }
    if (slot->site == nullptr)
        slot->site = site;
    if (slot->second != second) {
        slot->second = second;
        slot->lines = 0;
    }
    if (slot->lines >= kLinesPerSecond) {
        ++slot->suppressed;
        return false;
    }
    ++slot->lines;
    suppressed = std::exchange(slot->suppressed, 0);
    return true;
}

bool open_error_log(const std::string &path, std::string &error) {
    int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) {
        error = "error_log " + path + ": cannot open: " + strerror(errno);
        return false;
    }
    int old = g_error_fd.exchange(fd);
    if (old != STDERR_FILENO)
        close(old);
    g_error_log_path = path;
    return true;
}

bool reopen_error_log(std::string &error) {
    int current = g_error_fd.load();
    if (current == STDERR_FILENO || g_error_log_path.empty()) {
        error = "the error log is stderr";
        return false;
    }
    int fd = open(g_error_log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) {
        error = "cannot open " + g_error_log_path + ": " + strerror(errno);
        return false;
    }
    bool ok = dup3(fd, current, O_CLOEXEC) >= 0;
    if (!ok)
        error = std::string("dup3: ") + strerror(errno);
    close(fd);
    return ok;
}

bool log_file_writable(const std::string &path, std::string &reason) {
    struct stat st;
    if (stat(path.c_str(), &st) == 0) {
        if (S_ISDIR(st.st_mode)) {
            reason = strerror(EISDIR);
            return false;
        }
        if (!S_ISREG(st.st_mode)) {
            // A FIFO or a device: opening it could wait for, or fail without, a reader that a
            // log shipper starts later. Permission is what can be known now.
            if (access(path.c_str(), W_OK) != 0) {
                reason = strerror(errno);
                return false;
            }
            return true;
        }
        int fd = open(path.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
        if (fd < 0) {
            reason = strerror(errno);
            return false;
        }
        close(fd);
        return true;
    }
    if (errno != ENOENT) {
        reason = strerror(errno);
        return false;
    }
    size_t slash = path.rfind('/');
    std::string dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
    if (stat(dir.c_str(), &st) != 0) {
        reason = strerror(errno);
        return false;
    }
    if (!S_ISDIR(st.st_mode)) {
        reason = strerror(ENOTDIR);
        return false;
    }
    if (access(dir.c_str(), W_OK | X_OK) != 0) {
        reason = strerror(errno);
        return false;
    }
    return true;
}

} // namespace trellis
