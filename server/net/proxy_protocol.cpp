#include "net/proxy_protocol.hpp"

#include <algorithm>
#include <arpa/inet.h>
#include <cstdint>
#include <cstring>
#include <netinet/in.h>
#include <string>

namespace trellis {
namespace {

constexpr std::string_view kV1Prefix = "PROXY ";
constexpr std::string_view kV2Signature{"\r\n\r\n\0\r\nQUIT\n", 12};

// "0" to "65535" with no leading zero, as the specification asks.
bool parse_port(std::string_view text, uint16_t &port) {
    if (text.empty() || text.size() > 5 || (text.size() > 1 && text[0] == '0'))
        return false;
    unsigned value = 0;
    for (char c : text) {
        if (c < '0' || c > '9')
            return false;
        value = value * 10 + static_cast<unsigned>(c - '0');
    }
    if (value > 65535)
        return false;
    port = static_cast<uint16_t>(value);
    return true;
}

bool set_address(int family, std::string_view text, uint16_t port, sockaddr_storage &out) {
    std::string address(text);
    out = {};
    if (family == AF_INET) {
        auto *v4 = reinterpret_cast<sockaddr_in *>(&out);
        v4->sin_family = AF_INET;
        v4->sin_port = htons(port);
        return inet_pton(AF_INET, address.c_str(), &v4->sin_addr) == 1;
    }
    auto *v6 = reinterpret_cast<sockaddr_in6 *>(&out);
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(port);
    return inet_pton(AF_INET6, address.c_str(), &v6->sin6_addr) == 1;
}

// "PROXY TCP4 192.0.2.1 198.51.100.1 56324 443\r\n", or "PROXY UNKNOWN ...\r\n".
ProxyParse parse_v1(std::string_view bytes, size_t &length, ProxyHeader &header, const char *&why) {
    size_t end = bytes.find("\r\n");
    if (end == std::string_view::npos || end + 2 > kProxyV1Max) {
        if (bytes.size() < kProxyV1Max && bytes.find('\n') == std::string_view::npos)
            return ProxyParse::NeedMore;
        why = "PROXY v1 line without CRLF within 107 bytes";
        return ProxyParse::Invalid;
    }
    std::string_view line = bytes.substr(kV1Prefix.size(), end - kV1Prefix.size());
    length = end + 2;
    header = {};
    if (line == "UNKNOWN" || line.rfind("UNKNOWN ", 0) == 0)
        return ProxyParse::Done;
    std::string_view fields[5];
    size_t count = 0, start = 0;
    for (;;) {
        size_t space = line.find(' ', start);
        if (count == 5) {
            why = "PROXY v1 line with too many fields";
            return ProxyParse::Invalid;
        }
        fields[count++] = line.substr(start, space == std::string_view::npos ? space : space - start);
        if (space == std::string_view::npos)
            break;
        start = space + 1;
    }
    int family = fields[0] == "TCP4" ? AF_INET : fields[0] == "TCP6" ? AF_INET6 : AF_UNSPEC;
    uint16_t source_port = 0, destination_port = 0;
    sockaddr_storage destination;
    if (count != 5 || family == AF_UNSPEC) {
        why = "PROXY v1 line is not \"TCP4|TCP6 SRC DST SPORT DPORT\"";
        return ProxyParse::Invalid;
    }
    if (!parse_port(fields[3], source_port) || !parse_port(fields[4], destination_port) ||
        !set_address(family, fields[1], source_port, header.source) ||
        !set_address(family, fields[2], destination_port, destination)) {
        why = "PROXY v1 line with a bad address or port";
        return ProxyParse::Invalid;
    }
    header.has_source = true;
    return ProxyParse::Done;
}

// 12-byte signature, version/command, family/protocol, 16-bit length, addresses, TLVs.
ProxyParse parse_v2(std::string_view bytes, size_t &length, ProxyHeader &header, const char *&why) {
    if (bytes.size() < 16)
        return ProxyParse::NeedMore;
    auto byte = [&bytes](size_t i) { return static_cast<uint8_t>(bytes[i]); };
    uint8_t version = byte(12) >> 4, command = byte(12) & 0x0f;
    uint8_t family = byte(13) >> 4, protocol = byte(13) & 0x0f;
    size_t declared = (size_t{byte(14)} << 8) | byte(15);
    if (version != 2 || command > 1) {
        why = "PROXY v2 header with an unknown version or command";
        return ProxyParse::Invalid;
    }
    if (16 + declared > kProxyV2Max) {
        why = "PROXY v2 header longer than 1040 bytes";
        return ProxyParse::Invalid;
    }
    if (bytes.size() < 16 + declared)
        return ProxyParse::NeedMore;
    length = 16 + declared;
    header = {};
    // LOCAL (a balancer's own check) carries no client: whatever follows is ignored, as the
    // specification asks of a receiver.
    if (command == 0)
        return ProxyParse::Done;
    static constexpr size_t kAddressBytes[] = {0, 12, 36, 216}; // unspec, inet, inet6, unix
    if (family > 3 || protocol > 2) {
        why = "PROXY v2 header with an unknown address family or protocol";
        return ProxyParse::Invalid;
    }
    size_t addresses = kAddressBytes[family];
    if (addresses > declared) {
        why = "PROXY v2 addresses longer than the header";
        return ProxyParse::Invalid;
    }
    // The TLVs after the addresses must tile the rest exactly: a length running past the end is
    // a forged or broken header.
    for (size_t at = 16 + addresses; at < length;) {
        if (length - at < 3 || length - at - 3 < ((size_t{byte(at + 1)} << 8) | byte(at + 2))) {
            why = "PROXY v2 TLV running past the header";
            return ProxyParse::Invalid;
        }
        at += 3 + ((size_t{byte(at + 1)} << 8) | byte(at + 2));
    }
    // Unspecified, datagram or Unix: the socket's peer stands.
    if (protocol != 1 || (family != 1 && family != 2))
        return ProxyParse::Done;
    const char *at = bytes.data() + 16;
    header.source = {};
    if (family == 1) {
        auto *v4 = reinterpret_cast<sockaddr_in *>(&header.source);
        v4->sin_family = AF_INET;
        memcpy(&v4->sin_addr, at, 4);
        memcpy(&v4->sin_port, at + 8, 2); // network order on both sides
    } else {
        auto *v6 = reinterpret_cast<sockaddr_in6 *>(&header.source);
        v6->sin6_family = AF_INET6;
        memcpy(&v6->sin6_addr, at, 16);
        memcpy(&v6->sin6_port, at + 32, 2);
    }
    header.has_source = true;
    return ProxyParse::Done;
}

} // namespace

ProxyParse parse_proxy_header(std::string_view bytes, size_t &length, ProxyHeader &header, const char *&why) {
    // What has arrived must be a beginning of one of the two; anything else is not a PROXY header.
    size_t v1 = std::min(bytes.size(), kV1Prefix.size());
    size_t v2 = std::min(bytes.size(), kV2Signature.size());
    if (bytes.substr(0, v1) == kV1Prefix.substr(0, v1) && !bytes.empty()) {
        if (bytes.size() < kV1Prefix.size())
            return ProxyParse::NeedMore;
        return parse_v1(bytes, length, header, why);
    }
    if (bytes.substr(0, v2) == kV2Signature.substr(0, v2) && !bytes.empty()) {
        if (bytes.size() < kV2Signature.size())
            return ProxyParse::NeedMore;
        return parse_v2(bytes, length, header, why);
    }
    if (bytes.empty())
        return ProxyParse::NeedMore;
    why = "no PROXY protocol header";
    return ProxyParse::Invalid;
}

} // namespace trellis
