// One HTTP/2 stream: the exchange of one request, and the protocol side of it. Its head is built
// from the decoded header fields (the request's spans point into `head`), its body arrives in DATA
// frames, and its answer leaves as HEADERS and DATA frames the connection cuts from `answer`.
#pragma once

#include "exchange.hpp"
#include "output_queue.hpp"

#include <cstdint>
#include <string>

namespace trellis::http2 {

class Connection;

class Stream final : public ExchangeOwner {
  public:
    Stream(Connection *connection, int32_t id, WorkerContext &worker);

    // ---- the request, as nghttp2 hands it over ----
    // A decoded header field of the request's head (names arrive lower-case and checked).
    void add_field(std::string_view name, std::string_view value);
    // END_HEADERS: checks the head and hands it on (to a body-streaming plugin now, else at the
    // end). `ends_stream`: the same frame ended the request (no body, so no 100 Continue).
    void on_head_complete(bool ends_stream);
    // DATA bytes of the request body; the connection gives back flow-control credit for what
    // consumed() says was taken.
    void on_body(const uint8_t *data, size_t len);
    // END_STREAM: the request is complete.
    void on_request_complete();
    // The stream is gone (closed or reset); the connection will not touch it again.
    // `client_left`: the peer reset it or the connection went away.
    void on_closed(bool client_left);
    // Body bytes a paused plugin never took: their flow-control credit goes back to the peer.
    void drop_pending_body();

    Connection *connection; // null once the stream has closed (a plugin may still hold the exchange)
    const int32_t id;
    Exchange exchange;

    // ---- the answer, read by the connection ----
    OutputQueue answer;            // answer bytes not yet cut into DATA frames
    int answer_status = 0;         // the head queued by queue_head, 0 while none
    int64_t body_length = -1;      // its Content-Length, -1 when unknown
    bool head_submitted = false;   // handed to nghttp2
    bool body_complete = false;    // the whole answer is in `body`
    bool cut_after_queued = false; // end with RST_STREAM after what is queued, unless completed
    bool broken_framing = false;   // the body fell short of its length: RST_STREAM, never END_STREAM
    bool data_deferred = false;    // nghttp2 waits for resume_data
    bool dirty = false;            // has news for the connection's next send
    bool head_complete = false;    // END_HEADERS seen: `exchange.request` is readable
    bool request_complete = false; // END_STREAM seen
    bool peer_reset = false;       // the peer sent RST_STREAM
    bool dispatched = false;
    uint64_t activity_ms = 0;    // the last sign of life of whoever's turn it is
    uint64_t window_wait_ms = 0; // since when its data waits for the peer's window (0: not)

    // ExchangeOwner
    void queue_head(Exchange &ex, int status, int64_t length) override;
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
    bool secure() const override;
    bool covers_host(std::string_view host) const override;
    const ListenConfig *listen() const override;
    std::shared_ptr<const TlsFacts> shared_tls_facts() const override;

  private:
    int check_head();
    void deliver_body(const char *data, size_t len);
    void refuse(int status);
    void touch();

    std::string head_;         // the request's field bytes
    std::string pending_body_; // body bytes a paused plugin has not taken (no credit given back)
    std::string cookies_;      // cookie fields, joined with "; " (RFC 9113 section 8.2.3)
    size_t field_bytes_ = 0;   // as HTTP/1.1 would count them, against limits.max_header_bytes
    size_t list_bytes_ = 0;    // as RFC 9113 counts them, against http2.max_header_list_size
    int refused_status_ = 0;   // the head is refused with this once complete
    bool has_method_ = false, has_path_ = false;
    uint64_t body_bytes_ = 0; // body bytes received
    uint64_t rate_bytes_ = 0; // ... since rate_started_ms_ (the minimum body rate)
    uint64_t rate_started_ms_ = 0;
};

} // namespace trellis::http2
