// One listening socket as one worker accepts from it (listen_sockets.hpp says where the sockets
// come from), in the worker's epoll set with its connections.
#pragma once

#include "accept.hpp"
#include "transport/poller.hpp"

#include <cstdint>
#include <memory>
#include <string>
#include <uv.h>

namespace trellis {

class WorkerContext;
class WorkerTls;

class Listener final : public Pollable {
  public:
    // Watches `fd` (a listening socket, now the listener's) for this worker. `tls` is this
    // worker's TLS state for a tls/auto listener, else null. Throws StartupError on failure.
    static Listener *watch_socket(WorkerContext &worker, const ListenerSettings &settings,
                                  std::shared_ptr<const WorkerTls> tls, int fd);
    const ListenerSettings &settings() const { return settings_; }
    // Certificate reload: new connections use `tls`; open ones keep theirs.
    void set_tls(std::shared_ptr<const WorkerTls> tls) { tls_ = std::move(tls); }
    // Stops accepting and frees the listener once libuv is done with it.
    void close();
    void on_epoll(uint32_t events) override;

  private:
    Listener(WorkerContext &worker, const ListenerSettings &settings, std::shared_ptr<const WorkerTls> tls,
             int fd)
        : worker_(worker), settings_(settings), tls_(std::move(tls)), fd_(fd) {}
    void on_readable();
    void accept_one(int fd, const struct sockaddr *peer);
    void refuse_untrusted(int fd, const struct sockaddr *peer);
    void pause_accepting();
    void warn_at_limit();
    void watch(uint32_t events);
    static void uv_on_resume(uv_timer_t *timer) noexcept;
    static void uv_on_close(uv_handle_t *handle) noexcept;

    WorkerContext &worker_;
    const ListenerSettings &settings_;
    std::shared_ptr<const WorkerTls> tls_;
    int fd_;
    uint64_t last_limit_warning_ms_ = 0;
    uint64_t last_untrusted_warning_ms_ = 0;
    uint32_t watched_ = 0;    // in the worker's epoll set (Poller) for these events
    uv_timer_t resume_timer_; // restarts accepting after running out of descriptors
};

} // namespace trellis
