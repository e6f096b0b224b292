// Where an installed server finds what `cmake --install` put beside it.
#pragma once

#include <string>

namespace trellis {

// The plugin_dir of a configuration without one: the bundled plugins' install directory
// (<prefix>/lib/trellis/plugins), found from the running binary (<prefix>/bin/trellis), so an
// install under any --prefix finds its own plugins. When the binary's path cannot be read it is the
// directory compiled in for the configured CMAKE_INSTALL_PREFIX.
const std::string &default_plugin_dir();

} // namespace trellis
