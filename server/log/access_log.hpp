// Access log in the combined format, buffered per worker: a request costs a memcpy into the
// worker's buffer, and the buffer reaches the file in one write when it fills or 200 ms after its
// first line, so a busy worker makes a handful of writes a second, not one per request.
#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <uv.h>

namespace trellis {

// The shared destination: stdout ("-") or a file opened for appending.
class AccessLog {
  public:
    // Throws StartupError-like std::runtime_error when the file cannot be opened.
    explicit AccessLog(const std::string &target);
    ~AccessLog();
    AccessLog(const AccessLog &) = delete;
    AccessLog &operator=(const AccessLog &) = delete;
    void write(std::string_view data);

  private:
    int fd_ = -1;
    bool owns_fd_ = false;
    std::mutex mutex_; // whole buffers, so lines of different workers never interleave
};

struct AccessLogEntry {
    std::string_view peer_ip;
    std::string_view method;
    std::string_view target;
    int version = 11;
    int status = 0;
    uint64_t body_bytes = 0;
    std::string_view referer;
    std::string_view user_agent;
};

class AccessLogBuffer {
  public:
    // `sink` may be null: logging is off and append() does nothing.
    AccessLogBuffer(uv_loop_t *loop, AccessLog *sink);
    bool enabled() const { return sink_ != nullptr; }
    void append(const AccessLogEntry &entry);
    void flush();
    // Flushes and closes the timer; call before the loop closes.
    void close();

  private:
    static void uv_on_timer(uv_timer_t *timer) noexcept;
    AccessLog *sink_;
    std::string buffer_;
    uv_timer_t timer_;
    bool timer_armed_ = false;
    time_t time_second_ = 0;
    char time_text_[32] = {};
};

} // namespace trellis
