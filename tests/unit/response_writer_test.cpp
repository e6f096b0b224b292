#include "http1/response_writer.hpp"

#include <doctest/doctest.h>

#include <string>

using namespace trellis::http1;

TEST_CASE("response writer: the head of a response") {
    std::string out = "before|";
    ResponseHead head;
    head.status = 200;
    head.date = "Thu, 03 Dec 2026 09:00:00 GMT";
    head.fields = "Content-Type: text/plain\r\nX-Mine: 1\r\n";
    head.has_length = true;
    head.content_length = 13;
    append_response_head(out, head);
    CHECK(out == "before|HTTP/1.1 200 OK\r\nDate: Thu, 03 Dec 2026 09:00:00 GMT\r\nServer: trellis\r\n"
                 "Content-Type: text/plain\r\nX-Mine: 1\r\nContent-Length: 13\r\n\r\n");

    SUBCASE("HSTS, and the connection closing") {
        out.clear();
        head.hsts = "max-age=60";
        head.persistence = Persistence::Close;
        head.has_length = false;
        append_response_head(out, head);
        CHECK(out.find("Strict-Transport-Security: max-age=60\r\n") != std::string::npos);
        CHECK(out.find("Content-Length") == std::string::npos);
        CHECK(out.ends_with("Connection: close\r\n\r\n"));
    }
    SUBCASE("an HTTP/1.0 client is told the connection stays") {
        out.clear();
        head.persistence = persistence_for(false, 10);
        append_response_head(out, head);
        CHECK(out.ends_with("Connection: keep-alive\r\n\r\n"));
    }
}

TEST_CASE("response writer: a 304 keeps what a cache updates, not what describes the body") {
    std::string out;
    ResponseHead head;
    head.status = 304;
    head.date = "d";
    head.fields = "Content-Type: text/html\r\nETag: \"x\"\r\ncontent-length: 5\r\nAccept-Ranges: bytes\r\n"
                  "Cache-Control: max-age=1\r\nSet-Cookie: a=b\r\nX-Content-Type-Options: nosniff\r\n"
                  "Last-Modified: then\r\n";
    append_response_head(out, head);
    CHECK(out == "HTTP/1.1 304 Not Modified\r\nDate: d\r\nServer: trellis\r\nETag: \"x\"\r\n"
                 "Cache-Control: max-age=1\r\nSet-Cookie: a=b\r\nLast-Modified: then\r\n\r\n");
}

TEST_CASE("response writer: persistence and stream framing") {
    CHECK(persistence_for(true, 11) == Persistence::Close);
    CHECK(persistence_for(true, 10) == Persistence::Close);
    CHECK(persistence_for(false, 11) == Persistence::KeepAlive);
    CHECK(persistence_for(false, 10) == Persistence::AnnouncedKeepAlive);
    CHECK(framing_for_stream(0, 11) == BodyFraming::ContentLength);
    CHECK(framing_for_stream(100, 10) == BodyFraming::ContentLength);
    CHECK(framing_for_stream(-1, 11) == BodyFraming::Chunked);
    CHECK(framing_for_stream(-1, 10) == BodyFraming::UntilClose);
    char buffer[24];
    CHECK(chunk_size_line(0x1a2b, buffer) == "1a2b\r\n");
    CHECK(chunk_size_line(1, buffer) == "1\r\n");
    CHECK(std::string(kLastChunk) == "0\r\n\r\n");
}
