#include "transport/plain.hpp"

#include <cerrno>
#include <sys/ioctl.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <unistd.h>

namespace trellis {

PlainTransport *PlainTransport::create(uv_loop_t *loop, int fd) {
    auto *transport = new PlainTransport(fd);
    if (!transport->attach(loop)) {
        delete transport;
        return nullptr;
    }
    return transport;
}

bool PlainTransport::attach(uv_loop_t *loop) {
    poll_.data = this;
    if (uv_poll_init_socket(loop, &poll_, fd_) != 0) {
        ::close(fd_);
        return false;
    }
    return true;
}

void PlainTransport::set_spin(bool on) {
    if (spin_ != on) {
        spin_ = on;
        update_interest();
    }
}

void PlainTransport::start(TransportEvents *events) {
    events_ = events;
    set_reading(true);
}

void PlainTransport::update_interest() {
    if (closed_)
        return;
    // A spinning transport also asks for writability: a socket is nearly always writable, so the
    // loop comes back at once, without a timer or an extra handle.
    int mask = (reading_ ? UV_READABLE : 0) | (writing_ || spin_ ? UV_WRITABLE : 0);
    if (mask == 0)
        uv_poll_stop(&poll_);
    else
        uv_poll_start(&poll_, mask, uv_on_poll);
}

void PlainTransport::set_reading(bool on) {
    if (reading_ != on) {
        reading_ = on;
        update_interest();
    }
}

void PlainTransport::want_writable(bool on) {
    if (writing_ != on) {
        writing_ = on;
        update_interest();
    }
}

ssize_t PlainTransport::write(const struct iovec *iov, int count) {
    struct msghdr msg = {};
    msg.msg_iov = const_cast<struct iovec *>(iov);
    msg.msg_iovlen = static_cast<size_t>(count);
    for (;;) {
        // MSG_NOSIGNAL: a peer that went away is an error to handle, not a SIGPIPE.
        ssize_t n = sendmsg(fd_, &msg, MSG_NOSIGNAL);
        if (n >= 0)
            return n;
        if (errno == EINTR)
            continue;
        return errno == EWOULDBLOCK ? -EAGAIN : -errno;
    }
}

ssize_t PlainTransport::send_file(int fd, int64_t offset, size_t length) {
    off_t off = static_cast<off_t>(offset);
    for (;;) {
        ssize_t n = sendfile(fd_, fd, &off, length);
        if (n >= 0)
            return n;
        if (errno == EINTR)
            continue;
        return errno == EWOULDBLOCK ? -EAGAIN : -errno;
    }
}

bool PlainTransport::has_unread_input() const {
    int pending = 0;
    return ioctl(fd_, FIONREAD, &pending) == 0 && pending > 0;
}

void PlainTransport::shutdown_write() {
    ::shutdown(fd_, SHUT_WR);
}

void PlainTransport::close() {
    closed_ = true;
    events_ = nullptr;
    uv_close(reinterpret_cast<uv_handle_t *>(&poll_), uv_on_close);
}

void PlainTransport::uv_on_close(uv_handle_t *handle) noexcept {
    // The descriptor is closed only now: libuv forgets it in uv_close, and a descriptor number
    // reused by accept() before that would confuse the poller.
    auto *self = static_cast<PlainTransport *>(handle->data);
    ::close(self->fd_);
    delete self;
}

void PlainTransport::uv_on_poll(uv_poll_t *handle, int status, int events) noexcept {
    static_cast<PlainTransport *>(handle->data)->on_poll(status, events);
}

void PlainTransport::on_poll(int status, int events) {
    if (status < 0) {
        // libuv reports socket errors (ECONNRESET, ...) here.
        if (events_)
            events_->on_read_end(status);
        return;
    }
    if ((events & UV_WRITABLE) && writing_ && events_)
        events_->on_writable();
    if ((events & (UV_READABLE | UV_DISCONNECT)) && reading_ && events_)
        read_plain();
}

void PlainTransport::read_plain() {
    // One recv per wake-up: epoll is level-triggered, so what is left wakes us again, and we
    // save the recv that would only say EAGAIN.
    std::span<char> buffer = events_->on_read_buffer();
    if (closed_ || !events_)
        return;
    if (buffer.empty()) {
        set_reading(false);
        return;
    }
    ssize_t n;
    do {
        n = recv(fd_, buffer.data(), buffer.size(), 0);
    } while (n < 0 && errno == EINTR);
    if (n > 0)
        events_->on_read(static_cast<size_t>(n));
    else if (n == 0)
        events_->on_read_end(0);
    else if (errno != EAGAIN && errno != EWOULDBLOCK)
        events_->on_read_end(-errno);
    else
        events_->on_read(0);
}

} // namespace trellis
