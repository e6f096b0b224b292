// What a response's header fields mean whatever the protocol that frames them.
#pragma once

#include "http/request.hpp"

#include <string_view>

namespace trellis {

// A 304 stands for a representation the client already has (RFC 9110 section 15.4.5): it keeps
// what a cache updates (ETag, Cache-Control, Expires, Vary, Content-Location, and Last-Modified,
// as nginx sends it) and whatever else a plugin set (Set-Cookie, its own fields), but never the
// fields that describe a body it does not carry.
inline bool describes_absent_body(std::string_view name) {
    for (std::string_view body_field :
         {"content-type", "content-encoding", "content-language", "content-length", "content-range",
          "content-disposition", "accept-ranges", "x-content-type-options", "transfer-encoding"})
        if (iequals(name, body_field))
            return true;
    return false;
}

// The value of the Server field.
inline constexpr std::string_view kServerName = "trellis";

} // namespace trellis
