// The PROXY protocol (HAProxy's, versions 1 and 2): the header a load balancer sends before the
// client's bytes to say whom the connection is for. Parsing only; reading it off a socket is
// ProxyHeaderReader's job.
#pragma once

#include <cstddef>
#include <string_view>
#include <sys/socket.h>

namespace trellis {

// v1 is one text line of at most 107 bytes; v2 is 16 bytes plus what they announce, bounded here
// (addresses take at most 216 bytes; the rest are TLVs a balancer may add, not thousands of them).
constexpr size_t kProxyV1Max = 107;
constexpr size_t kProxyV2Max = 16 + 1024;
constexpr size_t kProxyHeaderMax = kProxyV2Max;

struct ProxyHeader {
    // False for v1 "UNKNOWN" and v2 LOCAL or unspecified/Unix addresses (a balancer's own health
    // check): the connection's own peer stands.
    bool has_source = false;
    sockaddr_storage source{}; // the client: AF_INET or AF_INET6, with its port
};

enum class ProxyParse { NeedMore, Done, Invalid };

// `bytes`: everything the connection has sent so far. Done sets `length` (the header's bytes;
// what follows is the client's) and `header`. Invalid sets `why`. NeedMore never holds for
// kProxyHeaderMax bytes or more: every byte seen so far then belongs to the header.
ProxyParse parse_proxy_header(std::string_view bytes, size_t &length, ProxyHeader &header, const char *&why);

} // namespace trellis
