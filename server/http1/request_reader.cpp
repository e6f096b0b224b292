#include "http1/request_reader.hpp"

#include "log/log.hpp"

#include <algorithm>

namespace trellis::http1 {

const llhttp_settings_t &RequestReader::settings() {
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

void RequestReader::start(RequestSink *sink, trellis_request *request, const char *buffer) {
    sink_ = sink;
    request_ = request;
    buffer_ = buffer;
    llhttp_init(&parser_, HTTP_REQUEST, &settings());
    parser_.data = this;
    // Any "HTTP/d.d" gets through to check_head, which takes a higher 1.x as 1.1 (RFC 9110
    // section 2.5). llhttp 8.1 honours the flag but has no setter for it (9.0 does).
    parser_.lenient_flags |= LENIENT_VERSION;
    in_message_ = in_body_ = in_header_field_ = in_header_value_ = false;
    request_start = head_end = 0;
    error_status_ = 0;
}

RequestReader::Outcome RequestReader::execute(size_t from, size_t end, size_t &consumed_to) {
    parse_from_ = from;
    head_pause_ = false;
    body_verdict_ = RequestSink::BodyVerdict::Take;
    llhttp_errno_t err = llhttp_execute(&parser_, buffer_ + from, end - from);
    if (err == HPE_OK) {
        consumed_to = end;
        const trellis_request &r = *request_;
        size_t after_target = r.target.offset + r.target.length;
        if (!in_message_ || in_body_)
            return Outcome::NeedMore;
        if (r.target.length &&
            is_http09_request_line(r, std::string_view(buffer_ + after_target, end - after_target))) {
            error_status_ = 505;
            return Outcome::Error;
        }
        if (end - request_start > sink_->max_head_bytes()) {
            // A head that keeps growing is refused before it fills the buffer.
            error_status_ = (r.header_count == 0 && !in_header_field_) ? 414 : 431;
            return Outcome::Error;
        }
        return Outcome::NeedMore;
    }
    if (err == HPE_PAUSED) {
        consumed_to = static_cast<size_t>(llhttp_get_error_pos(&parser_) - buffer_);
        llhttp_resume(&parser_);
        if (body_verdict_ == RequestSink::BodyVerdict::Fail)
            return Outcome::BodyFailed;
        if (body_verdict_ == RequestSink::BodyVerdict::Pause)
            return Outcome::BodyPaused;
        return head_pause_ ? Outcome::HeadForStreamer : Outcome::MessageComplete;
    }
    if (!error_status_)
        error_status_ =
            status_for_parse_error(err, std::string_view(buffer_ + request_start, end - request_start));
    SERVER_LOG_DEBUG("bad request (%d): %s %s", error_status_, llhttp_errno_name(err),
                     llhttp_get_error_reason(&parser_) ? llhttp_get_error_reason(&parser_) : "");
    in_message_ = false;
    return Outcome::Error;
}

// Each callback records spans; the checks llhttp leaves to us happen at the end of each header and
// of the head.

int RequestReader::on_message_begin(llhttp_t *p) noexcept {
    RequestReader &reader = from(p);
    reader.request_->reset();
    reader.in_message_ = true;
    reader.in_body_ = reader.in_header_field_ = reader.in_header_value_ = false;
    reader.head_facts_ = {};
    reader.error_status_ = 0;
    reader.request_start = reader.parse_from_; // refined by on_method, which sees the first byte
    reader.chunk_extension_bytes_ = 0;
    reader.body_received = 0;
    reader.sink_->on_message_begin();
    return 0;
}

int RequestReader::on_method(llhttp_t *p, const char *at, size_t len) noexcept {
    RequestReader &reader = from(p);
    trellis_request &r = *reader.request_;
    uint32_t offset = reader.offset_of(at);
    if (r.method.length == 0) {
        r.method.offset = offset;
        reader.request_start = offset;
    }
    r.method.length = offset + static_cast<uint32_t>(len) - r.method.offset;
    return 0;
}

int RequestReader::on_url(llhttp_t *p, const char *at, size_t len) noexcept {
    RequestReader &reader = from(p);
    trellis_request &r = *reader.request_;
    uint32_t offset = reader.offset_of(at);
    if (r.target.length == 0)
        r.target.offset = offset;
    r.target.length = offset + static_cast<uint32_t>(len) - r.target.offset;
    if (offset + len - reader.request_start > reader.sink_->max_head_bytes())
        return reader.refuse(414);
    return 0;
}

int RequestReader::on_header_field(llhttp_t *p, const char *at, size_t len) noexcept {
    RequestReader &reader = from(p);
    trellis_request &r = *reader.request_;
    if (reader.in_body_)
        return 0; // trailer fields are dropped: they must not change what the head said
    uint32_t offset = reader.offset_of(at);
    if (!reader.in_header_field_) {
        if (r.header_count == kMaxHeaders)
            return reader.refuse(431);
        reader.in_header_field_ = true;
        r.headers[r.header_count++] = HeaderSpan{{offset, 0}, {offset, 0}};
    }
    HeaderSpan &h = r.headers[r.header_count - 1];
    h.name.length = offset + static_cast<uint32_t>(len) - h.name.offset;
    if (offset + len - reader.request_start > reader.sink_->max_head_bytes())
        return reader.refuse(431);
    return 0;
}

int RequestReader::on_header_field_complete(llhttp_t *p) noexcept {
    from(p).in_header_field_ = false;
    return 0;
}

int RequestReader::on_header_value(llhttp_t *p, const char *at, size_t len) noexcept {
    RequestReader &reader = from(p);
    if (reader.in_body_)
        return 0;
    trellis_request &r = *reader.request_;
    HeaderSpan &h = r.headers[r.header_count - 1];
    uint32_t offset = reader.offset_of(at);
    if (!reader.in_header_value_) {
        reader.in_header_value_ = true;
        h.value.offset = offset;
    }
    h.value.length = offset + static_cast<uint32_t>(len) - h.value.offset;
    if (offset + len - reader.request_start > reader.sink_->max_head_bytes())
        return reader.refuse(431);
    return 0;
}

int RequestReader::on_header_value_complete(llhttp_t *p) noexcept {
    RequestReader &reader = from(p);
    reader.in_header_value_ = false;
    if (reader.in_body_)
        return 0;
    const trellis_request &r = *reader.request_;
    const HeaderSpan &header = r.headers[r.header_count - 1];
    if (int status = check_header_field(r.str(header.name), r.str(header.value), reader.head_facts_))
        return reader.refuse(status);
    return 0;
}

int RequestReader::on_headers_complete(llhttp_t *p) noexcept {
    RequestReader &reader = from(p);
    if (int status = reader.head_checks())
        return reader.refuse(status);
    // A plugin that streams bodies gets the request now, outside the parser.
    if (!reader.sink_->on_head_complete()) {
        reader.head_pause_ = true;
        return HPE_PAUSED;
    }
    return 0;
}

int RequestReader::head_checks() {
    trellis_request &r = *request_;
    in_body_ = true;
    // Where the head's spans end: the connection keeps the head up to here while the body streams
    // through the buffer behind it.
    auto span_end = [](Span span) { return static_cast<size_t>(span.offset) + span.length; };
    head_end = std::max(span_end(r.method), span_end(r.target));
    for (size_t i = 0; i < r.header_count; ++i)
        head_end = std::max({head_end, span_end(r.headers[i].name), span_end(r.headers[i].value)});
    if (int status = check_head(r, parser_, head_facts_))
        return status;
    bool has_body =
        (parser_.flags & F_CHUNKED) || ((parser_.flags & F_CONTENT_LENGTH) && parser_.content_length > 0);
    if ((parser_.flags & F_CONTENT_LENGTH) && parser_.content_length > sink_->max_body_bytes())
        return 413; // before any 100 Continue: the client need not send the body at all
    if (head_facts_.expect_continue && has_body && r.version == 11)
        sink_->on_continue_expected();
    return 0;
}

int RequestReader::on_body(llhttp_t *p, const char *at, size_t len) noexcept {
    RequestReader &reader = from(p);
    reader.body_received += len;
    if (reader.sink_->body_streamed()) {
        RequestSink::BodyVerdict verdict = reader.sink_->on_streamed_body(at, len);
        if (verdict == RequestSink::BodyVerdict::Take)
            return 0;
        reader.body_verdict_ = verdict;
        return HPE_PAUSED;
    }
    std::string &body = reader.request_->body;
    if (body.size() + len > reader.sink_->max_body_bytes())
        return reader.refuse(413);
    body.append(at, len);
    return 0;
}

int RequestReader::on_chunk_header(llhttp_t *p) noexcept {
    RequestReader &reader = from(p);
    // A chunk that would take a buffered body past the limit is refused when it is announced, as
    // a Content-Length over the limit is, not after its bytes were read.
    if (!reader.sink_->body_streamed() &&
        reader.request_->body.size() + p->content_length > reader.sink_->max_body_bytes())
        return reader.refuse(413);
    return 0;
}

int RequestReader::on_chunk_extension(llhttp_t *p, const char *at, size_t len) noexcept {
    (void)at;
    RequestReader &reader = from(p);
    // Extensions carry nothing we use, and they count against neither the head nor the body:
    // without a bound a client could make us parse them for ever (CVE-2024-22019).
    reader.chunk_extension_bytes_ += static_cast<uint32_t>(len);
    if (reader.chunk_extension_bytes_ > reader.sink_->max_head_bytes())
        return reader.refuse(413);
    return 0;
}

int RequestReader::on_message_complete(llhttp_t *p) noexcept {
    if (!from(p).in_body_) // a head without on_headers_complete cannot happen; be safe
        return -1;
    // Pause so the connection answers this request before llhttp looks at the next one.
    return HPE_PAUSED;
}

} // namespace trellis::http1
