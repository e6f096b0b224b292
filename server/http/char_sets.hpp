// Which bytes belong to the syntax of HTTP tokens and hosts (RFC 9110), as tables: checked per
// byte of every header, so a lookup rather than a search.
#pragma once

#include <array>
#include <string_view>

namespace trellis {

namespace detail {
// One flag per byte value: which bytes belong to a set. Checked per byte of every header, so a
// table lookup rather than a search.
constexpr std::array<bool, 256> byte_set(std::string_view extra) {
    std::array<bool, 256> set{};
    for (int c = '0'; c <= '9'; ++c)
        set[static_cast<size_t>(c)] = true;
    for (int c = 'a'; c <= 'z'; ++c)
        set[static_cast<size_t>(c)] = set[static_cast<size_t>(c - 'a' + 'A')] = true;
    for (char c : extra)
        set[static_cast<unsigned char>(c)] = true;
    return set;
}
inline constexpr std::array<bool, 256> kTokenChars = byte_set("!#$%&'*+-.^_`|~");
inline constexpr std::array<bool, 256> kHostChars = byte_set("-._~!$&'()*+,;=:[]%");
} // namespace detail

// A token character (RFC 9110 section 5.6.2).
inline bool is_token_char(unsigned char c) {
    return detail::kTokenChars[c];
}
// Host header syntax (RFC 9110 section 7.2 / RFC 3986 authority without userinfo).
inline bool valid_host(std::string_view host) {
    for (unsigned char c : host)
        if (!detail::kHostChars[c])
            return false;
    return true;
}
} // namespace trellis
