// The answers a plugin (or the server itself) can give an exchange, protocol-neutral: a full
// body, an error page, a file (validators, conditional requests, ranges, multipart/byteranges)
// and a streamed body. Each queues through the exchange's owner, which frames the bytes.
#pragma once

#include "exchange.hpp"

#include <cstdint>
#include <string_view>

namespace trellis {

// A whole answer: head and body (no body for HEAD, 1xx, 204 and 304).
void respond(Exchange &ex, int status, std::string_view body);
// The server's own text answer for `status` ("404 Not Found\n").
void respond_error(Exchange &ex, int status);
// Answers with a file: validators, conditional requests and ranges for status 200, the body read
// now (small) or sent later by send_file (large). False when it is not a readable regular file
// (the request was answered with 500).
bool respond_file(Exchange &ex, const FileResponse &file);

// A streamed answer: the head now, the body in pieces. start_stream is false for a status without
// a body; stream_write returns how many bytes wait to be written (for backpressure).
bool start_stream(Exchange &ex, int status, int64_t content_length);
size_t stream_write(Exchange &ex, std::string_view data);
void end_stream(Exchange &ex);

// Removes the first header line `name` from "Name: value\r\n" lines; returns its value.
std::string take_header(std::string &headers, std::string_view name);

} // namespace trellis
