// One client connection speaking HTTP/1.1 on top of a Transport: reading requests in order
// (pipelined or not), answering them in order, keep-alive, and the timeouts of each state.
//
// An idle keep-alive connection holds only this object and its transport (about 400 bytes with
// malloc overhead): the parser, the read buffer, the exchange and the output queue live in an
// ActiveSession borrowed from the worker's pool when bytes arrive and returned once every
// response is written and no partial request is buffered.
//
// The connection's state (State) says whether it reads more requests; within Open, which timeout
// runs follows from what is in progress (update_timeout): idle (keep-alive), reading a head
// (header timeout and a total deadline), reading a body (between reads, and a minimum rate),
// a plugin's turn (handler timeout), writing (send timeout between progress).
#pragma once

#include "exchange.hpp"
#include "http1/request_reader.hpp"
#include "output_queue.hpp"
#include "timeouts.hpp"
#include "transport/transport.hpp"
#include "worker_context.hpp"

#include <algorithm>
#include <memory>
#include <netinet/in.h>

namespace trellis {

class Connection;

// The working state of a connection with something to do, pooled per worker.
struct ActiveSession {
    ActiveSession(size_t read_buffer_size, WorkerContext *worker);
    Exchange exchange; // the request being read or answered (one at a time: answers go in order)
    http1::RequestReader reader;
    std::unique_ptr<char[]> read_buffer;
    size_t read_capacity;
    size_t read_end = 0;          // bytes in read_buffer
    size_t parse_pos = 0;         // bytes given to the reader
    OutputQueue output;           // serialised responses (and files) waiting to be written
    uint64_t head_started_ms = 0; // uv_now at the request's first byte (total head deadline)
    uint64_t body_started_ms = 0; // when the body began (or resumed), for the minimum rate
    bool parser_kick = false;     // paused at the end of the input: the reader still owes a callback

    void reset_for_reuse();
};

class Connection final : public ClientConnection,
                         public TransportEvents,
                         public ExchangeOwner,
                         http1::RequestSink {
  public:
    // Takes ownership of `transport` and starts reading.
    // `listen` (may be null in tests) carries HSTS and redirect_to_https; it outlives connections.
    static Connection *start(WorkerContext &worker, Transport *transport, const sockaddr *peer,
                             const ListenConfig *listen = nullptr);

    // ClientConnection
    void on_timeout(TimeoutKind kind) override;
    // Shutdown: close now if idle; otherwise the request in progress is answered with
    // "Connection: close" and the connection closes after it. A reload changes nothing.
    void begin_drain(bool reload = false) override;
    void abort() override;
    // Nothing in progress: no request, no answer, no handler, and no bytes of a request waiting in
    // the socket.
    bool idle() const override {
        return !session_ && state_ != State::Closed && !(transport_ && transport_->has_unread_input());
    }

    // TransportEvents
    std::span<char> on_read_buffer() override;
    void on_read(size_t n) override;
    void on_read_end(int status) override;
    void on_writable() override;

    // ExchangeOwner
    void queue_head(Exchange &ex, int status, int64_t body_length) override;
    void queue_body(Exchange &ex, std::string_view bytes) override;
    OutputQueue &body_queue(Exchange &ex) override;
    void queue_end(Exchange &ex, bool complete) override;
    size_t queued_output(const Exchange &ex) const override;
    void flush(Exchange &ex) override;
    void end_after_answer(Exchange &ex) override;
    void end_now(Exchange &ex) override;
    void resume_body(Exchange &ex) override;
    void exchange_changed(Exchange &ex) override;
    void on_mail(Exchange &ex, unsigned bits) override;
    bool secure() const override { return transport_ && transport_->tls_facts(); }
    bool covers_host(std::string_view host) const override { return transport_->covers_host(host); }
    const ListenConfig *listen() const override { return listen_; }
    std::shared_ptr<const TlsFacts> shared_tls_facts() const override {
        return transport_->shared_tls_facts();
    }

  private:
    enum class State : uint8_t {
        Open,      // reading and answering requests
        Closing,   // the last answer is being made or written; nothing more is read as a request
        Lingering, // answers written, FIN sent: what the client still sends is read and dropped
        Closed,    // the transport is closed; the object goes when the last callback returns
    };

    Connection(WorkerContext &worker, Transport *transport, const sockaddr *peer, const ListenConfig *listen);
    ~Connection();

    // http1::RequestSink
    void on_message_begin() override;
    bool on_head_complete() override;
    BodyVerdict on_streamed_body(const char *at, size_t len) override;
    void on_continue_expected() override;
    size_t max_head_bytes() const override {
        // limits.max_header_bytes, or less for a buffer made before a reload raised it.
        return std::min<size_t>(worker_.limits().max_header_bytes,
                                session_->read_capacity - SessionPool::kReadSlack);
    }
    uint64_t max_body_bytes() const override { return worker_.limits().max_body_bytes; }
    bool body_streamed() const override { return session_->exchange.body_streamed; }

    // Input.
    void process_input();
    bool parse_step();
    void after_message();
    void answer_bad_request(int status);
    void dispatch_head_to_body_streamer();
    void fail_streamed_body();
    bool body_too_slow() const;
    void resume_body();
    void compact_read_buffer();
    void shift_request_to_front();
    void acquire_session();
    // The first bytes (or ALPN) decide: HTTP/2 takes the transport over.
    enum class Protocol { Http1, Http2, Undecided };
    Protocol protocol_of_first_bytes() const;
    void hand_over_to_http2();
    // Output.
    void flush();
    void after_flush();
    // Lifecycle.
    void close_after_answer() {
        if (state_ == State::Open)
            state_ = State::Closing;
        keep_alive_ = false;
    }
    void update_timeout();
    void start_header_deadline();
    void release_session();
    void release_session_if_idle();
    void finish_and_close();
    bool nothing_unread() const;
    void close_now();
    void start_lingering();
    static void recycle_session(Exchange *ex, void *session);
    struct Guard;

    WorkerContext &worker_;
    Transport *transport_;
    const ListenConfig *listen_;
    ActiveSession *session_ = nullptr;
    sockaddr_in6 peer_; // AF_INET peers are stored as sockaddr_in in the same bytes
    uint16_t callback_depth_ = 0;
    State state_ = State::Open;
    bool keep_alive_ = true;          // of the request being answered
    bool response_chunked_ = false;   // the answer being written is framed in chunks
    bool peer_done_ = false;          // the peer sent EOF
    bool client_asked_close_ = false; // the last complete request said "Connection: close" (or was 1.0)
    bool dropped_input_ = false;      // bytes after the last answered request were thrown away
    bool client_left_ = false;        // EOF, a reset or a failed write: a held request's 499
    bool write_blocked_ = false;
    bool tls_checked_ = false; // looked at the transport once bytes came (auto listeners decide late)
    bool counted_tls_ = false;
    bool protocol_decided_ = false;
    bool handed_over_ = false; // the HTTP/2 connection counts this connection from now on
};

} // namespace trellis
