// HTTP's optional whitespace (RFC 9110 section 5.6.3: spaces and tabs) around a header value or
// a list element, for the parsers of header values wherever they live.
#pragma once

#include <string_view>

namespace trellis {

inline std::string_view trim_ows(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t'))
        s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t'))
        s.remove_suffix(1);
    return s;
}

} // namespace trellis
