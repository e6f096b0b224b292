// File extension -> media type, for the static plugin.
#pragma once

#include <string_view>

namespace static_files {

// The type for a file name, by its extension (case-insensitive); text types carry
// "; charset=utf-8". Unknown extensions give "application/octet-stream".
std::string_view mime_type(std::string_view file_name);

} // namespace static_files
