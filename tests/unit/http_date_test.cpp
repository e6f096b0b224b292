#include "http/http_date.hpp"

#include <doctest/doctest.h>

#include <cstring>
#include <string>

using trellis::format_http_date;
using trellis::kHttpDateLength;
using trellis::parse_http_date;

namespace {
std::string formatted(time_t t) {
    char out[kHttpDateLength + 8];
    memset(out, '#', sizeof out);
    format_http_date(t, out);
    CHECK(out[kHttpDateLength] == '#'); // exactly 29 characters, no NUL written after them
    return std::string(out, kHttpDateLength);
}
} // namespace

TEST_CASE("http_date: formatting IMF-fixdate") {
    CHECK(formatted(784111777) == "Sun, 06 Nov 1994 08:49:37 GMT");
    CHECK(formatted(0) == "Thu, 01 Jan 1970 00:00:00 GMT");
    CHECK(formatted(951782400) == "Tue, 29 Feb 2000 00:00:00 GMT"); // leap day
    CHECK(formatted(1767225599) == "Wed, 31 Dec 2025 23:59:59 GMT");
}

TEST_CASE("http_date: parsing the three RFC 9110 forms") {
    SUBCASE("IMF-fixdate") {
        CHECK(parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT") == 784111777);
        CHECK(parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT") == 0);
        CHECK(parse_http_date("Tue, 29 Feb 2000 00:00:00 GMT") == 951782400);
    }
    SUBCASE("obsolete RFC 850") {
        CHECK(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT") == 784111777);
        CHECK(parse_http_date("Wednesday, 31-Dec-25 23:59:59 GMT") == 1767225599); // two-digit year < 70
    }
    SUBCASE("asctime") {
        CHECK(parse_http_date("Sun Nov  6 08:49:37 1994") == 784111777);
        CHECK(parse_http_date("Tue Feb 29 00:00:00 2000") == 951782400);
    }
    SUBCASE("round trip") {
        for (time_t t : {time_t(1), time_t(784111777), time_t(1700000000), time_t(2147483647)}) {
            CAPTURE(t);
            CHECK(parse_http_date(formatted(t)) == t);
        }
    }
}

TEST_CASE("http_date: garbage is -1") {
    CHECK(parse_http_date("") == -1);
    CHECK(parse_http_date("yesterday") == -1);
    CHECK(parse_http_date("1994-11-06T08:49:37Z") == -1);
    CHECK(parse_http_date("Sun, 06 Foo 1994 08:49:37 GMT") == -1); // no such month
    CHECK(parse_http_date("Sun, 32 Nov 1994 08:49:37 GMT") == -1);
    CHECK(parse_http_date("Sun, 06 Nov 1994 24:00:00 GMT") == -1);
    CHECK(parse_http_date("Sun, 06 Nov 1994 08:60:00 GMT") == -1);
    CHECK(parse_http_date("Sun, 06 Nov 1994 08:49:37 GMTx") == -1); // trailing bytes
    CHECK(parse_http_date("Sun Nov  6 08:49:37 1994 extra") == -1);
    CHECK(parse_http_date("Sun, 06 Nov") == -1);
    CHECK(parse_http_date(std::string(100, 'A')) == -1); // longer than the parse buffer
    CHECK(parse_http_date(std::string_view("Sun, 06 Nov 1994 08:49:37 GMT", 20)) == -1); // cut short
}

TEST_CASE("http_date: DateCache gives the current second") {
    trellis::DateCache cache;
    time_t before = time(nullptr);
    std::string_view now = cache.now();
    time_t after = time(nullptr);
    REQUIRE(now.size() == kHttpDateLength);
    time_t parsed = parse_http_date(now);
    CHECK(parsed >= before);
    CHECK(parsed <= after);
    CHECK(cache.now().data() == now.data()); // the same buffer, no allocation
}
