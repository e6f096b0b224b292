#include "net/forwarded.hpp"

#include "net/ows.hpp"

#include <arpa/inet.h>
#include <cstring>
#include <string>

namespace trellis {
namespace {

bool lower_equals(std::string_view a, std::string_view lower) {
    if (a.size() != lower.size())
        return false;
    for (size_t i = 0; i < a.size(); ++i)
        if ((a[i] >= 'A' && a[i] <= 'Z' ? a[i] + 32 : a[i]) != lower[i])
            return false;
    return true;
}

// "192.0.2.1", "192.0.2.1:4711", "2001:db8::1", "[2001:db8::1]", "[2001:db8::1]:4711".
bool parse_node(std::string_view node, sockaddr_in6 &out) {
    std::string address;
    if (!node.empty() && node.front() == '[') {
        size_t close = node.find(']');
        if (close == std::string_view::npos)
            return false;
        address = node.substr(1, close - 1);
    } else if (node.find(':') != node.rfind(':')) {
        address = node; // bare IPv6
    } else {
        address = node.substr(0, node.find(':')); // IPv4, maybe with a port
    }
    out = {};
    auto *v4 = reinterpret_cast<sockaddr_in *>(&out);
    if (inet_pton(AF_INET, address.c_str(), &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        return true;
    }
    out = {};
    if (inet_pton(AF_INET6, address.c_str(), &out.sin6_addr) == 1) {
        out.sin6_family = AF_INET6;
        return true;
    }
    return false;
}

// A Forwarded element's for= value ("" when it has none, or is not "key=value;..." at all).
std::string_view forwarded_for(std::string_view element) {
    std::string_view found;
    while (!element.empty()) {
        size_t semicolon = element.find(';');
        std::string_view pair = trim_ows(element.substr(0, semicolon));
        element = semicolon == std::string_view::npos ? std::string_view() : element.substr(semicolon + 1);
        size_t equals = pair.find('=');
        if (equals == std::string_view::npos)
            return {};
        if (!lower_equals(trim_ows(pair.substr(0, equals)), "for"))
            continue;
        found = trim_ows(pair.substr(equals + 1));
        if (found.size() >= 2 && found.front() == '"' && found.back() == '"')
            found = found.substr(1, found.size() - 2);
    }
    return found;
}

} // namespace

bool forwarded_client(RealIpHeader header, const std::vector<std::string_view> &lines,
                      const AddressSet &trusted, sockaddr_in6 &client) {
    if (header == RealIpHeader::None)
        return false;
    // The hops, left to right; an element that names nobody stays as "" (unreadable if reached).
    std::vector<std::string_view> hops;
    for (std::string_view line : lines)
        for (size_t at = 0; at <= line.size();) {
            size_t comma = line.find(',', at);
            std::string_view element =
                trim_ows(line.substr(at, comma == std::string_view::npos ? comma : comma - at));
            hops.push_back(header == RealIpHeader::Forwarded ? forwarded_for(element) : element);
            if (comma == std::string_view::npos)
                break;
            at = comma + 1;
        }
    // From the nearest hop outwards; when every hop is trusted, the farthest one is the client.
    for (size_t i = hops.size(); i-- > 0;) {
        sockaddr_in6 hop;
        if (!parse_node(hops[i], hop))
            return false;
        if (i == 0 || !trusted.contains(reinterpret_cast<const sockaddr *>(&hop))) {
            client = hop;
            return true;
        }
    }
    return false;
}

} // namespace trellis
