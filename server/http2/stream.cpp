#include "http2/stream.hpp"

#include "dispatch.hpp"
#include "held_answers.hpp"
#include "http/request_target.hpp"
#include "http2/connection.hpp"
#include "log/log.hpp"
#include "plugin/loader.hpp"
#include "responses.hpp"
#include "router.hpp"

#include <charconv>
#include <llhttp.h>
#include <uv.h>

namespace trellis::http2 {
namespace {

// llhttp's number for a method (what plugins and the file answers compare), -1 for one it does not
// know (501, as on HTTP/1.1).
int method_code(std::string_view method) {
#define TRELLIS_METHOD(number, name, text)                                                                   \
    if (method == #text)                                                                                     \
        return number;
    HTTP_METHOD_MAP(TRELLIS_METHOD)
#undef TRELLIS_METHOD
    return -1;
}

void recycle_stream(Exchange *, void *stream) {
    delete static_cast<Stream *>(stream);
}

} // namespace

Stream::Stream(Connection *owner, int32_t stream_id, WorkerContext &worker)
    : connection(owner), id(stream_id), exchange(&worker) {
    exchange.owner = this;
    exchange.recycle = recycle_stream;
    exchange.recycle_context = this;
    exchange.peer = exchange.client = owner->peer();
    exchange.request.version = 20;
    activity_ms = rate_started_ms_ = worker.timeouts.now();
    head_.reserve(256);
}

void Stream::touch() {
    activity_ms = exchange.worker->timeouts.now();
}

// ---------------------------------------------------------------------------------------------
// The request

void Stream::add_field(std::string_view name, std::string_view value) {
    if (refused_status_)
        return;
    // Bounded twice: as HTTP/1.1 counts a head, and as RFC 9113 counts a decoded list (an HPACK
    // bomb decodes small frames into large lists).
    field_bytes_ += name.size() + value.size() + 4;
    list_bytes_ += name.size() + value.size() + 32;
    if (field_bytes_ > exchange.worker->limits().max_header_bytes ||
        list_bytes_ > connection->settings().max_header_list_size) {
        refused_status_ = 431;
        return;
    }
    trellis_request &r = exchange.request;
    auto keep = [this](std::string_view text) {
        Span span{static_cast<uint32_t>(head_.size()), static_cast<uint32_t>(text.size())};
        head_.append(text);
        return span;
    };
    if (!name.empty() && name[0] == ':') {
        if (name == ":method") {
            r.method = keep(value);
            has_method_ = true;
        } else if (name == ":path") {
            r.target = keep(value);
            has_path_ = true;
        } else if (name == ":authority" && r.header_count < kMaxHeaders) {
            // What HTTP/1.1's Host says (RFC 9113 section 8.3.1); first, so it is the one read.
            Span host_name = keep("host");
            r.headers[r.header_count++] = {host_name, keep(value)};
        }
        return; // :scheme and :protocol are checked by nghttp2 and needed by nobody
    }
    if (name == "cookie") {
        // Browsers send each cookie in a field of its own; plugins read one Cookie header.
        cookies_.append(cookies_.empty() ? "" : "; ").append(value);
        return;
    }
    if (r.header_count == kMaxHeaders) {
        refused_status_ = 431;
        return;
    }
    Span field_name = keep(name);
    r.headers[r.header_count++] = {field_name, keep(value)};
}

int Stream::check_head() {
    trellis_request &r = exchange.request;
    if (!has_method_ || !has_path_)
        return 400; // nghttp2 lets CONNECT through without :path
    std::string_view method = r.str(r.method);
    int code = method_code(method);
    if (code < 0)
        return 501;
    r.llhttp_method = static_cast<uint8_t>(code);
    r.is_head = code == HTTP_HEAD;
    if (code == HTTP_CONNECT)
        return 405; // never a tunnel
    if (int status = parse_request_target(r))
        return status;
    if (code == HTTP_TRACE)
        return 405;
    std::string_view length;
    uint64_t declared = 0;
    if (r.header("content-length", length) &&
        std::from_chars(length.data(), length.data() + length.size(), declared).ec == std::errc() &&
        declared > exchange.worker->limits().max_body_bytes)
        return 413; // before any 100 Continue: the client need not send the body at all
    return 0;
}

void Stream::on_head_complete(bool ends_stream) {
    trellis_request &r = exchange.request;
    if (!cookies_.empty() && !refused_status_) {
        if (r.header_count == kMaxHeaders) {
            refused_status_ = 431;
        } else {
            Span name{static_cast<uint32_t>(head_.size()), 6};
            head_.append("cookie");
            Span value{static_cast<uint32_t>(head_.size()), static_cast<uint32_t>(cookies_.size())};
            head_.append(cookies_);
            r.headers[r.header_count++] = {name, value};
        }
        std::string().swap(cookies_);
    }
    r.base = head_.data(); // the head is complete: it never moves again
    head_complete = true;
    touch();
    if (refused_status_) {
        refuse(refused_status_);
        return;
    }
    if (int status = check_head()) {
        refuse(status);
        return;
    }
    std::string_view expect;
    if (!ends_stream && r.header("expect", expect) && iequals(expect, "100-continue"))
        connection->send_continue(*this);
    // A plugin that streams bodies gets the request at its head, before the body.
    if (route_to_body_streamer(exchange)) {
        dispatch_head(exchange);
        dispatched = exchange.body_streamed; // declined: dispatched with the whole body
    }
}

void Stream::refuse(int status) {
    if (!exchange.request.answered)
        respond_error(exchange, status);
}

void Stream::on_body(const uint8_t *data, size_t len) {
    touch();
    body_bytes_ += len;
    rate_bytes_ += len;
    const Limits &limits = exchange.worker->limits();
    uint64_t elapsed = activity_ms - rate_started_ms_;
    if (limits.min_body_rate_bps && !exchange.body_paused && elapsed > limits.min_body_rate_grace_ms &&
        rate_bytes_ * 1000 < limits.min_body_rate_bps * elapsed) {
        SERVER_LOG_DEBUG("http2: stream %d: request body below limits.min_body_rate_bps", id);
        connection->consume(*this, len);
        if (exchange.held.held())
            fail_held_request(exchange, 408);
        else
            connection->reset(*this, NGHTTP2_CANCEL);
        return;
    }
    const char *bytes = reinterpret_cast<const char *>(data);
    if (exchange.body_streamed) {
        deliver_body(bytes, len);
        return;
    }
    connection->consume(*this, len);
    if (exchange.request.answered)
        return; // answered before its body: the rest is dropped
    std::string &body = exchange.request.body;
    if (body.size() + len > limits.max_body_bytes) {
        refuse(413);
        return;
    }
    body.append(bytes, len);
}

void Stream::deliver_body(const char *data, size_t len) {
    HeldRequest &held = exchange.held;
    if (!held.held() || !held.holder) {
        // Answered before the body, or the plugin let go early: the rest is dropped.
        connection->consume(*this, len);
        return;
    }
    if (exchange.body_paused) {
        pending_body_.append(data, len); // no credit given back: the peer waits
        return;
    }
    BodyTaken taken = give_body(exchange, data, len, false);
    connection->consume(*this, len);
    if (taken == BodyTaken::Paused)
        exchange.body_paused = true;
    else if (taken == BodyTaken::Failed)
        fail_held_request(exchange, 500);
}

void Stream::on_request_complete() {
    request_complete = true;
    touch();
    if (exchange.body_streamed) {
        HeldRequest &held = exchange.held;
        if (exchange.body_paused || !held.held() || !held.holder)
            return; // a paused body ends when the plugin resumes it
        if (give_body(exchange, nullptr, 0, true) == BodyTaken::Failed)
            fail_held_request(exchange, 500);
        return;
    }
    if (dispatched || exchange.request.answered)
        return;
    dispatched = true;
    exchange.started_ns = uv_hrtime();
    dispatch(exchange);
}

void Stream::on_closed(bool client_left) {
    connection = nullptr;
    if (!exchange.held.held()) {
        exchange.owner = nullptr;
        return;
    }
    // The plugin keeps the exchange until it lets go (recycle_stream frees the stream then). An
    // answer that went out whole is no abort: the stream simply ended before the release came.
    if (!client_left && exchange.request.answered && !exchange.stream.active)
        detach_finished(exchange);
    else
        abandon_held(exchange, client_left);
}

void Stream::drop_pending_body() {
    if (connection && !pending_body_.empty())
        connection->consume(*this, pending_body_.size());
    std::string().swap(pending_body_);
}

// ---------------------------------------------------------------------------------------------
// The answer (ExchangeOwner)

void Stream::queue_head(Exchange &, int status, int64_t length) {
    answer_status = status;
    body_length = length;
    touch();
    connection->mark_dirty(*this);
}

void Stream::queue_body(Exchange &, std::string_view bytes) {
    answer.append(bytes);
    touch();
    connection->mark_dirty(*this);
}

OutputQueue &Stream::body_queue(Exchange &) {
    connection->mark_dirty(*this);
    return answer;
}

void Stream::queue_end(Exchange &, bool complete) {
    body_complete = true;
    broken_framing = !complete;
    connection->mark_dirty(*this);
}

size_t Stream::queued_output(const Exchange &) const {
    return answer.pending_bytes();
}

void Stream::flush(Exchange &) {
    if (!exchange.held.held())
        drop_pending_body(); // the plugin let go of a paused body: the peer may send the rest
    connection->send_pending();
}

void Stream::end_after_answer(Exchange &) {
    cut_after_queued = true;
    connection->mark_dirty(*this);
}

void Stream::end_now(Exchange &) {
    connection->reset(*this, NGHTTP2_INTERNAL_ERROR);
}

void Stream::resume_body(Exchange &) {
    if (!exchange.body_paused)
        return;
    exchange.body_paused = false;
    rate_bytes_ = 0; // the plugin's pause is not the client's slowness
    rate_started_ms_ = exchange.worker->timeouts.now();
    std::string pending;
    pending.swap(pending_body_);
    if (!pending.empty())
        deliver_body(pending.data(), pending.size());
    if (connection && !exchange.body_paused && request_complete)
        on_request_complete();
}

void Stream::exchange_changed(Exchange &) {
    touch();
    connection->update_timeout();
}

void Stream::on_mail(Exchange &, unsigned bits) {
    touch();
    connection->on_stream_mail(*this, bits);
}

bool Stream::secure() const {
    return connection->transport().tls_facts() != nullptr;
}

bool Stream::covers_host(std::string_view host) const {
    return connection->transport().covers_host(host);
}

const ListenConfig *Stream::listen() const {
    return connection->listen();
}

std::shared_ptr<const TlsFacts> Stream::shared_tls_facts() const {
    return connection->transport().shared_tls_facts();
}

} // namespace trellis::http2
