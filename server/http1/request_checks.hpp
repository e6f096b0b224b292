// The checks an HTTP/1.1 request head gets beyond what llhttp enforces, as pure functions over the
// bytes: each returns 0 when the request may go on, or the status that refuses it (400, 417, 501,
// 505). The connection calls them from the parser's callbacks; nothing here keeps state.
#pragma once

#include "http/request.hpp"

#include <llhttp.h>

#include <array>
#include <string>
#include <string_view>

namespace trellis::http1 {

namespace detail {
// One flag per byte value: which bytes belong to a set. Checked per byte of every header, so a
// table lookup rather than a search.
constexpr std::array<bool, 256> byte_set(std::string_view extra) {
    std::array<bool, 256> set{};
    for (int c = '0'; c <= '9'; ++c)
        set[static_cast<size_t>(c)] = true;
    for (int c = 'a'; c <= 'z'; ++c)
        set[static_cast<size_t>(c)] = set[static_cast<size_t>(c - 'a' + 'A')] = true;
    for (char c : extra)
        set[static_cast<unsigned char>(c)] = true;
    return set;
}
inline constexpr std::array<bool, 256> kTokenChars = byte_set("!#$%&'*+-.^_`|~");
inline constexpr std::array<bool, 256> kHostChars = byte_set("-._~!$&'()*+,;=:[]%");
} // namespace detail

// A token character (RFC 9110 section 5.6.2).
inline bool is_token_char(unsigned char c) {
    return detail::kTokenChars[c];
}
// Host header syntax (RFC 9110 section 7.2 / RFC 3986 authority without userinfo).
inline bool valid_host(std::string_view host) {
    for (unsigned char c : host)
        if (!detail::kHostChars[c])
            return false;
    return true;
}
// "Example.COM:8080" -> "example.com"; "[::1]:80" -> "[::1]". False when the syntax or the port
// is wrong.
bool normalize_host(std::string_view raw, std::string &out);
// A Transfer-Encoding list (RFC 9112 section 6.1): 0 when it ends in a single "chunked", 501 for
// a coding we do not implement, 400 when chunked is not last or is repeated.
int check_transfer_encoding(std::string_view list);

// What the header fields of one head said, counted as they arrive.
struct HeadFacts {
    int host_count = 0;
    bool expect_continue = false;
};
// One header field, when it is complete: name syntax, no CR, LF or NUL in the value (obs-fold,
// CVE-2024-27982), Expect other than 100-continue (417).
int check_header_field(std::string_view name, std::string_view value, HeadFacts &facts);
// The request target (origin or absolute form; never a fragment): sets request.path (normalised),
// request.query and request.host (from the target's authority, else from Host).
int parse_request_target(trellis_request &request);
// The head as a whole, once llhttp has it: the version (a higher 1.x is taken as 1.1, RFC 9110
// section 2.5), CONNECT and TRACE (405), Host, Transfer-Encoding, the target. Sets version,
// method and is_head on `request`; clears llhttp's upgrade flag (no plugin can take a connection
// over, so Upgrade is ignored, RFC 9110 section 7.8).
int check_head(trellis_request &request, llhttp_t &parser, const HeadFacts &facts);
// The status for an llhttp error: 501 for a well-formed method it does not know, 505 for a version
// it refuses or the HTTP/2 preface, else 400. `request_bytes`: the request from its first byte.
int status_for_parse_error(llhttp_errno_t error, std::string_view request_bytes);
// "GET /\r\n" is a whole HTTP/0.9 request, but llhttp decides only on the byte after the CRLF,
// which an HTTP/0.9 client never sends. `after_target`: the bytes after the target so far.
bool is_http09_request_line(const trellis_request &request, std::string_view after_target);

} // namespace trellis::http1
