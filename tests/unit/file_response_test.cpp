#include "http/file_response.hpp"
#include "http/http_date.hpp"

#include <doctest/doctest.h>

using namespace trellis;

namespace {
std::vector<ByteRange> ranges_of(std::string_view header, uint64_t size, RangeOutcome expected,
                                 uint32_t max_ranges = 16) {
    std::vector<ByteRange> out;
    CHECK(parse_ranges(header, size, max_ranges, out) == expected);
    return out;
}
} // namespace

TEST_CASE("ranges: single, suffix, open, clipped") {
    auto r = ranges_of("bytes=0-99", 1000, RangeOutcome::Partial);
    REQUIRE(r.size() == 1);
    CHECK((r[0].first == 0 && r[0].last == 99));
    r = ranges_of("bytes=-100", 1000, RangeOutcome::Partial);
    CHECK((r[0].first == 900 && r[0].last == 999));
    r = ranges_of("bytes=-5000", 1000, RangeOutcome::Partial);
    CHECK((r[0].first == 0 && r[0].last == 999));
    r = ranges_of("bytes=100-", 1000, RangeOutcome::Partial);
    CHECK((r[0].first == 100 && r[0].last == 999));
    r = ranges_of("bytes=990-5000", 1000, RangeOutcome::Partial);
    CHECK((r[0].first == 990 && r[0].last == 999));
    r = ranges_of(" bytes=0-0 ", 1, RangeOutcome::Partial);
    CHECK((r[0].first == 0 && r[0].last == 0 && r[0].length() == 1));
}

TEST_CASE("ranges: several, in request order") {
    auto r = ranges_of("bytes=20-29, 0-9", 100, RangeOutcome::Partial);
    REQUIRE(r.size() == 2);
    CHECK(r[0].first == 20);
    CHECK(r[1].first == 0);
}

TEST_CASE("ranges: refused as a whole or unsatisfiable") {
    ranges_of("bytes=0-100,50-150", 1000, RangeOutcome::Full);   // overlap would amplify
    ranges_of("bytes=0-1,2-3,4-5", 1000, RangeOutcome::Full, 2); // over max_ranges
    ranges_of("bytes=a-b", 1000, RangeOutcome::Full);
    ranges_of("items=0-1", 1000, RangeOutcome::Full);
    ranges_of("bytes=5-1", 1000, RangeOutcome::Full);
    ranges_of("bytes=", 1000, RangeOutcome::Full);
    ranges_of("bytes=1000-", 1000, RangeOutcome::Unsatisfiable);
    ranges_of("bytes=-0", 1000, RangeOutcome::Unsatisfiable);
    ranges_of("bytes=0-10", 0, RangeOutcome::Full); // an empty file is answered whole
    // One satisfiable range among unsatisfiable ones is served.
    auto r = ranges_of("bytes=5000-6000,0-1", 1000, RangeOutcome::Partial);
    REQUIRE(r.size() == 1);
    CHECK(r[0].first == 0);
}

TEST_CASE("preconditions: RFC 9110 order") {
    const std::string etag = "\"abc\"";
    const time_t mtime = 784111777; // Sun, 06 Nov 1994 08:49:37 GMT
    RequestConditions c;
    CHECK(evaluate_preconditions(c, etag, mtime) == Precondition::Proceed);

    SUBCASE("If-Match") {
        c.has_if_match = true;
        c.if_match = "\"x\", \"abc\"";
        CHECK(evaluate_preconditions(c, etag, mtime) == Precondition::Proceed);
        c.if_match = "W/\"abc\""; // strong comparison: a weak tag never matches
        CHECK(evaluate_preconditions(c, etag, mtime) == Precondition::Failed);
        c.if_match = "*";
        CHECK(evaluate_preconditions(c, etag, mtime) == Precondition::Proceed);
        // If-Match wins over If-Unmodified-Since
        c.if_match = "\"abc\"";
        c.has_if_unmodified_since = true;
        c.if_unmodified_since = "Sun, 06 Nov 1994 08:00:00 GMT";
        CHECK(evaluate_preconditions(c, etag, mtime) == Precondition::Proceed);
    }
    SUBCASE("If-Unmodified-Since") {
        c.has_if_unmodified_since = true;
        c.if_unmodified_since = "Sun, 06 Nov 1994 08:00:00 GMT";
        CHECK(evaluate_preconditions(c, etag, mtime) == Precondition::Failed);
        c.if_unmodified_since = "Sun, 06 Nov 1994 08:49:37 GMT";
        CHECK(evaluate_preconditions(c, etag, mtime) == Precondition::Proceed);
        c.if_unmodified_since = "garbage";
        CHECK(evaluate_preconditions(c, etag, mtime) == Precondition::Proceed);
    }
    SUBCASE("If-None-Match before If-Modified-Since") {
        c.has_if_none_match = true;
        c.if_none_match = "W/\"abc\""; // weak comparison
        CHECK(evaluate_preconditions(c, etag, mtime) == Precondition::NotModified);
        c.get_or_head = false;
        CHECK(evaluate_preconditions(c, etag, mtime) == Precondition::Failed);
        c.get_or_head = true;
        c.if_none_match = "\"other\"";
        c.has_if_modified_since = true;
        c.if_modified_since = "Mon, 07 Nov 1994 00:00:00 GMT"; // newer, but ignored with INM
        CHECK(evaluate_preconditions(c, etag, mtime) == Precondition::Proceed);
        c.has_if_none_match = false;
        CHECK(evaluate_preconditions(c, etag, mtime) == Precondition::NotModified);
        c.if_modified_since = "Sat, 05 Nov 1994 00:00:00 GMT";
        CHECK(evaluate_preconditions(c, etag, mtime) == Precondition::Proceed);
    }
    SUBCASE("a failing If-Match beats a matching If-None-Match") {
        c.has_if_match = true;
        c.if_match = "\"nope\"";
        c.has_if_none_match = true;
        c.if_none_match = "\"abc\"";
        CHECK(evaluate_preconditions(c, etag, mtime) == Precondition::Failed);
    }
}

TEST_CASE("If-Range") {
    const time_t mtime = 784111777;
    CHECK(if_range_matches("\"abc\"", "\"abc\"", mtime));
    CHECK_FALSE(if_range_matches("\"old\"", "\"abc\"", mtime));
    CHECK_FALSE(if_range_matches("W/\"abc\"", "\"abc\"", mtime));
    CHECK(if_range_matches("Sun, 06 Nov 1994 08:49:37 GMT", "\"abc\"", mtime));
    CHECK_FALSE(if_range_matches("Sun, 06 Nov 1994 08:00:00 GMT", "\"abc\"", mtime));
    CHECK_FALSE(if_range_matches("nonsense", "\"abc\"", mtime));
}

TEST_CASE("file ETag is strong and changes with the file") {
    FileEtag tag = file_etag(1, 2, 3, 4);
    std::string_view a = tag.view();
    CHECK(a.front() == '"');
    CHECK(a.back() == '"');
    CHECK(a != file_etag(1, 2, 3, 5).view());
    CHECK(a != file_etag(1, 3, 3, 4).view());
    CHECK(a != file_etag(2, 2, 3, 4).view());
}

TEST_CASE("file ETag text: inode, size and mtime in nanoseconds, in hex") {
    CHECK(file_etag(0x1f, 1024, 1, 5).view() == "\"1f-400-3b9aca05\"");
    CHECK(file_etag(0, 0, 0, 0).view() == "\"0-0-0\"");
    const uint64_t max = ~uint64_t{0};
    CHECK(file_etag(max, max, 0, 0).view() == "\"ffffffffffffffff-ffffffffffffffff-0\"");
}
