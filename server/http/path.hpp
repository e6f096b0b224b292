// Request-target path normalisation: what every plugin sees as the request path.
#pragma once

#include <string>
#include <string_view>

namespace trellis {

enum class PathError { None, NotAbsolute, BadEscape, EncodedSlash, Nul, Backslash, AboveRoot };

// Percent-decodes `raw` once and resolves "." and ".." segments, merging repeated '/'. A path that
// needs a decoded NUL or '/', a backslash, or a ".." above the root is refused: such requests are
// attacks or mistakes, and a plugin mapping paths to files must never see them. A trailing '/' is
// kept ("/docs/" stays a directory request).
PathError normalize_path(std::string_view raw, std::string &out);
// The value of a hexadecimal digit, or -1.
int hex_value(char c);
const char *path_error_text(PathError error);

} // namespace trellis
