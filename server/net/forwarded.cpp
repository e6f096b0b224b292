#include "net/forwarded.hpp"

#include <arpa/inet.h>
#include <cstring>
#include <string>

namespace trellis {
namespace {

std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t'))
        s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t'))
        s.remove_suffix(1);
    return s;
}

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

// Splits every line at commas into `nodes`; for Forwarded, takes each element's for= parameter.
bool collect(const std::vector<std::string_view> &lines, bool forwarded,
             std::vector<std::string_view> &nodes) {
    for (std::string_view line : lines) {
        while (!line.empty()) {
            size_t comma = line.find(',');
            std::string_view element = trim(line.substr(0, comma));
            line = comma == std::string_view::npos ? std::string_view() : line.substr(comma + 1);
            if (!forwarded) {
                nodes.push_back(element);
                continue;
            }
            bool found = false;
            while (!element.empty()) {
                size_t semicolon = element.find(';');
                std::string_view pair = trim(element.substr(0, semicolon));
                element =
                    semicolon == std::string_view::npos ? std::string_view() : element.substr(semicolon + 1);
                size_t equals = pair.find('=');
                if (equals == std::string_view::npos)
                    return false;
                if (!lower_equals(trim(pair.substr(0, equals)), "for"))
                    continue;
                std::string_view value = trim(pair.substr(equals + 1));
                if (value.size() >= 2 && value.front() == '"' && value.back() == '"')
                    value = value.substr(1, value.size() - 2);
                nodes.push_back(value);
                found = true;
            }
            if (!found)
                return false; // an element without for= says nothing about who sent it
        }
    }
    return !nodes.empty();
}

} // namespace

bool forwarded_client(const std::vector<std::string_view> &forwarded,
                      const std::vector<std::string_view> &x_forwarded_for, const AddressSet &trusted,
                      sockaddr_in6 &client) {
    std::vector<std::string_view> nodes;
    if (!forwarded.empty() ? !collect(forwarded, true, nodes) : !collect(x_forwarded_for, false, nodes))
        return false;
    std::vector<sockaddr_in6> chain(nodes.size());
    for (size_t i = 0; i < nodes.size(); ++i)
        if (!parse_node(nodes[i], chain[i]))
            return false;
    // From the nearest hop outwards; when every hop is trusted, the farthest one is the client.
    for (size_t i = chain.size(); i-- > 0;) {
        if (i == 0 || !trusted.contains(reinterpret_cast<const sockaddr *>(&chain[i]))) {
            client = chain[i];
            return true;
        }
    }
    return false;
}

} // namespace trellis
