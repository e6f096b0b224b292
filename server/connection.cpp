#include "connection.hpp"

#include "http/file_response.hpp"
#include "http/http_date.hpp"
#include "http/path.hpp"
#include "http/status_text.hpp"
#include "log/log.hpp"
#include "plugin/loader.hpp"
#include "router.hpp"
#include "worker_context.hpp"

#include <algorithm>
#include <arpa/inet.h>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace trellis {
namespace {

// Stop parsing more pipelined requests while this much output waits to be written.
constexpr size_t kMaxQueuedOutput = 1 << 20;
// ... or while this many files wait to be sent: each holds a descriptor.
constexpr size_t kMaxQueuedFiles = 8;
// Files up to this size are read into the output buffer, so a batch of small responses still
// leaves in one write; larger ones go out with send_file.
constexpr uint64_t kInlineFileBytes = 64 * 1024;
constexpr uint64_t kLingerMs = 2000;
constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";

Connection *from_parser(llhttp_t *p) {
    return static_cast<Connection *>(p->data);
}

bool is_tchar(unsigned char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           strchr("!#$%&'*+-.^_`|~", c) != nullptr;
}

// Host header syntax (RFC 9110 section 7.2 / RFC 3986 authority without userinfo).
bool valid_host(std::string_view host) {
    for (unsigned char c : host) {
        bool ok = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                  strchr("-._~!$&'()*+,;=:[]%", c) != nullptr;
        if (!ok || c == '\0')
            return false;
    }
    return true;
}

// "Example.COM:8080" -> "example.com"; "[::1]:80" -> "[::1]". False when the port is not digits.
bool normalize_host(std::string_view raw, std::string &out) {
    out.clear();
    if (!valid_host(raw))
        return false;
    std::string_view name = raw;
    if (!raw.empty() && raw[0] == '[') {
        size_t close = raw.find(']');
        if (close == std::string_view::npos)
            return false;
        name = raw.substr(0, close + 1);
        std::string_view rest = raw.substr(close + 1);
        if (!rest.empty() && rest[0] != ':')
            return false;
    } else if (size_t colon = raw.find(':'); colon != std::string_view::npos) {
        name = raw.substr(0, colon);
    }
    std::string_view port = raw.substr(name.size());
    if (!port.empty()) {
        port.remove_prefix(1);
        for (char c : port)
            if (c < '0' || c > '9')
                return false;
    }
    out.reserve(name.size());
    for (char c : name)
        out += (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
    return true;
}

// Validates a Transfer-Encoding list (RFC 9112 section 6.1): 0 when it ends in a single
// "chunked", 501 for a coding we do not implement, 400 when chunked is not last or repeated.
int check_transfer_encoding(std::string_view list) {
    int chunked_seen = 0;
    bool last_is_chunked = false, unknown = false;
    while (true) {
        size_t comma = list.find(',');
        std::string_view item = list.substr(0, comma);
        while (!item.empty() && (item.front() == ' ' || item.front() == '\t'))
            item.remove_prefix(1);
        while (!item.empty() && (item.back() == ' ' || item.back() == '\t'))
            item.remove_suffix(1);
        if (!item.empty()) {
            last_is_chunked = iequals(item, "chunked");
            chunked_seen += last_is_chunked ? 1 : 0;
            unknown = unknown || !last_is_chunked;
        }
        if (comma == std::string_view::npos)
            break;
        list.remove_prefix(comma + 1);
    }
    if (!last_is_chunked || chunked_seen != 1)
        return 400;
    return unknown ? 501 : 0;
}

void append_number(std::string &out, uint64_t value) {
    char digits[24];
    auto end = std::to_chars(digits, digits + sizeof digits, value).ptr;
    out.append(digits, end);
}

} // namespace

// ---------------------------------------------------------------------------------------------
// ActiveSession and pool

ActiveSession::ActiveSession(size_t read_buffer_size)
    : read_buffer(new char[read_buffer_size]), read_capacity(read_buffer_size) {
    request.base = read_buffer.get();
}

ActiveSession::~ActiveSession() {
    for (size_t i = segment_index; i < segments.size(); ++i)
        if (segments[i].fd >= 0)
            ::close(segments[i].fd);
}

void ActiveSession::reset_for_reuse() {
    for (size_t i = segment_index; i < segments.size(); ++i)
        if (segments[i].fd >= 0)
            ::close(segments[i].fd);
    segments.clear();
    segment_index = 0;
    open_files = 0;
    if (out.capacity() > (256u << 10))
        std::string().swap(out);
    out.clear();
    read_end = parse_pos = request_start = head_end = 0;
    in_message = in_body = in_header_field = in_header_value = false;
    host_count = 0;
    expect_continue = false;
    error_status = 0;
    request.reset();
    request.connection = nullptr;
}

SessionPool::~SessionPool() {
    for (ActiveSession *s : free_)
        delete s;
}

ActiveSession *SessionPool::acquire() {
    if (free_.empty())
        return new ActiveSession(read_buffer_size_);
    ActiveSession *s = free_.back();
    free_.pop_back();
    return s;
}

void SessionPool::release(ActiveSession *session) {
    session->reset_for_reuse();
    // Keep enough for the busy connections of a worker; an idle server gives memory back.
    if (free_.size() < 256)
        free_.push_back(session);
    else
        delete session;
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
    ++worker_.stats.connections_accepted;
}

Connection::~Connection() {
    if (worker_.open_connections)
        worker_.open_connections->fetch_sub(1, std::memory_order_relaxed);
    if (--worker_.connections == 0 && worker_.draining && worker_.on_drained)
        worker_.on_drained(worker_.on_drained_data);
}

void Connection::close_now() {
    if (closed_)
        return;
    closed_ = true;
    TimeoutList::remove(*this);
    transport_->close();
    transport_ = nullptr;
    if (session_) {
        worker_.pool.release(session_);
        session_ = nullptr;
    }
    if (callback_depth_ == 0)
        delete this;
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
    if (s && (s->in_message || s->segment_index < s->segments.size() || s->parse_pos < s->read_end)) {
        // A request in the middle finishes: worker_.draining makes its answer say
        // "Connection: close" (after_message). Answers already being written end the connection.
        if (!s->in_message)
            close_after_flush_ = true;
        return;
    }
    // Bytes already in the socket are a request on its way: let it arrive and be answered too.
    if (!transport_->has_unread_input())
        close_now();
}

void Connection::start_lingering() {
    // Closing a socket with unread input makes the kernel send RST, which can destroy the response
    // still in flight. Send FIN, read and drop what the client still sends, then close.
    lingering_ = true;
    if (session_) {
        worker_.pool.release(session_);
        session_ = nullptr;
    }
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
    if (session_ && session_->segment_index < session_->segments.size())
        kind = kSendTimeout;
    else if (session_ && session_->in_message && session_->in_body)
        kind = kBodyTimeout;
    else if ((session_ && session_->in_message) || (!session_ && transport_->handshaking()))
        kind = kHeaderTimeout; // a TLS handshake (or the first byte on "auto") shares the head's deadline
    else
        kind = kKeepaliveTimeout;
    TimeoutList &target = worker_.timeout_list(kind);
    // The header deadline counts from the first byte of the request, so later reads do not
    // restart it; the others are inactivity timeouts and restart on progress.
    if ((kind == kHeaderTimeout || kind == kKeepaliveTimeout) && list == &target)
        return;
    worker_.timeouts.start(*this, target);
}

void Connection::on_timeout(TimeoutKind kind) {
    Guard guard(this);
    switch (kind) {
    case kHeaderTimeout:
    case kBodyTimeout:
        TRELLIS_LOG_DEBUG("request timed out (%s)", kind == kHeaderTimeout ? "head" : "body");
        if (session_ && session_->segment_index == session_->segments.size()) {
            close_after_flush_ = true;
            keep_alive_ = false;
            respond_error(408);
            flush();
        } else {
            close_now();
        }
        break;
    default:
        close_now();
        break;
    }
}

void Connection::release_session_if_idle() {
    ActiveSession *s = session_;
    if (!s || s->in_message || s->parse_pos != s->read_end || s->segment_index != s->segments.size())
        return;
    worker_.pool.release(s);
    session_ = nullptr;
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
        llhttp_init(&session_->parser, HTTP_REQUEST, &parser_settings());
        session_->parser.data = this;
    }
    ActiveSession &s = *session_;
    // While a response waits for the socket or input is left unparsed, take nothing more: the
    // client is held back by TCP instead of by our memory.
    if (write_blocked_ || s.parse_pos < s.read_end)
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
    // Any bytes restart the keep-alive clock, even when they complete a request at once and the
    // connection is idle again before update_timeout looks.
    if (list == &worker_.timeout_list(kKeepaliveTimeout))
        TimeoutList::remove(*this);
    process_input();
    update_timeout();
}

void Connection::on_read_end(int status) {
    Guard guard(this);
    if (status < 0 || lingering_) {
        if (status < 0 && status != UV_ECONNRESET && status != -ECONNRESET)
            TRELLIS_LOG_DEBUG("connection read error: %s", strerror(-status));
        close_now();
        return;
    }
    peer_done_ = true;
    transport_->set_reading(false);
    // A half-closed client still gets the answers to what it sent (after_flush closes once they
    // are written); a request cut short by the EOF is dropped.
    bool pending_output = session_ && session_->segment_index < session_->segments.size();
    bool unparsed_input = session_ && session_->parse_pos < session_->read_end;
    if (!pending_output && !unparsed_input)
        close_now();
}

void Connection::process_input() {
    ActiveSession &s = *session_;
    while (!closed_ && !close_after_flush_ && s.parse_pos < s.read_end && s.out.size() < kMaxQueuedOutput &&
           s.open_files < kMaxQueuedFiles) {
        if (!parse_step())
            break;
    }
    if (closed_)
        return;
    if (close_after_flush_)
        s.parse_pos = s.read_end; // nothing after the last answered request is ever run
    compact_read_buffer();
    flush();
}

bool Connection::parse_step() {
    ActiveSession &s = *session_;
    const char *base = s.read_buffer.get();
    llhttp_errno_t err = llhttp_execute(&s.parser, base + s.parse_pos, s.read_end - s.parse_pos);
    if (err == HPE_OK) {
        s.parse_pos = s.read_end;
        if (s.in_message && !s.in_body && is_http09_request_line()) {
            s.error_status = 505;
            err = HPE_USER;
        } else if (s.in_message && !s.in_body &&
                   s.read_end - s.request_start > worker_.limits().max_header_bytes) {
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
        after_message();
        return !closed_;
    }
    int status = s.error_status ? s.error_status : status_for_parse_error(err);
    TRELLIS_LOG_DEBUG("bad request (%d): %s %s", status, llhttp_errno_name(err),
                      llhttp_get_error_reason(&s.parser) ? llhttp_get_error_reason(&s.parser) : "");
    // The stream can no longer be trusted: answer and close, never parse past this point.
    close_after_flush_ = true;
    keep_alive_ = false;
    s.in_message = false;
    respond_error(status);
    return false;
}

bool Connection::is_http09_request_line() const {
    // "GET /\r\n" is a whole HTTP/0.9 request, but llhttp decides only on the byte after the
    // CRLF, which an HTTP/0.9 client never sends: recognise it here instead of at the header
    // timeout.
    const ActiveSession &s = *session_;
    const Request &r = s.request;
    if (r.header_count != 0 || r.target.length == 0)
        return false;
    size_t after = r.target.offset + r.target.length;
    std::string_view tail(s.read_buffer.get() + after, s.read_end - after);
    return tail == "\r\n" || tail == "\n";
}

int Connection::status_for_parse_error(llhttp_errno_t err) const {
    const ActiveSession &s = *session_;
    std::string_view rest(s.read_buffer.get() + s.request_start, s.read_end - s.request_start);
    switch (err) {
    case HPE_INVALID_METHOD: {
        // A well-formed token llhttp does not know is a method we do not implement (RFC 9110
        // section 9.1); anything else is garbage.
        size_t space = rest.find(' ');
        if (space == std::string_view::npos || space == 0)
            return 400;
        for (size_t i = 0; i < space; ++i)
            if (!is_tchar(static_cast<unsigned char>(rest[i])))
                return 400;
        return 501;
    }
    case HPE_INVALID_VERSION: {
        size_t http = rest.find(" HTTP/");
        size_t eol = rest.find('\r');
        if (http != std::string_view::npos && (eol == std::string_view::npos || http < eol))
            return 505;
        return 400;
    }
    case HPE_INVALID_TRANSFER_ENCODING:
        return 400;
    default:
        return 400;
    }
}

void Connection::compact_read_buffer() {
    ActiveSession &s = *session_;
    if (s.parse_pos < s.read_end)
        return; // paused on unparsed input; it stays where it is
    if (!s.in_message) {
        s.read_end = s.parse_pos = s.request_start = s.head_end = 0;
        return;
    }
    // Keep the current request's head (spans point into it); body bytes are already copied out.
    size_t keep_end = s.in_body ? s.head_end : s.read_end;
    size_t shift = s.request_start;
    if (shift > 0) {
        memmove(s.read_buffer.get(), s.read_buffer.get() + shift, keep_end - shift);
        Request &r = s.request;
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
    }
    s.read_end = s.parse_pos = keep_end - shift;
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
    s.host_count = 0;
    s.expect_continue = false;
    s.error_status = 0;
    s.request_start = s.parse_pos; // refined by on_method, which sees the first byte
    // Each request gets its own header deadline from its first byte, even when it arrives in the
    // same read as the end of the previous one.
    TimeoutList::remove(*c);
    ++c->worker_.stats.requests;
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
    if (offset + len - s.request_start > c->worker_.limits().max_header_bytes) {
        s.error_status = 414;
        return -1;
    }
    return 0;
}

int Connection::on_header_field(llhttp_t *p, const char *at, size_t len) noexcept {
    Connection *c = from_parser(p);
    ActiveSession &s = *c->session_;
    Request &r = s.request;
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
    if (offset + len - s.request_start > c->worker_.limits().max_header_bytes) {
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
    if (offset + len - s.request_start > c->worker_.limits().max_header_bytes) {
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
    int status = c->check_header(s.request.headers[s.request.header_count - 1]);
    if (status) {
        s.error_status = status;
        return -1;
    }
    return 0;
}

int Connection::check_header(const HeaderSpan &header) {
    ActiveSession &s = *session_;
    std::string_view name = s.request.str(header.name);
    std::string_view value = s.request.str(header.value);
    if (name.empty())
        return 400;
    // obs-fold (CVE-2024-27982) and stray CR/LF or NUL inside a value: llhttp 8.1 lets them
    // through; RFC 9112 section 5.2 allows rejecting them, and we do.
    for (char ch : value)
        if (ch == '\r' || ch == '\n' || ch == '\0')
            return 400;
    for (char ch : name)
        if (!is_tchar(static_cast<unsigned char>(ch)))
            return 400;
    if (iequals(name, "host"))
        ++s.host_count;
    else if (iequals(name, "expect")) {
        if (!iequals(value, "100-continue"))
            return 417;
        s.expect_continue = true;
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
    return 0;
}

int Connection::headers_complete() {
    ActiveSession &s = *session_;
    Request &r = s.request;
    llhttp_t &p = s.parser;
    s.in_body = true;
    // Where the head's spans end: compact_read_buffer keeps the head up to here while the body
    // streams through the buffer behind it.
    auto span_end = [](Span span) { return static_cast<size_t>(span.offset) + span.length; };
    s.head_end = std::max(span_end(r.method), span_end(r.target));
    for (size_t i = 0; i < r.header_count; ++i)
        s.head_end = std::max({s.head_end, span_end(r.headers[i].name), span_end(r.headers[i].value)});
    if (p.http_major != 1 || p.http_minor > 1)
        return 505;
    r.version = p.http_minor == 0 ? 10 : 11;
    r.llhttp_method = static_cast<uint8_t>(p.method);
    r.is_head = p.method == HTTP_HEAD;
    if (p.method == HTTP_CONNECT)
        return 405; // never a tunnel
    // No plugin can take the connection over, so Upgrade is ignored (RFC 9110 section 7.8 allows
    // it) and the request is an ordinary one; llhttp would otherwise stop parsing after it.
    p.upgrade = 0;
    if (s.host_count > 1 || (r.version == 11 && s.host_count == 0))
        return 400;
    std::string_view value;
    if (r.header("transfer-encoding", value)) {
        if (r.version == 10)
            return 400; // RFC 9112 section 6.1: TE in 1.0 means the framing cannot be trusted
        std::string joined;
        for (size_t i = 0; i < r.header_count; ++i)
            if (iequals(r.str(r.headers[i].name), "transfer-encoding"))
                joined.append(joined.empty() ? "" : ",").append(r.str(r.headers[i].value));
        if (int status = check_transfer_encoding(joined))
            return status;
    }
    if (int status = parse_target())
        return status;
    uint64_t max_body = worker_.limits().max_body_bytes;
    bool has_body = (p.flags & F_CHUNKED) || ((p.flags & F_CONTENT_LENGTH) && p.content_length > 0);
    if ((p.flags & F_CONTENT_LENGTH) && p.content_length > max_body)
        return 413; // before any 100 Continue: the client need not send the body at all
    if (s.expect_continue && has_body && r.version == 11) {
        s.segments.push_back({s.out.size(), s.out.size() + kContinue.size(), -1});
        s.out.append(kContinue);
    }
    return 0;
}

int Connection::parse_target() {
    ActiveSession &s = *session_;
    Request &r = s.request;
    std::string_view target = r.str(r.target);
    std::string_view authority;
    size_t path_start = 0;
    if (target.size() >= 7 && (iequals(target.substr(0, 7), "http://") ||
                               (target.size() >= 8 && iequals(target.substr(0, 8), "https://")))) {
        // absolute-form (RFC 9112 section 3.2.2): the authority in the target wins over Host.
        size_t scheme_end = target.find("://") + 3;
        size_t end = target.find_first_of("/?", scheme_end);
        authority = target.substr(scheme_end, end == std::string_view::npos ? end : end - scheme_end);
        if (authority.empty() || authority.find('@') != std::string_view::npos)
            return 400;
        path_start = end == std::string_view::npos ? target.size() : end;
    } else if (target.empty() || target[0] != '/') {
        return 400;
    }
    std::string_view rest = target.substr(path_start);
    size_t question = rest.find('?');
    std::string_view raw_path = rest.substr(0, question);
    if (question != std::string_view::npos) {
        r.query.offset = static_cast<uint32_t>(r.target.offset + path_start + question + 1);
        r.query.length = static_cast<uint32_t>(rest.size() - question - 1);
    }
    if (raw_path.empty())
        raw_path = "/";
    if (PathError error = normalize_path(raw_path, r.path); error != PathError::None) {
        TRELLIS_LOG_DEBUG("bad request (400): %s", path_error_text(error));
        return 400;
    }
    std::string_view host_header;
    bool has_host = r.header("host", host_header);
    if (!authority.empty()) {
        if (!normalize_host(authority, r.host))
            return 400;
        if (has_host && !valid_host(host_header))
            return 400;
    } else if (has_host && !normalize_host(host_header, r.host)) {
        return 400;
    }
    return 0;
}

int Connection::on_body(llhttp_t *p, const char *at, size_t len) noexcept {
    Connection *c = from_parser(p);
    ActiveSession &s = *c->session_;
    if (s.request.body.size() + len > c->worker_.limits().max_body_bytes) {
        s.error_status = 413;
        return -1;
    }
    s.request.body.append(at, len);
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
    dispatch();
}

bool Connection::redirect_to_https() {
    Request &r = session_->request;
    const std::string &to = listen_->redirect_to_https;
    std::string location;
    if (to == "same-host") {
        if (r.host.empty()) {
            respond_error(400);
            return true;
        }
        location = "https://" + r.host; // the port is dropped: https on 443
    } else {
        location = to;
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

void Connection::dispatch() {
    Request &r = session_->request;
    if (listen_ && !listen_->redirect_to_https.empty() && !transport_->tls_facts())
        if (redirect_to_https())
            return;
    if (!transport_->covers_host(r.host)) {
        // RFC 9110 section 15.5.20: this connection's certificate (chosen by SNI) is not the one
        // for this host, so the request belongs on another connection.
        respond_error(421);
        return;
    }
    const Router *router = worker_.router;
    int index = -1;
    while (router && (index = router->next_match(r.host, r.path, index + 1)) >= 0) {
        const Route &route = router->route(index);
        r.route = &route;
        r.path_below = std::string_view(r.path).substr(route.prefix.back() == '/' ? route.prefix.size() - 1
                                                                                  : route.prefix.size());
        if (r.path_below.empty())
            r.path_below = "/";
        PluginInstance *plugin = route.plugin;
        int rc = plugin->plugin->on_request(plugin->instance, &r);
        if (rc == TRELLIS_DECLINED && !r.answered)
            continue;
        if (rc == TRELLIS_OK && r.answered)
            return;
        if (rc == TRELLIS_ERROR)
            TRELLIS_LOG_ERROR("plugin \"%s\" failed on %.*s %.*s", plugin->name().c_str(),
                              static_cast<int>(r.method.length), r.str(r.method).data(),
                              static_cast<int>(r.target.length), r.str(r.target).data());
        else if (!r.answered)
            TRELLIS_LOG_ERROR("plugin \"%s\" returned %d without answering", plugin->name().c_str(), rc);
        if (!r.answered)
            respond_error(500);
        return;
    }
    respond_error(404);
}

void Connection::write_head(int status, uint64_t content_length, bool with_length) {
    ActiveSession &s = *session_;
    std::string &out = s.out;
    size_t start = out.size();
    out.append("HTTP/1.1 ");
    append_number(out, static_cast<uint64_t>(status));
    out += ' ';
    out.append(status_text(status));
    out.append("\r\nDate: ");
    out.append(worker_.date.now());
    out.append("\r\nServer: trellis\r\n");
    out.append(s.request.response_headers);
    if (listen_ && !listen_->tls.hsts.empty() && transport_->tls_facts()) {
        out.append("Strict-Transport-Security: ");
        out.append(listen_->tls.hsts);
        out.append("\r\n");
    }
    if (with_length) {
        out.append("Content-Length: ");
        append_number(out, content_length);
        out.append("\r\n");
    }
    if (close_after_flush_ || !keep_alive_)
        out.append("Connection: close\r\n");
    else if (s.request.version == 10)
        out.append("Connection: keep-alive\r\n");
    out.append("\r\n");
    OutSegment *last = s.segments.empty() ? nullptr : &s.segments.back();
    if (last && last->fd < 0 && last->end == start && s.segments.size() > s.segment_index)
        last->end = out.size();
    else
        s.segments.push_back({start, out.size(), -1});
    s.request.answered = true;
    ++worker_.stats.responses_by_class[status / 100 % 6];
}

void Connection::append_body(std::string_view body) {
    ActiveSession &s = *session_;
    size_t start = s.out.size();
    s.out.append(body);
    OutSegment &last = s.segments.back();
    if (last.fd < 0 && last.end == start)
        last.end = s.out.size();
    else
        s.segments.push_back({start, s.out.size(), -1});
}

void Connection::log_access(int status, uint64_t body_bytes) {
    if (!worker_.access_log.enabled())
        return;
    Request &r = session_->request;
    char peer[64];
    size_t n = peer_text(peer, sizeof peer);
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
    worker_.access_log.append(entry);
}

void Connection::respond(int status, std::string_view body) {
    Request &r = session_->request;
    bool bodiless = status < 200 || status == 204 || status == 304;
    write_head(status, body.size(), !bodiless);
    if (!r.is_head && !bodiless)
        append_body(body);
    log_access(status, r.is_head || bodiless ? 0 : body.size());
}

void Connection::respond_error(int status) {
    Request &r = session_->request;
    r.response_headers.assign("Content-Type: text/plain; charset=utf-8\r\n");
    if (status == 405 && r.llhttp_method == HTTP_CONNECT)
        r.response_headers.append("Allow: GET, HEAD, POST, PUT, DELETE, OPTIONS\r\n");
    char body[96];
    int n = snprintf(body, sizeof body, "%d %s\n", status, std::string(status_text(status)).c_str());
    respond(status, std::string_view(body, static_cast<size_t>(n)));
}

bool Connection::respond_file(const FileResponse &file) {
    Request &r = session_->request;
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
    std::vector<ByteRange> &ranges = s.ranges;
    ranges.clear();
    RangeOutcome outcome = RangeOutcome::Full;
    if (status == 200) {
        FileEtag tag =
            file_etag(static_cast<uint64_t>(st.st_ino), size, st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
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
            release_fd();
            respond(304, {});
            return true;
        case Precondition::Failed:
            release_fd();
            respond_error(412);
            return true;
        case Precondition::Proceed:
            break;
        }
        std::string_view range, if_range;
        if (r.llhttp_method == HTTP_GET && r.header("range", range) &&
            (!r.header("if-range", if_range) || if_range_matches(if_range, etag, st.st_mtim.tv_sec)))
            outcome = parse_ranges(range, size, file.max_ranges ? file.max_ranges : 16, ranges);
    }
    if (outcome == RangeOutcome::Unsatisfiable) {
        release_fd();
        char content_range[48];
        snprintf(content_range, sizeof content_range, "bytes */%llu", static_cast<unsigned long long>(size));
        // The body is a short text now: drop the file's type and coding, keep the rest (Vary,
        // Cache-Control, ...).
        take_header(r.response_headers, "Content-Type");
        take_header(r.response_headers, "Content-Encoding");
        r.response_headers.append("Content-Type: text/plain; charset=utf-8\r\nContent-Range: ");
        r.response_headers.append(content_range).append("\r\n");
        respond(416, "416 Range Not Satisfiable\n");
        return true;
    }

    size_t out_mark = s.out.size(), segments_mark = s.segments.size();
    uint64_t body_bytes = 0;
    bool ok = true;
    if (outcome == RangeOutcome::Partial && ranges.size() == 1) {
        const ByteRange &only = ranges[0];
        char content_range[96];
        snprintf(content_range, sizeof content_range, "Content-Range: bytes %llu-%llu/%llu\r\n",
                 static_cast<unsigned long long>(only.first), static_cast<unsigned long long>(only.last),
                 static_cast<unsigned long long>(size));
        r.response_headers.append(content_range);
        status = 206;
        write_head(status, only.length(), true);
        if (!r.is_head)
            ok = queue_file_bytes(file.fd, only.first, only.length());
        body_bytes = only.length();
    } else if (outcome == RangeOutcome::Partial) {
        // multipart/byteranges (RFC 9110 section 14.6): each part names its range and the type.
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
        status = 206;
        write_head(status, total, true);
        if (!r.is_head) {
            for (size_t i = 0; ok && i < ranges.size(); ++i) {
                append_body(part_heads[i]);
                ok = queue_file_bytes(file.fd, ranges[i].first, ranges[i].length());
            }
            if (ok)
                append_body(tail);
        }
        body_bytes = total;
    } else {
        write_head(status, size, true);
        if (!r.is_head && size > 0)
            ok = queue_file_bytes(file.fd, 0, size);
        body_bytes = size;
    }
    release_fd();
    if (!ok) {
        // A read error before anything of this answer left: take it back and answer 500.
        for (size_t i = segments_mark; i < s.segments.size(); ++i)
            if (s.segments[i].fd >= 0) {
                ::close(s.segments[i].fd);
                --s.open_files;
            }
        s.segments.resize(segments_mark);
        if (!s.segments.empty() && s.segments.back().fd < 0 && s.segments.back().end > out_mark)
            s.segments.back().end = out_mark;
        s.out.resize(out_mark);
        --worker_.stats.responses_by_class[status / 100 % 6];
        respond_error(500);
        return false;
    }
    log_access(status, r.is_head ? 0 : body_bytes);
    return true;
}

bool Connection::queue_file_bytes(int fd, uint64_t offset, uint64_t length) {
    ActiveSession &s = *session_;
    if (length <= kInlineFileBytes) {
        // Read now, behind what is queued, so a batch of small answers still leaves in one write.
        size_t start = s.out.size();
        s.out.resize(start + length);
        size_t done = 0;
        while (done < length) {
            ssize_t n =
                pread(fd, s.out.data() + start + done, length - done, static_cast<off_t>(offset + done));
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                break;
            done += static_cast<size_t>(n);
        }
        if (done != length) {
            s.out.resize(start);
            return false;
        }
        OutSegment &last = s.segments.back();
        if (last.fd < 0 && last.end == start)
            last.end = s.out.size();
        else
            s.segments.push_back({start, s.out.size(), -1});
        return true;
    }
    // Large: sent later with send_file, from a descriptor of its own (the caller's may be a
    // cached one, or shared by several ranges).
    int own = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (own < 0)
        return false;
    s.segments.push_back({offset, offset + length, own});
    ++s.open_files;
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

size_t Connection::peer_text(char *buf, size_t len) const {
    char ip[INET6_ADDRSTRLEN] = "?";
    int written;
    if (peer_.sin6_family == AF_INET6) {
        inet_ntop(AF_INET6, &peer_.sin6_addr, ip, sizeof ip);
        written = snprintf(buf, len, "[%s]:%u", ip, ntohs(peer_.sin6_port));
    } else {
        const auto *v4 = reinterpret_cast<const sockaddr_in *>(&peer_);
        inet_ntop(AF_INET, &v4->sin_addr, ip, sizeof ip);
        written = snprintf(buf, len, "%s:%u", ip, ntohs(v4->sin_port));
    }
    return written > 0 && static_cast<size_t>(written) < len ? static_cast<size_t>(written) : 0;
}

// ---------------------------------------------------------------------------------------------
// Output: every response of a batch goes out in one write; files in between go by send_file.

void Connection::flush() {
    ActiveSession &s = *session_;
    constexpr int kMaxIov = 64;
    while (s.segment_index < s.segments.size()) {
        OutSegment &segment = s.segments[s.segment_index];
        ssize_t n;
        if (segment.fd >= 0) {
            n = transport_->send_file(segment.fd, static_cast<int64_t>(segment.begin),
                                      segment.end - segment.begin);
        } else {
            struct iovec iov[kMaxIov];
            int count = 0;
            for (size_t i = s.segment_index; i < s.segments.size() && count < kMaxIov; ++i) {
                if (s.segments[i].fd >= 0)
                    break;
                iov[count].iov_base = s.out.data() + s.segments[i].begin;
                iov[count].iov_len = s.segments[i].end - s.segments[i].begin;
                ++count;
            }
            n = transport_->write(iov, count);
        }
        if (n == -EAGAIN) {
            write_blocked_ = true;
            transport_->want_writable(true);
            update_timeout();
            return;
        }
        if (n == 0 && segment.fd >= 0)
            n = -EIO; // the file shrank under us: the promised Content-Length cannot be kept
        if (n < 0) {
            TRELLIS_LOG_DEBUG("write failed: %s", strerror(static_cast<int>(-n)));
            close_now();
            return;
        }
        // Advance over what was taken; a send_file result only ever covers the current segment.
        size_t taken = static_cast<size_t>(n);
        while (s.segment_index < s.segments.size()) {
            OutSegment &current = s.segments[s.segment_index];
            size_t left = current.end - current.begin;
            if (taken < left) {
                current.begin += taken;
                break;
            }
            taken -= left;
            current.begin = current.end;
            if (current.fd >= 0) {
                ::close(current.fd);
                current.fd = -1;
                --s.open_files;
            }
            ++s.segment_index;
        }
    }
    s.segments.clear();
    s.segment_index = 0;
    s.out.clear();
    if (write_blocked_) {
        write_blocked_ = false;
        transport_->want_writable(false);
    }
    after_flush();
}

void Connection::after_flush() {
    if (closed_)
        return;
    if (close_after_flush_) {
        finish_and_close();
        return;
    }
    ActiveSession &s = *session_;
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
