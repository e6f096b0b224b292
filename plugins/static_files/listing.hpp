// Directory listings for the static plugin: an HTML page or JSON.
#pragma once

#include <string>
#include <string_view>

namespace static_files {

// Lists the directory open as `dir_fd` (not consumed) into `out`, sorted by name; dotfiles are
// left out when `hide_dotfiles`. `url_path` is the directory's URL path (for the title). False if
// it cannot be read.
bool list_directory(int dir_fd, bool hide_dotfiles, bool json, std::string_view url_path, std::string &out);

} // namespace static_files
