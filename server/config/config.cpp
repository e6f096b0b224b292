#include "config/config.hpp"
#include "config/install_dirs.hpp"
#include "config/ticket_key_file.hpp"

#include <arpa/inet.h>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <grp.h>
#include <nlohmann/json.hpp>
#include <pwd.h>
#include <set>
#include <sstream>
#include <thread>

namespace trellis {
namespace {

using nlohmann::json;

// Walks the JSON with the pointer of the current node, so every error can say where it is.
class Reader {
  public:
    Reader(const std::string &file) : file_(file) {}

    [[noreturn]] void fail(const std::string &pointer, const std::string &what) const {
        throw ConfigError(file_ + ": " + (pointer.empty() ? "/" : pointer) + ": " + what);
    }

    void only_keys(const json &obj, const std::string &pointer,
                   std::initializer_list<const char *> allowed) const {
        for (const auto &item : obj.items()) {
            bool known = false;
            for (const char *key : allowed)
                known = known || item.key() == key;
            if (!known) {
                std::string list;
                for (const char *key : allowed)
                    list += std::string(list.empty() ? "" : ", ") + key;
                fail(pointer + "/" + escape(item.key()), "unknown key (expected one of: " + list + ")");
            }
        }
    }

    const json &object(const json &value, const std::string &pointer) const {
        if (!value.is_object())
            fail(pointer, "expected an object, got " + describe(value));
        return value;
    }

    const json &array(const json &value, const std::string &pointer) const {
        if (!value.is_array())
            fail(pointer, "expected an array, got " + describe(value));
        return value;
    }

    std::string string(const json &value, const std::string &pointer) const {
        if (!value.is_string())
            fail(pointer, "expected a string, got " + describe(value));
        return value.get<std::string>();
    }

    std::string nonempty_string(const json &value, const std::string &pointer) const {
        std::string s = string(value, pointer);
        if (s.empty())
            fail(pointer, "expected a non-empty string");
        return s;
    }

    uint64_t integer(const json &value, const std::string &pointer, uint64_t min, uint64_t max) const {
        std::string range = "expected an integer from " + std::to_string(min) + " to " + std::to_string(max);
        if (!value.is_number_integer())
            fail(pointer, range + ", got " + describe(value));
        if (value.is_number_unsigned()) {
            uint64_t v = value.get<uint64_t>();
            if (v >= min && v <= max)
                return v;
        } else {
            int64_t v = value.get<int64_t>();
            if (v >= 0 && static_cast<uint64_t>(v) >= min && static_cast<uint64_t>(v) <= max)
                return static_cast<uint64_t>(v);
        }
        fail(pointer, range + ", got " + value.dump());
    }

    static std::string describe(const json &value) {
        std::string text = value.dump();
        if (text.size() > 40)
            text = text.substr(0, 37) + "...";
        return std::string(value.type_name()) + " " + text;
    }

    static std::string escape(const std::string &key) {
        std::string out;
        for (char c : key) {
            if (c == '~')
                out += "~0";
            else if (c == '/')
                out += "~1";
            else
                out += c;
        }
        return out;
    }

  private:
    std::string file_;
};

unsigned parse_workers(const Reader &r, const json &value) {
    if (value.is_string()) {
        if (value.get<std::string>() != "auto")
            r.fail("/workers", "expected \"auto\" or a positive integer, got " + Reader::describe(value));
        unsigned cores = std::thread::hardware_concurrency();
        return cores == 0 ? 1 : cores;
    }
    if (!value.is_number_integer())
        r.fail("/workers", "expected \"auto\" or a positive integer, got " + Reader::describe(value));
    return static_cast<unsigned>(r.integer(value, "/workers", 1, 1024));
}

bool boolean(const Reader &r, const json &value, const std::string &pointer) {
    if (!value.is_boolean())
        r.fail(pointer, "expected true or false, got " + Reader::describe(value));
    return value.get<bool>();
}

// Reads a "tls" object over `tls` (the top-level settings when this is a listener's override).
void parse_tls(const Reader &r, const json &value, const std::string &ptr, const std::string &base_dir,
               TlsConfig &tls) {
    r.object(value, ptr);
    r.only_keys(value, ptr,
                {"certificates", "self_signed_if_missing", "client_auth", "client_ca", "session_tickets",
                 "session_timeout_s", "ticket_key_file", "hsts"});
    if (value.contains("certificates")) {
        const json &list = r.array(value["certificates"], ptr + "/certificates");
        tls.certificates.clear();
        for (size_t i = 0; i < list.size(); ++i) {
            std::string item = ptr + "/certificates/" + std::to_string(i);
            r.object(list[i], item);
            r.only_keys(list[i], item, {"cert", "key"});
            if (!list[i].contains("cert") || !list[i].contains("key"))
                r.fail(item, "expected {\"cert\": FILE, \"key\": FILE}");
            tls.certificates.push_back(
                {resolve_path(base_dir, r.nonempty_string(list[i]["cert"], item + "/cert")),
                 resolve_path(base_dir, r.nonempty_string(list[i]["key"], item + "/key"))});
        }
    }
    if (value.contains("self_signed_if_missing"))
        tls.self_signed_if_missing =
            boolean(r, value["self_signed_if_missing"], ptr + "/self_signed_if_missing");
    if (value.contains("client_auth")) {
        std::string mode = r.string(value["client_auth"], ptr + "/client_auth");
        if (mode == "none")
            tls.client_auth = ClientAuth::None;
        else if (mode == "optional")
            tls.client_auth = ClientAuth::Optional;
        else if (mode == "optional_no_ca")
            tls.client_auth = ClientAuth::OptionalNoCa;
        else if (mode == "required")
            tls.client_auth = ClientAuth::Required;
        else
            r.fail(ptr + "/client_auth",
                   "expected \"none\", \"optional\", \"optional_no_ca\" or \"required\", got \"" + mode +
                       "\"");
    }
    if (value.contains("client_ca"))
        tls.client_ca = resolve_path(base_dir, r.nonempty_string(value["client_ca"], ptr + "/client_ca"));
    if (value.contains("session_tickets"))
        tls.session_tickets = boolean(r, value["session_tickets"], ptr + "/session_tickets");
    if (value.contains("session_timeout_s"))
        tls.session_timeout_s = static_cast<uint32_t>(
            r.integer(value["session_timeout_s"], ptr + "/session_timeout_s", 0, 604800));
    if (value.contains("ticket_key_file")) {
        tls.ticket_key_file =
            resolve_path(base_dir, r.nonempty_string(value["ticket_key_file"], ptr + "/ticket_key_file"));
        // Read now, so --check, a start and a reload all refuse a bad file with its JSON path.
        std::string error;
        if (read_ticket_key_file(tls.ticket_key_file, error).empty())
            r.fail(ptr + "/ticket_key_file", error);
    }
    if (value.contains("hsts"))
        tls.hsts = r.string(value["hsts"], ptr + "/hsts");
}

// A literal address: no name is looked up at start, so --check and the start always agree, and a
// name that resolves to several addresses cannot bind some of them silently.
void check_listen_address(const Reader &r, const std::string &address, const std::string &pointer) {
    unsigned char binary[sizeof(in6_addr)];
    if (inet_pton(AF_INET, address.c_str(), binary) == 1)
        return;
    // An IPv6 address may name its zone ("fe80::1%eth0"), as the bind accepts it.
    size_t zone = address.find('%');
    if (inet_pton(AF_INET6, address.substr(0, zone).c_str(), binary) == 1 &&
        (zone == std::string::npos || zone + 1 < address.size()))
        return;
    r.fail(pointer, "expected an IPv4 or IPv6 address such as \"127.0.0.1\" or \"::1\" (host names are "
                    "not resolved), got \"" +
                        address + "\"; a Unix-domain socket is \"unix:PATH\"");
}

// Reads an "http2" object over `http2` (the top-level settings when this is a listener's override).
void parse_http2(const Reader &r, const json &value, const std::string &ptr, Http2Config &http2) {
    r.object(value, ptr);
    r.only_keys(value, ptr,
                {"enabled", "max_concurrent_streams", "initial_window_size", "max_frame_size",
                 "max_header_list_size"});
    if (value.contains("enabled"))
        http2.enabled = boolean(r, value["enabled"], ptr + "/enabled");
    if (value.contains("max_concurrent_streams"))
        http2.max_concurrent_streams = static_cast<uint32_t>(
            r.integer(value["max_concurrent_streams"], ptr + "/max_concurrent_streams", 1, 1000000));
    // RFC 9113 section 6.5.2: the largest window is 2^31-1, frames are 2^14 to 2^24-1 bytes. A
    // window of 0 would never let a request body in (credit returns only as bodies are taken).
    if (value.contains("initial_window_size"))
        http2.initial_window_size = static_cast<uint32_t>(
            r.integer(value["initial_window_size"], ptr + "/initial_window_size", 1, 2147483647));
    if (value.contains("max_frame_size"))
        http2.max_frame_size = static_cast<uint32_t>(
            r.integer(value["max_frame_size"], ptr + "/max_frame_size", 16384, 16777215));
    if (value.contains("max_header_list_size"))
        http2.max_header_list_size = static_cast<uint32_t>(
            r.integer(value["max_header_list_size"], ptr + "/max_header_list_size", 1024, 16777216));
}

// "address": "unix:PATH" with its "mode", "owner" and "group"; a Unix socket has no port.
void parse_unix_listener(const Reader &r, const json &value, const std::string &ptr,
                         const std::string &base_dir, ListenConfig &listen) {
    std::string path = listen.address.substr(5);
    if (path.empty())
        r.fail(ptr + "/address", "expected \"unix:PATH\", got \"unix:\"");
    listen.unix_path = resolve_path(base_dir, path);
    // sockaddr_un holds 108 bytes with the terminating NUL.
    if (listen.unix_path.size() > 107)
        r.fail(ptr + "/address", "the socket path " + listen.unix_path + " is longer than 107 bytes");
    listen.address = "unix:" + listen.unix_path;
    if (value.contains("port"))
        r.fail(ptr + "/port", "a \"unix:PATH\" listener has no port");
    if (value.contains("mode")) {
        std::string mode = r.string(value["mode"], ptr + "/mode");
        if (mode.empty() || mode.size() > 4 || mode.find_first_not_of("01234567") != std::string::npos)
            r.fail(ptr + "/mode", "expected octal permissions such as \"0660\", got \"" + mode + "\"");
        listen.unix_mode = static_cast<int>(std::stoi(mode, nullptr, 8));
    }
    if (value.contains("owner")) {
        listen.unix_owner = r.nonempty_string(value["owner"], ptr + "/owner");
        if (!getpwnam(listen.unix_owner.c_str()))
            r.fail(ptr + "/owner", "no such user \"" + listen.unix_owner + "\"");
    }
    if (value.contains("group")) {
        listen.unix_group = r.nonempty_string(value["group"], ptr + "/group");
        if (!getgrnam(listen.unix_group.c_str()))
            r.fail(ptr + "/group", "no such group \"" + listen.unix_group + "\"");
    }
}

// A list of addresses, networks and "unix" ("trusted_proxies", a route's "allow").
AddressSet address_set(const Reader &r, const json &value, const std::string &ptr) {
    AddressSet set;
    const json &list = r.array(value, ptr);
    for (size_t i = 0; i < list.size(); ++i) {
        std::string item = ptr + "/" + std::to_string(i);
        std::string text = r.string(list[i], item);
        if (!set.add(text))
            r.fail(item, "expected an address, a network such as \"10.0.0.0/8\" or \"fd00::/8\" (no host "
                         "bits set), or \"unix\", got \"" +
                             text + "\"");
    }
    return set;
}

// "proxy_protocol" and "trusted_proxies": who may speak for a client.
void parse_proxy_settings(const Reader &r, const json &value, const std::string &ptr, ListenConfig &listen) {
    if (value.contains("proxy_protocol"))
        listen.proxy_protocol = boolean(r, value["proxy_protocol"], ptr + "/proxy_protocol");
    if (value.contains("trusted_proxies"))
        listen.trusted_proxies = address_set(r, value["trusted_proxies"], ptr + "/trusted_proxies");
    if (value.contains("real_ip_header")) {
        std::string header = r.string(value["real_ip_header"], ptr + "/real_ip_header");
        if (header == "X-Forwarded-For")
            listen.real_ip_header = RealIpHeader::XForwardedFor;
        else if (header == "Forwarded")
            listen.real_ip_header = RealIpHeader::Forwarded;
        else if (header == "none")
            listen.real_ip_header = RealIpHeader::None;
        else
            r.fail(ptr + "/real_ip_header",
                   "expected \"X-Forwarded-For\", \"Forwarded\" or \"none\", got \"" + header + "\"");
    }
    if (listen.proxy_protocol && !listen.unix_path.empty() && !listen.trusted_proxies.trusts_unix())
        r.fail(ptr + "/trusted_proxies",
               "a \"unix:PATH\" listener with \"proxy_protocol\" needs \"unix\" here "
               "(its peers have no address; the socket's mode says who may connect)");
    if (listen.proxy_protocol && listen.trusted_proxies.empty())
        r.fail(ptr + "/trusted_proxies",
               "\"proxy_protocol\": true needs the balancers it may come from, e.g. [\"127.0.0.1\"] "
               "(\"unix\" for a Unix socket)");
}

ListenConfig parse_listen(const Reader &r, const json &value, const std::string &ptr,
                          const std::string &base_dir, const TlsConfig *top_tls,
                          const Http2Config &top_http2) {
    r.object(value, ptr);
    r.only_keys(value, ptr,
                {"address", "port", "transport", "redirect_to_https", "tls", "http2", "mode", "owner",
                 "group", "proxy_protocol", "trusted_proxies", "real_ip_header"});
    ListenConfig listen;
    if (value.contains("address")) {
        listen.address = r.nonempty_string(value["address"], ptr + "/address");
        if (listen.address.rfind("unix:", 0) == 0)
            parse_unix_listener(r, value, ptr, base_dir, listen);
        else
            check_listen_address(r, listen.address, ptr + "/address");
    }
    if (listen.unix_path.empty()) {
        for (const char *key : {"mode", "owner", "group"})
            if (value.contains(key))
                r.fail(ptr + "/" + key, "only for a \"unix:PATH\" address");
        if (!value.contains("port"))
            r.fail(ptr, "missing key \"port\" (an integer from 0 to 65535)");
        listen.port = static_cast<uint16_t>(r.integer(value["port"], ptr + "/port", 0, 65535));
    }
    parse_proxy_settings(r, value, ptr, listen);
    if (value.contains("transport")) {
        std::string t = r.string(value["transport"], ptr + "/transport");
        if (t == "plain")
            listen.transport = TransportKind::Plain;
        else if (t == "tls")
            listen.transport = TransportKind::Tls;
        else if (t == "auto")
            listen.transport = TransportKind::Auto;
        else
            r.fail(ptr + "/transport", "expected \"plain\", \"tls\" or \"auto\", got \"" + t + "\"");
    }
    if (value.contains("redirect_to_https")) {
        const json &redirect = value["redirect_to_https"];
        std::string rptr = ptr + "/redirect_to_https";
        if (redirect.is_boolean()) {
            listen.redirect_to_https.kind =
                redirect.get<bool>() ? RedirectToHttps::Kind::SameHost : RedirectToHttps::Kind::Off;
        } else if (redirect.is_string()) {
            std::string origin = redirect.get<std::string>();
            if (origin.rfind("https://", 0) != 0 || origin.size() <= 8 ||
                origin.find_first_of("/?#", 8) != std::string::npos)
                r.fail(rptr, "expected \"https://HOST[:PORT]\" or true, got \"" + origin + "\"");
            listen.redirect_to_https = {RedirectToHttps::Kind::Origin, origin};
        } else {
            r.fail(rptr, "expected \"https://HOST[:PORT]\" or true, got " + Reader::describe(redirect));
        }
        if (listen.transport == TransportKind::Tls &&
            listen.redirect_to_https.kind != RedirectToHttps::Kind::Off)
            r.fail(rptr, "a \"tls\" listener has no plain requests to redirect (use \"plain\" or \"auto\")");
    }
    if (top_tls)
        listen.tls = *top_tls;
    if (value.contains("tls"))
        parse_tls(r, value["tls"], ptr + "/tls", base_dir, listen.tls);
    listen.http2 = top_http2;
    if (value.contains("http2"))
        parse_http2(r, value["http2"], ptr + "/http2", listen.http2);
    listen.tls.offer_h2 = listen.http2.enabled;
    if (listen.transport != TransportKind::Plain) {
        if (listen.tls.certificates.empty())
            r.fail(ptr, "transport \"" +
                            std::string(listen.transport == TransportKind::Tls ? "tls" : "auto") +
                            "\" needs \"tls\": {\"certificates\": [...]} here or at the top level");
        if (listen.tls.client_auth != ClientAuth::None && listen.tls.client_ca.empty())
            r.fail(ptr, "\"client_auth\" other than \"none\" needs \"client_ca\" in the \"tls\" settings");
    }
    return listen;
}

Limits parse_limits(const Reader &r, const json &value) {
    r.object(value, "/limits");
    r.only_keys(value, "/limits",
                {"max_connections", "max_header_bytes", "max_body_bytes", "header_timeout_ms",
                 "body_timeout_ms", "keepalive_timeout_ms", "send_timeout_ms", "shutdown_timeout_ms",
                 "handler_timeout_ms", "header_read_timeout_ms", "handshake_timeout_ms", "min_body_rate_bps",
                 "min_body_rate_grace_ms", "loop_stall_warn_ms"});
    Limits limits;
    auto u32 = [&](const char *key, uint32_t &field, uint64_t min, uint64_t max) {
        if (value.contains(key))
            field = static_cast<uint32_t>(r.integer(value[key], std::string("/limits/") + key, min, max));
    };
    u32("max_connections", limits.max_connections, 1, 10000000);
    u32("max_header_bytes", limits.max_header_bytes, 1024, 1048576);
    if (value.contains("max_body_bytes"))
        limits.max_body_bytes = r.integer(value["max_body_bytes"], "/limits/max_body_bytes", 0, 1ull << 40);
    u32("header_timeout_ms", limits.header_timeout_ms, 1, 3600000);
    u32("body_timeout_ms", limits.body_timeout_ms, 1, 3600000);
    u32("keepalive_timeout_ms", limits.keepalive_timeout_ms, 1, 3600000);
    u32("send_timeout_ms", limits.send_timeout_ms, 1, 3600000);
    u32("shutdown_timeout_ms", limits.shutdown_timeout_ms, 0, 3600000);
    u32("handler_timeout_ms", limits.handler_timeout_ms, 1, 86400000);
    u32("loop_stall_warn_ms", limits.loop_stall_warn_ms, 0, 3600000);
    u32("header_read_timeout_ms", limits.header_read_timeout_ms, 1, 3600000);
    u32("handshake_timeout_ms", limits.handshake_timeout_ms, 1, 3600000);
    u32("min_body_rate_bps", limits.min_body_rate_bps, 0, 1000000000);
    u32("min_body_rate_grace_ms", limits.min_body_rate_grace_ms, 0, 3600000);
    return limits;
}

PluginConfig parse_plugin(const Reader &r, const json &value, const std::string &ptr,
                          const std::string &base_dir, const std::string &plugin_dir) {
    r.object(value, ptr);
    r.only_keys(value, ptr, {"name", "path", "config"});
    if (!value.contains("name"))
        r.fail(ptr, "missing key \"name\" (the instance name routes refer to)");
    if (!value.contains("path"))
        r.fail(ptr, "missing key \"path\" (a plugin name like \"static\" or a path to a .so)");
    PluginConfig plugin;
    plugin.name = r.nonempty_string(value["name"], ptr + "/name");
    std::string path = r.nonempty_string(value["path"], ptr + "/path");
    plugin.file =
        path.find('/') == std::string::npos ? plugin_dir + "/" + path + ".so" : resolve_path(base_dir, path);
    plugin.config_json = "{}";
    if (value.contains("config"))
        plugin.config_json = r.object(value["config"], ptr + "/config").dump();
    return plugin;
}

RouteConfig parse_route(const Reader &r, const json &value, const std::string &ptr,
                        const std::set<std::string> &plugin_names) {
    r.object(value, ptr);
    r.only_keys(value, ptr, {"host", "prefix", "plugin", "blocking", "config", "allow"});
    RouteConfig route;
    if (value.contains("allow")) {
        route.allow = address_set(r, value["allow"], ptr + "/allow");
        route.has_allow = true;
    }
    if (value.contains("blocking"))
        route.blocking = boolean(r, value["blocking"], ptr + "/blocking");
    if (value.contains("host")) {
        route.host = r.nonempty_string(value["host"], ptr + "/host");
        for (char &c : route.host) {
            if (c >= 'A' && c <= 'Z')
                c = static_cast<char>(c - 'A' + 'a');
            if (c == '/' || c == ' ' || c == ':')
                r.fail(ptr + "/host",
                       "expected \"*\" or a host name without port, got \"" + route.host + "\"");
        }
    }
    if (!value.contains("prefix"))
        r.fail(ptr, "missing key \"prefix\" (a path starting with \"/\")");
    route.prefix = r.string(value["prefix"], ptr + "/prefix");
    if (route.prefix.empty() || route.prefix[0] != '/')
        r.fail(ptr + "/prefix", "expected a path starting with \"/\", got \"" + route.prefix + "\"");
    if (!value.contains("plugin"))
        r.fail(ptr, "missing key \"plugin\" (the name of an entry in /plugins)");
    route.plugin = r.nonempty_string(value["plugin"], ptr + "/plugin");
    if (!plugin_names.count(route.plugin))
        r.fail(ptr + "/plugin", "no plugin named \"" + route.plugin + "\" in /plugins");
    // Any JSON value, handed to the plugin as text with each request of this route. Every value
    // nlohmann parsed dumps as valid JSON (strings as UTF-8; invalid UTF-8 never parses).
    if (value.contains("config"))
        route.config_json = value["config"].dump();
    return route;
}

// "access_log": "-" | "off" | FILE, or {"path": the same, "format": "combined" | "json"}.
void parse_access_log(const Reader &r, const json &value, Config &config) {
    const json *path = &value;
    std::string path_ptr = "/access_log";
    if (value.is_object()) {
        r.only_keys(value, "/access_log", {"path", "format"});
        path = value.contains("path") ? &value["path"] : nullptr;
        path_ptr = "/access_log/path";
        if (value.contains("format")) {
            std::string format = r.string(value["format"], "/access_log/format");
            if (format == "combined")
                config.access_log.format = AccessLogFormat::Combined;
            else if (format == "json")
                config.access_log.format = AccessLogFormat::Json;
            else
                r.fail("/access_log/format", "expected \"combined\" or \"json\", got \"" + format + "\"");
        }
    } else if (!value.is_string()) {
        r.fail("/access_log",
               "expected a string (\"-\", \"off\" or a file path) or {\"path\", \"format\"}, got " +
                   Reader::describe(value));
    }
    if (path) {
        std::string log = r.nonempty_string(*path, path_ptr);
        if (log == "-")
            config.access_log.target = AccessLogConfig::Target::Stdout;
        else if (log == "off")
            config.access_log.target = AccessLogConfig::Target::Off;
        else
            config.access_log = {AccessLogConfig::Target::File, resolve_path(config.base_dir, log),
                                 config.access_log.format};
    }
}

// nlohmann reports how many bytes it read, the offending one included; people want its line and
// column.
std::string line_and_column(const std::string &text, size_t bytes_read) {
    size_t offending = bytes_read > 0 ? bytes_read - 1 : 0;
    size_t line = 1, column = 1;
    for (size_t i = 0; i < offending && i < text.size(); ++i) {
        if (text[i] == '\n') {
            ++line;
            column = 1;
        } else {
            ++column;
        }
    }
    return std::to_string(line) + ":" + std::to_string(column);
}

} // namespace

std::string resolve_path(const std::string &base_dir, const std::string &path) {
    if (path.empty() || path[0] == '/' || base_dir.empty())
        return path;
    return base_dir + "/" + path;
}

namespace {

json parse_json(const std::string &text, const std::string &source_path) {
    try {
        return json::parse(text);
    } catch (const json::parse_error &e) {
        std::string what = e.what();
        // "[json.exception.parse_error.101] parse error at line 3, column 5: syntax error ..."
        size_t colon = what.find(": ");
        std::string detail = colon == std::string::npos ? what : what.substr(colon + 2);
        throw ConfigError(source_path + ":" + line_and_column(text, e.byte) + ": invalid JSON: " + detail);
    } catch (const json::exception &e) {
        // A number too large for a double ("port": 1e400) is out_of_range, not a parse error.
        std::string what = e.what();
        size_t bracket = what.find("] ");
        throw ConfigError(source_path + ": invalid JSON: " +
                          (bracket == std::string::npos ? what : what.substr(bracket + 2)));
    }
}

// "health": {"path": "/healthz"}: an absolute, normalised path (it is compared with the request's
// normalised path; the query is not part of it).
std::string parse_health(const Reader &r, const json &value) {
    r.only_keys(r.object(value, "/health"), "/health", {"path"});
    if (!value.contains("path"))
        r.fail("/health", "missing key \"path\" (e.g. \"/healthz\")");
    std::string path = r.string(value["path"], "/health/path");
    bool normal = path.size() > 1 && path[0] == '/' && path.find_first_of("?#%\\") == std::string::npos &&
                  path.find("//") == std::string::npos && path.back() != '/';
    for (size_t at = 0; normal && at != std::string::npos; at = path.find('/', at + 1)) {
        std::string_view segment = std::string_view(path).substr(at + 1, path.find('/', at + 1) - at - 1);
        normal = segment != "." && segment != "..";
    }
    if (!normal)
        r.fail("/health/path", "expected an absolute path without query, \"//\", \".\" or \"..\" "
                               "segments or a trailing \"/\" (e.g. \"/healthz\"), got \"" +
                                   path + "\"");
    return path;
}

// "listen" (required, at least one) and the top-level "tls" each listener's own merges over.
void parse_listeners(const Reader &r, const json &root, Config &config) {
    if (!root.contains("listen"))
        r.fail("", "missing key \"listen\" (a list of {\"address\", \"port\", \"transport\"})");
    const json &listen = r.array(root["listen"], "/listen");
    if (listen.empty())
        r.fail("/listen", "expected at least one listener");
    TlsConfig top_tls;
    if (root.contains("tls")) {
        config.has_tls = true;
        parse_tls(r, root["tls"], "/tls", config.base_dir, top_tls);
    }
    Http2Config top_http2;
    if (root.contains("http2"))
        parse_http2(r, root["http2"], "/http2", top_http2);
    for (size_t i = 0; i < listen.size(); ++i) {
        std::string ptr = "/listen/" + std::to_string(i);
        config.listen.push_back(
            parse_listen(r, listen[i], ptr, config.base_dir, config.has_tls ? &top_tls : nullptr, top_http2));
        // SO_REUSEPORT would let both bind and split the connections between them silently.
        for (size_t j = 0; j < i; ++j)
            if (config.listen[j].port != 0 && config.listen[j].port == config.listen[i].port &&
                config.listen[j].address == config.listen[i].address)
                r.fail(ptr, "the same address and port as /listen/" + std::to_string(j));
    }
}

ThreadPoolConfig parse_thread_pool(const Reader &r, const json &value) {
    ThreadPoolConfig pool;
    r.object(value, "/thread_pool");
    r.only_keys(value, "/thread_pool", {"threads", "queue"});
    if (value.contains("threads"))
        pool.threads = static_cast<unsigned>(r.integer(value["threads"], "/thread_pool/threads", 1, 1024));
    if (value.contains("queue"))
        pool.queue = static_cast<size_t>(r.integer(value["queue"], "/thread_pool/queue", 1, 1000000));
    return pool;
}

// "plugins", then "routes", which may name only those plugins.
void parse_plugins_and_routes(const Reader &r, const json &root, Config &config) {
    std::set<std::string> names;
    if (root.contains("plugins")) {
        const json &plugins = r.array(root["plugins"], "/plugins");
        for (size_t i = 0; i < plugins.size(); ++i) {
            std::string ptr = "/plugins/" + std::to_string(i);
            PluginConfig plugin = parse_plugin(r, plugins[i], ptr, config.base_dir, config.plugin_dir);
            if (!names.insert(plugin.name).second)
                r.fail(ptr + "/name", "duplicate plugin name \"" + plugin.name + "\"");
            config.plugins.push_back(std::move(plugin));
        }
    }
    if (root.contains("routes")) {
        const json &routes = r.array(root["routes"], "/routes");
        for (size_t i = 0; i < routes.size(); ++i)
            config.routes.push_back(parse_route(r, routes[i], "/routes/" + std::to_string(i), names));
    }
}

LogLevel parse_log_level(const Reader &r, const json &value) {
    std::string level = r.string(value, "/log_level");
    for (auto [name, known] : {std::pair{"debug", LogLevel::Debug}, std::pair{"info", LogLevel::Info},
                               std::pair{"warn", LogLevel::Warn}, std::pair{"error", LogLevel::Error}})
        if (level == name)
            return known;
    r.fail("/log_level", "expected one of: debug, info, warn, error; got \"" + level + "\"");
}

} // namespace

Config parse_config(const std::string &text, const std::string &source_path) {
    json root = parse_json(text, source_path);
    Reader r(source_path);
    r.object(root, "");
    r.only_keys(root, "",
                {"workers", "plugin_dir", "listen", "limits", "plugins", "routes", "access_log", "log_level",
                 "tls", "thread_pool", "error_log", "http2", "health"});

    Config config;
    config.source_path = source_path;
    size_t slash = source_path.rfind('/');
    config.base_dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : source_path.substr(0, slash));
    config.workers = parse_workers(r, root.contains("workers") ? root["workers"] : json("auto"));
    // Without plugin_dir: where `cmake --install` puts the bundled plugins, beside the binary.
    config.plugin_dir =
        root.contains("plugin_dir")
            ? resolve_path(config.base_dir, r.nonempty_string(root["plugin_dir"], "/plugin_dir"))
            : default_plugin_dir();
    parse_listeners(r, root, config);
    if (root.contains("limits"))
        config.limits = parse_limits(r, root["limits"]);
    if (root.contains("thread_pool"))
        config.thread_pool = parse_thread_pool(r, root["thread_pool"]);
    parse_plugins_and_routes(r, root, config);
    if (root.contains("access_log"))
        parse_access_log(r, root["access_log"], config);
    if (root.contains("error_log")) {
        std::string log = r.nonempty_string(root["error_log"], "/error_log");
        config.error_log.path = log == "-" ? "" : resolve_path(config.base_dir, log);
    }
    if (root.contains("log_level"))
        config.log_level = parse_log_level(r, root["log_level"]);
    if (root.contains("health"))
        config.health_path = parse_health(r, root["health"]);
    return config;
}

std::vector<std::string> restart_only_changes(const Config &running, const Config &next) {
    std::vector<std::string> keys;
    // A listener's TLS settings are applied by a reload (certificates, client_auth, sessions), all
    // but HSTS, which connections read from the listener itself.
    auto without_tls = [](std::vector<ListenConfig> listen) {
        for (ListenConfig &l : listen) {
            l.tls = {};
            l.http2 = {};
        }
        return listen;
    };
    if (without_tls(running.listen) != without_tls(next.listen))
        keys.push_back("listen");
    // HTTP/2 settings are advertised once per connection, and ALPN belongs to the listener.
    bool http2_changed = running.listen.size() != next.listen.size();
    for (size_t i = 0; i < running.listen.size() && i < next.listen.size(); ++i)
        http2_changed = http2_changed || running.listen[i].http2 != next.listen[i].http2;
    if (http2_changed && keys.empty())
        keys.push_back("http2");
    if (running.workers != next.workers)
        keys.push_back("workers");
    if (running.thread_pool != next.thread_pool)
        keys.push_back("thread_pool");
    if (running.access_log != next.access_log)
        keys.push_back("access_log");
    if (running.error_log != next.error_log)
        keys.push_back("error_log");
    bool hsts_changed = false;
    for (size_t i = 0; i < running.listen.size() && i < next.listen.size(); ++i)
        hsts_changed = hsts_changed || running.listen[i].tls.hsts != next.listen[i].tls.hsts;
    if (hsts_changed)
        keys.push_back("tls.hsts");
    return keys;
}

Config load_config(const std::string &path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        int error = errno;
        throw ConfigError(path + ": cannot read the configuration file: " + strerror(error));
    }
    std::stringstream buffer;
    buffer << in.rdbuf();
    return parse_config(buffer.str(), path);
}

} // namespace trellis
