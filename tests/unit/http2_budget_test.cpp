#include "http2/connection.hpp"

#include <doctest/doctest.h>

using trellis::http2::Budget;

TEST_CASE("http2 budget: a burst, then the refill rate") {
    Budget budget(3, 10); // 3 at once, 10 a second
    uint64_t now = 1000;
    CHECK(budget.take(now));
    CHECK(budget.take(now));
    CHECK(budget.take(now));
    CHECK_FALSE(budget.take(now)); // the burst is spent
    now += 50;                     // half a token
    CHECK_FALSE(budget.take(now));
    now += 60; // 1.1 tokens since the last take
    CHECK(budget.take(now));
    CHECK_FALSE(budget.take(now));
    now += 10000; // a long quiet time refills to the burst, no more
    CHECK(budget.take(now));
    CHECK(budget.take(now));
    CHECK(budget.take(now));
    CHECK_FALSE(budget.take(now));
}
