// One listening socket of one worker. Each worker binds its own socket to the same address with
// SO_REUSEPORT, so the kernel spreads new connections over the workers with no shared accept lock.
#pragma once

#include "config/config.hpp"

#include <cstdint>
#include <string>
#include <uv.h>

namespace trellis {

class WorkerContext;

class Listener {
  public:
    // Creates, binds and listens; throws StartupError naming the address on failure. With
    // port 0 the kernel picks one; pass that port to the other workers' listeners.
    static Listener *open(WorkerContext &worker, const ListenConfig &config, uint16_t port);
    uint16_t port() const { return port_; }
    // Stops accepting and frees the listener once libuv is done with it.
    void close();

  private:
    Listener(WorkerContext &worker, int fd, uint16_t port) : worker_(worker), fd_(fd), port_(port) {}
    void on_readable();
    void accept_one(int fd, const struct sockaddr *peer);
    void pause_accepting();
    static void uv_on_poll(uv_poll_t *handle, int status, int events) noexcept;
    static void uv_on_resume(uv_timer_t *timer) noexcept;
    static void uv_on_close(uv_handle_t *handle) noexcept;

    WorkerContext &worker_;
    int fd_;
    uint16_t port_;
    int pending_closes_ = 0;
    uint64_t last_limit_warning_ms_ = 0;
    uv_poll_t poll_;
    uv_timer_t resume_timer_; // restarts accepting after running out of descriptors
};

// "http://127.0.0.1:8080" or "http://[::1]:8080"
std::string listener_url(const ListenConfig &config, uint16_t port);

} // namespace trellis
