// Loads plugin libraries and creates their instances. Errors name the file and the reason and
// stop the start (StartupError).
#pragma once

#include "config/config.hpp"

#include <trellis/plugin.h>

#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

struct trellis_plugin_ctx {
    std::string name;       // the instance name from the config, for log lines
    std::string config_dir; // where relative paths in its config resolve
};

namespace trellis {

class StartupError : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};

// One dlopen'ed library, closed when the last reference goes (after every instance is destroyed).
class PluginLibrary {
  public:
    static std::shared_ptr<PluginLibrary> open(const std::string &file);
    ~PluginLibrary();
    const trellis_plugin *descriptor() const { return descriptor_; }
    const std::string &file() const { return file_; }

  private:
    PluginLibrary(void *handle, const trellis_plugin *descriptor, std::string file)
        : handle_(handle), descriptor_(descriptor), file_(std::move(file)) {}
    void *handle_;
    const trellis_plugin *descriptor_;
    std::string file_;
};

struct PluginInstance {
    std::shared_ptr<PluginLibrary> library;
    const trellis_plugin *plugin = nullptr;
    void *instance = nullptr;
    trellis_plugin_ctx ctx;
    const std::string &name() const { return ctx.name; }
    bool has(size_t field_end) const { return plugin->struct_size >= field_end; }
};

// Owns every plugin instance of one configuration.
class PluginSet {
  public:
    PluginSet() = default;
    PluginSet(const PluginSet &) = delete;
    PluginSet &operator=(const PluginSet &) = delete;
    ~PluginSet();

    // Loads and creates every plugin in config order; throws StartupError.
    void load(const std::vector<PluginConfig> &plugins, const std::string &config_dir);
    PluginInstance *find(const std::string &name);
    std::vector<std::unique_ptr<PluginInstance>> &instances() { return instances_; }

  private:
    std::vector<std::unique_ptr<PluginInstance>> instances_;
};

// The host function table handed to every plugin.
const trellis_host *host_table();

} // namespace trellis
