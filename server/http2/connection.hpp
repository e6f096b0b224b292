// One client connection speaking HTTP/2 (RFC 9113) with Debian's libnghttp2: frames in and out,
// flow control, the streams (each an exchange of the request core), the connection's deadlines and
// the bounds that keep a hostile peer from costing more than its own connection.
//
// An HTTP/1.1 connection becomes one of these when ALPN chose "h2" or the first bytes are the
// client preface (prior knowledge): Connection::start takes the transport over with the bytes
// read so far.
#pragma once

#include "config/config.hpp"
#include "output_queue.hpp"
#include "transport/transport.hpp"
#include "worker_context.hpp"

#include <nghttp2/nghttp2.h>

#include <netinet/in.h>
#include <string_view>
#include <vector>

namespace trellis::http2 {

class Stream;

// A token bucket: `burst` at once, refilled at `per_second`.
class Budget {
  public:
    Budget(double burst, double per_second) : tokens_(burst), burst_(burst), per_second_(per_second) {}
    // Takes one token; false when there is none left.
    bool take(uint64_t now_ms);

  private:
    double tokens_;
    double burst_;
    double per_second_;
    uint64_t last_ms_ = 0;
};

class Connection final : public ClientConnection, public TransportEvents {
  public:
    // Takes over `transport` from an HTTP/1.1 connection that found HTTP/2 on it, with the bytes it
    // had read (`received`). `counted_tls`: the connection is already counted as TLS.
    static void start(WorkerContext &worker, Transport *transport, const sockaddr_in6 &peer,
                      const ListenConfig *listen, std::string_view received, bool counted_tls);

    // ClientConnection
    void on_timeout(TimeoutKind kind) override;
    // Shutdown or reload: GOAWAY, open streams finish, then the connection closes.
    void begin_drain(bool reload) override;
    void abort() override;
    bool idle() const override;

    // TransportEvents
    std::span<char> on_read_buffer() override;
    void on_read(size_t n) override;
    void on_read_end(int status) override;
    void on_writable() override;

    // ---- for its streams ----
    WorkerContext &worker() const { return worker_; }
    Transport &transport() const { return *transport_; }
    const ListenConfig *listen() const { return listen_; }
    const Http2Config &settings() const { return settings_; }
    const sockaddr_in6 &peer() const { return peer_; }
    // The stream has news (an answer, body bytes, its end): sent at the next send_pending().
    void mark_dirty(Stream &stream);
    // Hands what the streams queued to nghttp2, and nghttp2's frames to the transport.
    void send_pending();
    void update_timeout();
    // Gives the peer back flow-control credit for `n` body bytes the stream has taken.
    void consume(Stream &stream, size_t n);
    void reset(Stream &stream, uint32_t error_code);
    void send_continue(Stream &stream);
    void on_stream_mail(Stream &stream, unsigned bits);

  private:
    enum class State : uint8_t { Open, Draining, Closed };

    Connection(WorkerContext &worker, Transport *transport, const sockaddr_in6 &peer,
               const ListenConfig *listen, bool counted_tls);
    ~Connection();
    bool init_session();
    void receive(const char *data, size_t len);
    void submit_answer(Stream &stream);
    void flush_output();
    void close_when_done();
    void close_now();
    void forget(Stream &stream, bool reset_by_peer);
    void bury_dead();
    void calm_down(const char *why);
    void check_deadlines(uint64_t now);
    uint64_t next_deadline(TimeoutKind &kind) const;
    struct Guard;

    // nghttp2 callbacks (user_data is the connection).
    static ssize_t on_send(nghttp2_session *, const uint8_t *data, size_t length, int, void *self) noexcept;
    static int on_send_data(nghttp2_session *, nghttp2_frame *frame, const uint8_t *frame_head, size_t length,
                            nghttp2_data_source *source, void *self) noexcept;
    static ssize_t on_read_data(nghttp2_session *, int32_t stream_id, uint8_t *, size_t length,
                                uint32_t *flags, nghttp2_data_source *source, void *self) noexcept;
    static int on_begin_headers(nghttp2_session *, const nghttp2_frame *frame, void *self) noexcept;
    static int on_header(nghttp2_session *, const nghttp2_frame *frame, const uint8_t *name, size_t name_len,
                         const uint8_t *value, size_t value_len, uint8_t, void *self) noexcept;
    static int on_frame_recv(nghttp2_session *, const nghttp2_frame *frame, void *self) noexcept;
    static int on_frame_send(nghttp2_session *, const nghttp2_frame *frame, void *self) noexcept;
    static int on_data_chunk(nghttp2_session *, uint8_t, int32_t stream_id, const uint8_t *data, size_t len,
                             void *self) noexcept;
    static int on_stream_close(nghttp2_session *, int32_t stream_id, uint32_t error_code,
                               void *self) noexcept;
    static int on_error(nghttp2_session *, int, const char *message, size_t len, void *self) noexcept;

    WorkerContext &worker_;
    Transport *transport_;
    const ListenConfig *listen_;
    Http2Config settings_;
    sockaddr_in6 peer_;
    nghttp2_session *session_ = nullptr;
    OutputQueue output_;               // frames waiting for the transport
    std::vector<Stream *> streams_;    // open streams of this connection
    std::vector<Stream *> dirty_;      // streams with news for send_pending
    std::vector<Stream *> submitting_; // dirty_ as send_pending takes it
    std::vector<Stream *> dead_;       // closed streams, freed once no callback is on the stack
    Budget resets_;                    // RST_STREAM from the peer (Rapid Reset)
    Budget empty_frames_;              // DATA frames that carry nothing and end nothing
    uint64_t idle_since_ms_ = 0;       // since when no stream is open
    uint64_t write_blocked_ms_ = 0;    // since when the transport takes nothing (0: it does)
    uint64_t bytes_written_ = 0;       // to the transport, ever (progress of send_pending)
    uint16_t callback_depth_ = 0;
    State state_ = State::Open;
    bool counted_tls_ = false;
    bool settings_rewritten_ = false;
    bool sending_ = false;
    bool peer_done_ = false;
};

} // namespace trellis::http2
