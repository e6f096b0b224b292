// The host table's request_query_param, on a request whose query span is set up by hand: form
// decoding ('+' as space, %XX), absent parameters, snprintf-style truncation.
#include "http/request.hpp"
#include "plugin/loader.hpp"

#include <doctest/doctest.h>

#include <cstring>
#include <string>

namespace {

// A request whose read buffer is "GET /p?<query>" with the query span on the part after '?'.
struct QueryRequest {
    std::string buffer;
    trellis_request request;

    explicit QueryRequest(const std::string &query) : buffer("GET /p?" + query) {
        request.base = buffer.data();
        request.method = {0, 3};
        request.target = {4, static_cast<uint32_t>(buffer.size() - 4)};
        request.query = {7, static_cast<uint32_t>(query.size())};
    }
    QueryRequest(const QueryRequest &) = delete;
};

const trellis_host *host() {
    return trellis::host_table();
}

// The parameter's value ("<absent>" when the call returns -1), read with a large buffer.
std::string param(const std::string &query, const std::string &name) {
    QueryRequest q(query);
    char buf[512];
    long n = host()->request_query_param(&q.request, name.data(), name.size(), buf, sizeof buf);
    if (n < 0) {
        CHECK(n == -1);
        return "<absent>";
    }
    REQUIRE(static_cast<size_t>(n) <= sizeof buf);
    return std::string(buf, static_cast<size_t>(n));
}

} // namespace

TEST_CASE("host api: request_query_param") {
    REQUIRE(TRELLIS_HOST_HAS(host(), request_query_param));
    {
        // The span really is the query: the host's own request_query reads it back.
        QueryRequest q("a=1&b=2");
        trellis_str query = host()->request_query(&q.request);
        CHECK(std::string(query.data, query.len) == "a=1&b=2");
    }

    SUBCASE("plain values, first match wins") {
        const std::string query = "a=1&bb=two&a=3&c=";
        CHECK(param(query, "a") == "1");
        CHECK(param(query, "bb") == "two");
        CHECK(param(query, "c") == "");
        CHECK(param(query, "b") == "<absent>"); // not a prefix match
        CHECK(param(query, "bbb") == "<absent>");
        CHECK(param(query, "A") == "<absent>"); // names are case-sensitive
    }
    SUBCASE("a name without '=' has an empty value") {
        QueryRequest q("flag&x=1");
        char buf[8] = "unset";
        CHECK(host()->request_query_param(&q.request, "flag", 4, buf, sizeof buf) == 0);
        CHECK(std::string(buf) == "unset"); // nothing written
        CHECK(param("x=1&flag", "flag") == "");
    }
    SUBCASE("missing") {
        CHECK(param("", "a") == "<absent>");
        CHECK(param("a=1", "") == "<absent>");
        CHECK(param("b=1&c=2", "a") == "<absent>");
    }
    SUBCASE("form decoding of values") {
        CHECK(param("q=hello+world", "q") == "hello world");
        CHECK(param("q=%41%62%2a", "q") == "Ab*");
        CHECK(param("q=a%2Bb", "q") == "a+b"); // an encoded '+' is a plus
        CHECK(param("q=%26%3D", "q") == "&=");
        CHECK(param("q=caf%C3%A9", "q") == "caf\xC3\xA9");
        CHECK(param("q=100%25", "q") == "100%");
        CHECK(param("q=x%00y", "q") == std::string("x\0y", 3));
        CHECK(param("q=a=b", "q") == "a=b"); // only the first '=' splits
    }
    SUBCASE("bad escapes stay as they are") {
        CHECK(param("q=%zz", "q") == "%zz");
        CHECK(param("q=%4", "q") == "%4");
        CHECK(param("q=%", "q") == "%");
        CHECK(param("q=a%4g", "q") == "a%4g");
        CHECK(param("q=%%41", "q") == "%A");
    }
    SUBCASE("names are compared decoded") {
        CHECK(param("a%5Bb%5D=1", "a[b]") == "1");
        CHECK(param("first+name=Ada", "first name") == "Ada");
        CHECK(param("first%20name=Ada", "first name") == "Ada");
        CHECK(param("a%5Bb%5D=1", "a%5Bb%5D") == "<absent>");
    }
    SUBCASE("empty pairs are skipped") {
        CHECK(param("&&a=1&", "a") == "1");
        CHECK(param("&=x&b=2", "b") == "2");
    }
    SUBCASE("the query ends where its span ends") {
        QueryRequest q("a=12345&b=2");
        q.request.query.length = 4; // "a=12"
        char buf[16];
        CHECK(host()->request_query_param(&q.request, "a", 1, buf, sizeof buf) == 2);
        CHECK(std::string(buf, 2) == "12");
        CHECK(host()->request_query_param(&q.request, "b", 1, buf, sizeof buf) == -1);
    }
}

TEST_CASE("host api: request_query_param truncates like snprintf") {
    QueryRequest q("name=J%C3%BCrgen+M&x=1");
    const std::string full = "J\xC3\xBCrgen M"; // 9 bytes

    SUBCASE("a small buffer gets the start, the call returns the full length") {
        char buf[8];
        memset(buf, '#', sizeof buf);
        CHECK(host()->request_query_param(&q.request, "name", 4, buf, 4) == 9);
        CHECK(std::string(buf, 4) == full.substr(0, 4));
        CHECK(buf[4] == '#'); // nothing past buf_len
        CHECK(buf[7] == '#');
    }
    SUBCASE("an exact fit") {
        char buf[10];
        memset(buf, '#', sizeof buf);
        CHECK(host()->request_query_param(&q.request, "name", 4, buf, 9) == 9);
        CHECK(std::string(buf, 9) == full);
        CHECK(buf[9] == '#'); // not NUL-terminated
    }
    SUBCASE("no buffer: the length alone") {
        CHECK(host()->request_query_param(&q.request, "name", 4, nullptr, 0) == 9);
        CHECK(host()->request_query_param(&q.request, "x", 1, nullptr, 0) == 1);
        CHECK(host()->request_query_param(&q.request, "nope", 4, nullptr, 0) == -1);
    }
    SUBCASE("bad arguments") {
        char buf[4];
        CHECK(host()->request_query_param(&q.request, nullptr, 0, buf, sizeof buf) == -1);
        CHECK(host()->request_query_param(&q.request, "name", 4, nullptr, 5) == -1);
    }
    SUBCASE("the name's length counts, not a NUL") {
        char buf[16];
        CHECK(host()->request_query_param(&q.request, "xyz", 1, buf, sizeof buf) == 1);
        CHECK(buf[0] == '1');
    }
}
