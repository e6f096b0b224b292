#include "connection.hpp"

#include "generation.hpp"
#include "http/file_response.hpp"
#include "http/http_date.hpp"
#include "http/path.hpp"
#include "http/status_text.hpp"
#include "http1/request_checks.hpp"
#include "http1/response_writer.hpp"
#include "log/log.hpp"
#include "mailbox.hpp"
#include "metrics/metrics.hpp"
#include "plugin/loader.hpp"
#include "router.hpp"
#include "thread_pool.hpp"
#include "worker_context.hpp"

#include <algorithm>
#include <arpa/inet.h>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

namespace trellis {
namespace {

// Stop parsing more pipelined requests while this much output waits to be written.
constexpr size_t kMaxQueuedOutput = 1 << 20;
// ... or while this many files wait to be sent: each holds a descriptor.
constexpr size_t kMaxQueuedFiles = 8;
// Files up to this size are read into the output buffer, so a batch of small responses still
// leaves in one write; larger ones go out with send_file.
constexpr uint64_t kInlineFileBytes = 64 * 1024;
constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
// nginx's code for a request whose client closed the connection before its answer was sent:
// access logs and per-route counts, never on the wire.
constexpr int kClientClosedRequest = 499;

Connection *from_parser(llhttp_t *p) {
    return static_cast<Connection *>(p->data);
}

} // namespace

// ---------------------------------------------------------------------------------------------
// ActiveSession and pool

void StagedAnswer::reset() {
    released = answered = gone = pool_started = head_taken = ended = want_writable = false;
    kind = Kind::None;
    status = 0;
    length = -1;
    if (body.capacity() > 65536)
        std::string().swap(body);
    body.clear();
    if (file.fd >= 0 && !file.borrowed)
        ::close(file.fd);
    file = FileResponse{};
    unsent = 0;
}

ActiveSession::ActiveSession(size_t read_buffer_size, WorkerContext *owner)
    : read_buffer(new char[read_buffer_size]), read_capacity(read_buffer_size), worker(owner),
      worker_index(owner ? owner->index() : 0), metrics(owner ? owner->metrics : nullptr),
      mailbox(owner ? owner->mailbox : nullptr) {
    request.base = read_buffer.get();
    request.session = this;
    memset(&peer, 0, sizeof peer);
}

ActiveSession::~ActiveSession() {
    staged.reset();
}

void ActiveSession::reset_for_reuse() {
    output.clear();
    read_end = parse_pos = request_start = head_end = 0;
    in_message = in_body = in_header_field = in_header_value = false;
    head_facts = {};
    error_status = 0;
    request.reset();
    request.connection = nullptr;
    tls_facts.reset();
    router = nullptr;
    generation = nullptr;
    route_index = -1;
    route_stats = nullptr;
    stream = StreamState{};
    notify_writable = gave_up = release_seen = parser_kick = false;
    hold = Hold::None;
    holder = nullptr;
    held_generation = nullptr;
    body_streamed = body_paused = body_pause_now = body_failed = head_dispatch_pending = false;
    started_ns = 0;
    orphaned = false;
    staged.reset();
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
    if (session->mailbox)
        session->mailbox->forget(session);
    session->reset_for_reuse();
    // Keep enough for the busy connections of a worker; an idle server gives memory back.
    if (free_.size() < 256 && session->read_capacity == read_buffer_size_)
        free_.push_back(session);
    else
        delete session;
}

void keep_after_exit(ActiveSession *session) {
    static std::mutex mutex;
    static auto *kept = new std::vector<ActiveSession *>; // reachable until exit, on purpose
    std::lock_guard<std::mutex> lock(mutex);
    kept->push_back(session);
}

// ---------------------------------------------------------------------------------------------
// Lifecycle

struct Connection::Guard {
    explicit Guard(Connection *c) : connection(c) { ++c->callback_depth_; }
    ~Guard() {
        if (--connection->callback_depth_ == 0 && connection->closed_)
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
    ++worker_.connections;
    worker_.stats.connections_accepted.add();
    worker_.stats.connections_open.add();
}

Connection::~Connection() {
    // TLS first: a reader computing plain = open - tls never sees tls > open.
    if (counted_tls_)
        worker_.stats.connections_tls.sub();
    worker_.stats.connections_open.sub();
    if (worker_.open_connections)
        worker_.open_connections->fetch_sub(1, std::memory_order_relaxed);
    if (--worker_.connections == 0 && worker_.draining && worker_.on_drained)
        worker_.on_drained(worker_.on_drained_data);
    else if (worker_.draining && worker_.on_drain_progress)
        worker_.on_drain_progress(worker_.on_drained_data);
}

void Connection::close_now() {
    if (closed_)
        return;
    closed_ = true;
    TimeoutList::remove(*this);
    transport_->close();
    transport_ = nullptr;
    release_session();
    if (callback_depth_ == 0)
        delete this;
}

void Connection::release_session() {
    if (!session_)
        return;
    if (session_->hold != Hold::None) {
        abandon_held_session();
        return;
    }
    worker_.pool.release(session_);
    session_ = nullptr;
    worker_.stats.connections_active.sub();
}

void Connection::abort() {
    Guard guard(this);
    close_now();
}

void Connection::begin_drain() {
    Guard guard(this);
    if (lingering_) {
        close_now();
        return;
    }
    ActiveSession *s = session_;
    if (s && (s->in_message || s->hold != Hold::None || s->stream.active || !s->output.empty() ||
              s->parse_pos < s->read_end)) {
        // A request in the middle finishes: worker_.draining makes its answer say
        // "Connection: close" (after_message). Answers already being written end the connection.
        if (!s->in_message && s->hold == Hold::None && !s->stream.active)
            close_after_flush_ = true;
        else if (!s->in_message)
            keep_alive_ = false; // the held request's answer says "Connection: close" if not sent yet
        return;
    }
    // An idle connection stays open while the worker still answers others: a request that
    // arrives on it meanwhile is answered with "Connection: close" instead of meeting a reset.
    // The worker closes the idle ones when nothing else is left (Worker::check_drain).
}

void Connection::start_lingering() {
    // Closing a socket with unread input makes the kernel send RST, which can destroy the response
    // still in flight. Send FIN, read and drop what the client still sends, then close.
    lingering_ = true;
    release_session();
    transport_->shutdown_write();
    transport_->want_writable(false);
    transport_->set_reading(true);
    worker_.timeouts.start(*this, worker_.timeout_list(kLingerTimeout));
}

void Connection::finish_and_close() {
    if (peer_done_)
        close_now();
    else
        start_lingering();
}

void Connection::update_timeout() {
    if (closed_ || lingering_)
        return;
    TimeoutKind kind;
    if (session_ && !session_->output.empty())
        kind = kSendTimeout;
    else if (session_ && session_->in_message && session_->in_body && !session_->body_paused)
        kind = kBodyTimeout;
    else if (session_ && (session_->hold != Hold::None || session_->stream.active))
        kind = kHandlerTimeout; // the plugin's turn: its next piece of answer must come in time
    else if ((session_ && session_->in_message) || (!session_ && transport_->handshaking()))
        kind = kHeaderTimeout; // a TLS handshake (or the first byte on "auto") shares the head's deadline
    else
        kind = kKeepaliveTimeout;
    TimeoutList &target = worker_.timeout_list(kind);
    if (kind == kHeaderTimeout) {
        const Limits &limits = worker_.limits();
        uint64_t now = worker_.timeouts.now();
        if (!session_ || !session_->in_message) {
            // A handshake (or the wait for an "auto" listener's first byte) has one deadline.
            if (list != &target)
                worker_.timeouts.start_at(*this, target, now + limits.handshake_timeout_ms);
            return;
        }
        // A head has two: a pause between reads, and a total from its first byte (h2o's pair).
        uint64_t total = session_->head_started_ms + limits.header_timeout_ms;
        worker_.timeouts.start_at(*this, target, std::min(now + limits.header_read_timeout_ms, total));
        return;
    }
    // The keep-alive clock runs from the end of the last response; the others are inactivity
    // timeouts and restart on progress.
    if (kind == kKeepaliveTimeout && list == &target)
        return;
    worker_.timeouts.start(*this, target);
}

void Connection::on_timeout(TimeoutKind kind) {
    Guard guard(this);
    switch (kind) {
    case kHeaderTimeout:
    case kBodyTimeout:
        SERVER_LOG_DEBUG("request timed out (%s)", kind == kHeaderTimeout ? "head" : "body");
        if (session_ && session_->hold != Hold::None) {
            fail_held_request(408);
        } else if (session_ && session_->output.empty()) {
            close_after_flush_ = true;
            keep_alive_ = false;
            respond_error(408);
            flush();
        } else {
            close_now();
        }
        break;
    case kHandlerTimeout:
        on_handler_timeout();
        break;
    default:
        close_now();
        break;
    }
    if (!closed_)
        update_timeout(); // the expired timeout left its list: every open connection needs one
}

void Connection::release_session_if_idle() {
    ActiveSession *s = session_;
    if (!s || s->in_message || s->hold != Hold::None || s->parse_pos != s->read_end || !s->output.empty())
        return;
    release_session();
}

// ---------------------------------------------------------------------------------------------
// Input

std::span<char> Connection::on_read_buffer() {
    if (lingering_) {
        static thread_local char discard[16384];
        return {discard, sizeof discard};
    }
    if (!session_) {
        session_ = worker_.pool.acquire();
        session_->request.connection = this;
        session_->peer = peer_;
        llhttp_init(&session_->parser, HTTP_REQUEST, &parser_settings());
        session_->parser.data = this;
        // Any "HTTP/d.d" gets through to headers_complete, which takes a higher 1.x as 1.1 (RFC
        // 9110 section 2.5). llhttp 8.1 honours the flag but has no setter for it (9.0 does).
        session_->parser.lenient_flags |= LENIENT_VERSION;
        worker_.stats.connections_active.add();
    }
    ActiveSession &s = *session_;
    // While a response waits for the socket or input is left unparsed, take nothing more: the
    // client is held back by TCP instead of by our memory.
    if (write_blocked_ || s.parse_pos < s.read_end || s.read_end == s.read_capacity)
        return {};
    return {s.read_buffer.get() + s.read_end, s.read_capacity - s.read_end};
}

void Connection::on_read(size_t n) {
    Guard guard(this);
    if (lingering_)
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
    process_input();
    if (!closed_ && session_ && body_too_slow()) {
        // Every byte restarts the between-reads timer, so a trickle would never time out: cut it.
        SERVER_LOG_DEBUG("request body below limits.min_body_rate_bps; closing");
        on_timeout(kBodyTimeout);
        return;
    }
    update_timeout();
}

bool Connection::body_too_slow() const {
    const ActiveSession &s = *session_;
    const Limits &limits = worker_.limits();
    if (!limits.min_body_rate_bps || !s.in_message || !s.in_body || s.body_paused)
        return false;
    uint64_t elapsed = worker_.timeouts.now() - s.body_started_ms;
    return elapsed > limits.min_body_rate_grace_ms &&
           s.body_received * 1000 < limits.min_body_rate_bps * elapsed;
}

void Connection::on_read_end(int status) {
    Guard guard(this);
    if (status < 0 || lingering_) {
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
    bool held = session_ && (session_->hold != Hold::None || session_->stream.active);
    if (held || (!pending_output && !unparsed_input))
        close_now();
}

void Connection::process_input() {
    ActiveSession &s = *session_;
    // While a plugin holds the request nothing more is parsed, except the body it streams.
    auto may_parse = [&s] {
        return s.hold == Hold::None ? !s.stream.active : (s.body_streamed && s.in_message && !s.body_paused);
    };
    // A body the plugin streams is read to its end even when the answer already said
    // "Connection: close" (an HTTP/1.0 stream, say); nothing after it is.
    auto streaming_body = [&s] { return s.hold != Hold::None && s.body_streamed && s.in_message; };
    while (!closed_ && (!close_after_flush_ || streaming_body()) &&
           (s.parse_pos < s.read_end || s.parser_kick) && s.output.buffered_bytes() < kMaxQueuedOutput &&
           s.output.open_files() < kMaxQueuedFiles && may_parse()) {
        if (!parse_step())
            break;
    }
    if (closed_ || !session_)
        return;
    if (close_after_flush_ && !streaming_body())
        s.parse_pos = s.read_end; // nothing after the last answered request is ever run
    compact_read_buffer();
    flush();
}

bool Connection::parse_step() {
    ActiveSession &s = *session_;
    const char *base = s.read_buffer.get();
    // After a pause at the very end of the input llhttp still owes a callback (the message's end,
    // or the body after a head): a call with no bytes delivers it.
    s.parser_kick = false;
    llhttp_errno_t err = llhttp_execute(&s.parser, base + s.parse_pos, s.read_end - s.parse_pos);
    if (err == HPE_OK) {
        s.parse_pos = s.read_end;
        size_t after_target = s.request.target.offset + s.request.target.length;
        if (s.in_message && !s.in_body && s.request.target.length &&
            http1::is_http09_request_line(s.request,
                                          std::string_view(base + after_target, s.read_end - after_target))) {
            s.error_status = 505;
            err = HPE_USER;
        } else if (s.in_message && !s.in_body && s.read_end - s.request_start > max_head_bytes()) {
            // A head that keeps growing is refused before it fills the buffer.
            s.error_status = (s.request.header_count == 0 && !s.in_header_field) ? 414 : 431;
            err = HPE_USER;
        } else {
            return true;
        }
    }
    if (err == HPE_PAUSED) {
        s.parse_pos = static_cast<size_t>(llhttp_get_error_pos(&s.parser) - base);
        llhttp_resume(&s.parser);
        if (s.body_failed) {
            s.body_failed = false;
            fail_streamed_body();
            return false;
        }
        if (s.body_pause_now) {
            // on_body said TRELLIS_AGAIN: the rest waits for request_resume_body.
            s.body_pause_now = false;
            s.body_paused = true;
            s.parser_kick = true;
            return false;
        }
        if (s.head_dispatch_pending) {
            // The head of a request for a body-streaming plugin: hand it over before the body.
            s.head_dispatch_pending = false;
            s.parser_kick = true;
            return dispatch_head_to_body_streamer();
        }
        after_message();
        return !closed_ && session_;
    }
    int status = s.error_status
                     ? s.error_status
                     : http1::status_for_parse_error(
                           err, std::string_view(base + s.request_start, s.read_end - s.request_start));
    SERVER_LOG_DEBUG("bad request (%d): %s %s", status, llhttp_errno_name(err),
                     llhttp_get_error_reason(&s.parser) ? llhttp_get_error_reason(&s.parser) : "");
    if (s.hold != Hold::None) {
        s.in_message = false;
        fail_held_request(status); // a streamed body broke its framing
        return false;
    }
    // The stream can no longer be trusted: answer and close, never parse past this point.
    close_after_flush_ = true;
    keep_alive_ = false;
    s.in_message = false;
    respond_error(status);
    return false;
}

void Connection::compact_read_buffer() {
    ActiveSession &s = *session_;
    if (s.parse_pos < s.read_end)
        return; // paused on unparsed input; it stays where it is
    // A plugin holding a request reads its head from this buffer at any time: the head stays put.
    // (A streamed body's head was moved to the front before the plugin got it.)
    bool held = s.hold != Hold::None || s.stream.active;
    if (held && !(s.in_message && s.in_body))
        return;
    if (!s.in_message) {
        s.read_end = s.parse_pos = s.request_start = s.head_end = 0;
        return;
    }
    // Keep the current request's head (spans point into it); body bytes are already copied out.
    if (s.in_body)
        s.read_end = s.parse_pos = s.head_end;
    if (!held)
        shift_request_to_front();
}

void Connection::shift_request_to_front() {
    ActiveSession &s = *session_;
    size_t shift = s.request_start;
    if (shift == 0)
        return;
    memmove(s.read_buffer.get(), s.read_buffer.get() + shift, s.read_end - shift);
    trellis_request &r = s.request;
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
    if (s.in_body)
        s.head_end -= shift;
    s.request_start = 0;
}

// ---------------------------------------------------------------------------------------------
// llhttp callbacks. Each records spans; the checks llhttp leaves to us happen at the end of each
// header and of the head.

const llhttp_settings_t &Connection::parser_settings() {
    static const llhttp_settings_t settings = [] {
        llhttp_settings_t s;
        llhttp_settings_init(&s);
        s.on_message_begin = on_message_begin;
        s.on_method = on_method;
        s.on_url = on_url;
        s.on_header_field = on_header_field;
        s.on_header_field_complete = on_header_field_complete;
        s.on_header_value = on_header_value;
        s.on_header_value_complete = on_header_value_complete;
        s.on_headers_complete = on_headers_complete;
        s.on_body = on_body;
        s.on_chunk_header = on_chunk_header;
        s.on_chunk_extension_name = on_chunk_extension;
        s.on_chunk_extension_value = on_chunk_extension;
        s.on_message_complete = on_message_complete;
        return s;
    }();
    return settings;
}

int Connection::on_message_begin(llhttp_t *p) noexcept {
    Connection *c = from_parser(p);
    ActiveSession &s = *c->session_;
    s.request.reset();
    s.request.connection = c;
    s.in_message = true;
    s.in_body = s.in_header_field = s.in_header_value = false;
    s.head_facts = {};
    s.error_status = 0;
    s.request_start = s.parse_pos; // refined by on_method, which sees the first byte
    s.route_index = -1;
    s.route_stats = nullptr;
    s.started_ns = 0;
    s.head_started_ms = c->worker_.timeouts.now();
    s.stream = StreamState{};
    s.notify_writable = s.gave_up = s.release_seen = s.parser_kick = false;
    s.chunk_extension_bytes = 0;
    s.body_streamed = s.body_paused = s.body_pause_now = s.body_failed = s.head_dispatch_pending = false;
    s.staged.reset(); // no other thread knows this request yet
    // Each request gets its own header deadline from its first byte, even when it arrives in the
    // same read as the end of the previous one.
    TimeoutList::remove(*c);
    c->worker_.stats.requests.add();
    return 0;
}

int Connection::on_method(llhttp_t *p, const char *at, size_t len) noexcept {
    ActiveSession &s = *from_parser(p)->session_;
    uint32_t offset = static_cast<uint32_t>(at - s.read_buffer.get());
    if (s.request.method.length == 0) {
        s.request.method.offset = offset;
        s.request_start = offset;
    }
    s.request.method.length = offset + static_cast<uint32_t>(len) - s.request.method.offset;
    return 0;
}

int Connection::on_url(llhttp_t *p, const char *at, size_t len) noexcept {
    Connection *c = from_parser(p);
    ActiveSession &s = *c->session_;
    uint32_t offset = static_cast<uint32_t>(at - s.read_buffer.get());
    if (s.request.target.length == 0)
        s.request.target.offset = offset;
    s.request.target.length = offset + static_cast<uint32_t>(len) - s.request.target.offset;
    if (offset + len - s.request_start > c->max_head_bytes()) {
        s.error_status = 414;
        return -1;
    }
    return 0;
}

int Connection::on_header_field(llhttp_t *p, const char *at, size_t len) noexcept {
    Connection *c = from_parser(p);
    ActiveSession &s = *c->session_;
    trellis_request &r = s.request;
    if (s.in_body)
        return 0; // trailer fields are dropped: they must not change what the head said
    uint32_t offset = static_cast<uint32_t>(at - s.read_buffer.get());
    if (!s.in_header_field) {
        if (r.header_count == kMaxHeaders) {
            s.error_status = 431;
            return -1;
        }
        s.in_header_field = true;
        r.headers[r.header_count++] = HeaderSpan{{offset, 0}, {offset, 0}};
    }
    HeaderSpan &h = r.headers[r.header_count - 1];
    h.name.length = offset + static_cast<uint32_t>(len) - h.name.offset;
    if (offset + len - s.request_start > c->max_head_bytes()) {
        s.error_status = 431;
        return -1;
    }
    return 0;
}

int Connection::on_header_field_complete(llhttp_t *p) noexcept {
    ActiveSession &s = *from_parser(p)->session_;
    s.in_header_field = false;
    return 0;
}

int Connection::on_header_value(llhttp_t *p, const char *at, size_t len) noexcept {
    Connection *c = from_parser(p);
    ActiveSession &s = *c->session_;
    if (s.in_body)
        return 0;
    HeaderSpan &h = s.request.headers[s.request.header_count - 1];
    uint32_t offset = static_cast<uint32_t>(at - s.read_buffer.get());
    if (!s.in_header_value) {
        s.in_header_value = true;
        h.value.offset = offset;
    }
    h.value.length = offset + static_cast<uint32_t>(len) - h.value.offset;
    if (offset + len - s.request_start > c->max_head_bytes()) {
        s.error_status = 431;
        return -1;
    }
    return 0;
}

int Connection::on_header_value_complete(llhttp_t *p) noexcept {
    Connection *c = from_parser(p);
    ActiveSession &s = *c->session_;
    s.in_header_value = false;
    if (s.in_body)
        return 0;
    const HeaderSpan &header = s.request.headers[s.request.header_count - 1];
    int status =
        http1::check_header_field(s.request.str(header.name), s.request.str(header.value), s.head_facts);
    if (status) {
        s.error_status = status;
        return -1;
    }
    return 0;
}

int Connection::on_headers_complete(llhttp_t *p) noexcept {
    Connection *c = from_parser(p);
    int status = c->headers_complete();
    if (status) {
        c->session_->error_status = status;
        return -1;
    }
    ActiveSession &s = *c->session_;
    // A plugin that streams bodies gets the request now, outside the parser (parse_step).
    s.router = c->worker_.router;
    s.generation = c->worker_.generation;
    const Router *router = s.router;
    int index =
        router && router->has_body_streamers() ? router->next_match(s.request.host, s.request.path, 0) : -1;
    if (index >= 0 && (router->route(index).plugin->flags() & TRELLIS_STREAM_BODY)) {
        s.route_index = index;
        s.head_dispatch_pending = true;
        return HPE_PAUSED;
    }
    return 0;
}

int Connection::headers_complete() {
    ActiveSession &s = *session_;
    trellis_request &r = s.request;
    llhttp_t &p = s.parser;
    s.in_body = true;
    s.body_started_ms = worker_.timeouts.now();
    s.body_received = 0;
    // Where the head's spans end: compact_read_buffer keeps the head up to here while the body
    // streams through the buffer behind it.
    auto span_end = [](Span span) { return static_cast<size_t>(span.offset) + span.length; };
    s.head_end = std::max(span_end(r.method), span_end(r.target));
    for (size_t i = 0; i < r.header_count; ++i)
        s.head_end = std::max({s.head_end, span_end(r.headers[i].name), span_end(r.headers[i].value)});
    if (int status = http1::check_head(r, p, s.head_facts))
        return status;
    uint64_t max_body = worker_.limits().max_body_bytes;
    bool has_body = (p.flags & F_CHUNKED) || ((p.flags & F_CONTENT_LENGTH) && p.content_length > 0);
    if ((p.flags & F_CONTENT_LENGTH) && p.content_length > max_body)
        return 413; // before any 100 Continue: the client need not send the body at all
    if (s.head_facts.expect_continue && has_body && r.version == 11) {
        s.output.append(kContinue);
    }
    return 0;
}

int Connection::on_body(llhttp_t *p, const char *at, size_t len) noexcept {
    Connection *c = from_parser(p);
    ActiveSession &s = *c->session_;
    s.body_received += len;
    if (s.body_streamed) {
        if (s.hold == Hold::None || !s.holder) {
            // Answered before the body, or the plugin let go early: the rest is dropped.
            if (s.body_received > c->worker_.limits().max_body_bytes) {
                s.body_failed = true;
                return HPE_PAUSED;
            }
            return 0;
        }
        uint64_t began_ns = c->loop_clock();
        int rc = s.holder->on_body()(s.holder->instance, &s.request, at, len, 0);
        c->check_loop_stall(began_ns, *s.holder, s.route_stats);
        if (rc == TRELLIS_AGAIN) {
            s.body_pause_now = true;
            return HPE_PAUSED;
        }
        if (rc != TRELLIS_OK) {
            SERVER_LOG_ERROR("plugin \"%s\" failed in on_body", s.holder->name().c_str());
            s.body_failed = true;
            return HPE_PAUSED;
        }
        return 0;
    }
    if (s.request.body.size() + len > c->worker_.limits().max_body_bytes) {
        s.error_status = 413;
        return -1;
    }
    s.request.body.append(at, len);
    return 0;
}

int Connection::on_chunk_header(llhttp_t *p) noexcept {
    Connection *c = from_parser(p);
    ActiveSession &s = *c->session_;
    // A chunk that would take a buffered body past the limit is refused when it is announced, as
    // a Content-Length over the limit is, not after its bytes were read.
    if (!s.body_streamed && s.request.body.size() + p->content_length > c->worker_.limits().max_body_bytes) {
        s.error_status = 413;
        return -1;
    }
    return 0;
}

int Connection::on_chunk_extension(llhttp_t *p, const char *at, size_t len) noexcept {
    (void)at;
    Connection *c = from_parser(p);
    ActiveSession &s = *c->session_;
    // Extensions carry nothing we use, and they count against neither the head nor the body:
    // without a bound a client could make us parse them for ever (CVE-2024-22019).
    s.chunk_extension_bytes += static_cast<uint32_t>(len);
    if (s.chunk_extension_bytes > c->worker_.limits().max_header_bytes) {
        s.error_status = 413;
        return -1;
    }
    return 0;
}

int Connection::on_message_complete(llhttp_t *p) noexcept {
    ActiveSession &s = *from_parser(p)->session_;
    if (!s.in_body) // a head without on_headers_complete cannot happen; be safe
        return -1;
    // Pause so the connection answers this request before llhttp looks at the next one.
    return HPE_PAUSED;
}

// ---------------------------------------------------------------------------------------------
// Answering

void Connection::after_message() {
    ActiveSession &s = *session_;
    s.in_message = false;
    s.in_body = false;
    keep_alive_ = llhttp_should_keep_alive(&s.parser) && !worker_.draining && !close_after_flush_;
    if (!keep_alive_)
        close_after_flush_ = true;
    if (s.body_streamed) {
        // The plugin has had the request since its head: tell it the body is complete.
        if (s.hold != Hold::None && s.holder) {
            uint64_t began_ns = loop_clock();
            int rc = s.holder->on_body()(s.holder->instance, &s.request, nullptr, 0, 1);
            check_loop_stall(began_ns, *s.holder, s.route_stats);
            if (rc == TRELLIS_ERROR) {
                SERVER_LOG_ERROR("plugin \"%s\" failed in on_body", s.holder->name().c_str());
                fail_streamed_body();
            }
        }
        return;
    }
    s.started_ns = uv_hrtime();
    dispatch();
}

bool Connection::redirect_to_https() {
    trellis_request &r = session_->request;
    const RedirectToHttps &to = listen_->redirect_to_https;
    std::string location;
    if (to.kind == RedirectToHttps::Kind::SameHost) {
        if (r.host.empty()) {
            respond_error(400);
            return true;
        }
        location = "https://" + r.host; // the port is dropped: https on 443
    } else {
        location = to.origin;
    }
    // The target as sent (still percent-encoded, so it cannot carry CR or LF into the header);
    // for an absolute-form target, its path and query only.
    std::string_view target = r.str(r.target);
    if (target.empty() || target[0] != '/') {
        size_t authority = target.find("://");
        size_t rest =
            authority == std::string_view::npos ? target.size() : target.find_first_of("/?", authority + 3);
        target = rest == std::string_view::npos ? std::string_view() : target.substr(rest);
        if (target.empty() || target[0] != '/')
            location.append("/");
    }
    location.append(target);
    r.response_headers.assign("Location: ")
        .append(location)
        .append("\r\nContent-Type: text/plain; charset=utf-8\r\n");
    respond(308, "308 Permanent Redirect\n");
    return true;
}

bool Connection::answered_by_listener_rules() {
    trellis_request &r = session_->request;
    if (listen_ && listen_->redirect_to_https.kind != RedirectToHttps::Kind::Off && !transport_->tls_facts())
        if (redirect_to_https())
            return true;
    if (!transport_->covers_host(r.host)) {
        // RFC 9110 section 15.5.20: this connection's certificate (chosen by SNI) is not the one
        // for this host, so the request belongs on another connection.
        respond_error(421);
        return true;
    }
    return false;
}

void Connection::dispatch(int first_route) {
    ActiveSession &s = *session_;
    trellis_request &r = s.request;
    if (first_route == 0) {
        if (answered_by_listener_rules())
            return;
        s.router = worker_.router;
        s.generation = worker_.generation;
    }
    int index = first_route - 1;
    // The request became complete a moment ago: the first plugin call's loop time starts there,
    // which saves a clock read per request; a later route's call reads the clock itself.
    bool first_call = first_route == 0;
    while (s.router && (index = s.router->next_match(r.host, r.path, index + 1)) >= 0) {
        // A body-streaming plugin is offered a request only at its head, as the first match
        // (on_headers_complete); a body that was buffered is not for it.
        if (s.router->route(index).plugin->flags() & TRELLIS_STREAM_BODY)
            continue;
        if (call_handler(index, first_call ? loop_clock_from(s.started_ns) : loop_clock()))
            return;
        first_call = false;
    }
    respond_error(404);
}

bool Connection::call_handler(int index, uint64_t began_ns) {
    ActiveSession &s = *session_;
    trellis_request &r = s.request;
    const Route &route = s.router->route(index);
    s.route_index = index;
    s.route_stats = route.stats;
    r.route = &route;
    r.path_below = std::string_view(r.path).substr(route.prefix.back() == '/' ? route.prefix.size() - 1
                                                                              : route.prefix.size());
    if (r.path_below.empty())
        r.path_below = "/";
    // A plugin may keep the request past this connection: it reads the TLS facts from a reference
    // of its own (nothing to do on plain connections).
    if (!s.tls_facts && transport_->tls_facts())
        s.tls_facts = transport_->shared_tls_facts();
    PluginInstance *plugin = route.plugin;
    if (route.blocking && worker_.thread_pool) {
        begin_hold(Hold::Pool, plugin);
        if (!worker_.thread_pool->try_submit({run_on_pool, &s})) {
            clear_hold();
            SERVER_LOG_WARN("thread pool queue is full: 503 for plugin \"%s\"", plugin->name().c_str());
            respond_error(503);
            return true;
        }
        update_timeout();
        return true;
    }
    r.inline_call = true;
    int rc = plugin->plugin->on_request(plugin->instance, &r);
    check_loop_stall(began_ns, *plugin, route.stats);
    r.inline_call = false;
    return after_handler(rc, plugin);
}

void Connection::check_loop_stall(uint64_t began_ns, const PluginInstance &plugin, RouteStats *route) {
    if (began_ns == 0)
        return; // the watch is off
    uint64_t warn_ms = worker_.limits().loop_stall_warn_ms;
    uint64_t took_ns = uv_hrtime() - began_ns;
    if (took_ns < warn_ms * 1000000)
        return;
    // Every other connection of this worker waited as long: say so, once a minute per route.
    uint64_t now_ms = uv_hrtime() / 1000000;
    if (route) {
        route->per_worker[worker_.index()].loop_stalls.add();
        uint64_t last = route->last_stall_warning_ms.load(std::memory_order_relaxed);
        if ((last != 0 && now_ms - last < 60000) ||
            !route->last_stall_warning_ms.compare_exchange_strong(last, now_ms, std::memory_order_relaxed))
            return;
    }
    std::string where =
        route ? "route \"" + route->prefix + "\"" + (route->host == "*" ? "" : " of host " + route->host)
              : std::string("a route");
    SERVER_LOG_WARN("%s (plugin \"%s\") ran %llu ms on the event loop of worker %u, holding up its other "
                    "connections; mark the route \"blocking\": true",
                    where.c_str(), plugin.name().c_str(), static_cast<unsigned long long>(took_ns / 1000000),
                    worker_.index());
}

bool Connection::after_handler(int rc, PluginInstance *plugin) {
    ActiveSession &s = *session_;
    trellis_request &r = s.request;
    if (rc == TRELLIS_ASYNC) {
        if (s.hold == Hold::None)
            begin_hold(Hold::Async, plugin);
        else
            s.hold = Hold::Async;
        // What was answered on the loop during on_request counts as answered for other threads.
        if (r.answered) {
            std::lock_guard<std::mutex> lock(s.stage_mutex);
            if (!s.staged.answered) {
                s.staged.answered = s.staged.head_taken = true;
                s.staged.kind = s.stream.active ? StagedAnswer::Kind::Stream : StagedAnswer::Kind::Full;
            }
        }
        update_timeout();
        return true;
    }
    if (rc == TRELLIS_DECLINED && !r.answered)
        return false;
    if (rc == TRELLIS_ERROR)
        SERVER_LOG_ERROR("plugin \"%s\" failed on %.*s %.*s", plugin->name().c_str(),
                         static_cast<int>(r.method.length), r.str(r.method).data(),
                         static_cast<int>(r.target.length), r.str(r.target).data());
    else if (!r.answered)
        SERVER_LOG_ERROR("plugin \"%s\" returned %d without answering", plugin->name().c_str(), rc);
    if (!r.answered) {
        respond_error(500);
    } else if (s.stream.active) {
        // Returned without ending (and without TRELLIS_ASYNC to end it later): the framing cannot
        // be finished, so the connection ends after what was written.
        SERVER_LOG_ERROR("plugin \"%s\" returned without ending its streamed response",
                         plugin->name().c_str());
        s.stream.active = false;
        close_after_flush_ = true;
        keep_alive_ = false;
    }
    return true;
}

void Connection::fail_held_request(int status) {
    ActiveSession &s = *session_;
    {
        std::lock_guard<std::mutex> lock(s.stage_mutex);
        s.staged.gone = true;
    }
    apply_staged();
    s.gave_up = true; // the connection no longer waits for the plugin; on_abort comes with the close
    s.body_streamed = false;
    close_after_flush_ = true;
    keep_alive_ = false;
    if (s.request.answered) {
        close_now();
        return;
    }
    s.stream.active = false;
    respond_error(status);
    flush();
}

bool Connection::dispatch_head_to_body_streamer() {
    ActiveSession &s = *session_;
    // The plugin may read the head from another thread while the body streams in behind it: put
    // it at the front of the buffer now, so nothing moves it later.
    shift_request_to_front();
    s.started_ns = uv_hrtime();
    // An answer given now already says whether the connection stays.
    keep_alive_ = llhttp_should_keep_alive(&s.parser) && !worker_.draining && !close_after_flush_;
    // Answered now (redirect, 421, or the plugin without TRELLIS_ASYNC): the body is read and
    // dropped (up to limits.max_body_bytes, past which the connection closes), as nginx does.
    auto answered_before_body = [&s] {
        s.body_streamed = true;
        return true;
    };
    if (answered_by_listener_rules())
        return answered_before_body();
    if (!call_handler(session_->route_index, loop_clock_from(s.started_ns))) {
        s.body_streamed = false; // declined: the body is buffered for the routes after it
        return true;
    }
    if (s.hold == Hold::Async) {
        s.body_streamed = true;
        return true;
    }
    return answered_before_body();
}

void Connection::begin_hold(Hold hold, PluginInstance *plugin) {
    ActiveSession &s = *session_;
    s.hold = hold;
    s.holder = plugin;
    s.held_generation = s.generation;
    if (s.held_generation)
        ++s.held_generation->held;
}

void Connection::clear_hold() {
    ActiveSession &s = *session_;
    release_hold_of(s);
}

void Connection::release_hold_of(ActiveSession &s) {
    WorkerGeneration *generation = s.held_generation;
    s.hold = Hold::None;
    s.holder = nullptr;
    s.held_generation = nullptr;
    WorkerContext &worker = *s.worker;
    if (generation && --generation->held == 0 && worker.on_generation_idle)
        worker.on_generation_idle(generation, worker.on_generation_idle_data);
}

void Connection::end_hold() {
    ActiveSession &s = *session_;
    PluginInstance *plugin = s.holder;
    // A body still arriving for a plugin that let go is read and dropped (on_body).
    s.body_paused = false;
    if (!s.request.answered) {
        SERVER_LOG_ERROR("plugin \"%s\" released a request without answering it", plugin->name().c_str());
        respond_error(500);
    } else if (s.stream.active) {
        SERVER_LOG_ERROR("plugin \"%s\" released a streamed response without ending it",
                         plugin->name().c_str());
        s.stream.active = false;
        close_after_flush_ = true;
        keep_alive_ = false;
    }
    clear_hold(); // last: the answers above still belong to the held generation
    flush();
}

void Connection::run_on_pool(void *arg) noexcept {
    auto *s = static_cast<ActiveSession *>(arg);
    PluginInstance *plugin = s->holder;
    bool gone;
    {
        std::lock_guard<std::mutex> lock(s->stage_mutex);
        gone = s->staged.gone;
        s->staged.pool_started = !gone;
    }
    // A request whose client left (or that timed out) while it waited for a thread is not run.
    s->pool_result = gone ? TRELLIS_ERROR : plugin->plugin->on_request(plugin->instance, &s->request);
    if (!s->mailbox->post(s, kMailPoolDone))
        keep_after_exit(s);
}

void Connection::on_pool_done() {
    ActiveSession &s = *session_;
    if (s.hold != Hold::Pool)
        return;
    PluginInstance *plugin = s.holder;
    if (s.pool_result == TRELLIS_ASYNC) {
        s.hold = Hold::Async;
        return;
    }
    // Declined on the pool: the next routes are tried on the same generation, kept alive meanwhile.
    WorkerGeneration *pinned = s.held_generation;
    if (pinned)
        ++pinned->held;
    clear_hold();
    if (!after_handler(s.pool_result, plugin))
        dispatch(s.route_index + 1);
    if (pinned && --pinned->held == 0 && worker_.on_generation_idle)
        worker_.on_generation_idle(pinned, worker_.on_generation_idle_data);
}

bool Connection::apply_staged() {
    ActiveSession &s = *session_;
    trellis_request &r = s.request;
    StagedAnswer &st = s.staged;
    StagedAnswer::Kind kind = StagedAnswer::Kind::None;
    int status = 0;
    int64_t length = -1;
    FileResponse file;
    struct stat file_stat = {};
    bool take_head, ended, released;
    {
        std::lock_guard<std::mutex> lock(s.stage_mutex);
        take_head = st.answered && !st.head_taken;
        if (take_head) {
            st.head_taken = true;
            kind = st.kind;
            status = st.status;
            length = st.length;
            file = st.file;
            file_stat = st.file_stat;
            st.file = FileResponse{}; // the loop owns the descriptor now
        }
        s.staged_scratch.clear();
        s.staged_scratch.swap(st.body);
        ended = st.ended;
        released = st.released;
    }
    if (take_head && r.answered) {
        // Answered on the loop during on_request and again from another thread.
        SERVER_LOG_WARN("plugin \"%s\" answered a request twice; the second answer is ignored",
                        s.holder ? s.holder->name().c_str() : "?");
        if (file.fd >= 0 && !file.borrowed)
            ::close(file.fd);
        take_head = false;
        s.staged_scratch.clear();
    }
    if (take_head) {
        switch (kind) {
        case StagedAnswer::Kind::Full:
            respond(status, s.staged_scratch);
            s.staged_scratch.clear();
            break;
        case StagedAnswer::Kind::File:
            if (file.stat)
                file.stat = &file_stat;
            respond_file(file);
            break;
        case StagedAnswer::Kind::Stream:
            start_stream(status, length);
            break;
        case StagedAnswer::Kind::None:
            break;
        }
    }
    if (s.stream.active && !s.staged_scratch.empty())
        stream_write(s.staged_scratch);
    if (ended && s.stream.active)
        end_stream();
    {
        std::lock_guard<std::mutex> lock(s.stage_mutex);
        st.unsent = queued_output();
    }
    return released;
}

void Connection::on_mail(ActiveSession *s, unsigned bits) {
    Connection *c = s->request.connection;
    if (!c) {
        if (!s->orphaned)
            return; // stale mail for a session back in the pool
        // The client has gone; the session waits only for the plugin to let go.
        if (bits & kMailReleased)
            s->release_seen = true;
        if ((bits & kMailPoolDone) && s->hold == Hold::Pool)
            s->hold = s->pool_result == TRELLIS_ASYNC ? Hold::Async : Hold::None;
        if (s->hold == Hold::None || (s->hold == Hold::Async && s->release_seen))
            finish_orphan(s);
        return;
    }
    Guard guard(c);
    if (c->closed_ || c->session_ != s)
        return;
    // Only the released mail ends a hold: it is the plugin's last touch of the session (the flag
    // under the lock is set a moment before it).
    if (bits & kMailReleased)
        s->release_seen = true;
    c->apply_staged();
    if (bits & kMailPoolDone)
        c->on_pool_done();
    if (c->closed_ || !c->session_)
        return;
    if (s->release_seen && s->hold == Hold::Async) {
        c->end_hold();
    } else {
        if (bits & kMailResumeBody)
            c->resume_body();
        if (!c->closed_ && c->session_)
            c->flush();
    }
    if (!c->closed_)
        c->update_timeout();
}

void Connection::finish_orphan(ActiveSession *s) {
    WorkerContext &worker = *s->worker;
    release_hold_of(*s);
    worker.pool.release(s);
}

void Connection::abandon_held_session() {
    ActiveSession *s = session_;
    session_ = nullptr;
    worker_.stats.connections_active.sub();
    bool released, never_started;
    {
        std::lock_guard<std::mutex> lock(s->stage_mutex);
        s->staged.gone = true;
        released = s->staged.released;
        // A job still waiting for a pool thread will not run at all: the plugin never saw it.
        never_started = s->hold == Hold::Pool && !s->staged.pool_started;
    }
    // The exchange ends here: log and count it, unless its whole answer was already queued (and
    // so recorded), with the body bytes taken so far. A client that left gets nginx's 499; a
    // stream the server cut (its plugin went quiet, the client stopped reading) keeps the status
    // it began with; a request the server closed unanswered (the shutdown deadline) is a 503.
    if (!s->request.answered || s->stream.active) {
        int status = client_left_ ? kClientClosedRequest : s->stream.active ? s->stream.status : 503;
        record_response_of(*s, status, s->request.is_head ? 0 : s->stream.sent);
    }
    s->request.connection = nullptr;
    s->orphaned = true;
    s->stream.active = false;
    // The plugin hears of it unless it has let go already; its release (or the pool's return)
    // then reaches on_mail, which gives the session back to the pool.
    if (!released && !never_started && s->holder && s->holder->on_abort()) {
        uint64_t began_ns = loop_clock();
        s->holder->on_abort()(s->holder->instance, &s->request);
        check_loop_stall(began_ns, *s->holder, s->route_stats);
    }
}

void Connection::on_handler_timeout() {
    ActiveSession *s = session_;
    if (!s || (s->hold == Hold::None && !s->stream.active)) {
        update_timeout();
        return;
    }
    {
        std::lock_guard<std::mutex> lock(s->stage_mutex);
        s->staged.gone = true; // later answers from the plugin fail
    }
    apply_staged(); // answers accepted before that still count
    const trellis_request &r = s->request;
    const char *name = s->holder ? s->holder->name().c_str() : "?";
    s->gave_up = true;
    if (!r.answered) {
        SERVER_LOG_ERROR("plugin \"%s\" did not answer %.*s %.*s within %u ms: 504", name,
                         static_cast<int>(r.method.length), r.str(r.method).data(),
                         static_cast<int>(r.target.length), r.str(r.target).data(),
                         worker_.limits().handler_timeout_ms);
        close_after_flush_ = true;
        keep_alive_ = false;
        respond_error(504);
        flush();
        return;
    }
    SERVER_LOG_ERROR("plugin \"%s\" sent nothing for %u ms on a streamed response; closing the connection",
                     name, worker_.limits().handler_timeout_ms);
    close_now();
}

void Connection::notify_plugin_writable() {
    ActiveSession &s = *session_;
    if (s.hold != Hold::Async || !s.holder)
        return;
    bool wanted = s.notify_writable;
    s.notify_writable = false;
    {
        std::lock_guard<std::mutex> lock(s.stage_mutex);
        wanted = wanted || s.staged.want_writable;
        s.staged.want_writable = false;
        s.staged.unsent = 0;
    }
    if (wanted && s.holder->on_writable()) {
        uint64_t began_ns = loop_clock();
        s.holder->on_writable()(s.holder->instance, &s.request);
        check_loop_stall(began_ns, *s.holder, s.route_stats);
    }
}

void Connection::fail_streamed_body() {
    ActiveSession &s = *session_;
    if (s.hold != Hold::None) {
        fail_held_request(500);
        return;
    }
    // Nobody holds the request (a body dropped after an early answer grew past the limit).
    s.body_streamed = false;
    close_after_flush_ = true;
    keep_alive_ = false;
    if (!s.request.answered)
        respond_error(500);
}

void Connection::resume_body() {
    ActiveSession &s = *session_;
    if (!s.body_paused)
        return;
    s.body_paused = false;
    // The plugin's pause is not the client's slowness: the rate is measured afresh.
    s.body_started_ms = worker_.timeouts.now();
    s.body_received = 0;
    process_input();
    if (!closed_ && session_ && !peer_done_)
        transport_->set_reading(true);
}

// ---------------------------------------------------------------------------------------------
// Streamed responses

bool Connection::start_stream(int status, int64_t content_length) {
    ActiveSession &s = *session_;
    trellis_request &r = s.request;
    if (status < 200 || status > 999 || status == 204 || status == 304)
        return false;
    s.stream = StreamState{};
    s.stream.status = status;
    switch (http1::framing_for_stream(content_length, r.version)) {
    case http1::BodyFraming::ContentLength:
        s.stream.declared = true;
        s.stream.length = static_cast<uint64_t>(content_length);
        write_head(status, s.stream.length, true);
        break;
    case http1::BodyFraming::Chunked:
        s.stream.chunked = true;
        r.response_headers.append("Transfer-Encoding: chunked\r\n");
        write_head(status, 0, false);
        break;
    case http1::BodyFraming::UntilClose:
        close_after_flush_ = true;
        keep_alive_ = false;
        write_head(status, 0, false);
        break;
    }
    s.stream.active = true;
    return true;
}

size_t Connection::stream_write(std::string_view data) {
    ActiveSession &s = *session_;
    StreamState &stream = s.stream;
    if (stream.active && !data.empty() && !s.request.is_head) {
        if (stream.declared && data.size() > stream.length - stream.sent) {
            SERVER_LOG_ERROR(
                "plugin \"%s\" wrote more than the Content-Length it gave (%llu); the excess is dropped",
                s.holder ? s.holder->name().c_str() : "?", static_cast<unsigned long long>(stream.length));
            data = data.substr(0, stream.length - stream.sent);
        }
        if (stream.chunked) {
            char size_line[24];
            append_body(http1::chunk_size_line(data.size(), size_line));
            append_body(data);
            append_body(http1::kChunkEnd);
        } else {
            append_body(data);
        }
        stream.sent += data.size();
    }
    return queued_output();
}

void Connection::end_stream() {
    ActiveSession &s = *session_;
    StreamState &stream = s.stream;
    if (!stream.active)
        return;
    stream.active = false;
    if (stream.chunked && !s.request.is_head)
        append_body(http1::kLastChunk);
    if (stream.declared && stream.sent < stream.length && !s.request.is_head) {
        SERVER_LOG_ERROR(
            "plugin \"%s\" ended its response after %llu of %llu promised bytes; closing the connection",
            s.holder ? s.holder->name().c_str() : "?", static_cast<unsigned long long>(stream.sent),
            static_cast<unsigned long long>(stream.length));
        close_after_flush_ = true;
        keep_alive_ = false;
    }
    record_response(stream.status, s.request.is_head ? 0 : stream.sent);
}

size_t Connection::queued_output() const {
    return session_->output.pending_bytes();
}

void Connection::record_response(int status, uint64_t body_bytes) {
    record_response_of(*session_, status, body_bytes);
}

void Connection::record_response_of(ActiveSession &s, int status, uint64_t body_bytes) {
    if (s.route_stats && s.started_ns)
        s.route_stats->per_worker[worker_.index()].record(status, uv_hrtime() - s.started_ns);
    log_access(s, status, body_bytes);
}

void Connection::write_head(int status, uint64_t content_length, bool with_length) {
    ActiveSession &s = *session_;
    http1::ResponseHead head;
    head.status = status;
    head.date = worker_.date.now();
    head.fields = s.request.response_headers;
    if (listen_ && transport_->tls_facts())
        head.hsts = listen_->tls.hsts;
    head.has_length = with_length;
    head.content_length = content_length;
    head.persistence = http1::persistence_for(close_after_flush_ || !keep_alive_, s.request.version);
    size_t start = s.output.text().size();
    http1::append_response_head(s.output.text(), head);
    s.output.commit_from(start);
    s.request.answered = true;
    worker_.stats.responses_by_class[status / 100 % 6].add();
}

void Connection::append_body(std::string_view body) {
    session_->output.append(body);
}

void Connection::log_access(ActiveSession &s, int status, uint64_t body_bytes) {
    if (!worker_.access_log.enabled())
        return;
    trellis_request &r = s.request;
    char peer[64];
    size_t n = peer_text(peer_, peer, sizeof peer);
    std::string_view ip(peer, n);
    // The combined format wants the address alone.
    if (size_t colon = ip.rfind(':'); colon != std::string_view::npos)
        ip = ip.substr(ip[0] == '[' ? 1 : 0, ip[0] == '[' ? colon - 2 : colon);
    AccessLogEntry entry;
    entry.peer_ip = ip;
    entry.method = r.str(r.method);
    entry.target = r.str(r.target);
    entry.version = r.version;
    entry.status = status;
    entry.body_bytes = body_bytes;
    r.header("referer", entry.referer);
    r.header("user-agent", entry.user_agent);
    if (s.started_ns)
        entry.request_time_ns = static_cast<int64_t>(uv_hrtime() - s.started_ns);
    worker_.access_log.append(entry);
}

void Connection::respond(int status, std::string_view body) {
    trellis_request &r = session_->request;
    bool bodiless = status < 200 || status == 204 || status == 304;
    write_head(status, body.size(), !bodiless);
    if (!r.is_head && !bodiless)
        append_body(body);
    record_response(status, r.is_head || bodiless ? 0 : body.size());
}

void Connection::respond_error(int status) {
    trellis_request &r = session_->request;
    r.response_headers.assign("Content-Type: text/plain; charset=utf-8\r\n");
    if (status == 405 && (r.llhttp_method == HTTP_CONNECT || r.llhttp_method == HTTP_TRACE)) {
        // One Allow per resource: the route's plugin names its methods (the static plugin's
        // "GET, HEAD", as on its own 405s); else every method a plugin is given.
        const char *allow = "GET, HEAD, POST, PUT, DELETE, OPTIONS";
        const Router *router = worker_.router;
        int index = router && r.llhttp_method == HTTP_TRACE ? router->next_match(r.host, r.path, 0) : -1;
        if (index >= 0 && router->route(index).plugin->allow())
            allow = router->route(index).plugin->allow();
        r.response_headers.append("Allow: ").append(allow).append("\r\n");
    }
    char body[96];
    int n = snprintf(body, sizeof body, "%d %s\n", status, std::string(status_text(status)).c_str());
    respond(status, std::string_view(body, static_cast<size_t>(n)));
}

bool Connection::respond_file(const FileResponse &file) {
    trellis_request &r = session_->request;
    ActiveSession &s = *session_;
    auto release_fd = [&file] {
        if (!file.borrowed)
            ::close(file.fd);
    };
    struct stat st = {};
    if (file.stat) {
        st = *file.stat;
    } else if (fstat(file.fd, &st) != 0) {
        st.st_mode = 0;
    }
    if (!S_ISREG(st.st_mode)) {
        release_fd();
        respond_error(500);
        return false;
    }
    const uint64_t size = static_cast<uint64_t>(st.st_size);
    int status = file.status;
    s.ranges.clear();
    RangeOutcome outcome = RangeOutcome::Full;
    if (status == 200 && answered_by_file_validators(st, file.max_ranges ? file.max_ranges : 16, outcome)) {
        release_fd();
        return true;
    }
    if (outcome == RangeOutcome::Unsatisfiable) {
        release_fd();
        respond_range_not_satisfiable(size);
        return true;
    }
    OutputQueue::Mark before_answer = s.output.mark();
    uint64_t body_bytes = size;
    bool ok = true;
    if (outcome == RangeOutcome::Partial) {
        status = 206;
        ok = s.ranges.size() == 1 ? queue_single_range(file.fd, s.ranges[0], size, body_bytes)
                                  : queue_multipart_ranges(file.fd, st, body_bytes);
    } else {
        write_head(status, size, true);
        if (!r.is_head && size > 0)
            ok = queue_file_bytes(file.fd, 0, size);
    }
    release_fd();
    if (!ok) {
        // A read error before anything of this answer left: take it back and answer 500.
        s.output.rollback(before_answer);
        worker_.stats.responses_by_class[status / 100 % 6].sub();
        respond_error(500);
        return false;
    }
    record_response(status, r.is_head ? 0 : body_bytes);
    return true;
}

bool Connection::answered_by_file_validators(const struct stat &st, uint32_t max_ranges,
                                             RangeOutcome &outcome) {
    trellis_request &r = session_->request;
    const uint64_t size = static_cast<uint64_t>(st.st_size);
    FileEtag tag = file_etag(static_cast<uint64_t>(st.st_ino), size, st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
    std::string_view etag = tag.view();
    char last_modified[kHttpDateLength + 1] = {};
    format_http_date(st.st_mtim.tv_sec, last_modified);
    r.response_headers.append("Last-Modified: ").append(last_modified, kHttpDateLength).append("\r\n");
    r.response_headers.append("ETag: ").append(etag).append("\r\nAccept-Ranges: bytes\r\n");
    RequestConditions conditions;
    conditions.get_or_head = r.llhttp_method == HTTP_GET || r.llhttp_method == HTTP_HEAD;
    conditions.has_if_match = r.header("if-match", conditions.if_match);
    conditions.has_if_unmodified_since = r.header("if-unmodified-since", conditions.if_unmodified_since);
    conditions.has_if_none_match = r.header("if-none-match", conditions.if_none_match);
    conditions.has_if_modified_since = r.header("if-modified-since", conditions.if_modified_since);
    switch (evaluate_preconditions(conditions, etag, st.st_mtim.tv_sec)) {
    case Precondition::NotModified:
        respond(304, {});
        return true;
    case Precondition::Failed:
        respond_error(412);
        return true;
    case Precondition::Proceed:
        break;
    }
    std::string_view range, if_range;
    if (r.llhttp_method == HTTP_GET && r.header("range", range) &&
        (!r.header("if-range", if_range) || if_range_matches(if_range, etag, st.st_mtim.tv_sec)))
        outcome = parse_ranges(range, size, max_ranges, session_->ranges);
    return false;
}

void Connection::respond_range_not_satisfiable(uint64_t size) {
    trellis_request &r = session_->request;
    char content_range[48];
    snprintf(content_range, sizeof content_range, "bytes */%llu", static_cast<unsigned long long>(size));
    // The body is a short text now: drop the file's type and coding, keep the rest (Vary,
    // Cache-Control, ...).
    take_header(r.response_headers, "Content-Type");
    take_header(r.response_headers, "Content-Encoding");
    r.response_headers.append("Content-Type: text/plain; charset=utf-8\r\nContent-Range: ");
    r.response_headers.append(content_range).append("\r\n");
    respond(416, "416 Range Not Satisfiable\n");
}

bool Connection::queue_single_range(int fd, const ByteRange &range, uint64_t size, uint64_t &body_bytes) {
    trellis_request &r = session_->request;
    char content_range[96];
    snprintf(content_range, sizeof content_range, "Content-Range: bytes %llu-%llu/%llu\r\n",
             static_cast<unsigned long long>(range.first), static_cast<unsigned long long>(range.last),
             static_cast<unsigned long long>(size));
    r.response_headers.append(content_range);
    write_head(206, range.length(), true);
    body_bytes = range.length();
    return r.is_head || queue_file_bytes(fd, range.first, range.length());
}

bool Connection::queue_multipart_ranges(int fd, const struct stat &st, uint64_t &body_bytes) {
    // multipart/byteranges (RFC 9110 section 14.6): each part names its range and the type.
    trellis_request &r = session_->request;
    const std::vector<ByteRange> &ranges = session_->ranges;
    const uint64_t size = static_cast<uint64_t>(st.st_size);
    std::string type = take_header(r.response_headers, "Content-Type");
    char boundary[40];
    snprintf(boundary, sizeof boundary, "trellis-%016llx",
             static_cast<unsigned long long>(st.st_ino * 0x9E3779B97F4A7C15ULL ^ size));
    std::vector<std::string> part_heads;
    uint64_t total = 0;
    for (const ByteRange &part : ranges) {
        char line[160];
        snprintf(line, sizeof line, "Content-Range: bytes %llu-%llu/%llu\r\n\r\n",
                 static_cast<unsigned long long>(part.first), static_cast<unsigned long long>(part.last),
                 static_cast<unsigned long long>(size));
        std::string head = std::string("\r\n--") + boundary + "\r\n";
        if (!type.empty())
            head += "Content-Type: " + type + "\r\n";
        head += line;
        total += head.size() + part.length();
        part_heads.push_back(std::move(head));
    }
    std::string tail = std::string("\r\n--") + boundary + "--\r\n";
    total += tail.size();
    r.response_headers.append("Content-Type: multipart/byteranges; boundary=")
        .append(boundary)
        .append("\r\n");
    write_head(206, total, true);
    body_bytes = total;
    if (r.is_head)
        return true;
    for (size_t i = 0; i < ranges.size(); ++i) {
        append_body(part_heads[i]);
        if (!queue_file_bytes(fd, ranges[i].first, ranges[i].length()))
            return false;
    }
    append_body(tail);
    return true;
}

bool Connection::queue_file_bytes(int fd, uint64_t offset, uint64_t length) {
    ActiveSession &s = *session_;
    if (length <= kInlineFileBytes)
        return s.output.append_file_contents(fd, offset, length);
    // Large: sent later with send_file, from a descriptor of its own (the caller's may be a
    // cached one, or shared by several ranges).
    int own = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (own < 0)
        return false;
    s.output.append_file(own, offset, length);
    return true;
}

std::string Connection::take_header(std::string &headers, std::string_view name) {
    size_t pos = 0;
    while (pos < headers.size()) {
        size_t eol = headers.find("\r\n", pos);
        if (eol == std::string::npos)
            break;
        std::string_view line(headers.data() + pos, eol - pos);
        size_t colon = line.find(':');
        if (colon != std::string_view::npos && iequals(line.substr(0, colon), name)) {
            std::string_view value = line.substr(colon + 1);
            while (!value.empty() && value.front() == ' ')
                value.remove_prefix(1);
            std::string out(value);
            headers.erase(pos, eol + 2 - pos);
            return out;
        }
        pos = eol + 2;
    }
    return {};
}

size_t Connection::peer_text(const sockaddr_in6 &peer, char *buf, size_t len) {
    char ip[INET6_ADDRSTRLEN] = "?";
    int written;
    if (peer.sin6_family == AF_INET6) {
        inet_ntop(AF_INET6, &peer.sin6_addr, ip, sizeof ip);
        written = snprintf(buf, len, "[%s]:%u", ip, ntohs(peer.sin6_port));
    } else {
        const auto *v4 = reinterpret_cast<const sockaddr_in *>(&peer);
        inet_ntop(AF_INET, &v4->sin_addr, ip, sizeof ip);
        written = snprintf(buf, len, "%s:%u", ip, ntohs(v4->sin_port));
    }
    return written > 0 && static_cast<size_t>(written) < len ? static_cast<size_t>(written) : 0;
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
    if (closed_)
        return;
    ActiveSession &s = *session_;
    if ((s.hold != Hold::None || s.stream.active) && !s.gave_up) {
        // The handler is still at work: wait for its next piece, its release, or tell it that it
        // may write again.
        notify_plugin_writable();
        if (!closed_ && session_ && !s.body_paused && !peer_done_)
            transport_->set_reading(true); // to notice a client that leaves
        return;
    }
    if (close_after_flush_) {
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
    if (closed_ || lingering_ || !session_)
        return;
    flush();
    update_timeout();
}

} // namespace trellis
