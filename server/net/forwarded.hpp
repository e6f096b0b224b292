// The client a chain of proxies names in X-Forwarded-For or Forwarded (RFC 7239). Believed only
// as far as the chain runs through trusted proxies: read from the right (the hop nearest to us),
// each trusted address is a proxy that forwarded, and the first untrusted one is the client.
// Hops further left were written by that client and mean nothing; they are not even parsed.
#pragma once

#include "net/address_set.hpp"

#include <netinet/in.h>
#include <string_view>
#include <vector>

namespace trellis {

// Which header the trusted proxies maintain (listen[].real_ip_header). Only one is read: a proxy
// appends to its own and passes the other through as the client sent it.
enum class RealIpHeader { XForwardedFor, Forwarded, None };

// `lines`: every line of that header, in order (several lines are one list). False when the hop
// where the trusted chain ends cannot be read (an "unknown" or obfuscated node, a typo): the
// caller keeps the peer it has. The client's port is left 0 (unknown).
bool forwarded_client(RealIpHeader header, const std::vector<std::string_view> &lines,
                      const AddressSet &trusted, sockaddr_in6 &client);

} // namespace trellis
