// Access log, in the combined format or as JSON lines, buffered per worker: a request costs an
// append to the worker's buffer, and the whole buffer is handed to the log's writer thread when it
// fills or 200 ms after its first line. The event loops never touch the disk, and lines of
// different workers never interleave (a buffer is written whole).
#pragma once

#include "config/config.hpp"

#include <condition_variable>
#include <cstdint>
#include <ctime>
#include <deque>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <uv.h>
#include <vector>

namespace trellis {

// The shared destination, stdout ("-") or a file opened for appending, and the thread that writes
// to it. When the disk is slower than the traffic, the queue stops at `max_queued_bytes` and
// further buffers are dropped and counted (an error line at most once a second says how many
// lines were lost): the loops never wait for the disk.
class AccessLog {
  public:
    static constexpr size_t kDefaultMaxQueuedBytes = 16 * 1024 * 1024;

    // Appends to the file at `path`, created 0644; throws std::runtime_error when it cannot be
    // opened.
    AccessLog(const std::string &path, AccessLogFormat format,
              size_t max_queued_bytes = kDefaultMaxQueuedBytes);
    // Writes to `fd`, which stays open (tests: a pipe). reopen() does nothing.
    AccessLog(int fd, AccessLogFormat format, size_t max_queued_bytes = kDefaultMaxQueuedBytes);
    // Writes everything queued, then stops the writer thread.
    ~AccessLog();
    AccessLog(const AccessLog &) = delete;
    AccessLog &operator=(const AccessLog &) = delete;

    AccessLogFormat format() const { return format_; }
    // Any thread: queues `buffer` (moved, not copied) and leaves `buffer` empty, possibly with the
    // capacity of a buffer already written. Never blocks on the disk.
    void submit(std::string &buffer);
    // Any thread: the writer opens the path again once what is queued now is written, and uses
    // the new file (logrotate renamed the old one). Logs the outcome. False for stdout or an fd.
    bool reopen();
    // Lines dropped so far because the queue was full.
    uint64_t dropped_lines() const;

  private:
    void start(size_t max_queued_bytes);
    void run();
    void write_all(const std::string &data);
    void reopen_now();
    void report_drops(bool force);

    AccessLogFormat format_;
    std::string path_; // empty for stdout or an fd of the caller
    int fd_ = -1;
    bool owns_fd_ = false;
    size_t max_queued_bytes_ = kDefaultMaxQueuedBytes;

    mutable std::mutex mutex_;
    std::condition_variable wake_;
    std::deque<std::string> queue_;  // an empty string: reopen the file there
    std::vector<std::string> spare_; // written buffers, handed back to submit() for reuse
    size_t queued_bytes_ = 0;        // in queue_ and being written
    uint64_t dropped_lines_ = 0;
    uint64_t dropped_buffers_ = 0;
    bool stopping_ = false;

    // Writer thread only.
    uint64_t reported_lines_ = 0;
    uint64_t reported_buffers_ = 0;
    uint64_t last_report_ns_ = 0;
    std::thread writer_;
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
    int64_t request_time_ns = -1; // from the complete request to the response; -1 = unknown
};

// `text` as a JSON string, quotes included: '"', '\' and control bytes escaped (\u00XX), valid
// UTF-8 kept as is, and each byte that is not part of valid UTF-8 written as \u00XX (its Latin-1
// reading), so every line is valid JSON whatever the client sent.
void append_json_string(std::string &out, std::string_view text);

class AccessLogBuffer {
  public:
    // `sink` may be null: logging is off and append() does nothing.
    AccessLogBuffer(uv_loop_t *loop, AccessLog *sink);
    bool enabled() const { return sink_ != nullptr; }
    void append(const AccessLogEntry &entry);
    // Hands what is buffered to the sink.
    void flush();
    // Flushes and closes the timer; call before the loop closes.
    void close();

  private:
    static void uv_on_timer(uv_timer_t *timer) noexcept;
    void append_combined(const AccessLogEntry &entry);
    void append_json(const AccessLogEntry &entry);
    AccessLog *sink_;
    std::string buffer_;
    uv_timer_t timer_;
    bool timer_armed_ = false;
    time_t time_second_ = 0;
    char time_text_[32] = {}; // for time_second_, in the format's style
};

} // namespace trellis
