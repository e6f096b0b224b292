#include "plugin/loader.hpp"

#include "log/log.hpp"

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <dlfcn.h>
#include <fcntl.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <unistd.h>

namespace trellis {
namespace {

// The smallest descriptor this host can use: ABI 1.0 ends with on_request.
constexpr size_t kMinPluginSize = offsetof(trellis_plugin, on_request) + sizeof(trellis_plugin::on_request);

std::string version_text(uint32_t version) {
    return std::to_string(version >> 16) + "." + std::to_string(version & 0xffff);
}

// Copies `file` to a fresh name under $TMPDIR (or /tmp) and returns that path.
std::string copy_privately(const std::string &file) {
    static std::atomic<unsigned> counter{0};
    const char *tmp = getenv("TMPDIR");
    std::string dir = (tmp && *tmp) ? tmp : "/tmp";
    size_t slash = file.rfind('/');
    std::string base = slash == std::string::npos ? file : file.substr(slash + 1);
    std::string copy =
        dir + "/trellis-" + std::to_string(getpid()) + "-" + std::to_string(++counter) + "-" + base;
    int in = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
    if (in < 0)
        throw StartupError("plugin " + file + ": cannot read: " + strerror(errno));
    int out = ::open(copy.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0700);
    if (out < 0) {
        int err = errno;
        ::close(in);
        throw StartupError("plugin " + file + ": cannot copy to " + copy + ": " + strerror(err));
    }
    struct stat st = {};
    fstat(in, &st);
    off_t offset = 0;
    bool ok = true;
    while (ok && offset < st.st_size)
        ok = sendfile(out, in, &offset, static_cast<size_t>(st.st_size - offset)) > 0;
    ::close(in);
    if (::close(out) != 0 || !ok) {
        unlink(copy.c_str());
        throw StartupError("plugin " + file + ": cannot copy to " + copy);
    }
    return copy;
}

} // namespace

FileIdentity FileIdentity::of(const std::string &path) {
    struct stat st;
    if (stat(path.c_str(), &st) != 0)
        return {};
    return {static_cast<uint64_t>(st.st_dev), static_cast<uint64_t>(st.st_ino),
            static_cast<uint64_t>(st.st_size),
            static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec};
}

std::shared_ptr<PluginLibrary> PluginLibrary::open(const std::string &file, bool private_copy) {
    FileIdentity identity = FileIdentity::of(file);
    if (identity == FileIdentity{})
        throw StartupError("plugin " + file + ": file not found");
    std::string load_path = private_copy ? copy_privately(file) : file;
    void *handle = dlopen(load_path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (private_copy)
        unlink(load_path.c_str()); // mapped now (or failed): the copy needs no name
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
    return std::shared_ptr<PluginLibrary>(new PluginLibrary(handle, descriptor, file, identity));
}

PluginLibrary::~PluginLibrary() {
    dlclose(handle_);
}

PluginInstance::~PluginInstance() {
    if (instance)
        plugin->destroy(instance);
}

#define TRELLIS_OPTIONAL_HOOK(hook)                                                                          \
    decltype(trellis_plugin::hook) PluginInstance::hook() const {                                            \
        return has(offsetof(trellis_plugin, hook) + sizeof(void *)) ? plugin->hook : nullptr;                \
    }
TRELLIS_OPTIONAL_HOOK(on_abort)
TRELLIS_OPTIONAL_HOOK(on_writable)
TRELLIS_OPTIONAL_HOOK(on_body)
#undef TRELLIS_OPTIONAL_HOOK

PluginSet::~PluginSet() {
    // Release in reverse creation order; each instance is destroyed with its last generation, each
    // library closed with its last instance.
    while (!instances_.empty())
        instances_.pop_back();
}

void PluginSet::load(const std::vector<PluginConfig> &plugins, const std::string &config_dir,
                     const PluginSet *previous) {
    std::vector<std::shared_ptr<PluginLibrary>> opened;
    for (const PluginConfig &config : plugins) {
        FileIdentity identity = FileIdentity::of(config.file);
        if (previous) {
            // Unchanged (same config, same library file on disk): keep the running instance.
            PluginInstance *same = previous->find(config.name);
            if (same && same->config.file == config.file && same->config.config_json == config.config_json &&
                same->library->identity() == identity) {
                for (const auto &p : previous->instances())
                    if (p.get() == same)
                        instances_.push_back(p);
                continue;
            }
        }
        std::shared_ptr<PluginLibrary> library;
        for (auto &lib : opened)
            if (lib->file() == config.file && lib->identity() == identity)
                library = lib;
        if (previous && !library)
            for (const auto &p : previous->instances())
                if (p->library->file() == config.file && p->library->identity() == identity)
                    library = p->library;
        if (!library) {
            library = PluginLibrary::open(config.file, previous != nullptr);
            opened.push_back(library);
        }
        auto instance = std::make_shared<PluginInstance>();
        instance->config = config;
        instance->library = library;
        instance->plugin = library->descriptor();
        instance->ctx.name = config.name;
        instance->ctx.config_dir = config_dir;
        if ((instance->flags() & TRELLIS_BLOCKING) && (instance->flags() & TRELLIS_STREAM_BODY))
            throw StartupError("plugin \"" + config.name + "\" (" + config.file +
                               "): flags TRELLIS_BLOCKING and TRELLIS_STREAM_BODY cannot be combined");
        if ((instance->flags() & TRELLIS_STREAM_BODY) && !instance->on_body())
            throw StartupError("plugin \"" + config.name + "\" (" + config.file +
                               "): flag TRELLIS_STREAM_BODY needs an on_body hook");
        char err[512] = {};
        int rc = instance->plugin->create(host_table(), &instance->ctx, config.config_json.data(),
                                          config.config_json.size(), &instance->instance, err, sizeof err);
        if (rc != TRELLIS_OK) {
            instance->instance = nullptr; // nothing to destroy
            err[sizeof err - 1] = '\0';
            throw StartupError("plugin \"" + config.name + "\" (" + config.file +
                               "): create failed: " + (err[0] ? err : "no reason given"));
        }
        SERVER_LOG_DEBUG("plugin \"%s\" loaded from %s (%s %s)", config.name.c_str(), config.file.c_str(),
                         instance->plugin->name ? instance->plugin->name : "?",
                         instance->plugin->version ? instance->plugin->version : "");
        instances_.push_back(std::move(instance));
    }
}

PluginInstance *PluginSet::find(const std::string &name) const {
    for (auto &instance : instances_)
        if (instance->name() == name)
            return instance.get();
    return nullptr;
}

bool PluginSet::contains(const PluginInstance *instance) const {
    for (auto &p : instances_)
        if (p.get() == instance)
            return true;
    return false;
}

} // namespace trellis
