// Reloading plugins: PluginLibrary::open with a private copy, and PluginSet::load sharing the
// unchanged instances of the previous generation.
#include "plugin/loader.hpp"

#include <doctest/doctest.h>

#include <cstdlib>
#include <filesystem>
#include <optional>
#include <string>
#include <unistd.h>

using trellis::FileIdentity;
using trellis::PluginInstance;
using trellis::PluginLibrary;
using trellis::PluginSet;
using trellis::StartupError;

namespace fs = std::filesystem;

namespace {

const std::string kHello = TRELLIS_PLUGIN_DIR "/hello.so";
const std::string kEcho = TRELLIS_PLUGIN_DIR "/echo.so";

// A fresh directory, removed with what it holds.
struct TempDir {
    std::string path;
    TempDir() {
        std::string pattern = (fs::temp_directory_path() / "trellis-unit-XXXXXX").string();
        REQUIRE(mkdtemp(pattern.data()) != nullptr);
        path = pattern;
    }
    ~TempDir() {
        std::error_code ignored;
        fs::remove_all(path, ignored);
    }
    size_t entries() const {
        return static_cast<size_t>(std::distance(fs::directory_iterator(path), fs::directory_iterator()));
    }
};

// Sets TMPDIR for the scope (the private copies go there) and puts the old value back.
struct ScopedTmpdir {
    std::optional<std::string> old;
    explicit ScopedTmpdir(const std::string &dir) {
        if (const char *v = getenv("TMPDIR"))
            old = v;
        setenv("TMPDIR", dir.c_str(), 1);
    }
    ~ScopedTmpdir() {
        if (old)
            setenv("TMPDIR", old->c_str(), 1);
        else
            unsetenv("TMPDIR");
    }
};

std::shared_ptr<PluginInstance> shared_of(const PluginSet &set, const std::string &name) {
    for (const auto &p : set.instances())
        if (p->name() == name)
            return p;
    return nullptr;
}

} // namespace

TEST_CASE("loader: FileIdentity") {
    FileIdentity hello = FileIdentity::of(kHello);
    CHECK(hello.inode != 0u);
    CHECK(hello.size == static_cast<uint64_t>(fs::file_size(kHello)));
    CHECK(hello == FileIdentity::of(kHello));
    CHECK_FALSE(hello == FileIdentity::of(kEcho));
    CHECK(FileIdentity::of(kHello + ".missing") == FileIdentity{});
}

TEST_CASE("loader: a private copy is a library of its own") {
    TempDir tmp;
    ScopedTmpdir scoped(tmp.path);
    std::shared_ptr<PluginLibrary> shared = PluginLibrary::open(kHello);
    std::shared_ptr<PluginLibrary> again = PluginLibrary::open(kHello);
    std::shared_ptr<PluginLibrary> copy = PluginLibrary::open(kHello, true);
    REQUIRE(copy != nullptr);
    REQUIRE(copy->descriptor() != nullptr);
    CHECK(std::string(copy->descriptor()->name) == "hello");
    CHECK(copy->descriptor()->abi_version == TRELLIS_ABI_VERSION);
    // Known by the file it came from, not by the copy's name.
    CHECK(copy->file() == kHello);
    CHECK(copy->identity() == FileIdentity::of(kHello));
    // The dynamic loader hands out the library it has for a path it has seen; the copy is loaded anew.
    CHECK(again->descriptor() == shared->descriptor());
    CHECK(copy->descriptor() != shared->descriptor());
    // The copy was unlinked once mapped.
    CHECK(tmp.entries() == 0u);

    SUBCASE("two private copies are two libraries") {
        std::shared_ptr<PluginLibrary> copy2 = PluginLibrary::open(kHello, true);
        CHECK(copy2->descriptor() != copy->descriptor());
        CHECK(copy2->descriptor() != shared->descriptor());
        CHECK(tmp.entries() == 0u);
    }
}

TEST_CASE("loader: a private copy that cannot be written is a StartupError") {
    TempDir tmp;
    ScopedTmpdir scoped(tmp.path + "/does/not/exist");
    try {
        PluginLibrary::open(kHello, true);
        FAIL_CHECK("opened");
    } catch (const StartupError &e) {
        std::string message = e.what();
        INFO(message);
        CHECK(message.find(kHello) != std::string::npos);
        CHECK(message.find("cannot copy to " + tmp.path + "/does/not/exist/") != std::string::npos);
    }
}

TEST_CASE("loader: a reload shares unchanged instances with the previous generation") {
    TempDir tmp;
    ScopedTmpdir scoped(tmp.path);
    auto first = std::make_unique<PluginSet>();
    first->load({{"hi", kHello, "{}"}, {"echo", kEcho, "{}"}}, "/config/dir");
    REQUIRE(first->instances().size() == 2);
    PluginInstance *hi1 = first->find("hi");
    PluginInstance *echo1 = first->find("echo");
    REQUIRE(hi1 != nullptr);
    REQUIRE(echo1 != nullptr);
    void *hi1_state = hi1->instance;

    PluginSet second;
    second.load({{"hi", kHello, "{}"}, {"echo", kEcho, R"({"changed":true})"}, {"hi2", kHello, "{}"}},
                "/config/dir", first.get());
    REQUIRE(second.instances().size() == 3);

    SUBCASE("same name, file, config and file identity: the very same instance") {
        CHECK(second.find("hi") == hi1);
        CHECK(second.find("hi")->instance == hi1_state);
        CHECK(shared_of(second, "hi") == shared_of(*first, "hi"));
        CHECK(shared_of(second, "hi").use_count() == 3); // two sets and this copy
        CHECK(first->contains(second.find("hi")));
    }
    SUBCASE("another config JSON: a new instance of the same library") {
        PluginInstance *echo2 = second.find("echo");
        REQUIRE(echo2 != nullptr);
        CHECK(echo2 != echo1);
        CHECK(echo2->instance != nullptr);
        CHECK(echo2->instance != echo1->instance);
        CHECK(echo2->config.config_json == R"({"changed":true})");
        CHECK(echo2->library == echo1->library); // the file did not change: no new copy
        CHECK_FALSE(first->contains(echo2));
    }
    SUBCASE("a new name: a new instance, the library shared") {
        PluginInstance *hi2 = second.find("hi2");
        REQUIRE(hi2 != nullptr);
        CHECK(hi2 != hi1);
        CHECK(hi2->library == hi1->library);
    }
    SUBCASE("the shared instance outlives the previous generation") {
        first.reset();
        PluginInstance *hi = second.find("hi");
        REQUIRE(hi != nullptr);
        CHECK(hi->instance == hi1_state);
        CHECK(std::string(hi->plugin->name) == "hello");
        CHECK(shared_of(second, "hi").use_count() == 2);
    }
    CHECK(tmp.entries() == 0u);
}

TEST_CASE("loader: a reload creates new instances when the config or the file changes") {
    TempDir tmp;
    ScopedTmpdir scoped(tmp.path);
    PluginSet first;
    first.load({{"hi", kHello, R"({"a":1})"}}, "/config/dir");
    PluginInstance *hi1 = first.find("hi");
    REQUIRE(hi1 != nullptr);

    SUBCASE("the same config text is shared") {
        PluginSet second;
        second.load({{"hi", kHello, R"({"a":1})"}}, "/config/dir", &first);
        CHECK(second.find("hi") == hi1);
    }
    SUBCASE("another config text is not") {
        PluginSet second;
        second.load({{"hi", kHello, R"({"a":2})"}}, "/config/dir", &first);
        REQUIRE(second.find("hi") != nullptr);
        CHECK(second.find("hi") != hi1);
        CHECK(second.find("hi")->instance != hi1->instance);
    }
    SUBCASE("another file under the same name is not") {
        PluginSet second;
        second.load({{"hi", kEcho, R"({"a":1})"}}, "/config/dir", &first);
        REQUIRE(second.find("hi") != nullptr);
        CHECK(second.find("hi") != hi1);
        CHECK(std::string(second.find("hi")->plugin->name) == "echo");
    }
}

TEST_CASE("loader: a library rebuilt at the same path is really reloaded") {
    TempDir lib_dir;
    TempDir tmp;
    ScopedTmpdir scoped(tmp.path);
    const std::string file = lib_dir.path + "/hello.so";
    fs::copy_file(kHello, file);

    PluginSet first;
    first.load({{"hi", file, "{}"}}, "/config/dir");
    PluginInstance *hi1 = first.find("hi");
    REQUIRE(hi1 != nullptr);

    SUBCASE("untouched: shared") {
        PluginSet second;
        second.load({{"hi", file, "{}"}}, "/config/dir", &first);
        CHECK(second.find("hi") == hi1);
    }
    SUBCASE("replaced: a new library and a new instance, same config") {
        // A rebuild writes a new file and moves it over the old one (a new inode).
        fs::copy_file(kHello, file + ".new");
        fs::rename(file + ".new", file);
        REQUIRE_FALSE(FileIdentity::of(file) == hi1->library->identity());
        PluginSet second;
        second.load({{"hi", file, "{}"}}, "/config/dir", &first);
        PluginInstance *hi2 = second.find("hi");
        REQUIRE(hi2 != nullptr);
        CHECK(hi2 != hi1);
        CHECK(hi2->library != hi1->library);
        CHECK(hi2->library->file() == file);
        CHECK(hi2->library->identity() == FileIdentity::of(file));
        // Same path, but the loader did not hand back the library it already had.
        CHECK(hi2->plugin != hi1->plugin);
        CHECK(std::string(hi2->plugin->name) == "hello");
        CHECK(tmp.entries() == 0u);
    }
}
