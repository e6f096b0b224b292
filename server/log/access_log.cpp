#include "log/access_log.hpp"

#include "log/log.hpp"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstring>
#include <fcntl.h>
#include <stdexcept>
#include <unistd.h>
#include <utility>

namespace trellis {
namespace {

constexpr size_t kFlushBytes = 32 * 1024;
constexpr uint64_t kFlushDelayMs = 200;
// Written buffers kept for reuse, so a steady stream of them costs no allocation; one grown past
// this by a huge line is let go instead.
constexpr size_t kMaxSpareBuffers = 16;
constexpr size_t kMaxSpareCapacity = 4 * kFlushBytes;

// Quotes a request-supplied field so a client cannot forge log lines or break the format.
void append_escaped(std::string &out, std::string_view text) {
    if (text.empty()) {
        out += '-';
        return;
    }
    for (unsigned char c : text) {
        if (c == '"' || c == '\\' || c < 0x20 || c >= 0x7f) {
            char hex[5];
            snprintf(hex, sizeof hex, "\\x%02x", c);
            out += hex;
        } else {
            out += static_cast<char>(c);
        }
    }
}

void append_number(std::string &out, uint64_t value) {
    char number[24];
    auto end = std::to_chars(number, number + sizeof number, value).ptr;
    out.append(number, end);
}

// The length of the well-formed UTF-8 sequence (RFC 3629: no overlong forms, no surrogates,
// nothing past U+10FFFF) starting with the non-ASCII byte at text[i], or 0.
size_t utf8_sequence(std::string_view text, size_t i) {
    auto byte = [&](size_t k) { return static_cast<unsigned char>(text[k]); };
    unsigned char c = byte(i);
    size_t length;
    unsigned char low = 0x80, high = 0xbf; // the range of the second byte
    if (c >= 0xc2 && c <= 0xdf) {
        length = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        length = 3;
        if (c == 0xe0)
            low = 0xa0; // overlong below
        else if (c == 0xed)
            high = 0x9f; // surrogates above
    } else if (c >= 0xf0 && c <= 0xf4) {
        length = 4;
        if (c == 0xf0)
            low = 0x90; // overlong below
        else if (c == 0xf4)
            high = 0x8f; // past U+10FFFF above
    } else {
        return 0;
    }
    if (text.size() - i < length || byte(i + 1) < low || byte(i + 1) > high)
        return 0;
    for (size_t k = 2; k < length; ++k)
        if ((byte(i + k) & 0xc0) != 0x80)
            return 0;
    return length;
}

void append_u00(std::string &out, unsigned char c) {
    static const char kHex[] = "0123456789abcdef";
    char escape[6] = {'\\', 'u', '0', '0', kHex[c >> 4], kHex[c & 0xf]};
    out.append(escape, sizeof escape);
}

uint64_t steady_ns() {
    return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                     std::chrono::steady_clock::now().time_since_epoch())
                                     .count());
}

} // namespace

void append_json_string(std::string &out, std::string_view text) {
    out += '"';
    size_t i = 0;
    while (i < text.size()) {
        // The plain run first, appended at once.
        size_t run = i;
        while (run < text.size()) {
            auto c = static_cast<unsigned char>(text[run]);
            if (c < 0x20 || c >= 0x7f || c == '"' || c == '\\')
                break;
            ++run;
        }
        out.append(text.data() + i, run - i);
        i = run;
        if (i == text.size())
            break;
        auto c = static_cast<unsigned char>(text[i]);
        if (c == '"' || c == '\\') {
            out += '\\';
            out += static_cast<char>(c);
            ++i;
        } else if (c < 0x80) { // control bytes and DEL
            append_u00(out, c);
            ++i;
        } else if (size_t length = utf8_sequence(text, i); length > 0) {
            out.append(text.data() + i, length);
            i += length;
        } else {
            append_u00(out, c);
            ++i;
        }
    }
    out += '"';
}

// ---------------------------------------------------------------------------------------------
// AccessLog: the sink and its writer thread

AccessLog::AccessLog(const std::string &path, AccessLogFormat format, size_t max_queued_bytes)
    : format_(format) {
    fd_ = open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd_ < 0)
        throw std::runtime_error("access_log " + path + ": cannot open: " + strerror(errno));
    owns_fd_ = true;
    path_ = path;
    start(max_queued_bytes);
}

AccessLog::AccessLog(int fd, AccessLogFormat format, size_t max_queued_bytes) : format_(format), fd_(fd) {
    start(max_queued_bytes);
}

void AccessLog::start(size_t max_queued_bytes) {
    max_queued_bytes_ = max_queued_bytes;
    writer_ = std::thread([this] { run(); });
}

AccessLog::~AccessLog() {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        stopping_ = true;
    }
    wake_.notify_one();
    writer_.join();
    if (owns_fd_)
        ::close(fd_);
}

void AccessLog::submit(std::string &buffer) {
    if (buffer.empty())
        return;
    std::lock_guard<std::mutex> lock(mutex_);
    // A single buffer larger than the bound still goes when nothing else waits.
    if (queued_bytes_ > 0 && queued_bytes_ + buffer.size() > max_queued_bytes_) {
        dropped_lines_ += static_cast<uint64_t>(std::count(buffer.begin(), buffer.end(), '\n'));
        ++dropped_buffers_;
        buffer.clear();
        return;
    }
    queued_bytes_ += buffer.size();
    queue_.push_back(std::move(buffer));
    if (!spare_.empty()) {
        buffer = std::move(spare_.back());
        spare_.pop_back();
    } else {
        buffer = std::string();
    }
    buffer.clear();
    wake_.notify_one();
}

bool AccessLog::reopen() {
    if (path_.empty())
        return false;
    {
        // An empty buffer in the queue (submit never queues one) is the request: lines submitted
        // before it go to the old file, lines after it to the new one.
        std::lock_guard<std::mutex> lock(mutex_);
        queue_.emplace_back();
    }
    wake_.notify_one();
    return true;
}

uint64_t AccessLog::dropped_lines() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return dropped_lines_;
}

void AccessLog::run() {
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
        auto ready = [this] { return stopping_ || !queue_.empty(); };
        // Drops not yet reported: wake within a second to say so even if nothing else comes.
        if (dropped_lines_ != reported_lines_ || dropped_buffers_ != reported_buffers_)
            wake_.wait_for(lock, std::chrono::seconds(1), ready);
        else
            wake_.wait(lock, ready);
        std::deque<std::string> batch;
        batch.swap(queue_);
        bool stop = stopping_;
        uint64_t dropped_lines = dropped_lines_, dropped_buffers = dropped_buffers_;
        lock.unlock();

        size_t written = 0;
        for (const std::string &buffer : batch) {
            if (buffer.empty())
                reopen_now();
            write_all(buffer);
            written += buffer.size();
        }
        if (dropped_lines != reported_lines_ || dropped_buffers != reported_buffers_) {
            uint64_t now = steady_ns();
            if (stop || last_report_ns_ == 0 || now - last_report_ns_ >= 1000000000) {
                SERVER_LOG_ERROR("access log: the disk is slower than the traffic; dropped %llu lines "
                                 "(%llu buffers), %llu lines in all",
                                 static_cast<unsigned long long>(dropped_lines - reported_lines_),
                                 static_cast<unsigned long long>(dropped_buffers - reported_buffers_),
                                 static_cast<unsigned long long>(dropped_lines));
                reported_lines_ = dropped_lines;
                reported_buffers_ = dropped_buffers;
                last_report_ns_ = now;
            }
        }

        lock.lock();
        queued_bytes_ -= written;
        for (std::string &buffer : batch) {
            if (spare_.size() >= kMaxSpareBuffers || buffer.capacity() > kMaxSpareCapacity)
                continue;
            buffer.clear();
            spare_.push_back(std::move(buffer));
        }
        // Everything submitted before the stop has been written: workers submit nothing later.
        if (stop && queue_.empty())
            return;
    }
}

void AccessLog::write_all(const std::string &data) {
    std::string_view rest = data;
    while (!rest.empty()) {
        ssize_t n = ::write(fd_, rest.data(), rest.size());
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            // A full disk must not take the server down; the buffer is lost (the log says so, at
            // most as often as the error log's limit allows).
            SERVER_LOG_ERROR("access log: write failed: %s; lines lost",
                             n < 0 ? strerror(errno) : "no progress");
            return;
        }
        rest.remove_prefix(static_cast<size_t>(n));
    }
}

void AccessLog::reopen_now() {
    int fd = open(path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) {
        SERVER_LOG_ERROR("SIGUSR1: cannot reopen access log %s: %s; still writing to the old file",
                         path_.c_str(), strerror(errno));
        return;
    }
    if (owns_fd_)
        ::close(fd_);
    fd_ = fd;
    owns_fd_ = true;
    SERVER_LOG_INFO("SIGUSR1: reopened access log %s", path_.c_str());
}

// ---------------------------------------------------------------------------------------------
// AccessLogBuffer: one per worker, on its loop

AccessLogBuffer::AccessLogBuffer(uv_loop_t *loop, AccessLog *sink) : sink_(sink) {
    uv_timer_init(loop, &timer_);
    timer_.data = this;
    uv_unref(reinterpret_cast<uv_handle_t *>(&timer_));
}

void AccessLogBuffer::append(const AccessLogEntry &e) {
    if (!sink_)
        return;
    if (sink_->format() == AccessLogFormat::Json)
        append_json(e);
    else
        append_combined(e);
    if (buffer_.size() >= kFlushBytes) {
        flush();
    } else if (!timer_armed_) {
        timer_armed_ = true;
        uv_timer_start(&timer_, uv_on_timer, kFlushDelayMs, 0);
    }
}

void AccessLogBuffer::append_combined(const AccessLogEntry &e) {
    time_t now = time(nullptr);
    if (now != time_second_) {
        time_second_ = now;
        struct tm tm_local;
        localtime_r(&now, &tm_local);
        strftime(time_text_, sizeof time_text_, "%d/%b/%Y:%H:%M:%S %z", &tm_local);
    }
    std::string &out = buffer_;
    out += e.peer_ip;
    out += " - - [";
    out += time_text_;
    out += "] \"";
    append_escaped(out, e.method);
    out += ' ';
    append_escaped(out, e.target);
    out += e.version == 10 ? " HTTP/1.0\" " : e.version == 20 ? " HTTP/2.0\" " : " HTTP/1.1\" ";
    append_number(out, static_cast<uint64_t>(e.status));
    out += ' ';
    append_number(out, e.body_bytes);
    out += " \"";
    append_escaped(out, e.referer);
    out += "\" \"";
    append_escaped(out, e.user_agent);
    out += "\"\n";
}

// {"time":"2026-11-25T17:26:45.123Z","remote_addr":"127.0.0.1","method":"GET","target":"/",
//  "protocol":"HTTP/1.1","status":200,"body_bytes":13,"referer":"","user_agent":"curl/8.5.0",
//  "request_time_ms":0.042}, on one line.
void AccessLogBuffer::append_json(const AccessLogEntry &e) {
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    if (now.tv_sec != time_second_) {
        time_second_ = now.tv_sec;
        struct tm tm_utc;
        gmtime_r(&now.tv_sec, &tm_utc);
        strftime(time_text_, sizeof time_text_, "%Y-%m-%dT%H:%M:%S", &tm_utc);
    }
    std::string &out = buffer_;
    out += "{\"time\":\"";
    out += time_text_;
    char millis[16];
    snprintf(millis, sizeof millis, ".%03dZ\"", static_cast<int>(now.tv_nsec / 1000000));
    out += millis;
    out += ",\"remote_addr\":";
    append_json_string(out, e.peer_ip);
    out += ",\"method\":";
    append_json_string(out, e.method);
    out += ",\"target\":";
    append_json_string(out, e.target);
    out += e.version == 10   ? ",\"protocol\":\"HTTP/1.0\",\"status\":"
           : e.version == 20 ? ",\"protocol\":\"HTTP/2.0\",\"status\":"
                             : ",\"protocol\":\"HTTP/1.1\",\"status\":";
    append_number(out, static_cast<uint64_t>(e.status));
    out += ",\"body_bytes\":";
    append_number(out, e.body_bytes);
    out += ",\"referer\":";
    append_json_string(out, e.referer);
    out += ",\"user_agent\":";
    append_json_string(out, e.user_agent);
    if (e.request_time_ns >= 0) {
        auto micros = static_cast<uint64_t>(e.request_time_ns) / 1000;
        out += ",\"request_time_ms\":";
        append_number(out, micros / 1000);
        char fraction[16];
        snprintf(fraction, sizeof fraction, ".%03u", static_cast<unsigned>(micros % 1000));
        out += fraction;
    }
    out += "}\n";
}

void AccessLogBuffer::flush() {
    if (sink_ && !buffer_.empty())
        sink_->submit(buffer_);
    buffer_.clear();
}

void AccessLogBuffer::close() {
    flush();
    uv_close(reinterpret_cast<uv_handle_t *>(&timer_), nullptr);
}

void AccessLogBuffer::uv_on_timer(uv_timer_t *timer) noexcept {
    auto *self = static_cast<AccessLogBuffer *>(timer->data);
    self->timer_armed_ = false;
    self->flush();
}

} // namespace trellis
