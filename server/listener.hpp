// One listening socket of one worker. Each worker binds its own socket to the same address with
// SO_REUSEPORT, so the kernel spreads new connections over the workers with no shared accept lock.
#pragma once

#include "config/config.hpp"
#include "transport/poller.hpp"

#include <cstdint>
#include <memory>
#include <string>
#include <uv.h>

namespace trellis {

class WorkerContext;
class WorkerTls;
class TlsContext;

// One "listen" entry as the workers share it: its settings and, for tls/auto, its TLS context.
struct ListenerSettings {
    ListenConfig config;
    uint16_t bound_port = 0; // the real port (config.port may be 0)
    std::shared_ptr<TlsContext> tls;
};

// Throws StartupError ("listen URL: Address already in use") when any socket, of this process or
// another, holds the listener's address and port. Call before the workers bind.
void ensure_address_free(const ListenConfig &config);

class Listener final : public Pollable {
  public:
    // Creates, binds and listens; throws StartupError naming the address on failure. With
    // port 0 the kernel picks one; pass that port to the other workers' listeners.
    // `tls` is this worker's TLS state for a tls/auto listener, else null.
    static Listener *open(WorkerContext &worker, const ListenerSettings &settings,
                          std::shared_ptr<const WorkerTls> tls, uint16_t port);
    // Certificate reload: new connections use `tls`; open ones keep theirs.
    void set_tls(std::shared_ptr<const WorkerTls> tls) { tls_ = std::move(tls); }
    uint16_t port() const { return port_; }
    // Stops accepting and frees the listener once libuv is done with it.
    void close();
    void on_epoll(uint32_t events) override;

  private:
    Listener(WorkerContext &worker, const ListenerSettings &settings, std::shared_ptr<const WorkerTls> tls,
             int fd, uint16_t port)
        : worker_(worker), settings_(settings), tls_(std::move(tls)), fd_(fd), port_(port) {}
    void on_readable();
    void accept_one(int fd, const struct sockaddr *peer);
    void pause_accepting();
    void warn_at_limit();
    void watch(uint32_t events);
    static void uv_on_resume(uv_timer_t *timer) noexcept;
    static void uv_on_close(uv_handle_t *handle) noexcept;

    WorkerContext &worker_;
    const ListenerSettings &settings_;
    std::shared_ptr<const WorkerTls> tls_;
    int fd_;
    uint16_t port_;
    uint64_t last_limit_warning_ms_ = 0;
    uint32_t watched_ = 0;    // in the worker's epoll set (Poller) for these events
    uv_timer_t resume_timer_; // restarts accepting after running out of descriptors
};

// "http://127.0.0.1:8080", "https://[::1]:8443" (an auto listener shows its http:// URL)
std::string listener_url(const ListenConfig &config, uint16_t port);

} // namespace trellis
