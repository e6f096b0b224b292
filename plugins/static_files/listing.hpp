// Directory listings for the static plugin: an HTML page or JSON.
#pragma once

#include <string>
#include <string_view>

namespace static_files {

// Lists the directory open as `dir_fd` (not consumed) into `out`, sorted by name; dotfiles are
// left out when `hide_dotfiles`. `url_path` is the directory's URL path (for the title). False if
// it cannot be read. At most 10,000 entries are listed (the HTML says so when cut).
// Percent-encodes `text` for a URL (RFC 3986 unreserved characters pass; '/' too if asked).
void url_escape(std::string &out, std::string_view text, bool keep_slash);

bool list_directory(int dir_fd, bool hide_dotfiles, bool json, std::string_view url_path, std::string &out);

} // namespace static_files
