// The byte stream between the peer and the HTTP session. The session never touches a socket or a
// libuv stream: it asks the transport to read into memory it provides and to write without
// blocking, so TLS can be slid in underneath without the session (or any plugin) knowing.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <sys/types.h>
#include <sys/uio.h>

namespace trellis {

// Implemented by the session that sits on a transport. Called on the worker thread.
class TransportEvents {
  public:
    // Where the next incoming bytes may go. An empty span means "no room now": the transport stops
    // asking until set_reading(true) is called again.
    virtual std::span<char> on_read_buffer() = 0;
    // `n` bytes were written into the span last returned by on_read_buffer(); n is 0 when the
    // transport asked for a buffer and then found nothing to read.
    virtual void on_read(size_t n) = 0;
    // The peer finished sending (status 0) or the stream failed (negative errno).
    virtual void on_read_end(int status) = 0;
    // After want_writable(true): write() will take bytes again.
    virtual void on_writable() = 0;

  protected:
    ~TransportEvents() = default;
};

class Transport {
  public:
    virtual ~Transport() = default;

    // Starts delivering events; called once.
    virtual void start(TransportEvents *events) = 0;
    virtual void set_reading(bool on) = 0;
    virtual void want_writable(bool on) = 0;
    // Non-blocking writes. Each returns how many bytes were taken (possibly fewer than offered),
    // -EAGAIN when nothing can be taken now (ask want_writable), or another negative errno when
    // the stream is broken.
    virtual ssize_t write(const struct iovec *iov, int count) = 0;
    virtual ssize_t send_file(int fd, int64_t offset, size_t length) = 0;
    // Sends the end of stream after everything written so far (FIN on TCP).
    virtual void shutdown_write() = 0;
    // Stops all events at once and frees the transport once libuv has let go of it. The caller
    // must not touch the transport afterwards.
    virtual void close() = 0;

    virtual const char *name() const = 0;
};

} // namespace trellis
