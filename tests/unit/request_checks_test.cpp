#include "http1/request_checks.hpp"

#include <doctest/doctest.h>

#include <string>

using namespace trellis;
using namespace trellis::http1;

TEST_CASE("request checks: host names") {
    std::string out;
    CHECK(normalize_host("Example.COM:8080", out));
    CHECK(out == "example.com");
    CHECK(normalize_host("[::1]:80", out));
    CHECK(out == "[::1]");
    CHECK(normalize_host("a.b", out));
    CHECK(out == "a.b");
    CHECK_FALSE(normalize_host("a.b:80x", out));
    CHECK_FALSE(normalize_host("[::1", out));
    CHECK_FALSE(normalize_host("[::1]x", out));
    CHECK_FALSE(normalize_host("a b", out));
    CHECK_FALSE(normalize_host(std::string_view("a\0b", 3), out));
    CHECK(valid_host("user-name.example:443"));
    CHECK_FALSE(valid_host("a/b"));
}

TEST_CASE("request checks: Transfer-Encoding lists") {
    CHECK(check_transfer_encoding("chunked") == 0);
    CHECK(check_transfer_encoding(" chunked\t") == 0);
    CHECK(check_transfer_encoding("gzip, chunked") == 501);
    CHECK(check_transfer_encoding("chunked, gzip") == 400);
    CHECK(check_transfer_encoding("chunked, chunked") == 400);
    CHECK(check_transfer_encoding("") == 400);
}

TEST_CASE("request checks: header fields") {
    HeadFacts facts;
    CHECK(check_header_field("Host", "a", facts) == 0);
    CHECK(check_header_field("host", "b", facts) == 0);
    CHECK(facts.host_count == 2);
    CHECK(check_header_field("Expect", "100-continue", facts) == 0);
    CHECK(facts.expect_continue);
    CHECK(check_header_field("Expect", "something", facts) == 417);
    CHECK(check_header_field("", "x", facts) == 400);
    CHECK(check_header_field("Bad Name", "x", facts) == 400);
    CHECK(check_header_field("X", "a\r\n b", facts) == 400); // obs-fold
    CHECK(check_header_field("X", std::string_view("a\0b", 3), facts) == 400);
}

TEST_CASE("request checks: the status of a parse error") {
    CHECK(status_for_parse_error(HPE_INVALID_METHOD, "BREW /pot HTTP/1.1\r\n") == 501);
    CHECK(status_for_parse_error(HPE_INVALID_METHOD, "\x01\x02 / HTTP/1.1\r\n") == 400);
    CHECK(status_for_parse_error(HPE_INVALID_VERSION, "GET / HTTP/9.9\r\n") == 505);
    CHECK(status_for_parse_error(HPE_INVALID_VERSION, "GET / XTTP/1.1\r\n") == 400);
    CHECK(status_for_parse_error(HPE_PAUSED_H2_UPGRADE, "PRI * HTTP/2.0\r\n") == 505);
    CHECK(status_for_parse_error(HPE_INVALID_HEADER_TOKEN, "GET / HTTP/1.1\r\n") == 400);
}
