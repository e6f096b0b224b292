// Error log: one line per event, "2026-11-25T17:26:45Z [info] message", on stderr or in the file
// "error_log" names. Thread-safe; a line is written with a single write(2) so lines of different
// workers never interleave.
//
// Lines logged through log_format (every SERVER_LOG_* macro) are rate-limited per call site, so
// a client that can trigger a warning cannot fill the disk with it: at most
// LogRateLimiter::kLinesPerSecond lines per format string and second, and the next line a site
// logs after it was silenced carries "(N similar messages suppressed)"; each plugin instance's
// lines count as one site. Debug lines and the main thread (start, signals, reloads: things the
// operator does) are not limited.
#pragma once

#include "config/config.hpp" // LogLevel

#include <cstdarg>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>

namespace trellis {

void set_log_level(LogLevel level);
LogLevel log_level();

void log_message(LogLevel level, std::string_view message);
void log_format(LogLevel level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
// log_format with the rate limit keyed by `site` instead of the format string: for lines that
// share a format but not a source (each plugin instance's own lines).
void log_format_site(const void *site, LogLevel level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

// Makes the file at `path` (opened for appending, created 0644) the error log; stderr keeps
// whatever plugins and libraries print there. Call before the workers start. Returns false with
// `error` set when the file cannot be opened (the log stays where it was).
bool open_error_log(const std::string &path, std::string &error);
// SIGUSR1: opens the error log's path again and puts the new file in place of the old one (dup2,
// so a line being written concurrently goes wholly to one of them). False with `error` set when
// the file cannot be opened or no file was opened; the old file is then kept.
bool reopen_error_log(std::string &error);

// Whether a log file could be opened for appending at `path`, found without creating or writing
// anything (trellis --check): an existing file that opens for writing, or a directory to make it
// in. False with the reason (strerror text) otherwise.
bool log_file_writable(const std::string &path, std::string &reason);
// Writes the line to the error log and, when that is a file, to stderr as well: for the error
// that stops the start, which the person starting the server must see.
void log_fatal(std::string_view message);
// Lines logged on the calling thread are never rate-limited (the main thread calls this).
void exempt_thread_from_log_limit();

// The per-call-site limiter log_format uses; a fixed table, so memory does not grow with the
// number of sites. Sites whose hashes collide past a short probe share a budget, which can only
// make the limit stricter.
class LogRateLimiter {
  public:
    static constexpr uint32_t kLinesPerSecond = 10;
    static constexpr size_t kSlots = 256;
    // Whether the site may log a line in `second` (any monotonic count of seconds). When it may,
    // `suppressed` is the number of its lines refused since its last admitted one.
    bool admit(const void *site, uint64_t second, uint64_t &suppressed);

  private:
    struct Slot {
        const void *site = nullptr;
        uint64_t second = 0;
        uint32_t lines = 0;      // admitted in `second`
        uint64_t suppressed = 0; // refused since the last admitted line
    };
    std::mutex mutex_;
    Slot slots_[kSlots];
};

} // namespace trellis

// The server's own lines. (The plugin ABI's TRELLIS_LOG_* are log levels a plugin passes to
// host->log; these are not those.)
#define SERVER_LOG(level, ...)                                                                               \
    do {                                                                                                     \
        if (static_cast<int>(level) >= static_cast<int>(::trellis::log_level()))                             \
            ::trellis::log_format(level, __VA_ARGS__);                                                       \
    } while (0)
#define SERVER_LOG_DEBUG(...) SERVER_LOG(::trellis::LogLevel::Debug, __VA_ARGS__)
#define SERVER_LOG_INFO(...) SERVER_LOG(::trellis::LogLevel::Info, __VA_ARGS__)
#define SERVER_LOG_WARN(...) SERVER_LOG(::trellis::LogLevel::Warn, __VA_ARGS__)
#define SERVER_LOG_ERROR(...) SERVER_LOG(::trellis::LogLevel::Error, __VA_ARGS__)
