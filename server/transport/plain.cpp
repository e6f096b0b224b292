#include "transport/plain.hpp"

#include <cerrno>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <unistd.h>

namespace trellis {

PlainTransport *PlainTransport::create(Poller &poller, int fd) {
    auto *transport = new PlainTransport(poller, fd);
    if (!transport->attach()) {
        delete transport;
        return nullptr;
    }
    return transport;
}

bool PlainTransport::attach() {
    if (!poller_.watch(fd_, this, 0, EPOLLIN)) {
        ::close(fd_);
        return false;
    }
    watched_ = EPOLLIN;
    reading_ = true; // no events reach it before start(): both happen in one turn of the loop
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
    uint32_t mask = (reading_ ? uint32_t{EPOLLIN} : 0u) | (writing_ || spin_ ? uint32_t{EPOLLOUT} : 0u);
    if (poller_.watch(fd_, this, watched_, mask)) {
        watched_ = mask;
    } else if (events_) {
        // The kernel would not watch it (out of memory): without events the connection would hang.
        events_->on_read_end(-ENOMEM);
    }
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
    poller_.retire(fd_, this, watched_); // deleted once the events being dispatched are done with it
}

void PlainTransport::on_epoll(uint32_t events) {
    // The events a uv_poll_t would report. An error stops the watching (as uv_poll does) and is
    // reported once; a bare hang-up reaches whoever waits, to find out by reading or writing.
    if ((events & EPOLLERR) && !(events & EPOLLPRI)) {
        update_after_error();
        on_poll(UV_EBADF, 0);
        return;
    }
    if (events == EPOLLHUP)
        events |= watched_;
    events &= watched_;
    int uv_events = (events & EPOLLIN ? UV_READABLE : 0) | (events & EPOLLOUT ? UV_WRITABLE : 0);
    if (uv_events)
        on_poll(0, uv_events);
}

void PlainTransport::update_after_error() {
    if (poller_.watch(fd_, this, watched_, 0))
        watched_ = 0;
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
