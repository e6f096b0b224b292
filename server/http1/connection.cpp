#include "http1/connection.hpp"

#include "dispatch.hpp"
#include "held_answers.hpp"
#include "http1/response_writer.hpp"
#include "http2/connection.hpp"
#include "log/log.hpp"
#include "plugin/loader.hpp"
#include "responses.hpp"
#include "router.hpp"

#include <cerrno>
#include <cstring>
#include <uv.h>

namespace trellis {
namespace {

// Stop parsing more pipelined requests while this much output waits to be written.
constexpr size_t kMaxQueuedOutput = 1 << 20;
// ... or while this many files wait to be sent: each holds a descriptor.
constexpr size_t kMaxQueuedFiles = 8;
constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
// The start of an HTTP/2 client's connection preface (RFC 9113 section 3.4).
constexpr std::string_view kHttp2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

} // namespace

// ---------------------------------------------------------------------------------------------
// ActiveSession and its pool

ActiveSession::ActiveSession(size_t read_buffer_size, WorkerContext *owner)
    : exchange(owner), read_buffer(new char[read_buffer_size]), read_capacity(read_buffer_size) {
    exchange.request.base = read_buffer.get();
}

void ActiveSession::reset_for_reuse() {
    output.clear();
    read_end = parse_pos = 0;
    parser_kick = false;
    exchange.reset();
}

SessionPool::~SessionPool() {
    for (ActiveSession *s : free_)
        delete s;
}

ActiveSession *SessionPool::acquire() {
    if (free_.empty())
        return new ActiveSession(read_buffer_size_, owner_);
    ActiveSession *s = free_.back();
    free_.pop_back();
    return s;
}

void SessionPool::set_read_buffer_size(size_t size) {
    if (size == read_buffer_size_)
        return;
    read_buffer_size_ = size;
    for (ActiveSession *s : free_)
        delete s;
    free_.clear();
}

void SessionPool::release(ActiveSession *session) {
    session->exchange.held.forget_mail();
    session->reset_for_reuse();
    // Keep enough for the busy connections of a worker; an idle server gives memory back.
    if (free_.size() < 256 && session->read_capacity == read_buffer_size_)
        free_.push_back(session);
    else
        delete session;
}

// ---------------------------------------------------------------------------------------------
// Lifecycle

struct Connection::Guard {
    explicit Guard(Connection *c) : connection(c) { ++c->callback_depth_; }
    ~Guard() {
        if (--connection->callback_depth_ == 0 && connection->state_ == State::Closed)
            delete connection;
    }
    Connection *connection;
};

Connection *Connection::start(WorkerContext &worker, Transport *transport, const sockaddr *peer,
                              const ListenConfig *listen) {
    auto *connection = new Connection(worker, transport, peer, listen);
    Guard guard(connection);
    connection->update_timeout();
    transport->start(connection);
    return connection;
}

Connection::Connection(WorkerContext &worker, Transport *transport, const sockaddr *peer,
                       const ListenConfig *listen)
    : worker_(worker), transport_(transport), listen_(listen) {
    memset(&peer_, 0, sizeof peer_);
    if (peer)
        memcpy(&peer_, peer, peer->sa_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in));
    worker_.connection_opened();
}

Connection::~Connection() {
    if (!handed_over_) // else the HTTP/2 connection counts it from now on
        worker_.connection_closed(counted_tls_);
}

void Connection::close_now() {
    if (state_ == State::Closed)
        return;
    state_ = State::Closed;
    TimeoutList::remove(*this);
    transport_->close();
    transport_ = nullptr;
    release_session();
    if (callback_depth_ == 0)
        delete this;
}

void Connection::acquire_session() {
    session_ = worker_.pool.acquire();
    Exchange &ex = session_->exchange;
    ex.owner = this;
    ex.recycle = recycle_session;
    ex.recycle_context = session_;
    ex.peer = ex.client = peer_;
    session_->reader.start(this, &ex.request, session_->read_buffer.get());
    worker_.stats.connections_active.add();
}

void Connection::release_session() {
    if (!session_)
        return;
    ActiveSession *s = session_;
    session_ = nullptr;
    worker_.stats.connections_active.sub();
    if (s->exchange.held.held()) {
        // The plugin holding the request keeps the session until it lets go (recycle_session).
        abandon_held(s->exchange, client_left_);
        return;
    }
    worker_.pool.release(s);
}

void Connection::recycle_session(Exchange *ex, void *session) {
    ex->worker->pool.release(static_cast<ActiveSession *>(session));
}

void Connection::abort() {
    Guard guard(this);
    close_now();
}

void Connection::begin_drain(bool reload) {
    if (reload)
        return; // an HTTP/1.1 connection has nothing to renegotiate
    Guard guard(this);
    if (state_ == State::Lingering) {
        close_now();
        return;
    }
    ActiveSession *s = session_;
    if (!s)
        return;
    // An idle connection stays open while the worker still answers others: a request that arrives
    // on it meanwhile is answered with "Connection: close" instead of meeting a reset. The worker
    // closes the idle ones when nothing else is left (Worker::check_drain).
    const Exchange &ex = s->exchange;
    bool in_message = s->reader.in_message();
    bool busy = ex.held.held() || ex.stream.active;
    if (!in_message && !busy && s->output.empty() && s->parse_pos >= s->read_end)
        return;
    // A request in the middle finishes: worker_.draining makes its answer say "Connection: close"
    // (after_message). Answers already being written end the connection.
    if (!in_message && !busy)
        close_after_answer();
    else if (!in_message)
        keep_alive_ = false; // the held request's answer says "Connection: close" if not sent yet
}

void Connection::start_lingering() {
    // Closing a socket with unread input makes the kernel send RST, which can destroy the response
    // still in flight. Send FIN, read and drop what the client still sends, then close.
    state_ = State::Lingering;
    release_session();
    transport_->shutdown_write();
    transport_->want_writable(false);
    transport_->set_reading(true);
    worker_.timeouts.start(*this, worker_.timeout_list(kLingerTimeout));
}

void Connection::finish_and_close() {
    if (peer_done_ || (client_asked_close_ && nothing_unread()))
        close_now();
    else
        start_lingering();
}

bool Connection::nothing_unread() const {
    // A client that said "Connection: close" and sent nothing after its request has nothing a
    // close could turn into a reset: close at once, as nginx does, instead of lingering for its FIN
    // (a shutdown, a wake-up and a read saved on every such connection).
    const ActiveSession *s = session_;
    if (dropped_input_ || (s && (s->reader.in_message() || s->parse_pos < s->read_end)))
        return false;
    return !transport_->has_unread_input();
}

void Connection::update_timeout() {
    if (state_ == State::Closed || state_ == State::Lingering)
        return;
    const ActiveSession *s = session_;
    TimeoutKind kind;
    if (s && !s->output.empty())
        kind = kSendTimeout;
    else if (s && s->reader.in_message() && s->reader.in_body() && !s->exchange.body_paused)
        kind = kBodyTimeout;
    else if (s && (s->exchange.held.held() || s->exchange.stream.active))
        kind = kHandlerTimeout; // the plugin's turn: its next piece of answer must come in time
    else if ((s && s->reader.in_message()) || (!s && transport_->handshaking()))
        kind = kHeaderTimeout; // a TLS handshake (or the first byte on "auto") shares the head's deadline
    else
        kind = kKeepaliveTimeout;
    TimeoutList &target = worker_.timeout_list(kind);
    if (kind == kHeaderTimeout) {
        start_header_deadline();
        return;
    }
    // The keep-alive clock runs from the end of the last response; the others are inactivity
    // timeouts and restart on progress.
    if (kind == kKeepaliveTimeout && list == &target)
        return;
    worker_.timeouts.start(*this, target);
}

void Connection::start_header_deadline() {
    TimeoutList &target = worker_.timeout_list(kHeaderTimeout);
    const Limits &limits = worker_.limits();
    uint64_t now = worker_.timeouts.now();
    if (!session_ || !session_->reader.in_message()) {
        // A handshake (or the wait for an "auto" listener's first byte) has one deadline.
        if (list != &target)
            worker_.timeouts.start_at(*this, target, now + limits.handshake_timeout_ms);
        return;
    }
    // A head has two: a pause between reads, and a total from its first byte (h2o's pair).
    uint64_t total = session_->head_started_ms + limits.header_timeout_ms;
    worker_.timeouts.start_at(*this, target, std::min(now + limits.header_read_timeout_ms, total));
}

void Connection::on_timeout(TimeoutKind kind) {
    Guard guard(this);
    switch (kind) {
    case kHeaderTimeout:
    case kBodyTimeout:
        SERVER_LOG_DEBUG("request timed out (%s)", kind == kHeaderTimeout ? "head" : "body");
        if (session_ && session_->exchange.held.held()) {
            fail_held_request(session_->exchange, 408);
        } else if (session_ && session_->output.empty()) {
            close_after_answer();
            respond_error(session_->exchange, 408);
            flush();
        } else {
            close_now();
        }
        break;
    case kHandlerTimeout:
        if (session_)
            on_handler_timeout(session_->exchange);
        else
            update_timeout();
        break;
    default:
        close_now();
        break;
    }
    if (state_ != State::Closed)
        update_timeout(); // the expired timeout left its list: every open connection needs one
}

void Connection::release_session_if_idle() {
    const ActiveSession *s = session_;
    if (!s || s->reader.in_message() || s->exchange.held.held() || s->parse_pos != s->read_end ||
        !s->output.empty())
        return;
    release_session();
}

// ---------------------------------------------------------------------------------------------
// Input

std::span<char> Connection::on_read_buffer() {
    if (state_ == State::Lingering) {
        static thread_local char discard[16384];
        return {discard, sizeof discard};
    }
    if (!session_)
        acquire_session();
    ActiveSession &s = *session_;
    // While a response waits for the socket or input is left unparsed, take nothing more: the
    // client is held back by TCP instead of by our memory.
    // (Bytes that may be the start of HTTP/2's preface wait unparsed for the rest of it.)
    bool unparsed = protocol_decided_ && s.parse_pos < s.read_end;
    if (write_blocked_ || unparsed || s.read_end == s.read_capacity)
        return {};
    return {s.read_buffer.get() + s.read_end, s.read_capacity - s.read_end};
}

void Connection::on_read(size_t n) {
    Guard guard(this);
    if (state_ == State::Lingering)
        return;
    if (n == 0) {
        // Woken up for nothing after all (or a TLS handshake just finished): do not keep the
        // session an idle connection needs not.
        release_session_if_idle();
        update_timeout();
        return;
    }
    session_->read_end += n;
    worker_.stats.bytes_in.add(n);
    if (!tls_checked_) {
        tls_checked_ = true;
        if (transport_->tls_facts()) {
            counted_tls_ = true;
            worker_.stats.connections_tls.add();
        }
    }
    // Any bytes restart the keep-alive clock, even when they complete a request at once and the
    // connection is idle again before update_timeout looks.
    if (list == &worker_.timeout_list(kKeepaliveTimeout))
        TimeoutList::remove(*this);
    if (!protocol_decided_) {
        Protocol protocol = protocol_of_first_bytes();
        if (protocol == Protocol::Undecided) {
            update_timeout(); // part of a preface: the rest decides
            return;
        }
        protocol_decided_ = true;
        if (protocol == Protocol::Http2) {
            hand_over_to_http2();
            return;
        }
    }
    process_input();
    if (state_ != State::Closed && session_ && body_too_slow()) {
        // Every byte restarts the between-reads timer, so a trickle would never time out: cut it.
        SERVER_LOG_DEBUG("request body below limits.min_body_rate_bps; closing");
        on_timeout(kBodyTimeout);
        return;
    }
    update_timeout();
}

Connection::Protocol Connection::protocol_of_first_bytes() const {
    if (const TlsFacts *tls = transport_->tls_facts())
        return tls->alpn == "h2" ? Protocol::Http2 : Protocol::Http1; // ALPN offers h2 only when enabled
    if (!listen_ || !listen_->http2.enabled)
        return Protocol::Http1;
    std::string_view received(session_->read_buffer.get(), session_->read_end);
    size_t n = std::min(received.size(), kHttp2Preface.size());
    if (received.substr(0, n) != kHttp2Preface.substr(0, n))
        return Protocol::Http1;
    return n == kHttp2Preface.size() ? Protocol::Http2 : Protocol::Undecided;
}

void Connection::hand_over_to_http2() {
    std::string_view received(session_->read_buffer.get(), session_->read_end);
    handed_over_ = true;
    TimeoutList::remove(*this);
    Transport *transport = transport_;
    transport_ = nullptr;
    http2::Connection::start(worker_, transport, peer_, listen_, received, counted_tls_);
    release_session();      // after: `received` is in its buffer
    state_ = State::Closed; // freed when this callback returns; the transport is not ours to close
}

bool Connection::body_too_slow() const {
    const ActiveSession &s = *session_;
    const Limits &limits = worker_.limits();
    if (!limits.min_body_rate_bps || !s.reader.in_message() || !s.reader.in_body() || s.exchange.body_paused)
        return false;
    uint64_t elapsed = worker_.timeouts.now() - s.body_started_ms;
    return elapsed > limits.min_body_rate_grace_ms &&
           s.reader.body_received * 1000 < limits.min_body_rate_bps * elapsed;
}

void Connection::on_read_end(int status) {
    Guard guard(this);
    if (status < 0 || state_ == State::Lingering) {
        if (status < 0 && status != UV_ECONNRESET && status != -ECONNRESET)
            SERVER_LOG_DEBUG("connection read error: %s", strerror(-status));
        client_left_ = true;
        close_now();
        return;
    }
    peer_done_ = true;
    client_left_ = true; // what it sent is still answered unless a plugin holds it (below)
    transport_->set_reading(false);
    // A half-closed client still gets the answers to what it sent (after_flush closes once they
    // are written); a request cut short by the EOF is dropped.
    bool pending_output = session_ && !session_->output.empty();
    bool unparsed_input = session_ && session_->parse_pos < session_->read_end;
    // A client that closes while a plugin holds its request has gone: the plugin hears on_abort
    // (an HTTP/1.1 client does not half-close to wait for an answer).
    bool held = session_ && (session_->exchange.held.held() || session_->exchange.stream.active);
    if (held || (!pending_output && !unparsed_input))
        close_now();
}

void Connection::process_input() {
    ActiveSession &s = *session_;
    const Exchange &ex = s.exchange;
    // While a plugin holds the request nothing more is parsed, except the body it streams.
    auto may_parse = [&s, &ex] {
        return !ex.held.held() ? !ex.stream.active
                               : (ex.body_streamed && s.reader.in_message() && !ex.body_paused);
    };
    // A body the plugin streams is read to its end even when the answer already said
    // "Connection: close" (an HTTP/1.0 stream, say); nothing after it is.
    auto streaming_body = [&s, &ex] { return ex.held.held() && ex.body_streamed && s.reader.in_message(); };
    while (state_ != State::Closed && (state_ == State::Open || streaming_body()) &&
           (s.parse_pos < s.read_end || s.parser_kick) && s.output.buffered_bytes() < kMaxQueuedOutput &&
           s.output.open_files() < kMaxQueuedFiles && may_parse()) {
        if (!parse_step())
            break;
    }
    if (state_ == State::Closed || !session_)
        return;
    if (state_ != State::Open && !streaming_body()) {
        dropped_input_ |= s.parse_pos < s.read_end; // the client sent more: its close must linger
        s.parse_pos = s.read_end;                   // nothing after the last answered request is run
    }
    compact_read_buffer();
    flush();
}

bool Connection::parse_step() {
    ActiveSession &s = *session_;
    // After a pause at the very end of the input the reader still owes a callback (the message's
    // end, or the body after a head): a call with no bytes delivers it.
    s.parser_kick = false;
    using Outcome = http1::RequestReader::Outcome;
    switch (s.reader.execute(s.parse_pos, s.read_end, s.parse_pos)) {
    case Outcome::NeedMore:
        return true;
    case Outcome::BodyFailed:
        fail_streamed_body();
        return false;
    case Outcome::BodyPaused:
        // on_body said TRELLIS_AGAIN: the rest waits for request_resume_body.
        s.exchange.body_paused = true;
        s.parser_kick = true;
        return false;
    case Outcome::HeadForStreamer:
        // The head of a request for a body-streaming plugin: hand it over before the body.
        s.parser_kick = true;
        dispatch_head_to_body_streamer();
        return true;
    case Outcome::MessageComplete:
        after_message();
        return state_ != State::Closed && session_;
    case Outcome::Error:
        answer_bad_request(s.reader.error_status());
        return false;
    }
    return false;
}

void Connection::answer_bad_request(int status) {
    Exchange &ex = session_->exchange;
    if (ex.held.held()) {
        fail_held_request(ex, status); // a streamed body broke its framing
        return;
    }
    // The stream can no longer be trusted: answer and close, never parse past this point.
    close_after_answer();
    respond_error(ex, status);
}

void Connection::compact_read_buffer() {
    ActiveSession &s = *session_;
    if (s.parse_pos < s.read_end)
        return; // paused on unparsed input; it stays where it is
    // A plugin holding a request reads its head from this buffer at any time: the head stays put.
    // (A streamed body's head was moved to the front before the plugin got it.)
    bool held = s.exchange.held.held() || s.exchange.stream.active;
    bool in_body = s.reader.in_message() && s.reader.in_body();
    if (held && !in_body)
        return;
    if (!s.reader.in_message()) {
        s.read_end = s.parse_pos = s.reader.request_start = s.reader.head_end = 0;
        return;
    }
    // Keep the current request's head (spans point into it); body bytes are already copied out.
    if (s.reader.in_body())
        s.read_end = s.parse_pos = s.reader.head_end;
    if (!held)
        shift_request_to_front();
}

void Connection::shift_request_to_front() {
    ActiveSession &s = *session_;
    size_t shift = s.reader.request_start;
    if (shift == 0)
        return;
    memmove(s.read_buffer.get(), s.read_buffer.get() + shift, s.read_end - shift);
    trellis_request &r = s.exchange.request;
    auto rebase = [shift](Span &span) {
        if (span.length || span.offset >= shift)
            span.offset -= static_cast<uint32_t>(shift);
    };
    rebase(r.method);
    rebase(r.target);
    rebase(r.query);
    for (size_t i = 0; i < r.header_count; ++i) {
        rebase(r.headers[i].name);
        rebase(r.headers[i].value);
    }
    s.read_end -= shift;
    s.parse_pos -= shift;
    if (s.reader.in_body())
        s.reader.head_end -= shift;
    s.reader.request_start = 0;
}

// ---------------------------------------------------------------------------------------------
// What the reader asks (http1::RequestSink)

void Connection::on_message_begin() {
    ActiveSession &s = *session_;
    Exchange &ex = s.exchange;
    ex.route_index = -1;
    ex.route_stats = nullptr;
    ex.started_ns = 0;
    ex.stream = StreamState{};
    ex.notify_writable = ex.body_streamed = ex.body_paused = false;
    ex.held.reset();     // no other thread knows this request yet
    ex.client = ex.peer; // until a trusted proxy's header says otherwise (dispatch)
    s.head_started_ms = worker_.timeouts.now();
    s.parser_kick = false;
    // Each request gets its own header deadline from its first byte, even when it arrives in the
    // same read as the end of the previous one.
    TimeoutList::remove(*this);
    worker_.stats.requests.add();
}

bool Connection::on_head_complete() {
    ActiveSession &s = *session_;
    Exchange &ex = s.exchange;
    s.body_started_ms = worker_.timeouts.now();
    // A plugin that streams bodies gets the request at its head, before the body is read.
    return !route_to_body_streamer(ex);
}

http1::RequestSink::BodyVerdict Connection::on_streamed_body(const char *at, size_t len) {
    Exchange &ex = session_->exchange;
    HeldRequest &held = ex.held;
    if (!held.held() || !held.holder) {
        // Answered before the body, or the plugin let go early: the rest is dropped.
        return session_->reader.body_received > worker_.limits().max_body_bytes ? BodyVerdict::Fail
                                                                                : BodyVerdict::Take;
    }
    switch (give_body(ex, at, len, false)) {
    case BodyTaken::Paused:
        return BodyVerdict::Pause;
    case BodyTaken::Failed:
        return BodyVerdict::Fail;
    case BodyTaken::Taken:
        break;
    }
    return BodyVerdict::Take;
}

void Connection::on_continue_expected() {
    session_->output.append(kContinue);
}

// ---------------------------------------------------------------------------------------------
// Handing requests over

void Connection::after_message() {
    ActiveSession &s = *session_;
    Exchange &ex = s.exchange;
    s.reader.end_message();
    client_asked_close_ = !s.reader.should_keep_alive();
    keep_alive_ = !client_asked_close_ && !worker_.draining && state_ == State::Open;
    if (!keep_alive_)
        close_after_answer();
    if (ex.body_streamed) {
        // The plugin has had the request since its head: tell it the body is complete.
        if (ex.held.held() && ex.held.holder && give_body(ex, nullptr, 0, true) == BodyTaken::Failed)
            fail_streamed_body();
        return;
    }
    ex.started_ns = uv_hrtime();
    dispatch(ex);
}

void Connection::dispatch_head_to_body_streamer() {
    ActiveSession &s = *session_;
    // The plugin may read the head from another thread while the body streams in behind it: put
    // it at the front of the buffer now, so nothing moves it later.
    shift_request_to_front();
    // An answer given now already says whether the connection stays.
    keep_alive_ = s.reader.should_keep_alive() && !worker_.draining && state_ == State::Open;
    dispatch_head(s.exchange);
}

void Connection::fail_streamed_body() {
    Exchange &ex = session_->exchange;
    if (ex.held.held()) {
        fail_held_request(ex, 500);
        return;
    }
    // Nobody holds the request (a body dropped after an early answer grew past the limit).
    ex.body_streamed = false;
    close_after_answer();
    if (!ex.request.answered)
        respond_error(ex, 500);
}

void Connection::resume_body() {
    ActiveSession &s = *session_;
    if (!s.exchange.body_paused)
        return;
    s.exchange.body_paused = false;
    // The plugin's pause is not the client's slowness: the rate is measured afresh.
    s.body_started_ms = worker_.timeouts.now();
    s.reader.body_received = 0;
    process_input();
    if (state_ != State::Closed && session_ && !peer_done_)
        transport_->set_reading(true);
}

// ---------------------------------------------------------------------------------------------
// Answers (ExchangeOwner): HTTP/1.1 framing into the session's output queue

void Connection::queue_head(Exchange &ex, int status, int64_t body_length) {
    trellis_request &r = ex.request;
    http1::ResponseHead head;
    head.status = status;
    head.date = worker_.date.now();
    response_chunked_ = false;
    bool bodiless = status < 200 || status == 204 || status == 304;
    if (!bodiless && body_length >= 0) {
        head.has_length = true;
        head.content_length = static_cast<uint64_t>(body_length);
    } else if (!bodiless) {
        switch (http1::framing_for_stream(body_length, r.version)) {
        case http1::BodyFraming::Chunked:
            response_chunked_ = true;
            r.response_headers.append("Transfer-Encoding: chunked\r\n");
            break;
        case http1::BodyFraming::UntilClose:
            close_after_answer();
            break;
        case http1::BodyFraming::ContentLength:
            break;
        }
    }
    head.fields = r.response_headers;
    if (listen_ && secure())
        head.hsts = listen_->tls.hsts;
    head.persistence = http1::persistence_for(state_ != State::Open || !keep_alive_, r.version);
    OutputQueue &output = session_->output;
    size_t start = output.text().size();
    http1::append_response_head(output.text(), head);
    output.commit_from(start);
}

void Connection::queue_body(Exchange &ex, std::string_view bytes) {
    (void)ex;
    OutputQueue &output = session_->output;
    if (!response_chunked_) {
        output.append(bytes);
        return;
    }
    char size_line[24];
    output.append(http1::chunk_size_line(bytes.size(), size_line));
    output.append(bytes);
    output.append(http1::kChunkEnd);
}

OutputQueue &Connection::body_queue(Exchange &) {
    return session_->output;
}

void Connection::queue_end(Exchange &ex, bool complete) {
    if (response_chunked_ && !ex.request.is_head)
        session_->output.append(http1::kLastChunk);
    response_chunked_ = false;
    if (!complete)
        close_after_answer();
}

size_t Connection::queued_output(const Exchange &) const {
    return session_->output.pending_bytes();
}

void Connection::flush(Exchange &) {
    flush();
}

void Connection::end_after_answer(Exchange &) {
    close_after_answer();
}

void Connection::end_now(Exchange &) {
    close_now();
}

void Connection::resume_body(Exchange &) {
    resume_body();
}

void Connection::exchange_changed(Exchange &) {
    update_timeout();
}

void Connection::on_mail(Exchange &ex, unsigned bits) {
    Guard guard(this);
    auto alive = [this, &ex] { return state_ != State::Closed && session_ && &session_->exchange == &ex; };
    if (!alive())
        return;
    handle_mail(ex, bits, alive);
    if (state_ != State::Closed)
        update_timeout();
}

// ---------------------------------------------------------------------------------------------
// Output: every response of a batch goes out in one write; files in between go by send_file.

void Connection::flush() {
    uint64_t written = 0;
    int error = 0;
    OutputQueue::Flush result = session_->output.write_to(*transport_, written, error);
    worker_.stats.bytes_out.add(written);
    if (result == OutputQueue::Flush::Blocked) {
        write_blocked_ = true;
        transport_->want_writable(true);
        update_timeout();
        return;
    }
    if (result == OutputQueue::Flush::Failed) {
        SERVER_LOG_DEBUG("write failed: %s", strerror(error));
        client_left_ = true;
        close_now();
        return;
    }
    if (write_blocked_) {
        write_blocked_ = false;
        transport_->want_writable(false);
    }
    after_flush();
}

void Connection::after_flush() {
    if (state_ == State::Closed)
        return;
    ActiveSession &s = *session_;
    Exchange &ex = s.exchange;
    if ((ex.held.held() || ex.stream.active) && !ex.held.gave_up) {
        // The handler is still at work: wait for its next piece, its release, or tell it that it
        // may write again.
        notify_plugin_writable(ex);
        if (state_ != State::Closed && session_ && !ex.body_paused && !peer_done_)
            transport_->set_reading(true); // to notice a client that leaves
        return;
    }
    if (state_ != State::Open) {
        finish_and_close();
        return;
    }
    if (s.parse_pos < s.read_end) {
        // Pipelined requests waited for the output to drain.
        transport_->set_reading(!peer_done_);
        process_input();
        return;
    }
    if (peer_done_) {
        close_now();
        return;
    }
    transport_->set_reading(true);
    release_session_if_idle();
    if (!session_ && worker_.draining) {
        close_now();
        return;
    }
    update_timeout();
}

void Connection::on_writable() {
    Guard guard(this);
    if (state_ == State::Closed || state_ == State::Lingering || !session_)
        return;
    flush();
    update_timeout();
}

} // namespace trellis
