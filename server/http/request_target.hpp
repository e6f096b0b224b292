// The request target and the host it names, whatever protocol carried them (HTTP/1.1's request
// line and Host, HTTP/2's :path and :authority): syntax checks and normalisation.
#pragma once

#include "http/char_sets.hpp"
#include "http/request.hpp"

#include <string>
#include <string_view>

namespace trellis {

// "Example.COM:8080" -> "example.com"; "[::1]:80" -> "[::1]". False when the syntax or the port
// is wrong.
bool normalize_host(std::string_view raw, std::string &out);
// The request target (origin or absolute form; never a fragment): sets request.path (normalised),
// request.query and request.host (from the target's authority, else from Host).
int parse_request_target(trellis_request &request);

} // namespace trellis
