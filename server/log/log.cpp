#include "log/log.hpp"

#include <atomic>
#include <cstdio>
#include <ctime>
#include <unistd.h>

namespace trellis {
namespace {

std::atomic<int> g_level{static_cast<int>(LogLevel::Info)};

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

bool parse_log_level(std::string_view text, LogLevel &out) {
    for (auto level : {LogLevel::Debug, LogLevel::Info, LogLevel::Warn, LogLevel::Error}) {
        if (text == level_name(level)) {
            out = level;
            return true;
        }
    }
    return false;
}

void log_message(LogLevel level, std::string_view message) {
    if (static_cast<int>(level) < g_level.load(std::memory_order_relaxed))
        return;
    char line[4096];
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
    ssize_t ignored = write(STDERR_FILENO, line, n);
    (void)ignored;
}

void log_format(LogLevel level, const char *fmt, ...) {
    char message[3072];
    va_list args;
    va_start(args, fmt);
    int n = vsnprintf(message, sizeof message, fmt, args);
    va_end(args);
    if (n < 0)
        return;
    size_t len = static_cast<size_t>(n) < sizeof message ? static_cast<size_t>(n) : sizeof message - 1;
    log_message(level, std::string_view(message, len));
}

} // namespace trellis
