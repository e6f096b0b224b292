#include "net/address_set.hpp"

#include <arpa/inet.h>
#include <charconv>
#include <cstring>
#include <netinet/in.h>
#include <sys/socket.h>

namespace trellis {

bool AddressSet::add(std::string_view text) {
    if (text == "unix") {
        unix_peers_ = true;
        return true;
    }
    Network network;
    std::string address(text.substr(0, text.find('/')));
    if (inet_pton(AF_INET, address.c_str(), network.bytes) == 1)
        network.v6 = false;
    else if (inet_pton(AF_INET6, address.c_str(), network.bytes) == 1)
        network.v6 = true;
    else
        return false;
    unsigned width = network.v6 ? 128 : 32;
    network.prefix = width;
    if (size_t slash = text.find('/'); slash != std::string_view::npos) {
        std::string_view digits = text.substr(slash + 1);
        auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), network.prefix);
        if (digits.empty() || error != std::errc() || end != digits.data() + digits.size() ||
            network.prefix > width || (digits.size() > 1 && digits[0] == '0'))
            return false;
    }
    // "10.1.2.3/8" is almost always a typo for a host or for 10.0.0.0/8: refuse, as a route would.
    for (unsigned bit = network.prefix; bit < width; ++bit)
        if (network.bytes[bit / 8] & (0x80 >> (bit % 8)))
            return false;
    networks_.push_back(network);
    return true;
}

bool AddressSet::matches(const Network &network, bool v6, const uint8_t *bytes) {
    if (network.v6 != v6)
        return false;
    unsigned whole = network.prefix / 8, rest = network.prefix % 8;
    if (memcmp(network.bytes, bytes, whole) != 0)
        return false;
    if (rest == 0)
        return true;
    uint8_t mask = static_cast<uint8_t>(0xff << (8 - rest));
    return (network.bytes[whole] & mask) == (bytes[whole] & mask);
}

bool AddressSet::contains(const sockaddr *peer) const {
    if (!peer)
        return false;
    if (peer->sa_family == AF_UNIX)
        return unix_peers_;
    const uint8_t *bytes;
    bool v6;
    if (peer->sa_family == AF_INET) {
        bytes = reinterpret_cast<const uint8_t *>(&reinterpret_cast<const sockaddr_in *>(peer)->sin_addr);
        v6 = false;
    } else if (peer->sa_family == AF_INET6) {
        const auto *in6 = &reinterpret_cast<const sockaddr_in6 *>(peer)->sin6_addr;
        bytes = reinterpret_cast<const uint8_t *>(in6);
        v6 = true;
        if (IN6_IS_ADDR_V4MAPPED(in6)) {
            bytes += 12;
            v6 = false;
        }
    } else {
        return false;
    }
    for (const Network &network : networks_)
        if (matches(network, v6, bytes))
            return true;
    return false;
}

} // namespace trellis
