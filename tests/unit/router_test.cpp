#include "router.hpp"

#include <doctest/doctest.h>

#include <string>
#include <vector>

using trellis::Route;
using trellis::Router;

namespace {

// The prefix (and host) of the route `host`/`path` reaches first, or "none".
std::string first(const Router &router, std::string_view host, std::string_view path) {
    int index = router.next_match(host, path, 0);
    if (index < 0)
        return "none";
    const Route &route = router.route(index);
    return route.host == "*" ? route.prefix : route.host + route.prefix;
}

// Every match in the order a connection would try them when each plugin declines.
std::vector<std::string> all_matches(const Router &router, std::string_view host, std::string_view path) {
    std::vector<std::string> out;
    int index = -1;
    while ((index = router.next_match(host, path, index + 1)) >= 0) {
        const Route &route = router.route(index);
        out.push_back(route.host + route.prefix);
    }
    return out;
}

} // namespace

TEST_CASE("router: prefix_matches on segment boundaries") {
    SUBCASE("a prefix without trailing slash") {
        CHECK(Router::prefix_matches("/hello", "/hello"));
        CHECK(Router::prefix_matches("/hello", "/hello/"));
        CHECK(Router::prefix_matches("/hello", "/hello/x"));
        CHECK_FALSE(Router::prefix_matches("/hello", "/helloworld"));
        CHECK_FALSE(Router::prefix_matches("/hello", "/hell"));
        CHECK_FALSE(Router::prefix_matches("/hello", "/"));
        CHECK_FALSE(Router::prefix_matches("/hello", "/x/hello"));
    }
    SUBCASE("the root matches everything") {
        CHECK(Router::prefix_matches("/", "/"));
        CHECK(Router::prefix_matches("/", "/anything"));
        CHECK(Router::prefix_matches("/", "/a/b/c"));
    }
    SUBCASE("a prefix with trailing slash") {
        CHECK(Router::prefix_matches("/api/", "/api/x"));
        CHECK(Router::prefix_matches("/api/", "/api/"));
        CHECK_FALSE(Router::prefix_matches("/api/", "/api"));
        CHECK_FALSE(Router::prefix_matches("/api/", "/apix"));
    }
}

TEST_CASE("router: longest prefix wins regardless of config order") {
    std::vector<Route> routes = {
        {"*", "/", nullptr},
        {"*", "/a", nullptr},
        {"*", "/a/b/c", nullptr},
        {"*", "/a/b", nullptr},
    };
    SUBCASE("as written") {
        Router router(routes);
        CHECK(first(router, "h", "/a/b/c/d") == "/a/b/c");
        CHECK(first(router, "h", "/a/b/x") == "/a/b");
        CHECK(first(router, "h", "/a/bc") == "/a");
        CHECK(first(router, "h", "/a") == "/a");
        CHECK(first(router, "h", "/ab") == "/");
        CHECK(first(router, "h", "/") == "/");
    }
    SUBCASE("reversed") {
        Router router(std::vector<Route>(routes.rbegin(), routes.rend()));
        CHECK(first(router, "h", "/a/b/c/d") == "/a/b/c");
        CHECK(first(router, "h", "/a/b/x") == "/a/b");
        CHECK(first(router, "h", "/a/bc") == "/a");
        CHECK(first(router, "h", "/ab") == "/");
    }
    SUBCASE("sorted longest first") {
        Router router(routes);
        REQUIRE(router.size() == 4);
        CHECK(router.route(0).prefix == "/a/b/c");
        CHECK(router.route(1).prefix == "/a/b");
        CHECK(router.route(2).prefix == "/a");
        CHECK(router.route(3).prefix == "/");
    }
}

TEST_CASE("router: hosts") {
    SUBCASE("exact host before * at equal prefix, whatever the order") {
        Router a({{"*", "/x", nullptr}, {"example.com", "/x", nullptr}});
        Router b({{"example.com", "/x", nullptr}, {"*", "/x", nullptr}});
        CHECK(first(a, "example.com", "/x") == "example.com/x");
        CHECK(first(b, "example.com", "/x") == "example.com/x");
        CHECK(first(a, "other.org", "/x") == "/x");
        CHECK(first(b, "other.org", "/x") == "/x");
    }
    SUBCASE("a longer prefix for * still beats a shorter one for the exact host") {
        Router router({{"example.com", "/", nullptr}, {"*", "/api", nullptr}});
        CHECK(first(router, "example.com", "/api/v1") == "/api");
        CHECK(first(router, "example.com", "/other") == "example.com/");
    }
    SUBCASE("host mismatch is skipped") {
        Router router({{"a.com", "/", nullptr}, {"b.com", "/", nullptr}});
        CHECK(first(router, "a.com", "/x") == "a.com/");
        CHECK(first(router, "b.com", "/x") == "b.com/");
        CHECK(first(router, "c.com", "/x") == "none");
        CHECK(first(router, "", "/x") == "none"); // HTTP/1.0 without Host
    }
    SUBCASE("equal prefix and host keep config order") {
        Router router(
            {{"*", "/p", nullptr}, {"a.com", "/p", nullptr}, {"*", "/p", nullptr}, {"a.com", "/p", nullptr}});
        // Stable: both exact-host routes first (config order), then both "*".
        for (size_t i = 0; i < router.size(); ++i)
            CHECK(router.route(static_cast<int>(i)).prefix == "/p");
        CHECK(router.route(0).host == "a.com");
        CHECK(router.route(1).host == "a.com");
        CHECK(router.route(2).host == "*");
        CHECK(router.route(3).host == "*");
    }
}

TEST_CASE("router: next_match enumerates declines from index + 1") {
    Router router({
        {"*", "/", nullptr},
        {"*", "/api", nullptr},
        {"example.com", "/api", nullptr},
        {"other.org", "/api/v1", nullptr},
        {"*", "/api/", nullptr},
    });
    SUBCASE("full chain for the exact host") {
        std::vector<std::string> expected = {"*/api/", "example.com/api", "*/api", "*/"};
        CHECK(all_matches(router, "example.com", "/api/x") == expected);
    }
    SUBCASE("full chain for another host") {
        std::vector<std::string> expected = {"other.org/api/v1", "*/api/", "*/api", "*/"};
        CHECK(all_matches(router, "other.org", "/api/v1/z") == expected);
    }
    SUBCASE("the path decides which routes are in the chain") {
        std::vector<std::string> expected = {"example.com/api", "*/api", "*/"};
        CHECK(all_matches(router, "example.com", "/api") == expected);
        CHECK(all_matches(router, "example.com", "/apis") == std::vector<std::string>{"*/"});
    }
    SUBCASE("from an index in the middle, and past the end") {
        int a = router.next_match("example.com", "/api/x", 0);
        REQUIRE(a >= 0);
        int b = router.next_match("example.com", "/api/x", a + 1);
        CHECK(b > a);
        CHECK(router.next_match("example.com", "/api/x", b) == b); // `from` itself is included
        CHECK(router.next_match("example.com", "/api/x", static_cast<int>(router.size())) == -1);
        CHECK(router.next_match("example.com", "/api/x", -5) == a); // negative counts as 0
    }
    SUBCASE("an empty router") {
        Router empty({});
        CHECK(empty.size() == 0);
        CHECK(empty.next_match("a", "/", 0) == -1);
    }
}
