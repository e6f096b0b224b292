// Error log: one line per event on stderr, "2026-11-25T17:26:45Z [info] message".
// Thread-safe; a line is written with a single write(2) so lines of different workers never
// interleave.
#pragma once

#include <cstdarg>
#include <string_view>

namespace trellis {

enum class LogLevel { Debug = 0, Info = 1, Warn = 2, Error = 3 };

void set_log_level(LogLevel level);
LogLevel log_level();
bool parse_log_level(std::string_view text, LogLevel &out);

void log_message(LogLevel level, std::string_view message);
void log_format(LogLevel level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

} // namespace trellis

#define TRELLIS_LOG(level, ...)                                                                              \
    do {                                                                                                     \
        if (static_cast<int>(level) >= static_cast<int>(::trellis::log_level()))                             \
            ::trellis::log_format(level, __VA_ARGS__);                                                       \
    } while (0)
#define TRELLIS_LOG_DEBUG(...) TRELLIS_LOG(::trellis::LogLevel::Debug, __VA_ARGS__)
#define TRELLIS_LOG_INFO(...) TRELLIS_LOG(::trellis::LogLevel::Info, __VA_ARGS__)
#define TRELLIS_LOG_WARN(...) TRELLIS_LOG(::trellis::LogLevel::Warn, __VA_ARGS__)
#define TRELLIS_LOG_ERROR(...) TRELLIS_LOG(::trellis::LogLevel::Error, __VA_ARGS__)
