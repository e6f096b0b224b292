#include "config/install_dirs.hpp"

#include <filesystem>
#include <system_error>

#ifndef TRELLIS_PLUGIN_DIR_FROM_BINDIR
#define TRELLIS_PLUGIN_DIR_FROM_BINDIR "../lib/trellis/plugins"
#endif
#ifndef TRELLIS_INSTALL_FULL_PLUGIN_DIR
#define TRELLIS_INSTALL_FULL_PLUGIN_DIR "/usr/local/lib/trellis/plugins"
#endif

namespace trellis {

const std::string &default_plugin_dir() {
    // Computed once: the binary does not move while it runs.
    static const std::string dir = [] {
        std::filesystem::path relative(TRELLIS_PLUGIN_DIR_FROM_BINDIR);
        if (relative.is_absolute())
            return relative.lexically_normal().string();
        std::error_code ec;
        std::filesystem::path exe = std::filesystem::read_symlink("/proc/self/exe", ec);
        if (ec || exe.empty() || !exe.is_absolute())
            return std::string(TRELLIS_INSTALL_FULL_PLUGIN_DIR);
        std::string normal = (exe.parent_path() / relative).lexically_normal().string();
        while (normal.size() > 1 && normal.back() == '/')
            normal.pop_back();
        return normal;
    }();
    return dir;
}

} // namespace trellis
