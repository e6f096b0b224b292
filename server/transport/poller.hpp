// One epoll set per worker for its connections' sockets, with the worker's libuv loop inside it
// as one more descriptor. A uv_poll_t per connection costs five epoll_ctl calls over a connection's
// life (libuv probes the descriptor with an ADD and a DEL, every uv_poll_start begins with a DEL,
// then the ADD, and uv_close ends with a DEL) and two for every change of interest; here a
// connection costs one ADD, a change of interest one MOD, and closing the socket drops it from the
// set. It also saves a uv_poll_t (160 bytes) in every idle connection.
//
// Poller::run drives the loop (libuv's documented embedding: uv_backend_fd, uv_backend_timeout,
// UV_RUN_NOWAIT): one epoll_wait per turn covers both, and libuv runs only when its own descriptor
// has events or a timer is due, so a turn that only moves connection bytes costs one system call.
#pragma once

#include <uv.h>

#include <cstdint>
#include <mutex>
#include <shared_mutex>
#include <vector>

namespace trellis {

class Poller;

// Something with a socket in the set: told what epoll reported for it.
class Pollable {
  public:
    virtual ~Pollable() = default;
    virtual void on_epoll(uint32_t events) = 0;

  private:
    friend class Poller;
    bool retired_ = false; // closed: events still in the current batch are dropped
};

// A process started from this one (the SIGUSR2 upgrade) holds a copy of every descriptor from
// its fork until its exec closes them: a socket closed meanwhile would stay in its worker's epoll
// set, with events for a target already deleted. Closing a watched socket (Poller::retire) and
// starting a process exclude each other through this lock; the spawner holds it exclusively.
std::unique_lock<std::shared_mutex> hold_descriptors_for_spawn();

class Poller {
  public:
    explicit Poller(uv_loop_t *loop) : loop_(loop) {}
    ~Poller();
    Poller(const Poller &) = delete;
    Poller &operator=(const Poller &) = delete;

    // Sets what `fd` is watched for (EPOLLIN/EPOLLOUT; 0 takes it out of the set, since epoll
    // reports a hang-up even to a descriptor that asks for nothing). `watched` is what it was.
    // False if the kernel refuses (out of memory, max_user_watches).
    bool watch(int fd, Pollable *target, uint32_t watched, uint32_t events);
    // Closes `fd` (`watched` for what) and deletes `target` once the events being dispatched are
    // done with it. `fd` -1: the descriptor lives on (handed to another target; unwatch it first).
    void retire(int fd, Pollable *target, uint32_t watched);
    // Runs the loop (in place of uv_run(UV_RUN_DEFAULT)) until neither a watched socket nor an
    // active libuv handle is left. False if the epoll set cannot be made.
    bool run();
    // At the worker's end, before its loop closes: no socket may be watched any more.
    void close();

  private:
    bool open();
    void bury_retired();
    static void uv_on_check(uv_check_t *handle) noexcept;

    uv_loop_t *loop_;
    int epoll_fd_ = -1;
    size_t watched_ = 0; // sockets in the set: while there are any, they keep the loop alive
    uv_check_t after_;   // for sockets closed in libuv callbacks: delete them after the callbacks
    bool after_open_ = false;
    std::vector<Pollable *> retired_;
};

} // namespace trellis
