// What stops a start (or a reload): each carries one line naming the file, the JSON pointer or
// the address concerned, and the reason. main() logs it and exits 1; a reload logs it and keeps
// the running generation.
#pragma once

#include <stdexcept>

namespace trellis {

// The configuration file cannot be read, is not JSON, or a value is wrong (a JSON pointer names it).
class ConfigError : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};

// Something the configuration names cannot be used: a plugin, a certificate, an address, a file.
class StartupError : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};

} // namespace trellis
