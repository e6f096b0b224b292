#include "http1/response_writer.hpp"

#include "http/request.hpp"
#include "http/response_fields.hpp"
#include "http/status_text.hpp"

#include <charconv>
#include <cstdio>

namespace trellis::http1 {
namespace {

void append_number(std::string &out, uint64_t value) {
    char digits[24];
    auto end = std::to_chars(digits, digits + sizeof digits, value).ptr;
    out.append(digits, end);
}

void append_304_fields(std::string &out, std::string_view fields) {
    while (!fields.empty()) {
        size_t eol = fields.find("\r\n");
        std::string_view line = fields.substr(0, eol == std::string_view::npos ? eol : eol + 2);
        if (!describes_absent_body(line.substr(0, line.find(':'))))
            out.append(line);
        fields.remove_prefix(line.size());
    }
}

} // namespace

Persistence persistence_for(bool closing, int http_version) {
    if (closing)
        return Persistence::Close;
    return http_version == 10 ? Persistence::AnnouncedKeepAlive : Persistence::KeepAlive;
}

BodyFraming framing_for_stream(int64_t content_length, int http_version) {
    if (content_length >= 0)
        return BodyFraming::ContentLength;
    return http_version == 11 ? BodyFraming::Chunked : BodyFraming::UntilClose;
}

void append_response_head(std::string &out, const ResponseHead &head) {
    out.append("HTTP/1.1 ");
    append_number(out, static_cast<uint64_t>(head.status));
    out += ' ';
    out.append(status_text(head.status));
    out.append("\r\nDate: ");
    out.append(head.date);
    out.append("\r\nServer: trellis\r\n");
    if (head.status == 304)
        append_304_fields(out, head.fields);
    else
        out.append(head.fields);
    if (!head.hsts.empty()) {
        out.append("Strict-Transport-Security: ");
        out.append(head.hsts);
        out.append("\r\n");
    }
    if (head.has_length) {
        out.append("Content-Length: ");
        append_number(out, head.content_length);
        out.append("\r\n");
    }
    if (head.persistence == Persistence::Close)
        out.append("Connection: close\r\n");
    else if (head.persistence == Persistence::AnnouncedKeepAlive)
        out.append("Connection: keep-alive\r\n");
    out.append("\r\n");
}

std::string_view chunk_size_line(size_t size, char (&buffer)[24]) {
    int n = snprintf(buffer, sizeof buffer, "%zx\r\n", size);
    return {buffer, static_cast<size_t>(n)};
}

} // namespace trellis::http1
