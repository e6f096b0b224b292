// One parsed request and the response being built for it: the server side of the opaque
// trellis_request handle. Header bytes are not copied: spans are offsets into the connection's
// read buffer (offsets, not pointers, so the buffer can be compacted between reads).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace trellis {
class Exchange;
struct Route;

struct Span {
    uint32_t offset = 0;
    uint32_t length = 0;
};

struct HeaderSpan {
    Span name;
    Span value;
};

constexpr size_t kMaxHeaders = 128;

} // namespace trellis

struct trellis_request {
    trellis::Exchange *exchange = nullptr; // the exchange this request lives in
    const char *base = nullptr;            // the buffer the spans point into

    // Request line and headers.
    trellis::Span method;
    trellis::Span target;
    trellis::Span query;
    uint8_t llhttp_method = 0;
    int version = 11; // 10, 11 or 20
    trellis::HeaderSpan headers[trellis::kMaxHeaders];
    size_t header_count = 0;
    std::string host; // lower-case, port removed
    std::string path; // normalised
    std::string body;
    bool is_head = false;

    // Routing.
    const trellis::Route *route = nullptr;
    std::string_view path_below;

    // Response under construction.
    std::string response_headers; // "Name: value\r\n" lines from the plugin
    bool answered = false;        // loop side: a response head was queued
    bool inline_call = false;     // the loop thread is inside this request's on_request
    std::string scratch;          // host-owned text handed to the plugin (metrics)

    std::string_view str(trellis::Span span) const { return {base + span.offset, span.length}; }
    // First header with this name, case-insensitive.
    bool header(std::string_view name, std::string_view &value) const;

    // Clears everything for the next request, keeping string capacity (no allocation per request).
    void reset();
};

namespace trellis {
// (The plugin SDK's trellis::Request, in <trellis/plugin.hpp>, is the plugin-side wrapper of this
// handle; the server names it by its ABI name only.)

// Case-insensitive ASCII comparison for header names and tokens.
bool iequals(std::string_view a, std::string_view b);
} // namespace trellis
