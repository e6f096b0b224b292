// Loads plugin libraries and creates their instances. Errors name the file and the reason and
// stop the start (StartupError).
#pragma once

#include "config/config.hpp"
#include "errors.hpp"

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

// Identity of a file on disk: a library file replaced (even at the same path) compares unequal.
struct FileIdentity {
    uint64_t device = 0, inode = 0, size = 0;
    int64_t mtime_ns = 0;
    bool operator==(const FileIdentity &) const = default;
    static FileIdentity of(const std::string &path); // all zero when the file is missing
};

// One dlopen'ed library, closed when the last reference goes (after every instance is destroyed).
class PluginLibrary {
  public:
    // `private_copy`: load a copy of the file instead of the file itself. The dynamic loader
    // returns the library it already has for a path it has seen, so a .so rebuilt at the same
    // path is only really reloaded from a path of its own.
    static std::shared_ptr<PluginLibrary> open(const std::string &file, bool private_copy = false);
    ~PluginLibrary();
    const trellis_plugin *descriptor() const { return descriptor_; }
    const std::string &file() const { return file_; }
    const FileIdentity &identity() const { return identity_; }

  private:
    PluginLibrary(void *handle, const trellis_plugin *descriptor, std::string file, FileIdentity identity)
        : handle_(handle), descriptor_(descriptor), file_(std::move(file)), identity_(identity) {}
    void *handle_;
    const trellis_plugin *descriptor_;
    std::string file_;
    FileIdentity identity_;
};

// One created plugin instance; destroy() runs when the last generation using it lets go.
struct PluginInstance {
    PluginInstance() = default;
    PluginInstance(const PluginInstance &) = delete;
    PluginInstance &operator=(const PluginInstance &) = delete;
    ~PluginInstance();

    std::shared_ptr<PluginLibrary> library;
    const trellis_plugin *plugin = nullptr;
    void *instance = nullptr;
    trellis_plugin_ctx ctx;
    PluginConfig config; // what it was created from, to tell whether a reload changes it
    const std::string &name() const { return ctx.name; }
    bool has(size_t field_end) const { return plugin->struct_size >= field_end; }
    uint32_t flags() const {
        return has(offsetof(trellis_plugin, flags) + sizeof(uint32_t)) ? plugin->flags : 0;
    }
    // Optional ABI 1.1 hooks, null when the plugin's descriptor is older or leaves them out.
    decltype(trellis_plugin::on_abort) on_abort() const;
    decltype(trellis_plugin::on_writable) on_writable() const;
    decltype(trellis_plugin::on_body) on_body() const;
    // The plugin's Allow value, null when it takes any method (or its descriptor predates it).
    const char *allow() const {
        return has(offsetof(trellis_plugin, allow) + sizeof(const char *)) ? plugin->allow : nullptr;
    }
};

// Every plugin instance of one configuration (one generation).
class PluginSet {
  public:
    PluginSet() = default;
    PluginSet(const PluginSet &) = delete;
    PluginSet &operator=(const PluginSet &) = delete;
    ~PluginSet();

    // Loads and creates every plugin in config order; throws StartupError. With `previous` (a
    // reload), an instance whose config and library file are unchanged is shared, not re-created,
    // and libraries are loaded from private copies.
    void load(const std::vector<PluginConfig> &plugins, const std::string &config_dir,
              const PluginSet *previous = nullptr);
    PluginInstance *find(const std::string &name) const;
    bool contains(const PluginInstance *instance) const;
    const std::vector<std::shared_ptr<PluginInstance>> &instances() const { return instances_; }

  private:
    std::vector<std::shared_ptr<PluginInstance>> instances_;
};

// The host function table handed to every plugin.
const trellis_host *host_table();

} // namespace trellis
