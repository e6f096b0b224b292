#include "transport/poller.hpp"

#include <cerrno>
#include <sys/epoll.h>
#include <unistd.h>

namespace trellis {
namespace {

// Events taken per turn; more wait for the next one (level-triggered, nothing is lost).
constexpr int kBatch = 256;

// The data of libuv's own descriptor in the set (a socket's data is its Pollable).
Pollable *const kLibuvEvents = nullptr;

std::shared_mutex g_spawn_guard;

} // namespace

std::unique_lock<std::shared_mutex> hold_descriptors_for_spawn() {
    return std::unique_lock<std::shared_mutex>(g_spawn_guard);
}

Poller::~Poller() {
    bury_retired();
    if (epoll_fd_ >= 0)
        ::close(epoll_fd_);
}

bool Poller::open() {
    epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
    if (epoll_fd_ < 0)
        return false;
    epoll_event event{};
    event.events = EPOLLIN;
    event.data.ptr = kLibuvEvents;
    if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, uv_backend_fd(loop_), &event) != 0) {
        ::close(epoll_fd_);
        epoll_fd_ = -1;
        return false;
    }
    uv_check_init(loop_, &after_);
    after_.data = this;
    uv_unref(reinterpret_cast<uv_handle_t *>(&after_));
    after_open_ = true;
    return true;
}

bool Poller::watch(int fd, Pollable *target, uint32_t watched, uint32_t events) {
    if (epoll_fd_ < 0 && !open())
        return false;
    if (watched == events)
        return true;
    epoll_event event{};
    event.events = events;
    event.data.ptr = target;
    int op = watched == 0 ? EPOLL_CTL_ADD : events == 0 ? EPOLL_CTL_DEL : EPOLL_CTL_MOD;
    if (epoll_ctl(epoll_fd_, op, fd, &event) != 0)
        return false;
    if (op == EPOLL_CTL_ADD)
        ++watched_;
    else if (op == EPOLL_CTL_DEL)
        --watched_;
    return true;
}

void Poller::retire(int fd, Pollable *target, uint32_t watched) {
    // Closing the descriptor takes it out of the set, as nothing else holds a copy of it (a
    // process being started would: hold_descriptors_for_spawn).
    if (fd >= 0) {
        std::shared_lock<std::shared_mutex> no_spawn(g_spawn_guard);
        ::close(fd);
    }
    if (watched != 0)
        --watched_;
    target->retired_ = true;
    retired_.push_back(target);
    // Closed from a libuv callback (a timeout, mail): deleted once the callbacks are done.
    if (retired_.size() == 1 && after_open_)
        uv_check_start(&after_, uv_on_check);
}

bool Poller::run() {
    if (epoll_fd_ < 0 && !open())
        return false;
    epoll_event events[kBatch];
    for (;;) {
        // Like uv_run(UV_RUN_DEFAULT): done when nothing is left to wait for.
        if (watched_ == 0 && !uv_loop_alive(loop_))
            return true;
        int n = epoll_wait(epoll_fd_, events, kBatch, uv_backend_timeout(loop_));
        if (n < 0 && errno != EINTR)
            return false;
        uv_update_time(loop_); // deadlines set by the sockets' handlers read uv_now()
        bool libuv_due = n <= 0;
        for (int i = 0; i < n; ++i) {
            auto *target = static_cast<Pollable *>(events[i].data.ptr);
            if (target == kLibuvEvents)
                libuv_due = true;
            else if (!target->retired_) // closed by an earlier event of this batch: still allocated
                target->on_epoll(events[i].events);
        }
        bury_retired();
        // Sockets busy enough to fill every turn must not starve a due timer.
        if (libuv_due || uv_backend_timeout(loop_) == 0)
            uv_run(loop_, UV_RUN_NOWAIT);
    }
}

void Poller::bury_retired() {
    for (Pollable *target : retired_)
        delete target;
    retired_.clear();
}

void Poller::close() {
    bury_retired();
    if (after_open_) {
        after_open_ = false;
        uv_close(reinterpret_cast<uv_handle_t *>(&after_), nullptr);
    }
}

void Poller::uv_on_check(uv_check_t *handle) noexcept {
    auto *self = static_cast<Poller *>(handle->data);
    self->bury_retired();
    uv_check_stop(handle);
}

} // namespace trellis
