#include "config/config.hpp"
#include "config/install_dirs.hpp"

#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <unistd.h>

using trellis::Config;
using trellis::ConfigError;
using trellis::parse_config;

namespace {

constexpr const char *kFile = "/srv/site/server.json";

// The message of the ConfigError that parsing `text` throws ("" and a failed check if none).
std::string error_of(const std::string &text, const std::string &file = kFile) {
    try {
        parse_config(text, file);
    } catch (const ConfigError &e) {
        return e.what();
    }
    FAIL_CHECK("parse_config accepted: " << text);
    return {};
}

bool contains(const std::string &haystack, const std::string &needle) {
    return haystack.find(needle) != std::string::npos;
}

// Checks one error message names the file, the pointer and the expectation.
void check_error(const std::string &text, const std::string &pointer, const std::string &expectation) {
    std::string message = error_of(text);
    INFO("message: " << message);
    CHECK(message.rfind(std::string(kFile) + ": " + pointer + ": ", 0) == 0);
    CHECK(contains(message, expectation));
}

const std::string kMinimal = R"({"listen": [{"port": 8080}]})";

} // namespace

TEST_CASE("config: a minimal file gets the defaults") {
    Config c = parse_config(kMinimal, kFile);
    CHECK(c.source_path == kFile);
    CHECK(c.base_dir == "/srv/site");
    CHECK(c.workers >= 1u);                               // "auto" when absent
    CHECK(c.plugin_dir == trellis::default_plugin_dir()); // where the install puts plugins
    REQUIRE(c.listen.size() == 1);
    CHECK(c.listen[0].address == "0.0.0.0");
    CHECK(c.listen[0].port == 8080);
    CHECK(c.listen[0].transport == trellis::TransportKind::Plain);
    trellis::Limits defaults;
    CHECK(c.limits.max_connections == defaults.max_connections);
    CHECK(c.limits.max_header_bytes == 16384u);
    CHECK(c.limits.max_body_bytes == 10485760u);
    CHECK(c.limits.keepalive_timeout_ms == 60000u);
    CHECK(c.plugins.empty());
    CHECK(c.routes.empty());
    CHECK(c.access_log.target == trellis::AccessLogConfig::Target::Stdout);
    CHECK(c.log_level == trellis::LogLevel::Info);
}

TEST_CASE("config: a full file") {
    const std::string text = R"({
      "workers": 3,
      "plugin_dir": "../plugins",
      "listen": [{"address": "127.0.0.1", "port": 0, "transport": "plain"}, {"port": 65535}],
      "limits": {"max_header_bytes": 2048, "max_body_bytes": 0, "shutdown_timeout_ms": 0},
      "plugins": [
        {"name": "hi", "path": "hello"},
        {"name": "files", "path": "lib/static.so", "config": {"root": "www", "n": [1, 2]}},
        {"name": "abs", "path": "/opt/echo.so"}
      ],
      "routes": [
        {"prefix": "/hello", "plugin": "hi"},
        {"host": "Example.COM", "prefix": "/", "plugin": "files"}
      ],
      "access_log": "logs/access.log",
      "log_level": "debug"
    })";
    Config c = parse_config(text, kFile);

    SUBCASE("scalars and listeners") {
        CHECK(c.workers == 3u);
        CHECK(c.plugin_dir == "/srv/site/../plugins");
        REQUIRE(c.listen.size() == 2);
        CHECK(c.listen[0].address == "127.0.0.1");
        CHECK(c.listen[0].port == 0);
        CHECK(c.listen[1].port == 65535);
        CHECK(c.limits.max_header_bytes == 2048u);
        CHECK(c.limits.max_body_bytes == 0u);
        CHECK(c.limits.shutdown_timeout_ms == 0u);
        CHECK(c.limits.body_timeout_ms == 30000u); // untouched keys keep defaults
        CHECK(c.access_log.target == trellis::AccessLogConfig::Target::File);
        CHECK(c.access_log.path == "/srv/site/logs/access.log");
        CHECK(c.log_level == trellis::LogLevel::Debug);
    }
    SUBCASE("plugin paths: bare name, relative file, absolute file") {
        REQUIRE(c.plugins.size() == 3);
        CHECK(c.plugins[0].name == "hi");
        CHECK(c.plugins[0].file == "/srv/site/../plugins/hello.so");
        CHECK(c.plugins[0].config_json == "{}");
        CHECK(c.plugins[1].file == "/srv/site/lib/static.so");
        CHECK(c.plugins[1].config_json == R"({"n":[1,2],"root":"www"})");
        CHECK(c.plugins[2].file == "/opt/echo.so");
    }
    SUBCASE("routes") {
        REQUIRE(c.routes.size() == 2);
        CHECK(c.routes[0].host == "*");
        CHECK(c.routes[0].prefix == "/hello");
        CHECK(c.routes[0].plugin == "hi");
        CHECK(c.routes[1].host == "example.com"); // lower-cased
        CHECK(c.routes[1].plugin == "files");
    }
}

TEST_CASE("config: base directory of the source path") {
    CHECK(parse_config(kMinimal, "server.json").base_dir == ".");
    CHECK(parse_config(R"({"listen": [{"port": 1}], "plugin_dir": "build/plugins"})", "server.json")
              .plugin_dir == "./build/plugins");
    CHECK(parse_config(kMinimal, "/server.json").base_dir == "/");
    CHECK(parse_config(kMinimal, "conf/server.json").base_dir == "conf");
    CHECK(parse_config(R"({"listen": [{"port": 1}], "access_log": "off"})", kFile).access_log.target ==
          trellis::AccessLogConfig::Target::Off);
    CHECK(parse_config(R"({"listen": [{"port": 1}], "access_log": "-"})", kFile).access_log.target ==
          trellis::AccessLogConfig::Target::Stdout);
    CHECK(parse_config(R"({"listen": [{"port": 1}], "access_log": "/var/log/a"})", kFile).access_log.path ==
          "/var/log/a");
}

TEST_CASE("config: workers") {
    SUBCASE("auto") {
        CHECK(parse_config(R"({"workers": "auto", "listen": [{"port": 1}]})", kFile).workers >= 1u);
    }
    SUBCASE("bounds") {
        CHECK(parse_config(R"({"workers": 1, "listen": [{"port": 1}]})", kFile).workers == 1u);
        CHECK(parse_config(R"({"workers": 1024, "listen": [{"port": 1}]})", kFile).workers == 1024u);
    }
    SUBCASE("refused") {
        check_error(R"({"workers": "many", "listen": [{"port": 1}]})", "/workers",
                    "expected \"auto\" or a positive integer, got string \"many\"");
        check_error(R"({"workers": 1.5, "listen": [{"port": 1}]})", "/workers",
                    "expected \"auto\" or a positive integer");
        check_error(R"({"workers": 0, "listen": [{"port": 1}]})", "/workers",
                    "expected an integer from 1 to 1024, got 0");
        check_error(R"({"workers": -2, "listen": [{"port": 1}]})", "/workers",
                    "expected an integer from 1 to 1024, got -2");
        check_error(R"({"workers": 1025, "listen": [{"port": 1}]})", "/workers",
                    "expected an integer from 1 to 1024, got 1025");
    }
}

TEST_CASE("config: unknown keys") {
    SUBCASE("top level") {
        check_error(R"({"listen": [{"port": 1}], "colour": "red"})", "/colour",
                    "unknown key (expected one of: workers, plugin_dir, listen, limits, plugins, routes, "
                    "access_log, log_level, tls, thread_pool, error_log, http2, health)");
    }
    SUBCASE("in a listener") {
        check_error(
            R"({"listen": [{"port": 1, "colour": "red"}]})", "/listen/0/colour",
            "unknown key (expected one of: address, port, transport, redirect_to_https, tls, http2, mode, "
            "owner, group, proxy_protocol, trusted_proxies, real_ip_header)");
    }
    SUBCASE("in limits") {
        check_error(R"({"listen": [{"port": 1}], "limits": {"max_bodies": 1}})", "/limits/max_bodies",
                    "unknown key");
    }
    SUBCASE("in a plugin and a route") {
        check_error(R"({"listen": [{"port": 1}], "plugins": [{"name": "a", "path": "a", "cfg": {}}]})",
                    "/plugins/0/cfg", "unknown key (expected one of: name, path, config)");
        check_error(R"({"listen": [{"port": 1}], "plugins": [{"name": "a", "path": "a"}],
                        "routes": [{"prefix": "/", "plugin": "a", "method": "GET"}]})",
                    "/routes/0/method",
                    "unknown key (expected one of: host, prefix, plugin, blocking, config, allow)");
    }
    SUBCASE("a key with '/' and '~' is escaped in the pointer") {
        check_error(R"({"listen": [{"port": 1}], "a/b~c": 1})", "/a~1b~0c", "unknown key");
    }
}

TEST_CASE("config: wrong types") {
    check_error(R"([1, 2])", "/", "expected an object, got array [1,2]");
    check_error(R"({"listen": {"port": 1}})", "/listen", "expected an array, got object");
    check_error(R"({"listen": ["8080"]})", "/listen/0", "expected an object, got string \"8080\"");
    check_error(R"({"listen": [{"port": "80"}]})", "/listen/0/port",
                "expected an integer from 0 to 65535, got string \"80\"");
    check_error(R"({"listen": [{"port": 1, "address": 5}]})", "/listen/0/address",
                "expected a string, got number 5");
    check_error(R"({"listen": [{"port": 1, "address": ""}]})", "/listen/0/address",
                "expected a non-empty string");
}

TEST_CASE("config: a listen address is an IP literal, as at start") {
    check_error(R"({"listen": [{"port": 1, "address": "localhost"}]})", "/listen/0/address",
                "expected an IPv4 or IPv6 address such as \"127.0.0.1\" or \"::1\" (host names are not "
                "resolved), got \"localhost\"");
    check_error(R"({"listen": [{"port": 1, "address": "unix:/run/x.sock"}]})", "/listen/0/port",
                "a \"unix:PATH\" listener has no port");
    check_error(R"({"listen": [{"port": 1, "address": "127.0.0.256"}]})", "/listen/0/address",
                "got \"127.0.0.256\"");
    check_error(R"({"listen": [{"port": 1, "address": "[::1]"}]})", "/listen/0/address", "got \"[::1]\"");
    CHECK(parse_config(R"({"listen": [{"port": 1, "address": "::"}]})", "t.json").listen[0].address == "::");
    CHECK(parse_config(R"({"listen": [{"port": 1, "address": "fe80::1"}]})", "t.json").listen.size() == 1);
    CHECK(parse_config(R"({"listen": [{"port": 1, "address": "fe80::1%lo"}]})", "t.json").listen.size() == 1);
    check_error(R"({"listen": [{"port": 1, "address": "fe80::1%"}]})", "/listen/0/address",
                "got \"fe80::1%\"");
    check_error(R"({"listen": [{"port": 1, "address": "127.1"}]})", "/listen/0/address", "got \"127.1\"");
    check_error(R"({"listen": [{"port": 1}], "limits": {"max_body_bytes": true}})", "/limits/max_body_bytes",
                "got boolean true");
    check_error(R"({"listen": [{"port": 1}], "plugins": [{"name": "a", "path": "a", "config": [1]}]})",
                "/plugins/0/config", "expected an object, got array");
    check_error(R"({"listen": [{"port": 1}], "log_level": 3})", "/log_level",
                "expected a string, got number 3");
    check_error(R"({"listen": [{"port": 1, "transport": "quic"}]})", "/listen/0/transport",
                "expected \"plain\", \"tls\" or \"auto\", got \"quic\"");
}

TEST_CASE("config: tls settings") {
    SUBCASE("a tls listener needs certificates") {
        check_error(R"({"listen": [{"port": 1, "transport": "tls"}]})", "/listen/0",
                    "transport \"tls\" needs \"tls\": {\"certificates\": [...]} here or at the top level");
    }
    SUBCASE("client_auth needs client_ca") {
        check_error(R"({"tls": {"certificates": [{"cert": "a", "key": "b"}], "client_auth": "required"},
                        "listen": [{"port": 1, "transport": "auto"}]})",
                    "/listen/0", "\"client_auth\" other than \"none\" needs \"client_ca\"");
    }
    SUBCASE("every client_auth mode") {
        const std::pair<const char *, trellis::ClientAuth> modes[] = {
            {"none", trellis::ClientAuth::None},
            {"optional", trellis::ClientAuth::Optional},
            {"optional_no_ca", trellis::ClientAuth::OptionalNoCa},
            {"required", trellis::ClientAuth::Required}};
        for (const auto &[name, mode] : modes) {
            INFO("client_auth: " << name);
            trellis::Config config = trellis::parse_config(
                R"({"tls": {"certificates": [{"cert": "c.pem", "key": "k.pem"}], "client_ca": "ca.pem",
                            "client_auth": ")" +
                    std::string(name) + R"("},
                    "listen": [{"port": 1, "transport": "tls"}]})",
                "/etc/trellis/server.json");
            CHECK(config.listen[0].tls.client_auth == mode);
        }
        check_error(R"({"tls": {"certificates": [{"cert": "a", "key": "b"}], "client_auth": "optional_no_ca"},
                        "listen": [{"port": 1, "transport": "tls"}]})",
                    "/listen/0", "\"client_auth\" other than \"none\" needs \"client_ca\"");
    }
    SUBCASE("bad values") {
        check_error(R"({"tls": {"client_auth": "maybe"}, "listen": [{"port": 1}]})", "/tls/client_auth",
                    "expected \"none\", \"optional\", \"optional_no_ca\" or \"required\", got \"maybe\"");
        check_error(R"({"listen": [{"port": 1, "tls": {"client_auth": "optional-no-ca"}}]})",
                    "/listen/0/tls/client_auth", "got \"optional-no-ca\"");
        check_error(R"({"tls": {"certificates": [{"cert": "a"}]}, "listen": [{"port": 1}]})",
                    "/tls/certificates/0", "expected {\"cert\": FILE, \"key\": FILE}");
        check_error(R"({"listen": [{"port": 1, "redirect_to_https": "http://x"}]})",
                    "/listen/0/redirect_to_https", "expected \"https://HOST[:PORT]\" or true");
    }
    SUBCASE("a listener overrides the top level key by key, paths resolved") {
        trellis::Config config = trellis::parse_config(
            R"({"tls": {"certificates": [{"cert": "c.pem", "key": "k.pem"}], "hsts": "max-age=1"},
                "listen": [{"port": 1, "transport": "tls", "tls": {"hsts": "max-age=2"}},
                           {"port": 2, "transport": "auto", "redirect_to_https": true}]})",
            "/etc/trellis/server.json");
        REQUIRE(config.listen.size() == 2);
        CHECK(config.listen[0].tls.hsts == "max-age=2");
        CHECK(config.listen[1].tls.hsts == "max-age=1");
        REQUIRE(config.listen[0].tls.certificates.size() == 1);
        CHECK(config.listen[0].tls.certificates[0].cert == "/etc/trellis/c.pem");
        CHECK(config.listen[1].redirect_to_https.kind == trellis::RedirectToHttps::Kind::SameHost);
        CHECK(config.listen[0].redirect_to_https.kind == trellis::RedirectToHttps::Kind::Off);
        CHECK(config.listen[0].transport == trellis::TransportKind::Tls);
        CHECK(config.listen[1].transport == trellis::TransportKind::Auto);
    }
}

TEST_CASE("config: listeners") {
    SUBCASE("port out of range") {
        check_error(R"({"listen": [{"port": 65536}]})", "/listen/0/port",
                    "expected an integer from 0 to 65535, got 65536");
        check_error(R"({"listen": [{"port": 80}, {"port": -1}]})", "/listen/1/port",
                    "expected an integer from 0 to 65535, got -1");
    }
    SUBCASE("missing port") {
        check_error(R"({"listen": [{"address": "::1"}]})", "/listen/0",
                    "missing key \"port\" (an integer from 0 to 65535)");
    }
    SUBCASE("missing or empty listen") {
        check_error(R"({})", "/", "missing key \"listen\"");
        check_error(R"({"listen": []})", "/listen", "expected at least one listener");
    }
}

TEST_CASE("config: limits ranges") {
    check_error(R"({"listen": [{"port": 1}], "limits": {"max_header_bytes": 1023}})",
                "/limits/max_header_bytes", "expected an integer from 1024 to 1048576, got 1023");
    check_error(R"({"listen": [{"port": 1}], "limits": {"header_timeout_ms": 0}})",
                "/limits/header_timeout_ms", "expected an integer from 1 to 3600000, got 0");
    check_error(R"({"listen": [{"port": 1}], "limits": {"max_connections": 1e3}})", "/limits/max_connections",
                "got number");
}

TEST_CASE("config: plugins and routes") {
    SUBCASE("route naming an unknown plugin") {
        check_error(R"({"listen": [{"port": 1}], "plugins": [{"name": "hi", "path": "hello"}],
                        "routes": [{"prefix": "/", "plugin": "hi"}, {"prefix": "/x", "plugin": "nope"}]})",
                    "/routes/1/plugin", "no plugin named \"nope\" in /plugins");
    }
    SUBCASE("duplicate plugin name") {
        check_error(R"({"listen": [{"port": 1}],
                        "plugins": [{"name": "hi", "path": "hello"}, {"name": "hi", "path": "echo"}]})",
                    "/plugins/1/name", "duplicate plugin name \"hi\"");
    }
    SUBCASE("missing keys") {
        check_error(R"({"listen": [{"port": 1}], "plugins": [{"path": "hello"}]})", "/plugins/0",
                    "missing key \"name\"");
        check_error(R"({"listen": [{"port": 1}], "plugins": [{"name": "x"}]})", "/plugins/0",
                    "missing key \"path\"");
        check_error(R"({"listen": [{"port": 1}], "plugins": [{"name": "x", "path": "x"}],
                        "routes": [{"plugin": "x"}]})",
                    "/routes/0", "missing key \"prefix\"");
        check_error(R"({"listen": [{"port": 1}], "routes": [{"prefix": "/"}]})", "/routes/0",
                    "missing key \"plugin\"");
    }
    SUBCASE("bad prefix and host") {
        check_error(R"({"listen": [{"port": 1}], "plugins": [{"name": "x", "path": "x"}],
                        "routes": [{"prefix": "api", "plugin": "x"}]})",
                    "/routes/0/prefix", "expected a path starting with \"/\", got \"api\"");
        check_error(R"({"listen": [{"port": 1}], "plugins": [{"name": "x", "path": "x"}],
                        "routes": [{"host": "a.com:80", "prefix": "/", "plugin": "x"}]})",
                    "/routes/0/host", "without port");
    }
}

TEST_CASE("config: log_level") {
    using trellis::LogLevel;
    for (auto [name, level] : {std::pair{"debug", LogLevel::Debug}, std::pair{"info", LogLevel::Info},
                               std::pair{"warn", LogLevel::Warn}, std::pair{"error", LogLevel::Error}}) {
        CAPTURE(name);
        std::string text = std::string(R"({"listen": [{"port": 1}], "log_level": ")") + name + "\"}";
        CHECK(parse_config(text, kFile).log_level == level);
    }
    check_error(R"({"listen": [{"port": 1}], "log_level": "verbose"})", "/log_level",
                "expected one of: debug, info, warn, error; got \"verbose\"");
}

TEST_CASE("config: unparsable JSON reports file:line:column") {
    SUBCASE("an unexpected character in the middle of a line") {
        // Line 3: `  "listen": [}` -- the '}' is column 14.
        std::string message = error_of("{\n  \"workers\": 1,\n  \"listen\": [}\n}\n");
        INFO(message);
        CHECK(message.rfind(std::string(kFile) + ":3:14: invalid JSON: ", 0) == 0);
        CHECK(contains(message, "syntax error"));
        CHECK_FALSE(contains(message, "[json.exception"));
    }
    SUBCASE("an unexpected character at column 1") {
        std::string message = error_of("{\"workers\": 1\n]\n");
        INFO(message);
        CHECK(message.rfind(std::string(kFile) + ":2:1: invalid JSON: ", 0) == 0);
    }
    SUBCASE("the first character of the file") {
        std::string message = error_of("x");
        INFO(message);
        CHECK(message.rfind(std::string(kFile) + ":1:1: invalid JSON: ", 0) == 0);
    }
    SUBCASE("a trailing comma on line 4") {
        std::string message = error_of("{\n\"listen\": [\n  {\"port\": 1},\n]\n}");
        INFO(message);
        // `]` right after the comma: line 4, column 1.
        CHECK(message.rfind(std::string(kFile) + ":4:1: invalid JSON: ", 0) == 0);
    }
    // Regression: the position of an offending newline (the classic unterminated string) was
    // reported as the start of the next line.
    SUBCASE("an unterminated string points at the line it is on") {
        // Line 2: `  "access_log": "logs/a.log,` -- the newline ending it is column 29.
        std::string message = error_of("{\n  \"access_log\": \"logs/a.log,\n  \"workers\": 2\n}\n");
        INFO(message);
        CHECK(contains(message, "control character U+000A"));
        CHECK(message.rfind(std::string(kFile) + ":2:29: invalid JSON: ", 0) == 0); // currently ":3:1:"
    }
}

TEST_CASE("config: thread_pool") {
    SUBCASE("defaults") {
        Config c = parse_config(kMinimal, kFile);
        CHECK(c.thread_pool.threads == 16u);
        CHECK(c.thread_pool.queue == 1024u);
    }
    SUBCASE("valid values, bounds included") {
        Config c =
            parse_config(R"({"listen": [{"port": 1}], "thread_pool": {"threads": 3, "queue": 7}})", kFile);
        CHECK(c.thread_pool.threads == 3u);
        CHECK(c.thread_pool.queue == 7u);
        c = parse_config(R"({"listen": [{"port": 1}], "thread_pool": {"threads": 1, "queue": 1}})", kFile);
        CHECK(c.thread_pool.threads == 1u);
        CHECK(c.thread_pool.queue == 1u);
        c = parse_config(R"({"listen": [{"port": 1}], "thread_pool": {"threads": 1024, "queue": 1000000}})",
                         kFile);
        CHECK(c.thread_pool.threads == 1024u);
        CHECK(c.thread_pool.queue == 1000000u);
    }
    SUBCASE("one key alone keeps the other's default") {
        Config c = parse_config(R"({"listen": [{"port": 1}], "thread_pool": {"queue": 5}})", kFile);
        CHECK(c.thread_pool.threads == 16u);
        CHECK(c.thread_pool.queue == 5u);
        c = parse_config(R"({"listen": [{"port": 1}], "thread_pool": {}})", kFile);
        CHECK(c.thread_pool.threads == 16u);
        CHECK(c.thread_pool.queue == 1024u);
    }
    SUBCASE("wrong types") {
        check_error(R"({"listen": [{"port": 1}], "thread_pool": 4})", "/thread_pool",
                    "expected an object, got number 4");
        check_error(R"({"listen": [{"port": 1}], "thread_pool": [4]})", "/thread_pool",
                    "expected an object, got array [4]");
        check_error(R"({"listen": [{"port": 1}], "thread_pool": {"threads": "8"}})", "/thread_pool/threads",
                    "expected an integer from 1 to 1024, got string \"8\"");
        check_error(R"({"listen": [{"port": 1}], "thread_pool": {"threads": 2.5}})", "/thread_pool/threads",
                    "expected an integer from 1 to 1024, got number 2.5");
        check_error(R"({"listen": [{"port": 1}], "thread_pool": {"queue": true}})", "/thread_pool/queue",
                    "expected an integer from 1 to 1000000, got boolean true");
        check_error(R"({"listen": [{"port": 1}], "thread_pool": {"queue": null}})", "/thread_pool/queue",
                    "got null");
    }
    SUBCASE("out of range") {
        check_error(R"({"listen": [{"port": 1}], "thread_pool": {"threads": 0}})", "/thread_pool/threads",
                    "expected an integer from 1 to 1024, got 0");
        check_error(R"({"listen": [{"port": 1}], "thread_pool": {"threads": 1025}})", "/thread_pool/threads",
                    "expected an integer from 1 to 1024, got 1025");
        check_error(R"({"listen": [{"port": 1}], "thread_pool": {"threads": -4}})", "/thread_pool/threads",
                    "expected an integer from 1 to 1024, got -4");
        check_error(R"({"listen": [{"port": 1}], "thread_pool": {"queue": 0}})", "/thread_pool/queue",
                    "expected an integer from 1 to 1000000, got 0");
        check_error(R"({"listen": [{"port": 1}], "thread_pool": {"queue": 1000001}})", "/thread_pool/queue",
                    "expected an integer from 1 to 1000000, got 1000001");
    }
    SUBCASE("unknown key") {
        check_error(R"({"listen": [{"port": 1}], "thread_pool": {"threads": 2, "size": 9}})",
                    "/thread_pool/size", "unknown key (expected one of: threads, queue)");
    }
}

TEST_CASE("config: limits.handler_timeout_ms") {
    CHECK(parse_config(kMinimal, kFile).limits.handler_timeout_ms == 60000u);
    CHECK(parse_config(R"({"listen": [{"port": 1}], "limits": {"handler_timeout_ms": 1}})", kFile)
              .limits.handler_timeout_ms == 1u);
    CHECK(parse_config(R"({"listen": [{"port": 1}], "limits": {"handler_timeout_ms": 86400000}})", kFile)
              .limits.handler_timeout_ms == 86400000u);
    Config c = parse_config(R"({"listen": [{"port": 1}], "limits": {"handler_timeout_ms": 2500}})", kFile);
    CHECK(c.limits.handler_timeout_ms == 2500u);
    CHECK(c.limits.body_timeout_ms == 30000u); // the others keep their defaults
    check_error(R"({"listen": [{"port": 1}], "limits": {"handler_timeout_ms": 0}})",
                "/limits/handler_timeout_ms", "expected an integer from 1 to 86400000, got 0");
    check_error(R"({"listen": [{"port": 1}], "limits": {"handler_timeout_ms": 86400001}})",
                "/limits/handler_timeout_ms", "expected an integer from 1 to 86400000, got 86400001");
    check_error(R"({"listen": [{"port": 1}], "limits": {"handler_timeout_ms": "5s"}})",
                "/limits/handler_timeout_ms", "expected an integer from 1 to 86400000, got string \"5s\"");
}

TEST_CASE("config: route blocking") {
    const std::string head =
        R"({"listen": [{"port": 1}], "plugins": [{"name": "x", "path": "x"}], "routes": [)";
    SUBCASE("absent, true, false") {
        Config c = parse_config(head + R"({"prefix": "/a", "plugin": "x"},
                                          {"prefix": "/b", "plugin": "x", "blocking": true},
                                          {"prefix": "/c", "plugin": "x", "blocking": false}]})",
                                kFile);
        REQUIRE(c.routes.size() == 3);
        CHECK_FALSE(c.routes[0].blocking);
        CHECK(c.routes[1].blocking);
        CHECK_FALSE(c.routes[2].blocking);
        CHECK(c.routes[1].prefix == "/b");
        CHECK(c.routes[1].plugin == "x");
    }
    SUBCASE("wrong types name the route") {
        check_error(
            head + R"({"prefix": "/a", "plugin": "x"}, {"prefix": "/b", "plugin": "x", "blocking": "yes"}]})",
            "/routes/1/blocking", "expected true or false, got string \"yes\"");
        check_error(head + R"({"prefix": "/a", "plugin": "x", "blocking": 1}]})", "/routes/0/blocking",
                    "expected true or false, got number 1");
        check_error(head + R"({"prefix": "/a", "plugin": "x", "blocking": null}]})", "/routes/0/blocking",
                    "expected true or false, got null");
    }
}

TEST_CASE("config: plugin_dir absent is the install location beside the binary") {
    // <prefix>/bin/trellis finds <prefix>/lib/trellis/plugins: here the binary is
    // build/tests/unit_tests, so the directory is under build/, whatever CMAKE_INSTALL_PREFIX is.
    const std::string &dir = trellis::default_plugin_dir();
    std::filesystem::path exe = std::filesystem::read_symlink("/proc/self/exe");
    INFO("default_plugin_dir: " << dir << ", binary: " << exe.string());
    CHECK(dir.rfind(exe.parent_path().parent_path().string() + "/", 0) == 0);
    CHECK(dir.size() > std::string("/trellis/plugins").size());
    CHECK(dir.substr(dir.size() - std::string("/trellis/plugins").size()) == "/trellis/plugins");
    CHECK(dir.find("/../") == std::string::npos); // normalised
    // A file that sets plugin_dir keeps it, resolved against its directory as before.
    CHECK(parse_config(R"({"listen": [{"port": 1}], "plugin_dir": "build/plugins"})", kFile).plugin_dir ==
          "/srv/site/build/plugins");
    CHECK(parse_config(R"({"listen": [{"port": 1}], "plugin_dir": "/opt/p"})", kFile).plugin_dir == "/opt/p");
    Config c =
        parse_config(R"({"listen": [{"port": 1}], "plugins": [{"name": "h", "path": "hello"}]})", kFile);
    REQUIRE(c.plugins.size() == 1);
    CHECK(c.plugins[0].file == dir + "/hello.so");
}

TEST_CASE("config: route config is any JSON value, kept as JSON text") {
    const std::string head =
        R"({"listen": [{"port": 1}], "plugins": [{"name": "x", "path": "x"}], "routes": [)";
    Config c = parse_config(head + R"({"prefix": "/a", "plugin": "x"},
                                      {"prefix": "/b", "plugin": "x", "config": {"lang": "en", "n": [1, 2.5]}},
                                      {"prefix": "/c", "plugin": "x", "config": "just text"},
                                      {"prefix": "/d", "plugin": "x", "config": null},
                                      {"prefix": "/e", "plugin": "x", "config": 42},
                                      {"prefix": "/f", "plugin": "x", "config": {}},
                                      {"prefix": "/g", "plugin": "x", "config": ["\u00e9\n", false]}]})",
                            kFile);
    REQUIRE(c.routes.size() == 7);
    CHECK(c.routes[0].config_json.empty()); // absent: empty, unlike an explicit null
    CHECK(c.routes[1].config_json == R"({"lang":"en","n":[1,2.5]})");
    CHECK(c.routes[2].config_json == R"("just text")");
    CHECK(c.routes[3].config_json == "null");
    CHECK(c.routes[4].config_json == "42");
    CHECK(c.routes[5].config_json == "{}");
    CHECK(c.routes[6].config_json == "[\"\xc3\xa9\\n\",false]"); // UTF-8 kept, control escaped
    // Keys of the route around it are still checked, with their pointers.
    check_error(head + R"({"prefix": "/a", "plugin": "x", "config": {}, "confg": 1}]})", "/routes/0/confg",
                "unknown key");
    check_error(head + R"({"prefix": "/a", "plugin": "y", "config": {}}]})", "/routes/0/plugin",
                "no plugin named \"y\"");
}

TEST_CASE("config: access_log and error_log") {
    auto parse = [](const std::string &logs) {
        return parse_config(R"({"listen": [{"port": 1}], )" + logs + "}", kFile);
    };
    SUBCASE("defaults: combined on stdout, errors on stderr") {
        Config c = parse_config(kMinimal, kFile);
        CHECK(c.access_log.target == trellis::AccessLogConfig::Target::Stdout);
        CHECK(c.access_log.format == trellis::AccessLogFormat::Combined);
        CHECK(c.error_log.to_stderr());
    }
    SUBCASE("the object form") {
        Config c = parse(R"("access_log": {"path": "logs/a.json", "format": "json"})");
        CHECK(c.access_log.path == "/srv/site/logs/a.json");
        CHECK(c.access_log.format == trellis::AccessLogFormat::Json);
        c = parse(R"("access_log": {"path": "-"})");
        CHECK(c.access_log.target == trellis::AccessLogConfig::Target::Stdout);
        CHECK(c.access_log.format == trellis::AccessLogFormat::Combined);
        c = parse(R"("access_log": {"format": "json"})");
        CHECK(c.access_log.target == trellis::AccessLogConfig::Target::Stdout);
        CHECK(c.access_log.format == trellis::AccessLogFormat::Json);
        CHECK(parse(R"("access_log": {"path": "off", "format": "combined"})").access_log.target ==
              trellis::AccessLogConfig::Target::Off);
    }
    SUBCASE("error_log") {
        CHECK(parse(R"("error_log": "-")").error_log.to_stderr());
        CHECK(parse(R"("error_log": "logs/error.log")").error_log.path == "/srv/site/logs/error.log");
        CHECK(parse(R"("error_log": "/var/log/e")").error_log.path == "/var/log/e");
    }
    SUBCASE("refused, naming the pointer") {
        check_error(R"({"listen": [{"port": 1}], "access_log": {"format": "xml"}})", "/access_log/format",
                    "expected \"combined\" or \"json\", got \"xml\"");
        check_error(R"({"listen": [{"port": 1}], "access_log": {"format": 1}})", "/access_log/format",
                    "expected a string, got number 1");
        check_error(R"({"listen": [{"port": 1}], "access_log": {"path": ""}})", "/access_log/path",
                    "expected a non-empty string");
        check_error(R"({"listen": [{"port": 1}], "access_log": {"path": ["a"]}})", "/access_log/path",
                    "expected a string");
        check_error(R"({"listen": [{"port": 1}], "access_log": {"file": "a"}})", "/access_log/file",
                    "unknown key (expected one of: path, format)");
        check_error(
            R"({"listen": [{"port": 1}], "access_log": true})", "/access_log",
            "expected a string (\"-\", \"off\" or a file path) or {\"path\", \"format\"}, got boolean true");
        check_error(R"({"listen": [{"port": 1}], "access_log": ""})", "/access_log",
                    "expected a non-empty string");
        check_error(R"({"listen": [{"port": 1}], "error_log": ""})", "/error_log",
                    "expected a non-empty string");
        check_error(R"({"listen": [{"port": 1}], "error_log": 3})", "/error_log", "expected a string");
    }
}

TEST_CASE("config: a number too large for a double is a config error naming the file") {
    try {
        trellis::parse_config(R"({"listen": [{"port": 1e400}]})", "/srv/site/server.json");
        FAIL("accepted");
    } catch (const trellis::ConfigError &e) {
        std::string message = e.what();
        CHECK(message.rfind("/srv/site/server.json: invalid JSON: ", 0) == 0);
        CHECK(message.find("1e400") != std::string::npos);
    }
}

TEST_CASE("config: health") {
    CHECK(parse_config(kMinimal, kFile).health_path.empty());
    Config c = parse_config(R"({"listen": [{"port": 1}], "health": {"path": "/healthz"}})", kFile);
    CHECK(c.health_path == "/healthz");
    CHECK(parse_config(R"({"listen": [{"port": 1}], "health": {"path": "/lb/ready"}})", kFile).health_path ==
          "/lb/ready");
    for (const char *bad : {R"("/")", R"("healthz")", R"("/a//b")", R"("/a/./b")", R"("/a/..")", R"("/h?x")",
                            R"("/h/")", R"("/h%20")"}) {
        CAPTURE(bad);
        check_error(std::string(R"({"listen": [{"port": 1}], "health": {"path": )") + bad + "}}",
                    "/health/path", "expected an absolute path");
    }
    check_error(R"({"listen": [{"port": 1}], "health": {}})", "/health", "missing key \"path\"");
}

TEST_CASE("config: Unix-domain socket listeners") {
    Config c = parse_config(R"({"listen": [{"address": "unix:run/http.sock", "mode": "0660", "owner": "root",
                                            "group": "root"}]})",
                            kFile);
    CHECK(c.listen[0].unix_path == "/srv/site/run/http.sock"); // relative to the file, like every path
    CHECK(c.listen[0].address == "unix:/srv/site/run/http.sock");
    CHECK(c.listen[0].unix_mode == 0660);
    CHECK(c.listen[0].unix_owner == "root");
    CHECK(parse_config(R"({"listen": [{"address": "unix:/run/t.sock"}]})", kFile).listen[0].unix_mode == -1);
    check_error(R"({"listen": [{"address": "unix:"}]})", "/listen/0/address", "expected \"unix:PATH\"");
    check_error(R"({"listen": [{"address": "unix:/x", "mode": "0999"}]})", "/listen/0/mode",
                "expected octal permissions such as \"0660\", got \"0999\"");
    check_error(R"({"listen": [{"address": "unix:/x", "mode": 660}]})", "/listen/0/mode",
                "expected a string");
    check_error(R"({"listen": [{"address": "unix:/x", "owner": "no-such-user-here"}]})", "/listen/0/owner",
                "no such user \"no-such-user-here\"");
    check_error(R"({"listen": [{"address": "unix:/x", "group": "no-such-group-here"}]})", "/listen/0/group",
                "no such group");
    check_error(R"({"listen": [{"port": 1, "mode": "0660"}]})", "/listen/0/mode",
                "only for a \"unix:PATH\" address");
    check_error(R"({"listen": [{"address": "unix:/)" + std::string(120, 'a') + R"("}]})", "/listen/0/address",
                "longer than 107 bytes");
}

TEST_CASE("config: proxy_protocol and trusted_proxies") {
    Config c = parse_config(R"({"listen": [{"port": 1, "proxy_protocol": true,
                                            "trusted_proxies": ["127.0.0.1", "10.0.0.0/8", "fd00::/8", "unix"]}]})",
                            kFile);
    CHECK(c.listen[0].proxy_protocol);
    CHECK_FALSE(c.listen[0].trusted_proxies.empty());
    CHECK_FALSE(parse_config(kMinimal, kFile).listen[0].proxy_protocol);
    check_error(R"({"listen": [{"port": 1, "proxy_protocol": true}]})", "/listen/0/trusted_proxies",
                "needs the balancers it may come from");
    check_error(R"({"listen": [{"port": 1, "proxy_protocol": "yes", "trusted_proxies": ["::1"]}]})",
                "/listen/0/proxy_protocol", "expected true or false");
    CHECK(c.listen[0].real_ip_header == trellis::RealIpHeader::XForwardedFor);
    CHECK(parse_config(R"({"listen": [{"port": 1, "real_ip_header": "Forwarded"}]})", kFile)
              .listen[0]
              .real_ip_header == trellis::RealIpHeader::Forwarded);
    CHECK(parse_config(R"({"listen": [{"port": 1, "real_ip_header": "none"}]})", kFile)
              .listen[0]
              .real_ip_header == trellis::RealIpHeader::None);
    check_error(R"({"listen": [{"port": 1, "real_ip_header": "X-Real-IP"}]})", "/listen/0/real_ip_header",
                "expected \"X-Forwarded-For\", \"Forwarded\" or \"none\", got \"X-Real-IP\"");
    check_error(
        R"({"listen": [{"address": "unix:/x", "proxy_protocol": true, "trusted_proxies": ["127.0.0.1"]}]})",
        "/listen/0/trusted_proxies", "needs \"unix\" here");
    CHECK(parse_config(
              R"({"listen": [{"address": "unix:/x", "proxy_protocol": true, "trusted_proxies": ["unix"]}]})",
              kFile)
              .listen[0]
              .proxy_protocol);
    for (const char *bad : {"10.0.0.0/33", "nope", "10.0.0.1/8", "::1/129", "10.0.0.0/", "10.0.0.0/08", ""}) {
        INFO(bad);
        check_error(R"({"listen": [{"port": 1, "trusted_proxies": ["127.0.0.1", ")" + std::string(bad) +
                        R"("]}]})",
                    "/listen/0/trusted_proxies/1", "got \"" + std::string(bad) + "\"");
    }
}

TEST_CASE("config: tls.ticket_key_file resolves against the file's directory and is checked") {
    namespace fs = std::filesystem;
    fs::path dir = fs::temp_directory_path() / ("trellis-ticket-test-" + std::to_string(getpid()));
    fs::create_directories(dir / "keys");
    std::string file = (dir / "server.json").string();
    auto write = [&dir](const std::string &name, size_t bytes) {
        std::ofstream(dir / "keys" / name, std::ios::binary) << std::string(bytes, 'k');
    };
    write("ticket.key", 80);
    write("short.key", 12);
    write("nginx48.key", 48);
    auto config = [](const std::string &key) {
        return R"({"listen": [{"port": 1}], "tls": {"ticket_key_file": ")" + key + R"("}})";
    };
    CHECK(parse_config(config("keys/ticket.key"), file).listen[0].tls.ticket_key_file ==
          (dir / "keys/ticket.key").string());
    CHECK(parse_config(config("keys/nginx48.key"), file).listen.size() == 1);
    auto error = [&](const std::string &key) { return error_of(config(key), file); };
    CHECK(contains(error("keys/short.key"), "/tls/ticket_key_file: " + (dir / "keys/short.key").string() +
                                                ": 12 bytes; expected 80 random bytes"));
    CHECK(contains(error("keys/missing.key"), "/tls/ticket_key_file: " + (dir / "keys/missing.key").string() +
                                                  ": No such file or directory"));
    CHECK(contains(error("keys"), "/tls/ticket_key_file: "));
    check_error(R"({"listen": [{"port": 1}], "tls": {"ticket_key_file": ""}})", "/tls/ticket_key_file",
                "non-empty");
    fs::remove_all(dir);
}

TEST_CASE("config: routes[].allow") {
    Config c = parse_config(R"({"listen": [{"port": 1}], "plugins": [{"name": "p", "path": "p"}],
                               "routes": [{"prefix": "/a", "plugin": "p", "allow": ["127.0.0.1", "10.0.0.0/8", "unix"]},
                                          {"prefix": "/b", "plugin": "p"}]})",
                            kFile);
    CHECK(c.routes[0].has_allow);
    CHECK_FALSE(c.routes[0].allow.empty());
    CHECK_FALSE(c.routes[1].has_allow);
    // An empty list is a route no one may use, said on purpose.
    CHECK(parse_config(R"({"listen": [{"port": 1}], "plugins": [{"name": "p", "path": "p"}],
                           "routes": [{"prefix": "/a", "plugin": "p", "allow": []}]})",
                       kFile)
              .routes[0]
              .has_allow);
    check_error(R"({"listen": [{"port": 1}], "plugins": [{"name": "p", "path": "p"}],
                    "routes": [{"prefix": "/a", "plugin": "p", "allow": ["127.0.0.1", "10.0.0.1/8"]}]})",
                "/routes/0/allow/1", "got \"10.0.0.1/8\"");
    check_error(R"({"listen": [{"port": 1}], "plugins": [{"name": "p", "path": "p"}],
                    "routes": [{"prefix": "/a", "plugin": "p", "allow": "127.0.0.1"}]})",
                "/routes/0/allow", "expected an array");
}
