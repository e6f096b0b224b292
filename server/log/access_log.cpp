#include "log/access_log.hpp"

#include <cerrno>
#include <charconv>
#include <cstring>
#include <ctime>
#include <fcntl.h>
#include <stdexcept>
#include <unistd.h>

namespace trellis {
namespace {

constexpr size_t kFlushBytes = 32 * 1024;
constexpr uint64_t kFlushDelayMs = 200;

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

} // namespace

AccessLog::AccessLog(const std::string &target) {
    if (target == "-") {
        fd_ = STDOUT_FILENO;
        return;
    }
    fd_ = open(target.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd_ < 0)
        throw std::runtime_error("access_log " + target + ": cannot open: " + strerror(errno));
    owns_fd_ = true;
}

AccessLog::~AccessLog() {
    if (owns_fd_)
        ::close(fd_);
}

void AccessLog::write(std::string_view data) {
    std::lock_guard<std::mutex> lock(mutex_);
    while (!data.empty()) {
        ssize_t n = ::write(fd_, data.data(), data.size());
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return; // a full disk must not take the server down; lines are dropped
        data.remove_prefix(static_cast<size_t>(n));
    }
}

AccessLogBuffer::AccessLogBuffer(uv_loop_t *loop, AccessLog *sink) : sink_(sink) {
    uv_timer_init(loop, &timer_);
    timer_.data = this;
    uv_unref(reinterpret_cast<uv_handle_t *>(&timer_));
}

void AccessLogBuffer::append(const AccessLogEntry &e) {
    if (!sink_)
        return;
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
    out += e.version == 10 ? " HTTP/1.0\" " : " HTTP/1.1\" ";
    char number[24];
    auto end = std::to_chars(number, number + sizeof number, e.status).ptr;
    out.append(number, end);
    out += ' ';
    end = std::to_chars(number, number + sizeof number, e.body_bytes).ptr;
    out.append(number, end);
    out += " \"";
    append_escaped(out, e.referer);
    out += "\" \"";
    append_escaped(out, e.user_agent);
    out += "\"\n";
    if (buffer_.size() >= kFlushBytes) {
        flush();
    } else if (!timer_armed_) {
        timer_armed_ = true;
        uv_timer_start(&timer_, uv_on_timer, kFlushDelayMs, 0);
    }
}

void AccessLogBuffer::flush() {
    if (sink_ && !buffer_.empty())
        sink_->write(buffer_);
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
