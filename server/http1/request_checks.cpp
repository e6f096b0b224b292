#include "http1/request_checks.hpp"

#include "http/path.hpp"
#include "log/log.hpp"

namespace trellis::http1 {

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

int check_header_field(std::string_view name, std::string_view value, HeadFacts &facts) {
    if (name.empty())
        return 400;
    // obs-fold (CVE-2024-27982) and stray CR/LF or NUL inside a value: llhttp 8.1 lets them
    // through; RFC 9112 section 5.2 allows rejecting them, and we do.
    for (char ch : value)
        if (ch == '\r' || ch == '\n' || ch == '\0')
            return 400;
    for (char ch : name)
        if (!is_token_char(static_cast<unsigned char>(ch)))
            return 400;
    if (iequals(name, "host")) {
        ++facts.host_count;
    } else if (iequals(name, "expect")) {
        if (!iequals(value, "100-continue"))
            return 417;
        facts.expect_continue = true;
    }
    return 0;
}

int check_head(trellis_request &r, llhttp_t &p, const HeadFacts &facts) {
    if (p.http_major != 1)
        return 505;
    r.version = p.http_minor == 0 ? 10 : 11; // HTTP/1.2 and above are served as 1.1
    r.llhttp_method = static_cast<uint8_t>(p.method);
    r.is_head = p.method == HTTP_HEAD;
    if (p.method == HTTP_CONNECT)
        return 405; // never a tunnel
    p.upgrade = 0;  // llhttp would otherwise stop parsing after this request
    if (facts.host_count > 1 || (r.version == 11 && facts.host_count == 0))
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
    if (int status = parse_request_target(r))
        return status;
    // TRACE would echo cookies back to a script (CVE-2003-1567). Refused after the target is
    // parsed, so that the 405 finds the route and gives its resource's Allow.
    if (p.method == HTTP_TRACE)
        return 405;
    return 0;
}

int status_for_parse_error(llhttp_errno_t error, std::string_view rest) {
    switch (error) {
    case HPE_INVALID_METHOD: {
        // A well-formed token llhttp does not know is a method we do not implement (RFC 9110
        // section 9.1); anything else is garbage.
        size_t space = rest.find(' ');
        if (space == std::string_view::npos || space == 0)
            return 400;
        for (size_t i = 0; i < space; ++i)
            if (!is_token_char(static_cast<unsigned char>(rest[i])))
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
    case HPE_PAUSED_H2_UPGRADE:
        return 505; // the HTTP/2 connection preface: this server speaks HTTP/1.1 only
    default:
        return 400;
    }
}

bool is_http09_request_line(const trellis_request &r, std::string_view after_target) {
    if (r.header_count != 0 || r.target.length == 0)
        return false;
    return after_target == "\r\n" || after_target == "\n";
}

} // namespace trellis::http1
