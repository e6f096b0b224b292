// The first stage of a connection on a "proxy_protocol" listener: reads the PROXY header the
// balancer sends before anything of the client's (before TLS too), then starts the connection
// with the client's address in place of the balancer's. It reads exactly the header's bytes
// (peeking for the end of a v1 line), so the transport starts on the client's first byte.
// Malformed, truncated or slow (limits.header_timeout_ms) headers close the socket, unanswered.
#pragma once

#include "accept.hpp"
#include "transport/poller.hpp"
#include "worker_context.hpp"

#include <memory>
#include <sys/socket.h>

namespace trellis {

class ProxyHeaderReader final : public ClientConnection, public Pollable {
  public:
    // Takes ownership of `fd` (accepted from a trusted peer).
    static void start(WorkerContext &worker, int fd, const sockaddr *socket_peer,
                      const ListenerSettings &settings, std::shared_ptr<const WorkerTls> tls);

    // ClientConnection: a header not complete by now, a drain or its deadline closes the socket.
    // A drain lets it finish under its header deadline: the client's request may be right behind
    // the header, and the balancer would not send it elsewhere.
    void on_timeout(TimeoutKind) override { fail("no complete header within limits.header_timeout_ms"); }
    void begin_drain(bool) override {}
    void abort() override { close(); }
    bool idle() const override { return false; }

    void on_epoll(uint32_t events) override;

  private:
    ProxyHeaderReader(WorkerContext &worker, int fd, const sockaddr *socket_peer,
                      const ListenerSettings &settings, std::shared_ptr<const WorkerTls> tls);
    void close();
    void fail(const char *why);
    void finish(const sockaddr *client);

    WorkerContext &worker_;
    int fd_;
    sockaddr_storage socket_peer_;
    const ListenerSettings &settings_;
    std::shared_ptr<const WorkerTls> tls_;
    std::unique_ptr<char[]> received_; // the header's bytes taken so far (it came in pieces)
    size_t received_length_ = 0;
    bool watched_ = false; // in the worker's epoll set
};

} // namespace trellis
