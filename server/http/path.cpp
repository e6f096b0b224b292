#include "http/path.hpp"

namespace trellis {

int hex_value(char c) {
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

const char *path_error_text(PathError error) {
    switch (error) {
    case PathError::None:
        return "ok";
    case PathError::NotAbsolute:
        return "path does not start with '/'";
    case PathError::BadEscape:
        return "malformed percent-escape in path";
    case PathError::EncodedSlash:
        return "encoded '/' in path";
    case PathError::Nul:
        return "NUL byte in path";
    case PathError::Backslash:
        return "backslash in path";
    case PathError::AboveRoot:
        return "path climbs above the root";
    }
    return "bad path";
}

PathError normalize_path(std::string_view raw, std::string &out) {
    out.clear();
    if (raw.empty() || raw[0] != '/')
        return PathError::NotAbsolute;
    out.reserve(raw.size());
    out.push_back('/');
    // Decoded bytes go straight into `out`; at each '/' the segment just written is inspected, so
    // the common path costs one pass and no allocation.
    bool ends_as_directory = true;
    for (size_t i = 1; i <= raw.size(); ++i) {
        if (i == raw.size() || raw[i] == '/') {
            size_t start = out.rfind('/') + 1;
            std::string_view segment(out.data() + start, out.size() - start);
            ends_as_directory = segment.empty() || segment == "." || segment == "..";
            if (segment == "..") {
                if (start <= 1)
                    return PathError::AboveRoot;
                out.resize(out.rfind('/', start - 2) + 1);
            } else if (segment == ".") {
                out.resize(start);
            } else if (!segment.empty()) {
                out.push_back('/');
            }
            continue;
        }
        char c = raw[i];
        if (c == '%') {
            if (i + 2 >= raw.size())
                return PathError::BadEscape;
            int high = hex_value(raw[i + 1]), low = hex_value(raw[i + 2]);
            if (high < 0 || low < 0)
                return PathError::BadEscape;
            c = static_cast<char>(high * 16 + low);
            i += 2;
            if (c == '/')
                return PathError::EncodedSlash;
        }
        if (c == '\0')
            return PathError::Nul;
        if (c == '\\')
            return PathError::Backslash;
        out.push_back(c);
    }
    // `out` now ends with '/'; keep it only where the request named a directory ("/docs/").
    if (out.size() > 1 && !ends_as_directory)
        out.pop_back();
    return PathError::None;
}

} // namespace trellis
