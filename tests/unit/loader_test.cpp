#include "plugin/loader.hpp"

#include <doctest/doctest.h>

#include <cstring>
#include <string>

using trellis::PluginConfig;
using trellis::PluginSet;
using trellis::StartupError;

namespace {

const std::string kPlugins = TRELLIS_PLUGIN_DIR;
const std::string kFixtures = TRELLIS_FIXTURE_PLUGIN_DIR;

// The StartupError message of loading `plugins` ("" and a failed check when it loads).
std::string load_error(const std::vector<PluginConfig> &plugins) {
    PluginSet set;
    try {
        set.load(plugins, "/config/dir");
    } catch (const StartupError &e) {
        return e.what();
    }
    FAIL_CHECK("the plugins loaded");
    return {};
}

bool contains(const std::string &haystack, const std::string &needle) {
    return haystack.find(needle) != std::string::npos;
}

} // namespace

TEST_CASE("loader: refused libraries") {
    SUBCASE("a missing file") {
        std::string file = kFixtures + "/does_not_exist.so";
        std::string message = load_error({{"x", file, "{}"}});
        INFO(message);
        CHECK(contains(message, file));
        CHECK(contains(message, "not found"));
    }
    SUBCASE("a file that is not a shared object") {
        std::string file = std::string(__FILE__); // a C++ source: dlopen refuses it
        std::string message = load_error({{"x", file, "{}"}});
        INFO(message);
        CHECK(contains(message, file));
        CHECK(contains(message, "cannot load"));
    }
    SUBCASE("a library without the entry symbol") {
        std::string file = kFixtures + "/missing_symbol.so";
        std::string message = load_error({{"x", file, "{}"}});
        INFO(message);
        CHECK(contains(message, file));
        CHECK(contains(message, "not a Trellis plugin"));
        CHECK(contains(message, "trellis_plugin_entry"));
    }
    SUBCASE("a plugin built for another ABI major version") {
        std::string file = kFixtures + "/wrong_abi.so";
        std::string message = load_error({{"x", file, "{}"}});
        INFO(message);
        CHECK(contains(message, file));
        CHECK(contains(message, "99.0"));
        CHECK(contains(message, "this server speaks ABI " + std::to_string(TRELLIS_ABI_MAJOR) + "." +
                                    std::to_string(TRELLIS_ABI_MINOR)));
        CHECK(contains(message, "ABI mismatch"));
    }
    SUBCASE("a plugin whose create() fails") {
        std::string file = kFixtures + "/create_fails.so";
        std::string message = load_error({{"refuser", file, "{}"}});
        INFO(message);
        CHECK(contains(message, "\"refuser\""));
        CHECK(contains(message, file));
        CHECK(contains(message, "create_fails: refusing on purpose"));
    }
    SUBCASE("a failure after good plugins leaves nothing half-made") {
        // hello loads first; the set's destructor must destroy it cleanly after the throw.
        std::string message =
            load_error({{"hi", kPlugins + "/hello.so", "{}"}, {"bad", kFixtures + "/create_fails.so", "{}"}});
        CHECK(contains(message, "create_fails: refusing on purpose"));
    }
}

TEST_CASE("loader: real plugins load") {
    PluginSet set;
    set.load({{"hi", kPlugins + "/hello.so", "{}"},
              {"echo", kPlugins + "/echo.so", "{}"},
              {"hi2", kPlugins + "/hello.so", "{}"}},
             "/config/dir");
    REQUIRE(set.instances().size() == 3);

    SUBCASE("descriptors and instances") {
        trellis::PluginInstance *hi = set.find("hi");
        REQUIRE(hi != nullptr);
        REQUIRE(hi->plugin != nullptr);
        CHECK(std::string(hi->plugin->name) == "hello");
        CHECK(hi->plugin->abi_version == TRELLIS_ABI_VERSION);
        CHECK(hi->name() == "hi");
        CHECK(hi->ctx.config_dir == "/config/dir");
        CHECK(hi->instance != nullptr);
        CHECK(hi->library->file() == kPlugins + "/hello.so");
        CHECK(hi->has(sizeof(trellis_plugin)));

        trellis::PluginInstance *echo = set.find("echo");
        REQUIRE(echo != nullptr);
        CHECK(std::string(echo->plugin->name) == "echo");
        CHECK(set.find("nope") == nullptr);
    }
    SUBCASE("two instances of one file share the library, not the instance") {
        trellis::PluginInstance *a = set.find("hi");
        trellis::PluginInstance *b = set.find("hi2");
        REQUIRE(a != nullptr);
        REQUIRE(b != nullptr);
        CHECK(a->library == b->library);
        CHECK(a->instance != b->instance);
        CHECK(a->library != set.find("echo")->library);
    }
    SUBCASE("the host table") {
        const trellis_host *host = trellis::host_table();
        CHECK(host->abi_version == TRELLIS_ABI_VERSION);
        CHECK(host->struct_size == sizeof(trellis_host));
        CHECK(TRELLIS_HOST_HAS(host, config_dir));
    }
}
