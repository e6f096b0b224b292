#include "http/path.hpp"

#include <doctest/doctest.h>

using trellis::normalize_path;
using trellis::PathError;

namespace {
std::string normalized(std::string_view raw) {
    std::string out;
    REQUIRE(normalize_path(raw, out) == PathError::None);
    return out;
}
PathError error_of(std::string_view raw) {
    std::string out;
    return normalize_path(raw, out);
}
} // namespace

TEST_CASE("path: plain paths pass unchanged") {
    CHECK(normalized("/") == "/");
    CHECK(normalized("/index.html") == "/index.html");
    CHECK(normalized("/docs/") == "/docs/");
    CHECK(normalized("/a/b/c.txt") == "/a/b/c.txt");
}

TEST_CASE("path: percent-decoding happens once") {
    CHECK(normalized("/a%20b") == "/a b");
    CHECK(normalized("/%41") == "/A");
    CHECK(normalized("/%252e%252e/x") == "/%2e%2e/x"); // double encoding stays a name
    CHECK(normalized("/%c0%ae") == "/\xc0\xae");       // overlong UTF-8 is not a dot
}

TEST_CASE("path: dot segments and repeated slashes") {
    CHECK(normalized("/a/./b") == "/a/b");
    CHECK(normalized("/a/../b") == "/b");
    CHECK(normalized("/a/b/..") == "/a/");
    CHECK(normalized("/a//b///c") == "/a/b/c");
    CHECK(normalized("/a/%2e%2e/b") == "/b");
    CHECK(normalized("/a/.") == "/a/");
}

TEST_CASE("path: refused") {
    CHECK(error_of("") == PathError::NotAbsolute);
    CHECK(error_of("a/b") == PathError::NotAbsolute);
    CHECK(error_of("/..") == PathError::AboveRoot);
    CHECK(error_of("/a/../..") == PathError::AboveRoot);
    CHECK(error_of("/%2e%2e/etc/passwd") == PathError::AboveRoot);
    CHECK(error_of("/a%2fb") == PathError::EncodedSlash);
    CHECK(error_of("/a%2Fb") == PathError::EncodedSlash);
    CHECK(error_of("/a%00") == PathError::Nul);
    CHECK(error_of(std::string_view("/a\0b", 4)) == PathError::Nul);
    CHECK(error_of("/a\\..\\b") == PathError::Backslash);
    CHECK(error_of("/a%5c") == PathError::Backslash);
    CHECK(error_of("/%") == PathError::BadEscape);
    CHECK(error_of("/%4") == PathError::BadEscape);
    CHECK(error_of("/%zz") == PathError::BadEscape);
}
