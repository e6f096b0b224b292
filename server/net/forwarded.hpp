// The client a chain of proxies names in X-Forwarded-For or Forwarded (RFC 7239). Believed only
// as far as the chain runs through trusted proxies: read from the right (the hop nearest to us),
// each trusted address is a proxy that forwarded, and the first untrusted one is the client.
#pragma once

#include "net/address_set.hpp"

#include <netinet/in.h>
#include <string_view>
#include <vector>

namespace trellis {

// `forwarded` / `x_forwarded_for`: every line of each header, in order (several lines are one
// list). Forwarded wins when both came. False when neither names an address we can read (an
// "unknown" or obfuscated node, a typo): the caller keeps the peer it has. The client's port is
// left 0 (unknown).
bool forwarded_client(const std::vector<std::string_view> &forwarded,
                      const std::vector<std::string_view> &x_forwarded_for, const AddressSet &trusted,
                      sockaddr_in6 &client);

} // namespace trellis
