#include "http2/connection.hpp"

#include "held_answers.hpp"
#include "http/response_fields.hpp"
#include "http2/stream.hpp"
#include "log/log.hpp"
#include "metrics/metrics.hpp"
#include "responses.hpp"

#include <algorithm>
#include <cstring>
#include <limits>
#include <string>

namespace trellis::http2 {
namespace {

// Frames queued for the transport before nghttp2 is asked to wait (and reading stops).
constexpr size_t kOutputHighWater = 256 * 1024;
constexpr size_t kReadBufferBytes = 16 * 1024;
// The connection's receive window: enough for several streams' uploads at once.
constexpr int32_t kConnectionWindow = 1 << 20;
// Rapid Reset (CVE-2023-44487): streams the peer resets, a burst then a steady rate.
constexpr double kResetBurst = 200, kResetsPerSecond = 50;
// DATA frames without payload that do not end their stream cost a frame's work for nothing.
constexpr double kEmptyFrameBurst = 100, kEmptyFramesPerSecond = 20;
// Header blocks in more than this many CONTINUATION frames end the connection (CVE-2024-27316).
constexpr size_t kMaxContinuations = 8;
// nghttp2 1.52 treats a stream over its own max_concurrent_streams as a connection error, where
// RFC 9113 section 5.1.2 asks for a stream error: it is told this many times the limit the peer is
// shown (the SETTINGS frame is rewritten on its way out), and the streams over the advertised
// limit are refused here with REFUSED_STREAM.
constexpr uint32_t kLibraryStreamsFactor = 4;

Connection *self_of(void *user_data) {
    return static_cast<Connection *>(user_data);
}

Stream *stream_of(nghttp2_session *session, int32_t id) {
    return static_cast<Stream *>(nghttp2_session_get_stream_user_data(session, id));
}

bool is_connection_specific(std::string_view name) {
    for (std::string_view field :
         {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"})
        if (iequals(name, field))
            return true;
    return false;
}

// The SETTINGS frame as nghttp2 wrote it, with the stream limit the peer is to see.
void rewrite_stream_limit(std::string &frame, uint32_t advertised) {
    if (frame.size() < 9 || static_cast<uint8_t>(frame[3]) != NGHTTP2_SETTINGS ||
        (frame[4] & NGHTTP2_FLAG_ACK))
        return;
    for (size_t at = 9; at + 6 <= frame.size(); at += 6) {
        unsigned id = (static_cast<uint8_t>(frame[at]) << 8) | static_cast<uint8_t>(frame[at + 1]);
        if (id != NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS)
            continue;
        for (int i = 0; i < 4; ++i)
            frame[at + 2 + i] = static_cast<char>((advertised >> (24 - 8 * i)) & 0xff);
    }
}

// An answer's head as HTTP/2 fields: lower-case names and values in one buffer, pointed into.
class FieldList {
  public:
    void clear() {
        text_.clear();
        spans_.clear();
    }
    void add(std::string_view name, std::string_view value) {
        spans_.push_back({text_.size(), name.size(), value.size()});
        for (char c : name)
            text_.push_back(c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c);
        text_.append(value);
    }
    // Valid until the next clear() (nghttp2 copies what it is given).
    const std::vector<nghttp2_nv> &finish() {
        nv_.resize(spans_.size());
        for (size_t i = 0; i < spans_.size(); ++i) {
            auto *name = reinterpret_cast<uint8_t *>(text_.data() + spans_[i].at);
            nv_[i] = {name, name + spans_[i].name_len, spans_[i].name_len, spans_[i].value_len,
                      NGHTTP2_NV_FLAG_NONE};
        }
        return nv_;
    }

  private:
    struct Span {
        size_t at, name_len, value_len;
    };
    std::string text_;
    std::vector<Span> spans_;
    std::vector<nghttp2_nv> nv_;
};

// The plugin's "Name: value\r\n" lines, without what HTTP/2 forbids (connection-specific fields)
// and, on a 304, without what describes the absent body.
void add_plugin_fields(FieldList &fields, std::string_view lines, int status) {
    while (!lines.empty()) {
        size_t eol = lines.find("\r\n");
        std::string_view line = lines.substr(0, eol);
        lines.remove_prefix(eol == std::string_view::npos ? lines.size() : eol + 2);
        size_t colon = line.find(':');
        if (colon == std::string_view::npos)
            continue;
        std::string_view name = line.substr(0, colon);
        std::string_view value = line.substr(colon + 1);
        while (!value.empty() && value.front() == ' ')
            value.remove_prefix(1);
        if (is_connection_specific(name) || (status == 304 && describes_absent_body(name)))
            continue;
        fields.add(name, value);
    }
}

} // namespace

bool Budget::take(uint64_t now_ms) {
    if (last_ms_ != 0)
        tokens_ = std::min(burst_, tokens_ + static_cast<double>(now_ms - last_ms_) * per_second_ / 1000.0);
    last_ms_ = now_ms;
    if (tokens_ < 1)
        return false;
    tokens_ -= 1;
    return true;
}

// Keeps the connection alive while one of its callbacks runs; what closed meanwhile is freed after.
struct Connection::Guard {
    explicit Guard(Connection *c) : connection(c) { ++c->callback_depth_; }
    ~Guard() {
        if (--connection->callback_depth_ != 0)
            return;
        connection->bury_dead();
        if (connection->state_ == State::Closed)
            delete connection;
    }
    Connection *connection;
};

// ---------------------------------------------------------------------------------------------
// Lifecycle

void Connection::start(WorkerContext &worker, Transport *transport, const sockaddr_in6 &peer,
                       const ListenConfig *listen, std::string_view received, bool counted_tls) {
    auto *connection = new Connection(worker, transport, peer, listen, counted_tls);
    Guard guard(connection);
    transport->hand_over(connection);
    if (!connection->init_session()) {
        connection->close_now();
        return;
    }
    connection->receive(received.data(), received.size());
    if (worker.draining)
        connection->begin_drain(false); // arrived during shutdown: its streams finish, no more
    connection->send_pending();
}

Connection::Connection(WorkerContext &worker, Transport *transport, const sockaddr_in6 &peer,
                       const ListenConfig *listen, bool counted_tls)
    : worker_(worker), transport_(transport), listen_(listen),
      settings_(listen ? listen->http2 : Http2Config{}), peer_(peer), resets_(kResetBurst, kResetsPerSecond),
      empty_frames_(kEmptyFrameBurst, kEmptyFramesPerSecond), idle_since_ms_(worker.timeouts.now()),
      counted_tls_(counted_tls) {
    // Counted as accepted and open by the HTTP/1.1 connection it came from.
    worker_.stats.connections_h2.add();
}

Connection::~Connection() {
    bury_dead();
    worker_.stats.connections_h2.sub();
    worker_.connection_closed(counted_tls_);
}

bool Connection::init_session() {
    nghttp2_session_callbacks *callbacks;
    if (nghttp2_session_callbacks_new(&callbacks) != 0)
        return false;
    nghttp2_session_callbacks_set_send_callback(callbacks, on_send);
    nghttp2_session_callbacks_set_send_data_callback(callbacks, on_send_data);
    nghttp2_session_callbacks_set_on_begin_headers_callback(callbacks, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(callbacks, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks, on_frame_recv);
    nghttp2_session_callbacks_set_on_frame_send_callback(callbacks, on_frame_send);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(callbacks, on_stream_close);
    nghttp2_session_callbacks_set_error_callback2(callbacks, on_error);
    nghttp2_option *options;
    if (nghttp2_option_new(&options) != 0) {
        nghttp2_session_callbacks_del(callbacks);
        return false;
    }
    // Credit for body bytes is given back as they are taken (a paused plugin holds the peer back).
    nghttp2_option_set_no_auto_window_update(options, 1);
    nghttp2_option_set_max_continuations(options, kMaxContinuations);
    // The library's own reset limit answers INTERNAL_ERROR; ours (resets_) comes first.
    nghttp2_option_set_stream_reset_rate_limit(options, 100 * static_cast<uint64_t>(kResetBurst),
                                               100 * static_cast<uint64_t>(kResetsPerSecond));
    int rc = nghttp2_session_server_new2(&session_, callbacks, this, options);
    nghttp2_option_del(options);
    nghttp2_session_callbacks_del(callbacks);
    if (rc != 0)
        return false;
    uint64_t library_streams = std::min<uint64_t>(
        static_cast<uint64_t>(settings_.max_concurrent_streams) * kLibraryStreamsFactor, INT32_MAX);
    nghttp2_settings_entry entries[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, static_cast<uint32_t>(library_streams)},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, settings_.initial_window_size},
        {NGHTTP2_SETTINGS_MAX_FRAME_SIZE, settings_.max_frame_size},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, settings_.max_header_list_size},
        {NGHTTP2_SETTINGS_NO_RFC7540_PRIORITIES, 1},
    };
    if (nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, entries, sizeof entries / sizeof entries[0]) !=
        0)
        return false;
    return nghttp2_session_set_local_window_size(
               session_, NGHTTP2_FLAG_NONE, 0,
               std::max<int32_t>(kConnectionWindow, static_cast<int32_t>(std::min<uint32_t>(
                                                        settings_.initial_window_size, INT32_MAX)))) == 0;
}

void Connection::close_now() {
    if (state_ == State::Closed)
        return;
    state_ = State::Closed;
    TimeoutList::remove(*this);
    std::vector<Stream *> open = streams_;
    dirty_.clear();
    for (Stream *stream : open)
        forget(*stream, peer_done_);
    if (transport_)
        transport_->close();
    transport_ = nullptr;
    nghttp2_session_del(session_);
    session_ = nullptr;
    if (callback_depth_ == 0)
        delete this;
}

void Connection::forget(Stream &stream, bool reset_by_peer) {
    bool was_open = std::erase(streams_, &stream) > 0;
    std::erase(dirty_, &stream);
    if (session_ && state_ != State::Closed)
        nghttp2_session_set_stream_user_data(session_, stream.id, nullptr);
    if (was_open && streams_.empty()) {
        idle_since_ms_ = worker_.timeouts.now();
        worker_.stats.connections_active.sub();
    }
    // A stream a plugin still holds stays with the plugin (see Stream::on_closed); the rest goes
    // once no callback of this connection is on the stack.
    stream.drop_pending_body();
    stream.on_closed(reset_by_peer);
    if (!stream.exchange.held.orphaned)
        dead_.push_back(&stream);
}

void Connection::bury_dead() {
    std::vector<Stream *> dead;
    dead.swap(dead_);
    for (Stream *stream : dead)
        delete stream;
}

void Connection::abort() {
    Guard guard(this);
    close_now();
}

void Connection::begin_drain(bool reload) {
    (void)reload; // either way: the peer opens new streams on a new connection
    Guard guard(this);
    if (state_ != State::Open)
        return;
    state_ = State::Draining;
    nghttp2_submit_goaway(session_, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(session_),
                          NGHTTP2_NO_ERROR, nullptr, 0);
    send_pending();
}

bool Connection::idle() const {
    return state_ != State::Closed && streams_.empty() && output_.empty();
}

void Connection::close_when_done() {
    if (state_ == State::Closed)
        return;
    bool nothing_to_say = !nghttp2_session_want_write(session_) && output_.empty();
    if (nothing_to_say &&
        (!nghttp2_session_want_read(session_) || (state_ == State::Draining && streams_.empty())))
        close_now();
}

void Connection::calm_down(const char *why) {
    SERVER_LOG_INFO("http2: %s; GOAWAY ENHANCE_YOUR_CALM", why);
    nghttp2_session_terminate_session(session_, NGHTTP2_ENHANCE_YOUR_CALM);
}

// ---------------------------------------------------------------------------------------------
// Input

// One read buffer per worker thread: nghttp2 takes every byte of a read before it returns.
static char *read_buffer() {
    static thread_local char buffer[kReadBufferBytes];
    return buffer;
}

std::span<char> Connection::on_read_buffer() {
    // What backs up is the output; then the peer waits.
    if (state_ == State::Closed || output_.buffered_bytes() >= kOutputHighWater)
        return {};
    return {read_buffer(), kReadBufferBytes};
}

void Connection::on_read(size_t n) {
    Guard guard(this);
    if (n == 0) {
        update_timeout();
        return;
    }
    worker_.stats.bytes_in.add(n);
    receive(read_buffer(), n);
    send_pending();
}

void Connection::receive(const char *data, size_t len) {
    if (state_ == State::Closed)
        return;
    sending_ = true; // nghttp2 must not be asked to send from inside its own callbacks
    ssize_t rc = nghttp2_session_mem_recv(session_, reinterpret_cast<const uint8_t *>(data), len);
    sending_ = false;
    if (rc >= 0 || state_ == State::Closed)
        return;
    SERVER_LOG_DEBUG("http2: %s", nghttp2_strerror(static_cast<int>(rc)));
    // The library has queued its GOAWAY where it could (a bad preface has none): say it, then go.
    nghttp2_session_terminate_session(session_, rc == NGHTTP2_ERR_FLOODED ? NGHTTP2_ENHANCE_YOUR_CALM
                                                                          : NGHTTP2_PROTOCOL_ERROR);
}

void Connection::on_read_end(int status) {
    Guard guard(this);
    (void)status;
    // An HTTP/2 client that closes has gone: what it held is abandoned (499).
    peer_done_ = true;
    close_now();
}

void Connection::on_writable() {
    Guard guard(this);
    if (state_ == State::Closed)
        return;
    flush_output();
    send_pending();
}

// ---------------------------------------------------------------------------------------------
// Output

void Connection::mark_dirty(Stream &stream) {
    if (stream.dirty)
        return;
    stream.dirty = true;
    dirty_.push_back(&stream);
}

void Connection::send_pending() {
    if (state_ == State::Closed || sending_)
        return;
    Guard guard(this);
    sending_ = true;
    // Until nghttp2 has nothing more to say, or the transport takes nothing more for now.
    for (;;) {
        submitting_.swap(dirty_); // both keep their capacity: no allocation per answer
        for (Stream *stream : submitting_) {
            stream->dirty = false;
            submit_answer(*stream);
        }
        submitting_.clear();
        uint64_t written_before = bytes_written_;
        if (nghttp2_session_send(session_) != 0) {
            SERVER_LOG_DEBUG("http2: send failed");
            sending_ = false;
            close_now();
            return;
        }
        flush_output();
        if (state_ == State::Closed)
            break;
        // Streams whose queue drained: their plugins may write again (which makes them dirty; no
        // stream closes meanwhile: that happens only inside nghttp2, which is not re-entered).
        for (size_t i = 0; i < streams_.size(); ++i)
            if (streams_[i]->answer.empty() && streams_[i]->exchange.held.hold == Hold::Async)
                notify_plugin_writable(streams_[i]->exchange);
        bool transport_takes_more = write_blocked_ms_ == 0 && output_.empty();
        if (dirty_.empty() && !(transport_takes_more && nghttp2_session_want_write(session_)))
            break;
        if (dirty_.empty() && bytes_written_ == written_before)
            break; // what nghttp2 holds waits for the peer's window
    }
    sending_ = false;
    close_when_done();
    if (state_ != State::Closed)
        update_timeout();
}

void Connection::submit_answer(Stream &stream) {
    if (stream.connection != this || stream.answer_status == 0)
        return;
    if (stream.head_submitted) {
        if (stream.data_deferred) {
            stream.data_deferred = false;
            nghttp2_session_resume_data(session_, stream.id);
        }
        return;
    }
    // Reused per thread: an answer's head costs no allocation once the buffers have grown.
    static thread_local FieldList fields;
    fields.clear();
    char status[8];
    snprintf(status, sizeof status, "%d", stream.answer_status);
    fields.add(":status", status);
    fields.add("date", worker_.date.now());
    fields.add("server", kServerName);
    add_plugin_fields(fields, stream.exchange.request.response_headers, stream.answer_status);
    if (listen_ && transport_->tls_facts() && !listen_->tls.hsts.empty())
        fields.add("strict-transport-security", listen_->tls.hsts);
    char length[24];
    bool bodiless = stream.answer_status < 200 || stream.answer_status == 204 || stream.answer_status == 304;
    if (stream.body_length >= 0 && !bodiless) {
        snprintf(length, sizeof length, "%lld", static_cast<long long>(stream.body_length));
        fields.add("content-length", length);
    }
    const std::vector<nghttp2_nv> &nv = fields.finish();
    nghttp2_data_provider provider;
    provider.source.ptr = &stream;
    provider.read_callback = on_read_data;
    bool no_body = stream.body_complete && stream.answer.empty() && !stream.broken_framing;
    stream.head_submitted = true;
    if (nghttp2_submit_response(session_, stream.id, nv.data(), nv.size(), no_body ? nullptr : &provider) !=
        0)
        nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, stream.id, NGHTTP2_INTERNAL_ERROR);
}

void Connection::flush_output() {
    if (state_ == State::Closed || output_.empty())
        return;
    uint64_t written = 0;
    int error = 0;
    OutputQueue::Flush result = output_.write_to(*transport_, written, error);
    worker_.stats.bytes_out.add(written);
    bytes_written_ += written;
    if (result == OutputQueue::Flush::Failed) {
        SERVER_LOG_DEBUG("http2: write failed: %s", strerror(error));
        peer_done_ = true;
        close_now();
        return;
    }
    if (result == OutputQueue::Flush::Blocked) {
        if (write_blocked_ms_ == 0 || written > 0)
            write_blocked_ms_ = worker_.timeouts.now(); // the send timeout runs from the last progress
        transport_->want_writable(true);
        return;
    }
    if (write_blocked_ms_ != 0) {
        write_blocked_ms_ = 0;
        transport_->want_writable(false);
    }
    transport_->set_reading(true); // reading stopped while the output was backed up
}

// ---------------------------------------------------------------------------------------------
// For the streams

void Connection::consume(Stream &stream, size_t n) {
    if (session_ && n)
        nghttp2_session_consume(session_, stream.id, n);
}

void Connection::reset(Stream &stream, uint32_t error_code) {
    if (!session_)
        return;
    nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, stream.id, error_code);
    send_pending();
}

void Connection::send_continue(Stream &stream) {
    nghttp2_nv status = {reinterpret_cast<uint8_t *>(const_cast<char *>(":status")),
                         reinterpret_cast<uint8_t *>(const_cast<char *>("100")), 7, 3, NGHTTP2_NV_FLAG_NONE};
    nghttp2_submit_headers(session_, NGHTTP2_FLAG_NONE, stream.id, nullptr, &status, 1, nullptr);
}

void Connection::on_stream_mail(Stream &stream, unsigned bits) {
    Guard guard(this);
    if (state_ == State::Closed)
        return;
    auto alive = [this, &stream] { return state_ != State::Closed && stream.connection == this; };
    handle_mail(stream.exchange, bits, alive);
    if (state_ != State::Closed)
        send_pending();
}

// ---------------------------------------------------------------------------------------------
// Deadlines: one timer for the connection, at the earliest of what its streams wait for.

uint64_t Connection::next_deadline(TimeoutKind &kind) const {
    const Limits &limits = worker_.limits();
    uint64_t best = std::numeric_limits<uint64_t>::max();
    auto consider = [&](TimeoutKind k, uint64_t at) {
        if (at < best) {
            best = at;
            kind = k;
        }
    };
    if (write_blocked_ms_)
        consider(kSendTimeout, write_blocked_ms_ + limits.send_timeout_ms);
    for (const Stream *stream : streams_) {
        const Exchange &ex = stream->exchange;
        if (stream->window_wait_ms)
            consider(kSendTimeout, stream->window_wait_ms + limits.send_timeout_ms);
        if (!stream->head_complete)
            consider(kHeaderTimeout, stream->activity_ms + limits.header_timeout_ms);
        else if ((ex.held.held() || ex.stream.active) && !ex.held.gave_up)
            consider(kHandlerTimeout, stream->activity_ms + limits.handler_timeout_ms);
        else if (!stream->request_complete && !ex.body_paused && !ex.request.answered)
            consider(kBodyTimeout, stream->activity_ms + limits.body_timeout_ms);
    }
    if (streams_.empty() && state_ == State::Open)
        consider(kKeepaliveTimeout, idle_since_ms_ + limits.keepalive_timeout_ms);
    if (best == std::numeric_limits<uint64_t>::max())
        consider(kKeepaliveTimeout, worker_.timeouts.now() + limits.keepalive_timeout_ms);
    return best;
}

void Connection::update_timeout() {
    if (state_ == State::Closed)
        return;
    uint64_t now = worker_.timeouts.now();
    // A stream whose answer waits for the peer's window (held at zero, the slowloris of HTTP/2)
    // runs the send timeout from when it began to wait.
    int32_t connection_window = nghttp2_session_get_remote_window_size(session_);
    for (Stream *stream : streams_) {
        bool waiting = stream->head_submitted && !stream->answer.empty() &&
                       (connection_window <= 0 ||
                        nghttp2_session_get_stream_remote_window_size(session_, stream->id) <= 0);
        if (!waiting)
            stream->window_wait_ms = 0;
        else if (stream->window_wait_ms == 0)
            stream->window_wait_ms = now;
    }
    TimeoutKind kind = kKeepaliveTimeout;
    // Never in the past: the worker's timer would find this connection due again at once.
    uint64_t at = std::max(next_deadline(kind), now + 1);
    worker_.timeouts.start_at(*this, worker_.timeout_list(kind), at);
}

void Connection::on_timeout(TimeoutKind) {
    Guard guard(this);
    if (state_ == State::Closed)
        return;
    check_deadlines(worker_.timeouts.now());
    if (state_ == State::Closed)
        return;
    send_pending();
    update_timeout(); // every open connection sits on a list
}

void Connection::check_deadlines(uint64_t now) {
    const Limits &limits = worker_.limits();
    if (write_blocked_ms_ && now >= write_blocked_ms_ + limits.send_timeout_ms) {
        SERVER_LOG_DEBUG("http2: the peer took nothing for %u ms; closing", limits.send_timeout_ms);
        close_now();
        return;
    }
    if (streams_.empty() && now >= idle_since_ms_ + limits.keepalive_timeout_ms) {
        if (state_ == State::Open)
            begin_drain(false);
        else
            close_now(); // a GOAWAY already said goodbye; what it still owes the peer is dropped
        return;
    }
    std::vector<Stream *> open = streams_;
    for (Stream *stream : open) {
        if (stream->connection != this)
            continue;
        Exchange &ex = stream->exchange;
        if (!stream->head_complete) {
            if (now >= stream->activity_ms + limits.header_timeout_ms) {
                // A header block left half-way blocks the whole connection (HPACK): it goes.
                SERVER_LOG_DEBUG("http2: stream %d: header block timed out; closing", stream->id);
                close_now();
                return;
            }
        } else if (stream->window_wait_ms && now >= stream->window_wait_ms + limits.send_timeout_ms) {
            SERVER_LOG_DEBUG("http2: stream %d waited %u ms for the peer's window; reset", stream->id,
                             limits.send_timeout_ms);
            nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, stream->id, NGHTTP2_CANCEL);
        } else if ((ex.held.held() || ex.stream.active) && !ex.held.gave_up) {
            if (now >= stream->activity_ms + limits.handler_timeout_ms)
                on_handler_timeout(ex);
        } else if (!stream->request_complete && !ex.body_paused && !ex.request.answered &&
                   now >= stream->activity_ms + limits.body_timeout_ms) {
            SERVER_LOG_DEBUG("http2: stream %d: request timed out", stream->id);
            respond_error(ex, 408);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// nghttp2 callbacks

ssize_t Connection::on_send(nghttp2_session *, const uint8_t *data, size_t length, int,
                            void *user_data) noexcept {
    Connection *self = self_of(user_data);
    if (self->output_.buffered_bytes() >= kOutputHighWater)
        return NGHTTP2_ERR_WOULDBLOCK;
    if (!self->settings_rewritten_) {
        // The first frame is the server's SETTINGS (submitted before anything else).
        self->settings_rewritten_ = true;
        std::string frame(reinterpret_cast<const char *>(data), length);
        rewrite_stream_limit(frame, self->settings_.max_concurrent_streams);
        self->output_.append(frame);
        return static_cast<ssize_t>(length);
    }
    self->output_.append(std::string_view(reinterpret_cast<const char *>(data), length));
    return static_cast<ssize_t>(length);
}

int Connection::on_send_data(nghttp2_session *, nghttp2_frame *, const uint8_t *frame_head, size_t length,
                             nghttp2_data_source *source, void *user_data) noexcept {
    Connection *self = self_of(user_data);
    auto *stream = static_cast<Stream *>(source->ptr);
    if (self->output_.buffered_bytes() >= kOutputHighWater)
        return NGHTTP2_ERR_WOULDBLOCK;
    OutputQueue::Mark before = self->output_.mark();
    self->output_.append(std::string_view(reinterpret_cast<const char *>(frame_head), 9));
    if (!stream->answer.move_front_to(self->output_, length)) {
        // A file shrank under the answer: the stream cannot keep its promise.
        self->output_.rollback(before);
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    stream->window_wait_ms = 0;
    stream->activity_ms = self->worker_.timeouts.now(); // a slow reader is not a silent plugin
    return 0;
}

ssize_t Connection::on_read_data(nghttp2_session *, int32_t, uint8_t *, size_t length, uint32_t *flags,
                                 nghttp2_data_source *source, void *) noexcept {
    auto *stream = static_cast<Stream *>(source->ptr);
    size_t pending = stream->answer.pending_bytes();
    if (pending == 0) {
        if (stream->broken_framing || (stream->cut_after_queued && !stream->body_complete))
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; // RST_STREAM: the answer cannot be finished
        if (stream->body_complete) {
            *flags |= NGHTTP2_DATA_FLAG_EOF;
            return 0;
        }
        stream->data_deferred = true;
        return NGHTTP2_ERR_DEFERRED;
    }
    size_t n = std::min(pending, length);
    *flags |= NGHTTP2_DATA_FLAG_NO_COPY;
    if (n == pending && stream->body_complete && !stream->broken_framing)
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    return static_cast<ssize_t>(n);
}

int Connection::on_begin_headers(nghttp2_session *session, const nghttp2_frame *frame,
                                 void *user_data) noexcept {
    Connection *self = self_of(user_data);
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    int32_t id = frame->hd.stream_id;
    if (self->streams_.size() >= self->settings_.max_concurrent_streams) {
        // RFC 9113 section 5.1.2: a stream error; its fields are still decoded (HPACK state).
        nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, id, NGHTTP2_REFUSED_STREAM);
        return 0;
    }
    auto *stream = new Stream(self, id, self->worker_);
    nghttp2_session_set_stream_user_data(session, id, stream);
    if (self->streams_.empty())
        self->worker_.stats.connections_active.add();
    self->streams_.push_back(stream);
    self->worker_.stats.requests.add();
    self->worker_.stats.requests_h2.add();
    return 0;
}

int Connection::on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
                          size_t name_len, const uint8_t *value, size_t value_len, uint8_t, void *) noexcept {
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0; // trailer fields are dropped, as HTTP/1.1 drops them
    if (Stream *stream = stream_of(session, frame->hd.stream_id))
        stream->add_field({reinterpret_cast<const char *>(name), name_len},
                          {reinterpret_cast<const char *>(value), value_len});
    return 0;
}

int Connection::on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame,
                              void *user_data) noexcept {
    Connection *self = self_of(user_data);
    uint64_t now = self->worker_.timeouts.now();
    bool ends_stream = frame->hd.flags & NGHTTP2_FLAG_END_STREAM;
    switch (frame->hd.type) {
    case NGHTTP2_HEADERS:
        if (Stream *stream = stream_of(session, frame->hd.stream_id)) {
            if (frame->headers.cat == NGHTTP2_HCAT_REQUEST)
                stream->on_head_complete(ends_stream);
            if (ends_stream && stream->connection == self)
                stream->on_request_complete();
        }
        break;
    case NGHTTP2_DATA:
        if (frame->hd.length == 0 && !ends_stream && !self->empty_frames_.take(now))
            self->calm_down("empty DATA frames faster than a client needs them");
        if (Stream *stream = stream_of(session, frame->hd.stream_id); stream && ends_stream)
            stream->on_request_complete();
        break;
    case NGHTTP2_RST_STREAM:
        if (Stream *stream = stream_of(session, frame->hd.stream_id))
            stream->peer_reset = true;
        if (!self->resets_.take(now))
            self->calm_down("streams reset faster than a client needs to (Rapid Reset)");
        break;
    default:
        break;
    }
    return 0;
}

int Connection::on_frame_send(nghttp2_session *session, const nghttp2_frame *frame, void *) noexcept {
    // An answer complete before its request (413, 431, an early answer): the peer need not send
    // the rest (RFC 9113 section 8.1).
    if ((frame->hd.type == NGHTTP2_HEADERS || frame->hd.type == NGHTTP2_DATA) &&
        (frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
        if (Stream *stream = stream_of(session, frame->hd.stream_id); stream && !stream->request_complete)
            nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, frame->hd.stream_id, NGHTTP2_NO_ERROR);
    return 0;
}

int Connection::on_data_chunk(nghttp2_session *session, uint8_t, int32_t stream_id, const uint8_t *data,
                              size_t len, void *) noexcept {
    Stream *stream = stream_of(session, stream_id);
    if (!stream) {
        nghttp2_session_consume_connection(session, len); // a refused stream's body
        return 0;
    }
    stream->on_body(data, len);
    return 0;
}

int Connection::on_stream_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code,
                                void *user_data) noexcept {
    (void)error_code;
    if (Stream *stream = stream_of(session, stream_id))
        self_of(user_data)->forget(*stream, stream->peer_reset);
    return 0;
}

int Connection::on_error(nghttp2_session *, int, const char *message, size_t len, void *) noexcept {
    SERVER_LOG_DEBUG("http2: %.*s", static_cast<int>(len), message);
    return 0;
}

} // namespace trellis::http2
