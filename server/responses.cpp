#include "responses.hpp"

#include "http/file_response.hpp"
#include "http/http_date.hpp"
#include "http/status_text.hpp"
#include "log/log.hpp"
#include "output_queue.hpp"
#include "plugin/loader.hpp"
#include "router.hpp"
#include "worker_context.hpp"

#include <cstdio>
#include <fcntl.h>
#include <llhttp.h>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

namespace trellis {
namespace {

// Files up to this size are read into the output buffer, so a batch of small responses still
// leaves in one write; larger ones go out with send_file.
constexpr uint64_t kInlineFileBytes = 64 * 1024;

bool bodiless_status(int status) {
    return status < 200 || status == 204 || status == 304;
}

const char *holder_name(const Exchange &ex) {
    return ex.held.holder ? ex.held.holder->name().c_str() : "?";
}

// Queues the head and marks the request answered (counted by status class).
void queue_head(Exchange &ex, int status, int64_t body_length) {
    ex.owner->queue_head(ex, status, body_length);
    ex.request.answered = true;
    ex.worker->stats.responses_by_class[status / 100 % 6].add();
}

bool queue_file_bytes(Exchange &ex, int fd, uint64_t offset, uint64_t length) {
    OutputQueue &queue = ex.owner->body_queue(ex);
    if (length <= kInlineFileBytes)
        return queue.append_file_contents(fd, offset, length);
    // Large: sent later with send_file, from a descriptor of its own (the caller's may be a
    // cached one, or shared by several ranges).
    int own = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (own < 0)
        return false;
    queue.append_file(own, offset, length);
    return true;
}

// Validators and conditionals of a 200 answer (true when that answered the request: 304, 412),
// and the ranges asked for.
bool answered_by_file_validators(Exchange &ex, const struct stat &st, uint32_t max_ranges,
                                 RangeOutcome &outcome, std::vector<ByteRange> &ranges) {
    trellis_request &r = ex.request;
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
        respond(ex, 304, {});
        return true;
    case Precondition::Failed:
        respond_error(ex, 412);
        return true;
    case Precondition::Proceed:
        break;
    }
    std::string_view range, if_range;
    if (r.llhttp_method == HTTP_GET && r.header("range", range) &&
        (!r.header("if-range", if_range) || if_range_matches(if_range, etag, st.st_mtim.tv_sec)))
        outcome = parse_ranges(range, size, max_ranges, ranges);
    return false;
}

void respond_range_not_satisfiable(Exchange &ex, uint64_t size) {
    trellis_request &r = ex.request;
    char content_range[48];
    snprintf(content_range, sizeof content_range, "bytes */%llu", static_cast<unsigned long long>(size));
    // The body is a short text now: drop the file's type and coding, keep the rest (Vary,
    // Cache-Control, ...).
    take_header(r.response_headers, "Content-Type");
    take_header(r.response_headers, "Content-Encoding");
    r.response_headers.append("Content-Type: text/plain; charset=utf-8\r\nContent-Range: ");
    r.response_headers.append(content_range).append("\r\n");
    respond(ex, 416, "416 Range Not Satisfiable\n");
}

bool queue_single_range(Exchange &ex, int fd, const ByteRange &range, uint64_t size, uint64_t &body_bytes) {
    trellis_request &r = ex.request;
    char content_range[96];
    snprintf(content_range, sizeof content_range, "Content-Range: bytes %llu-%llu/%llu\r\n",
             static_cast<unsigned long long>(range.first), static_cast<unsigned long long>(range.last),
             static_cast<unsigned long long>(size));
    r.response_headers.append(content_range);
    queue_head(ex, 206, static_cast<int64_t>(range.length()));
    body_bytes = range.length();
    return r.is_head || queue_file_bytes(ex, fd, range.first, range.length());
}

// multipart/byteranges (RFC 9110 section 14.6): each part names its range and the type.
bool queue_multipart_ranges(Exchange &ex, int fd, const struct stat &st, const std::vector<ByteRange> &ranges,
                            uint64_t &body_bytes) {
    trellis_request &r = ex.request;
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
    queue_head(ex, 206, static_cast<int64_t>(total));
    body_bytes = total;
    if (r.is_head)
        return true;
    OutputQueue &queue = ex.owner->body_queue(ex);
    for (size_t i = 0; i < ranges.size(); ++i) {
        queue.append(part_heads[i]);
        if (!queue_file_bytes(ex, fd, ranges[i].first, ranges[i].length()))
            return false;
    }
    queue.append(tail);
    return true;
}

} // namespace

void respond(Exchange &ex, int status, std::string_view body) {
    trellis_request &r = ex.request;
    bool bodiless = bodiless_status(status);
    queue_head(ex, status, bodiless ? -1 : static_cast<int64_t>(body.size()));
    if (!r.is_head && !bodiless && !body.empty())
        ex.owner->body_queue(ex).append(body);
    ex.owner->queue_end(ex, true);
    record_response(ex, status, r.is_head || bodiless ? 0 : body.size());
}

void respond_error(Exchange &ex, int status) {
    trellis_request &r = ex.request;
    r.response_headers.assign("Content-Type: text/plain; charset=utf-8\r\n");
    if (status == 405 && (r.llhttp_method == HTTP_CONNECT || r.llhttp_method == HTTP_TRACE)) {
        // One Allow per resource: the route's plugin names its methods (the static plugin's
        // "GET, HEAD", as on its own 405s); else every method a plugin is given.
        const char *allow = "GET, HEAD, POST, PUT, DELETE, OPTIONS";
        const Router *router = ex.worker->router;
        int index = router && r.llhttp_method == HTTP_TRACE ? router->next_match(r.host, r.path, 0) : -1;
        if (index >= 0 && router->route(index).plugin->allow())
            allow = router->route(index).plugin->allow();
        r.response_headers.append("Allow: ").append(allow).append("\r\n");
    }
    char body[96];
    int n = snprintf(body, sizeof body, "%d %s\n", status, std::string(status_text(status)).c_str());
    respond(ex, status, std::string_view(body, static_cast<size_t>(n)));
}

bool respond_file(Exchange &ex, const FileResponse &file) {
    trellis_request &r = ex.request;
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
        respond_error(ex, 500);
        return false;
    }
    const uint64_t size = static_cast<uint64_t>(st.st_size);
    int status = file.status;
    static thread_local std::vector<ByteRange> ranges; // scratch, keeps its capacity
    ranges.clear();
    RangeOutcome outcome = RangeOutcome::Full;
    if (status == 200 &&
        answered_by_file_validators(ex, st, file.max_ranges ? file.max_ranges : 16, outcome, ranges)) {
        release_fd();
        return true;
    }
    if (outcome == RangeOutcome::Unsatisfiable) {
        release_fd();
        respond_range_not_satisfiable(ex, size);
        return true;
    }
    OutputQueue::Mark before_answer = ex.owner->body_queue(ex).mark();
    uint64_t body_bytes = size;
    bool ok = true;
    if (outcome == RangeOutcome::Partial) {
        status = 206;
        ok = ranges.size() == 1 ? queue_single_range(ex, file.fd, ranges[0], size, body_bytes)
                                : queue_multipart_ranges(ex, file.fd, st, ranges, body_bytes);
    } else {
        queue_head(ex, status, static_cast<int64_t>(size));
        if (!r.is_head && size > 0)
            ok = queue_file_bytes(ex, file.fd, 0, size);
    }
    release_fd();
    if (!ok) {
        // A read error before anything of this answer left: take it back and answer 500.
        ex.owner->body_queue(ex).rollback(before_answer);
        ex.worker->stats.responses_by_class[status / 100 % 6].sub();
        r.answered = false;
        respond_error(ex, 500);
        return false;
    }
    ex.owner->queue_end(ex, true);
    record_response(ex, status, r.is_head ? 0 : body_bytes);
    return true;
}

bool start_stream(Exchange &ex, int status, int64_t content_length) {
    if (status < 200 || status > 999 || status == 204 || status == 304)
        return false;
    ex.stream = StreamState{};
    ex.stream.status = status;
    if (content_length >= 0) {
        ex.stream.declared = true;
        ex.stream.length = static_cast<uint64_t>(content_length);
    }
    queue_head(ex, status, content_length);
    ex.stream.active = true;
    return true;
}

size_t stream_write(Exchange &ex, std::string_view data) {
    StreamState &stream = ex.stream;
    if (stream.active && !data.empty() && !ex.request.is_head) {
        if (stream.declared && data.size() > stream.length - stream.sent) {
            SERVER_LOG_ERROR(
                "plugin \"%s\" wrote more than the Content-Length it gave (%llu); the excess is dropped",
                holder_name(ex), static_cast<unsigned long long>(stream.length));
            data = data.substr(0, stream.length - stream.sent);
        }
        ex.owner->queue_body(ex, data);
        stream.sent += data.size();
    }
    return ex.owner->queued_output(ex);
}

void end_stream(Exchange &ex) {
    StreamState &stream = ex.stream;
    if (!stream.active)
        return;
    stream.active = false;
    bool complete = !stream.declared || stream.sent >= stream.length || ex.request.is_head;
    if (!complete)
        SERVER_LOG_ERROR("plugin \"%s\" ended its response after %llu of %llu promised bytes; closing the "
                         "connection",
                         holder_name(ex), static_cast<unsigned long long>(stream.sent),
                         static_cast<unsigned long long>(stream.length));
    ex.owner->queue_end(ex, complete);
    record_response(ex, stream.status, ex.request.is_head ? 0 : stream.sent);
}

std::string take_header(std::string &headers, std::string_view name) {
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

} // namespace trellis
