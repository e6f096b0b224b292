#include "plugin/loader.hpp"

#include "log/log.hpp"

#include <cstddef>
#include <dlfcn.h>
#include <sys/stat.h>

namespace trellis {
namespace {

// The smallest descriptor this host can use: ABI 1.0 ends with on_request.
constexpr size_t kMinPluginSize = offsetof(trellis_plugin, on_request) + sizeof(trellis_plugin::on_request);

std::string version_text(uint32_t version) {
    return std::to_string(version >> 16) + "." + std::to_string(version & 0xffff);
}

} // namespace

std::shared_ptr<PluginLibrary> PluginLibrary::open(const std::string &file) {
    struct stat st;
    if (stat(file.c_str(), &st) != 0)
        throw StartupError("plugin " + file + ": file not found");
    void *handle = dlopen(file.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!handle) {
        const char *why = dlerror();
        throw StartupError("plugin " + file + ": cannot load: " + (why ? why : "unknown dlopen error"));
    }
    using EntryFn = const trellis_plugin *(*)();
    void *symbol = dlsym(handle, TRELLIS_PLUGIN_ENTRY_SYMBOL);
    if (!symbol) {
        dlclose(handle);
        throw StartupError("plugin " + file +
                           ": not a Trellis plugin (no " TRELLIS_PLUGIN_ENTRY_SYMBOL " symbol)");
    }
    auto entry = reinterpret_cast<EntryFn>(symbol);
    const trellis_plugin *descriptor = entry();
    std::string problem;
    if (!descriptor)
        problem = TRELLIS_PLUGIN_ENTRY_SYMBOL "() returned NULL";
    else if ((descriptor->abi_version >> 16) != TRELLIS_ABI_MAJOR)
        problem = "ABI mismatch: plugin built for ABI " + version_text(descriptor->abi_version) +
                  ", this server speaks ABI " + version_text(TRELLIS_ABI_VERSION);
    else if (descriptor->struct_size < kMinPluginSize)
        problem = "descriptor too small (" + std::to_string(descriptor->struct_size) + " bytes, ABI " +
                  version_text(descriptor->abi_version) + " needs at least " +
                  std::to_string(kMinPluginSize) + ")";
    else if (!descriptor->create || !descriptor->destroy || !descriptor->on_request)
        problem = "descriptor lacks create, destroy or on_request";
    if (!problem.empty()) {
        dlclose(handle);
        throw StartupError("plugin " + file + ": " + problem);
    }
    return std::shared_ptr<PluginLibrary>(new PluginLibrary(handle, descriptor, file));
}

PluginLibrary::~PluginLibrary() {
    dlclose(handle_);
}

PluginSet::~PluginSet() {
    // Destroy in reverse creation order; each library closes with its last instance.
    while (!instances_.empty()) {
        PluginInstance &p = *instances_.back();
        if (p.instance)
            p.plugin->destroy(p.instance);
        instances_.pop_back();
    }
}

void PluginSet::load(const std::vector<PluginConfig> &plugins, const std::string &config_dir) {
    std::vector<std::pair<std::string, std::shared_ptr<PluginLibrary>>> opened;
    for (const PluginConfig &config : plugins) {
        std::shared_ptr<PluginLibrary> library;
        for (auto &[file, lib] : opened)
            if (file == config.file)
                library = lib;
        if (!library) {
            library = PluginLibrary::open(config.file);
            opened.emplace_back(config.file, library);
        }
        auto instance = std::make_unique<PluginInstance>();
        instance->library = library;
        instance->plugin = library->descriptor();
        instance->ctx.name = config.name;
        instance->ctx.config_dir = config_dir;
        char err[512] = {};
        int rc = instance->plugin->create(host_table(), &instance->ctx, config.config_json.data(),
                                          config.config_json.size(), &instance->instance, err, sizeof err);
        if (rc != TRELLIS_OK) {
            err[sizeof err - 1] = '\0';
            throw StartupError("plugin \"" + config.name + "\" (" + config.file +
                               "): create failed: " + (err[0] ? err : "no reason given"));
        }
        TRELLIS_LOG_DEBUG("plugin \"%s\" loaded from %s (%s %s)", config.name.c_str(), config.file.c_str(),
                          instance->plugin->name ? instance->plugin->name : "?",
                          instance->plugin->version ? instance->plugin->version : "");
        instances_.push_back(std::move(instance));
    }
}

PluginInstance *PluginSet::find(const std::string &name) {
    for (auto &instance : instances_)
        if (instance->name() == name)
            return instance.get();
    return nullptr;
}

} // namespace trellis
