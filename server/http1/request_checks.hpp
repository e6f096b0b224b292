// The checks an HTTP/1.1 request head gets beyond what llhttp enforces, as pure functions over the
// bytes: each returns 0 when the request may go on, or the status that refuses it (400, 417, 501,
// 505). The connection calls them from the parser's callbacks; nothing here keeps state.
#pragma once

#include "http/char_sets.hpp"
#include "http/request.hpp"
#include "http/request_target.hpp"

#include <llhttp.h>

#include <array>
#include <string>
#include <string_view>

namespace trellis::http1 {

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
