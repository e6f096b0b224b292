// libFuzzer harness: the configuration loader (server/config/config.hpp) on arbitrary text.
//
// parse_config either returns a Config or throws trellis::ConfigError; any other exception escapes
// and libFuzzer reports it as a crash (an uncaught exception aborts). On success the result must
// be what the validation promises (README "Configuration reference"); on failure the message must
// name the file, as every error of the loader does.
#include "config/config.hpp"

#include <nlohmann/json.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <string>

namespace {

const std::string kSource = "/fuzz/server.json";

[[noreturn]] void fail(const char *what) {
    fprintf(stderr, "fuzz_config: invariant broken: %s\n", what);
    abort();
}

void check(const trellis::Config &config) {
    if (config.source_path != kSource || config.base_dir != "/fuzz")
        fail("source_path / base_dir");
    if (config.workers < 1 || config.workers > 1024)
        fail("workers out of 1..1024");
    if (config.listen.empty())
        fail("no listener");
    for (const trellis::ListenConfig &listen : config.listen) {
        if (listen.address.empty())
            fail("empty listen address");
        if (listen.transport != trellis::TransportKind::Plain && listen.tls.certificates.empty())
            fail("a tls/auto listener without certificates");
        if (listen.transport == trellis::TransportKind::Tls &&
            listen.redirect_to_https.kind != trellis::RedirectToHttps::Kind::Off)
            fail("a tls listener that redirects to https");
        if (listen.tls.client_auth != trellis::ClientAuth::None &&
            listen.transport != trellis::TransportKind::Plain && listen.tls.client_ca.empty())
            fail("client_auth without client_ca");
        if (listen.tls.session_timeout_s > 604800)
            fail("session_timeout_s out of range");
    }
    const trellis::Limits &limits = config.limits;
    if (limits.max_header_bytes < 1024 || limits.max_header_bytes > 1048576)
        fail("max_header_bytes out of 1024..1048576");
    if (limits.max_connections < 1 || limits.handler_timeout_ms < 1 || limits.header_timeout_ms < 1 ||
        limits.body_timeout_ms < 1 || limits.keepalive_timeout_ms < 1 || limits.send_timeout_ms < 1)
        fail("a limit below its minimum");
    if (config.thread_pool.threads < 1 || config.thread_pool.threads > 1024 || config.thread_pool.queue < 1 ||
        config.thread_pool.queue > 1000000)
        fail("thread_pool out of range");
    std::set<std::string> names;
    for (const trellis::PluginConfig &plugin : config.plugins) {
        if (plugin.name.empty() || plugin.file.empty())
            fail("plugin without name or file");
        if (!names.insert(plugin.name).second)
            fail("duplicate plugin name accepted");
        if (plugin.config_json.empty() || plugin.config_json[0] != '{')
            fail("plugin config is not an object");
    }
    for (const trellis::RouteConfig &route : config.routes) {
        if (route.prefix.empty() || route.prefix[0] != '/')
            fail("route prefix does not start with '/'");
        if (route.host.empty())
            fail("empty route host");
        for (char c : route.host)
            if ((c >= 'A' && c <= 'Z') || c == '/' || c == ' ' || c == ':')
                fail("route host not lower-case or holding '/', ' ' or ':'");
        if (!names.count(route.plugin))
            fail("route to a plugin that does not exist");
    }
    if (config.access_log.target == trellis::AccessLogConfig::Target::File && config.access_log.path.empty())
        fail("an access_log file without a path");
    if (config.access_log.target != trellis::AccessLogConfig::Target::File && !config.access_log.path.empty())
        fail("an access_log path for standard output or off");
    if (static_cast<int>(config.log_level) < 0 || static_cast<int>(config.log_level) > 3)
        fail("unknown log_level accepted");
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    std::string text(reinterpret_cast<const char *>(data), size);
    try {
        trellis::Config config = trellis::parse_config(text, kSource);
        check(config);
    } catch (const trellis::ConfigError &e) {
        std::string what = e.what();
        if (what.compare(0, kSource.size() + 1, kSource + ":") != 0)
            fail("a ConfigError that does not start with the file name");
    }
    return 0;
}
