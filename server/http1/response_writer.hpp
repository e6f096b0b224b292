// HTTP/1.1 response framing, apart from any connection: the status line and header block, how a
// body's end is marked (Content-Length, chunked, or the end of the connection), and whether the
// connection stays open afterwards. Pure functions on a string, so the connection only decides
// and this file only writes.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace trellis::http1 {

// What the response says about the connection after it.
enum class Persistence {
    KeepAlive,          // HTTP/1.1's default: nothing to say
    AnnouncedKeepAlive, // HTTP/1.0 stays open only when told: "Connection: keep-alive"
    Close,              // "Connection: close"
};
Persistence persistence_for(bool closing, int http_version);

// How a streamed body's end is marked.
enum class BodyFraming { ContentLength, Chunked, UntilClose };
// A declared length wins; otherwise chunks for HTTP/1.1, and the end of the connection for
// HTTP/1.0, which has no chunks.
BodyFraming framing_for_stream(int64_t content_length, int http_version);

struct ResponseHead {
    int status = 200;
    std::string_view date;   // the IMF-fixdate the worker caches
    std::string_view fields; // "Name: value\r\n" lines from the plugin
    std::string_view hsts;   // Strict-Transport-Security value; empty: not sent
    bool has_length = false;
    uint64_t content_length = 0;
    Persistence persistence = Persistence::KeepAlive;
};

// Appends the status line, Date, Server, the plugin's fields (for a 304 only those a cache may
// update: RFC 9110 section 15.4.5), HSTS, Content-Length and Connection, and the blank line.
void append_response_head(std::string &out, const ResponseHead &head);

// Chunked bodies: the size line before a chunk's bytes, the CRLF after them, the last chunk.
std::string_view chunk_size_line(size_t size, char (&buffer)[24]);
inline constexpr std::string_view kChunkEnd = "\r\n";
inline constexpr std::string_view kLastChunk = "0\r\n\r\n";

} // namespace trellis::http1
