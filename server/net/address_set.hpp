// A set of peer addresses as the configuration names them ("trusted_proxies"): IPv4 and IPv6
// networks in CIDR notation, and "unix" for peers on a Unix-domain socket. Only who may speak
// for a client (a PROXY header, X-Forwarded-For) is decided here.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

struct sockaddr;

namespace trellis {

class AddressSet {
  public:
    // Adds "10.0.0.0/8", "2001:db8::/32", a bare address (one host) or "unix". False (and the set
    // unchanged) for anything else: a bad address, a prefix too long for its family, host bits set.
    bool add(std::string_view text);
    bool empty() const { return networks_.empty() && !unix_peers_; }
    bool trusts_unix() const { return unix_peers_; }
    // An IPv4-mapped IPv6 peer (::ffff:10.1.2.3) matches the IPv4 networks.
    bool contains(const sockaddr *peer) const;

    bool operator==(const AddressSet &) const = default;

  private:
    struct Network {
        bool v6 = false;
        uint8_t bytes[16] = {};
        unsigned prefix = 0;
        bool operator==(const Network &) const = default;
    };
    static bool matches(const Network &network, bool v6, const uint8_t *bytes);

    std::vector<Network> networks_;
    bool unix_peers_ = false;
};

} // namespace trellis
