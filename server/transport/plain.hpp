// Plain TCP: a non-blocking socket watched by one uv_poll_t. Using the socket directly (instead
// of a uv_tcp_t) costs 160 bytes per connection instead of 248 plus 192 per pending write, and it
// lets the session write a whole batch with one sendmsg and send files with sendfile(2).
#pragma once

#include "transport/transport.hpp"

#include <uv.h>

namespace trellis {

class PlainTransport : public Transport {
  public:
    // Takes ownership of `fd`, a connected non-blocking socket. Fails (returns nullptr and closes
    // fd) only when libuv refuses the descriptor.
    static PlainTransport *create(uv_loop_t *loop, int fd);

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
    explicit PlainTransport(int fd) : fd_(fd) {}
    ~PlainTransport() override = default;
    // Registers the socket with the loop; false if libuv refuses it.
    bool attach(uv_loop_t *loop);
    void update_interest();
    // Readiness of the socket; the TLS transport overrides it to run mbedTLS first.
    virtual void on_poll(int status, int events);
    // One recv into the session's buffer (the plain read path).
    void read_plain();
    // Wake up once more even if the socket has nothing new (TLS has buffered plaintext).
    void set_spin(bool on);

    uv_poll_t poll_;
    TransportEvents *events_ = nullptr;
    int fd_;
    bool reading_ = false;
    bool writing_ = false;
    bool spin_ = false;
    bool closed_ = false;

  private:
    static void uv_on_poll(uv_poll_t *handle, int status, int events) noexcept;
    static void uv_on_close(uv_handle_t *handle) noexcept;
};

} // namespace trellis
