// Plain TCP: a non-blocking socket in the worker's epoll set (Poller). Using the socket directly
// (instead of a uv_tcp_t) costs no libuv handle per connection, and it lets the session write a
// whole batch with one sendmsg and send files with sendfile(2).
#pragma once

#include "transport/poller.hpp"
#include "transport/transport.hpp"

namespace trellis {

class PlainTransport : public Transport, public Pollable {
  public:
    // Takes ownership of `fd`, a connected non-blocking socket. Fails (returns nullptr and closes
    // fd) only when the kernel refuses to watch the descriptor.
    static PlainTransport *create(Poller &poller, int fd);

    void start(TransportEvents *events) override;
    void hand_over(TransportEvents *events) override { events_ = events; }
    void set_reading(bool on) override;
    void want_writable(bool on) override;
    ssize_t write(const struct iovec *iov, int count) override;
    ssize_t send_file(int fd, int64_t offset, size_t length) override;
    void shutdown_write() override;
    void close() override;
    const char *name() const override { return "plain"; }
    bool has_unread_input() const override;

  protected:
    PlainTransport(Poller &poller, int fd) : poller_(poller), fd_(fd) {}
    ~PlainTransport() override = default;
    // Puts the socket in the worker's set, watched for input; false (the socket closed) if the
    // kernel refuses.
    bool attach();
    void update_interest();
    // Readiness of the socket; the TLS transport overrides it to run mbedTLS first.
    virtual void on_poll(int status, int events);
    // One recv into the session's buffer (the plain read path).
    void read_plain();
    // Wake up once more even if the socket has nothing new (TLS has buffered plaintext).
    void set_spin(bool on);

    Poller &poller_;
    TransportEvents *events_ = nullptr;
    int fd_;
    bool reading_ = false;
    bool writing_ = false;
    bool spin_ = false;
    bool closed_ = false;

  private:
    void on_epoll(uint32_t events) override;
    void update_after_error();

    uint32_t watched_ = 0; // the epoll events the socket is in the set for (0: not in it)
};

} // namespace trellis
