// One request and its answer, whatever protocol carried it: what plugins and the host API see.
//
// The protocol under an exchange (the HTTP/1.1 connection; an HTTP/2 stream) implements
// ExchangeOwner: how a head and body bytes are framed and when they leave. Everything above it
// (routing and plugin calls in dispatch, held requests in held_request, the answers of responses)
// works on an Exchange and never asks which protocol it is.
#pragma once

#include "held_request.hpp"
#include "http/request.hpp"

#include <cstdint>
#include <memory>
#include <netinet/in.h>
#include <string>
#include <string_view>

namespace trellis {

class Exchange;
class Mailbox;
class OutputQueue;
class Router;
class ServerMetrics;
class WorkerContext;
struct ListenConfig;
struct RouteStats;
struct TlsFacts;
struct WorkerGeneration;

// A response being streamed (response_start ... response_end).
struct StreamState {
    bool active = false;   // started, not ended
    bool declared = false; // a Content-Length was promised
    uint64_t length = 0;   // ... of this many bytes
    uint64_t sent = 0;     // body bytes taken so far
    int status = 0;
};

// The protocol side of an exchange. Called on the loop thread only.
class ExchangeOwner {
  public:
    // Queues the answer's head: `status`, the plugin's fields (request.response_headers) and the
    // body's length, or -1 for a streamed body without one.
    virtual void queue_head(Exchange &ex, int status, int64_t body_length) = 0;
    // Queues body bytes, framed as the protocol needs (HTTP/1.1 chunks a streamed body).
    virtual void queue_body(Exchange &ex, std::string_view bytes) = 0;
    // Where the bytes and file segments of a body whose length the head gave are queued as they are.
    virtual OutputQueue &body_queue(Exchange &ex) = 0;
    // The answer is all queued. `complete` is false when a streamed body fell short of the length
    // its head promised: its framing cannot be finished.
    virtual void queue_end(Exchange &ex, bool complete) = 0;
    // Answer bytes queued and not yet written.
    virtual size_t queued_output(const Exchange &ex) const = 0;
    // Writes what is queued (it may call back into the exchange: a plugin told it may write).
    virtual void flush(Exchange &ex) = 0;

    // The exchange cannot go on (its plugin broke the framing, or gave up): end its channel after
    // what is queued. HTTP/1.1: the connection closes after the answer; HTTP/2: the stream ends.
    virtual void end_after_answer(Exchange &ex) = 0;
    // End it now, with nothing more written.
    virtual void end_now(Exchange &ex) = 0;
    // The plugin wants the rest of a body it paused.
    virtual void resume_body(Exchange &ex) = 0;
    // A hold began or ended, or the answer moved on: the timeouts change.
    virtual void exchange_changed(Exchange &ex) = 0;

    // Mail from other threads for the exchange (see held_answers.hpp: handle_mail).
    virtual void on_mail(Exchange &ex, unsigned bits) = 0;

    // What the listener rules ask of the connection under the exchange.
    virtual bool secure() const = 0;
    virtual bool covers_host(std::string_view host) const = 0;
    virtual const ListenConfig *listen() const = 0;
    // The TLS facts as a reference that outlives the connection (null on plain connections).
    virtual std::shared_ptr<const TlsFacts> shared_tls_facts() const = 0;

  protected:
    ~ExchangeOwner() = default;
};

// Where a request lives while it is read, answered or held by a plugin. HTTP/1.1 embeds one in
// each pooled session; the ABI's trellis_request handle is its `request`.
class Exchange {
  public:
    explicit Exchange(WorkerContext *worker);
    ~Exchange();
    Exchange(const Exchange &) = delete;
    Exchange &operator=(const Exchange &) = delete;

    trellis_request request;
    ExchangeOwner *owner = nullptr; // null once the client has gone (a plugin may still hold it)
    // Gives back an exchange its owner left to the plugin holding it, once the plugin lets go.
    void (*recycle)(Exchange *ex, void *context) = nullptr;
    void *recycle_context = nullptr;

    WorkerContext *worker;     // the worker whose loop runs it
    unsigned worker_index = 0; // its index, readable after the worker has gone
    const ServerMetrics *metrics = nullptr;
    sockaddr_in6 peer;   // the connection's peer (a PROXY header's client), readable after it has gone
    sockaddr_in6 client; // whom the request is for: the peer, or whom a trusted proxy named
    // A trusted proxy sent a real-IP header that names no one we can read ("unknown", a typo):
    // `client` is the proxy itself, which a route's "allow" must not take for the client.
    bool client_unknown = false;
    std::shared_ptr<const TlsFacts> tls_facts;

    // The routes this request is dispatched on: the worker's when it arrived (a reload may switch
    // the worker meanwhile), valid while the request runs inline or is held.
    const Router *router = nullptr;
    WorkerGeneration *generation = nullptr;
    int route_index = -1;              // route being tried
    RouteStats *route_stats = nullptr; // its counters (owned by the server, never freed)
    uint64_t started_ns = 0;           // when the request was complete (for latency)

    StreamState stream;
    bool notify_writable = false; // an inline response_write said TRELLIS_AGAIN
    bool body_streamed = false;   // TRELLIS_STREAM_BODY: body bytes go to the holder's on_body
    bool body_paused = false;     // on_body said TRELLIS_AGAIN
    HeldRequest held;             // a plugin holding the request, and what it staged
    std::string staged_bytes;     // stream bytes taken from `held` (kept for its capacity)

    // Clears the request's state for the next one (keeps string capacity).
    void reset();
};

// Logs and counts the answer of `ex` (called once per exchange, when its answer is complete or
// it ends without one).
void record_response(Exchange &ex, int status, uint64_t body_bytes);

// nginx's code for a request whose client closed the connection before its answer was sent:
// access logs and per-route counts, never on the wire.
constexpr int kClientClosedRequest = 499;

// The peer as "1.2.3.4:5" or "[::1]:5"; without the port when it is 0 (a client named by
// X-Forwarded-For or Forwarded, whose port is unknown); "unix:" on a Unix socket. The length
// written (0 when it did not fit).
size_t peer_text(const sockaddr_in6 &peer, char *buf, size_t len);
// The address alone ("1.2.3.4", "::1", "unix:"), as access logs show it.
size_t peer_address_text(const sockaddr_in6 &peer, char *buf, size_t len);

} // namespace trellis
