// The PROXY protocol parser and the trusted-address sets, byte by byte.
#include "net/address_set.hpp"
#include "net/forwarded.hpp"
#include "net/proxy_protocol.hpp"

#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string>
#include <string_view>
#include <vector>

using trellis::AddressSet;
using trellis::parse_proxy_header;
using trellis::ProxyHeader;
using trellis::ProxyParse;

namespace {

struct Parsed {
    ProxyParse result;
    size_t length = 0;
    ProxyHeader header;
    std::string why;
};

Parsed parse(const std::string &bytes) {
    Parsed p;
    const char *why = nullptr;
    p.result = parse_proxy_header(bytes, p.length, p.header, why);
    p.why = why ? why : "";
    return p;
}

std::string source_text(const ProxyHeader &h) {
    char ip[INET6_ADDRSTRLEN] = "";
    if (h.source.ss_family == AF_INET) {
        const auto &v4 = reinterpret_cast<const sockaddr_in &>(h.source);
        inet_ntop(AF_INET, &v4.sin_addr, ip, sizeof ip);
        return std::string(ip) + ":" + std::to_string(ntohs(v4.sin_port));
    }
    const auto &v6 = reinterpret_cast<const sockaddr_in6 &>(h.source);
    inet_ntop(AF_INET6, &v6.sin6_addr, ip, sizeof ip);
    return "[" + std::string(ip) + "]:" + std::to_string(ntohs(v6.sin6_port));
}

const std::string kSignature("\r\n\r\n\0\r\nQUIT\n", 12);

// A v2 header: command (0 LOCAL, 1 PROXY), family/protocol byte, then `body` (addresses, TLVs).
std::string v2(uint8_t command, uint8_t family, const std::string &body, int declared = -1) {
    size_t length = declared < 0 ? body.size() : static_cast<size_t>(declared);
    std::string h = kSignature;
    h += static_cast<char>(0x20 | command);
    h += static_cast<char>(family);
    h += static_cast<char>(length >> 8);
    h += static_cast<char>(length & 0xff);
    return h + body;
}

std::string v4_addresses() {
    // 192.0.2.1:56324 -> 198.51.100.1:443
    return std::string("\xc0\x00\x02\x01\xc6\x33\x64\x01\xdc\x04\x01\xbb", 12);
}

} // namespace

TEST_CASE("PROXY v1: TCP4, TCP6 and UNKNOWN") {
    Parsed p = parse("PROXY TCP4 192.0.2.1 198.51.100.1 56324 443\r\nGET / HTTP/1.1\r\n");
    REQUIRE(p.result == ProxyParse::Done);
    CHECK(p.length == 45);
    CHECK(p.header.has_source);
    CHECK(source_text(p.header) == "192.0.2.1:56324");
    p = parse("PROXY TCP6 2001:db8::1 2001:db8::2 65535 8443\r\n");
    REQUIRE(p.result == ProxyParse::Done);
    CHECK(source_text(p.header) == "[2001:db8::1]:65535");
    p = parse("PROXY UNKNOWN\r\n");
    REQUIRE(p.result == ProxyParse::Done);
    CHECK_FALSE(p.header.has_source);
    CHECK(parse("PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n").result == ProxyParse::Done);
}

TEST_CASE("PROXY v1: every prefix of a good header asks for more") {
    std::string good = "PROXY TCP4 192.0.2.1 198.51.100.1 56324 443\r\n";
    for (size_t n = 0; n < good.size(); ++n) {
        INFO(n);
        CHECK(parse(good.substr(0, n)).result == ProxyParse::NeedMore);
    }
}

TEST_CASE("PROXY v1: malformed lines are refused") {
    for (const char *bad : {
             "PROXY TCP4 192.0.2.300 198.51.100.1 1 2\r\n",   // bad address
             "PROXY TCP4 2001:db8::1 198.51.100.1 1 2\r\n",   // v6 address under TCP4
             "PROXY TCP4 192.0.2.1 198.51.100.1 65536 2\r\n", // port out of range
             "PROXY TCP4 192.0.2.1 198.51.100.1 01 2\r\n",    // leading zero
             "PROXY TCP4 192.0.2.1 198.51.100.1 1\r\n",       // a field missing
             "PROXY TCP4 192.0.2.1 198.51.100.1 1 2 3\r\n",   // one too many
             "PROXY TCP4  192.0.2.1 198.51.100.1 1 2\r\n",    // double space
             "PROXY UDP4 192.0.2.1 198.51.100.1 1 2\r\n",     // unknown protocol
             "PROXY TCP4 192.0.2.1 198.51.100.1 1 2\n",       // LF without CR
             "PROXY-TCP4\r\n",
             "GET / HTTP/1.1\r\n",
         }) {
        INFO(bad);
        Parsed p = parse(bad);
        CHECK(p.result == ProxyParse::Invalid);
        CHECK_FALSE(p.why.empty());
    }
    // No CRLF within 107 bytes.
    CHECK(parse("PROXY UNKNOWN " + std::string(120, 'x')).result == ProxyParse::Invalid);
    CHECK(parse("PROXY UNKNOWN " + std::string(91, 'x') + "\r\n").result == ProxyParse::Done); // 107
    CHECK(parse("PROXY UNKNOWN " + std::string(92, 'x') + "\r\n").result == ProxyParse::Invalid);
}

TEST_CASE("PROXY v2: PROXY and LOCAL commands, both families, TLVs skipped") {
    Parsed p = parse(v2(1, 0x11, v4_addresses()) + "GET");
    REQUIRE(p.result == ProxyParse::Done);
    CHECK(p.length == 28);
    CHECK(source_text(p.header) == "192.0.2.1:56324");
    std::string v6(36, '\0');
    v6[0] = '\x20';
    v6[1] = '\x01';
    v6[15] = '\x07';
    v6[32] = '\x01';
    v6[33] = '\xbb';
    p = parse(v2(1, 0x21, v6));
    REQUIRE(p.result == ProxyParse::Done);
    CHECK(source_text(p.header) == "[2001::7]:443");
    // A TLV (type 0x04 NOOP, 3 bytes) after the addresses.
    p = parse(v2(1, 0x11, v4_addresses() + std::string("\x04\x00\x03xyz", 6)));
    REQUIRE(p.result == ProxyParse::Done);
    CHECK(p.length == 16 + 18);
    // LOCAL (a balancer's own health check) and unspecified addresses keep the socket's peer.
    p = parse(v2(0, 0x11, v4_addresses()));
    REQUIRE(p.result == ProxyParse::Done);
    CHECK_FALSE(p.header.has_source);
    p = parse(v2(1, 0x00, ""));
    REQUIRE(p.result == ProxyParse::Done);
    CHECK_FALSE(p.header.has_source);
}

TEST_CASE("PROXY v2: prefixes ask for more, broken headers are refused") {
    std::string good = v2(1, 0x11, v4_addresses());
    for (size_t n = 0; n < good.size(); ++n) {
        INFO(n);
        CHECK(parse(good.substr(0, n)).result == ProxyParse::NeedMore);
    }
    std::string wrong_signature = good;
    wrong_signature[5] = 'X';
    CHECK(parse(wrong_signature).result == ProxyParse::Invalid);
    std::string version1 = good;
    version1[12] = '\x11';
    CHECK(parse(version1).result == ProxyParse::Invalid);
    std::string command2 = good;
    command2[12] = '\x22';
    CHECK(parse(command2).result == ProxyParse::Invalid);
    // Addresses longer than the declared length.
    CHECK(parse(v2(1, 0x11, v4_addresses().substr(0, 8))).result == ProxyParse::Invalid);
    CHECK(parse(v2(1, 0x21, v4_addresses())).result == ProxyParse::Invalid);
    // A declared length beyond the bound is refused before any of it arrives (a TLV flood).
    CHECK(parse(v2(1, 0x11, "", 60000)).result == ProxyParse::Invalid);
    // At the bound: the addresses and one NOOP TLV of 1009 bytes, 1024 in all.
    CHECK(
        parse(v2(1, 0x11, v4_addresses() + std::string("\x04\x03\xf1", 3) + std::string(1009, 'x'))).result ==
        ProxyParse::Done);
    CHECK(parse(v2(1, 0x11, std::string(1025, '\0'))).result == ProxyParse::Invalid);
    // A TLV running past the end.
    CHECK(parse(v2(1, 0x11, v4_addresses() + std::string("\x04\x00\x09xyz", 6))).result ==
          ProxyParse::Invalid);
    CHECK(parse(v2(1, 0x51, v4_addresses())).result == ProxyParse::Invalid); // family 5
}

TEST_CASE("AddressSet: networks, hosts, IPv4-mapped peers and unix") {
    AddressSet set;
    CHECK(set.empty());
    REQUIRE(set.add("10.0.0.0/8"));
    REQUIRE(set.add("192.0.2.7"));
    REQUIRE(set.add("2001:db8::/32"));
    CHECK_FALSE(set.add("10.0.0.1/8"));
    CHECK_FALSE(set.add("300.0.0.0/8"));
    CHECK_FALSE(set.add("::/129"));
    auto v4 = [](const char *ip) {
        sockaddr_in a{};
        a.sin_family = AF_INET;
        inet_pton(AF_INET, ip, &a.sin_addr);
        return a;
    };
    auto v6 = [](const char *ip) {
        sockaddr_in6 a{};
        a.sin6_family = AF_INET6;
        inet_pton(AF_INET6, ip, &a.sin6_addr);
        return a;
    };
    auto has = [&set](const auto &a) { return set.contains(reinterpret_cast<const sockaddr *>(&a)); };
    CHECK(has(v4("10.255.1.2")));
    CHECK_FALSE(has(v4("11.0.0.1")));
    CHECK(has(v4("192.0.2.7")));
    CHECK_FALSE(has(v4("192.0.2.8")));
    CHECK(has(v6("2001:db8:ffff::1")));
    CHECK_FALSE(has(v6("2001:db9::1")));
    CHECK(has(v6("::ffff:10.1.2.3")));
    sockaddr unix_peer{};
    unix_peer.sa_family = AF_UNIX;
    CHECK_FALSE(set.contains(&unix_peer));
    REQUIRE(set.add("unix"));
    CHECK(set.contains(&unix_peer));
    AddressSet odd;
    REQUIRE(odd.add("10.0.0.0/9"));
    CHECK(odd.contains(reinterpret_cast<const sockaddr *>(&(const sockaddr_in &)v4("10.127.0.1"))));
    CHECK_FALSE(odd.contains(reinterpret_cast<const sockaddr *>(&(const sockaddr_in &)v4("10.128.0.1"))));
}

namespace {

// The client forwarded_client finds in `lines`, as text ("" when it keeps the peer).
std::string client_of(trellis::RealIpHeader header, std::vector<std::string_view> lines,
                      const AddressSet &trusted) {
    sockaddr_in6 client{};
    if (!trellis::forwarded_client(header, lines, trusted, client))
        return "";
    char ip[INET6_ADDRSTRLEN] = "";
    if (client.sin6_family == AF_INET)
        inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in &>(client).sin_addr, ip, sizeof ip);
    else
        inet_ntop(AF_INET6, &client.sin6_addr, ip, sizeof ip);
    return ip;
}

} // namespace

TEST_CASE("X-Forwarded-For: the first untrusted hop from the right is the client") {
    using trellis::RealIpHeader;
    AddressSet trusted;
    REQUIRE(trusted.add("10.0.0.0/8"));
    auto xff = [&trusted](std::vector<std::string_view> lines) {
        return client_of(RealIpHeader::XForwardedFor, std::move(lines), trusted);
    };
    CHECK(xff({"203.0.113.7"}) == "203.0.113.7");
    CHECK(xff({"198.51.100.1, 203.0.113.7"}) == "203.0.113.7");
    CHECK(xff({"198.51.100.1, 203.0.113.7, 10.0.0.2"}) == "203.0.113.7");
    CHECK(xff({"198.51.100.1", "203.0.113.7 ,10.0.0.2"}) == "203.0.113.7"); // lines are one list
    CHECK(xff({"10.0.0.3, 10.0.0.2"}) == "10.0.0.3");                       // all trusted: the farthest
    CHECK(xff({"2001:db8::5"}) == "2001:db8::5");
    CHECK(xff({"[2001:db8::5]:443"}) == "2001:db8::5");
    CHECK(xff({"203.0.113.7:4711"}) == "203.0.113.7");
    // Left of the client is the client's own writing: never read, so garbage there changes nothing.
    CHECK(xff({"garbage, 203.0.113.7"}) == "203.0.113.7");
    CHECK(xff({", 203.0.113.7"}) == "203.0.113.7");
    // Where the trusted chain ends, an unreadable hop keeps the peer.
    CHECK(xff({"garbage"}) == "");
    CHECK(xff({"garbage, 10.0.0.2"}) == "");
    CHECK(xff({"203.0.113.7, "}) == "");
    CHECK(client_of(RealIpHeader::None, {"203.0.113.7"}, trusted) == "");
}

TEST_CASE("Forwarded: for= of each element, quoted, with ports, unknown nodes") {
    using trellis::RealIpHeader;
    AddressSet trusted;
    REQUIRE(trusted.add("10.0.0.0/8"));
    auto fwd = [&trusted](std::vector<std::string_view> lines) {
        return client_of(RealIpHeader::Forwarded, std::move(lines), trusted);
    };
    CHECK(fwd({"for=203.0.113.7"}) == "203.0.113.7");
    CHECK(fwd({"for=192.0.2.60;proto=http;by=203.0.113.43, for=203.0.113.7"}) == "203.0.113.7");
    CHECK(fwd({"For=\"[2001:db8:cafe::17]:4711\""}) == "2001:db8:cafe::17");
    CHECK(fwd({"proto=https;for=203.0.113.7, for=10.0.0.2"}) == "203.0.113.7");
    CHECK(fwd({"for=unknown, for=10.0.0.2"}) == ""); // RFC 7239's unknown node: the peer stays
    CHECK(fwd({"for=_hidden, for=10.0.0.2"}) == ""); // an obfuscated one too
    CHECK(fwd({"proto=http, for=10.0.0.2"}) == "");  // an element naming nobody
    CHECK(fwd({"for=_hidden, for=203.0.113.7"}) == "203.0.113.7");
    CHECK(fwd({"for=;;=="}) == "");
}

TEST_CASE("PROXY v2: LOCAL ignores whatever follows, even a short address block") {
    Parsed p = parse(v2(0, 0x11, std::string("\x01\x02", 2)));
    REQUIRE(p.result == ProxyParse::Done);
    CHECK(p.length == 18);
    CHECK_FALSE(p.header.has_source);
}
