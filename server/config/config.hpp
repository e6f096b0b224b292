// server.json -> plain structs. Validation is strict: every error names the file, the JSON pointer
// of the offending value and what was expected, in one line (ConfigError::what()).
#pragma once

#include "errors.hpp"
#include "net/address_set.hpp"
#include "net/forwarded.hpp"

#include <cstdint>
#include <string>
#include <vector>

namespace trellis {

enum class TransportKind { Plain, Tls, Auto };
// The least severe error log line written ("log_level").
enum class LogLevel { Debug = 0, Info = 1, Warn = 2, Error = 3 };
// "access_log": {"format": ...}: the combined log format, or one JSON object per line.
enum class AccessLogFormat { Combined, Json };
// none: no certificate asked for. optional: served without one, refused with one that fails
// verification. optional_no_ca: any certificate is served; the plugin must check the result.
// required: a valid one or no handshake.
enum class ClientAuth { None, Optional, OptionalNoCa, Required };

struct TlsCertificateConfig {
    std::string cert; // resolved path: PEM chain, leaf first
    std::string key;  // resolved path: PEM private key

    bool operator==(const TlsCertificateConfig &) const = default;
};

// The "tls" object, top-level or a listener's override (merged key by key over the top level).
struct TlsConfig {
    std::vector<TlsCertificateConfig> certificates;
    bool self_signed_if_missing = false;
    ClientAuth client_auth = ClientAuth::None;
    std::string client_ca; // resolved path; required unless client_auth is none
    bool session_tickets = true;
    uint32_t session_timeout_s = 3600;
    // Session ticket keys shared by every instance (resolved path of 80 or 48 random bytes, as
    // nginx's ssl_session_ticket_key); empty: each process makes its own.
    std::string ticket_key_file;
    std::string hsts;     // Strict-Transport-Security value; empty = not sent
    bool offer_h2 = true; // ALPN offers "h2" before "http/1.1" (the listener's http2.enabled)

    bool operator==(const TlsConfig &) const = default;
};

// "redirect_to_https": plain requests get 308 to https, on the request's own host (true) or at
// a fixed origin ("https://host[:port]").
struct RedirectToHttps {
    enum class Kind { Off, SameHost, Origin };
    Kind kind = Kind::Off;
    std::string origin; // for Origin

    bool operator==(const RedirectToHttps &) const = default;
};

// "http2", at the top level and per listener (whose keys override): HTTP/2 by ALPN on TLS and by
// prior knowledge in the clear, and the SETTINGS it advertises.
struct Http2Config {
    bool enabled = true;
    uint32_t max_concurrent_streams = 128;
    uint32_t initial_window_size = 65535; // of each stream, for request bodies
    uint32_t max_frame_size = 16384;
    uint32_t max_header_list_size = 65536; // decoded, as RFC 9113 counts it (name + value + 32)

    bool operator==(const Http2Config &) const = default;
};

struct ListenConfig {
    std::string address = "0.0.0.0"; // or "unix:PATH" (PATH resolved)
    uint16_t port = 8080;            // unused for a Unix socket
    // A Unix-domain socket's path (empty for TCP), and what to set on it after binding.
    std::string unix_path;
    int unix_mode = -1; // -1: as the umask leaves it
    std::string unix_owner, unix_group;
    // "proxy_protocol": every connection starts with a PROXY v1/v2 header, accepted only from
    // trusted_proxies, which are also the only peers whose X-Forwarded-For/Forwarded is believed.
    bool proxy_protocol = false;
    AddressSet trusted_proxies;
    RealIpHeader real_ip_header = RealIpHeader::XForwardedFor; // the one trusted proxies maintain
    TransportKind transport = TransportKind::Plain;
    RedirectToHttps redirect_to_https;
    TlsConfig tls;     // effective settings, used when transport is tls or auto
    Http2Config http2; // effective settings

    bool operator==(const ListenConfig &) const = default;
};

struct Limits {
    uint32_t max_connections = 10000;
    uint32_t max_header_bytes = 16384;
    uint64_t max_body_bytes = 10485760;
    uint32_t header_timeout_ms = 10000;     // the whole request head, from its first byte
    uint32_t header_read_timeout_ms = 5000; // longest pause between reads of a head
    uint32_t handshake_timeout_ms = 10000;  // TLS handshake (or the first byte on "auto")
    uint32_t min_body_rate_bps = 256;       // slower bodies are cut off after the grace period (0: off)
    uint32_t min_body_rate_grace_ms = 10000;
    uint32_t body_timeout_ms = 30000;
    uint32_t keepalive_timeout_ms = 60000;
    uint32_t send_timeout_ms = 30000;
    uint32_t shutdown_timeout_ms = 10000;
    uint32_t handler_timeout_ms = 60000; // a plugin holding a request this long without answering: 504
    uint32_t loop_stall_warn_ms = 100;   // a plugin call on the event loop this long is logged (0: off)

    bool operator==(const Limits &) const = default;
};

// The threads that run blocking handlers.
struct ThreadPoolConfig {
    unsigned threads = 16;
    size_t queue = 1024; // requests waiting for a thread; past it: 503

    bool operator==(const ThreadPoolConfig &) const = default;
};

struct PluginConfig {
    std::string name;        // instance name, unique
    std::string file;        // resolved path of the .so
    std::string config_json; // the instance's "config" as JSON text ("{}" when absent)

    bool operator==(const PluginConfig &) const = default;
};

struct RouteConfig {
    std::string host = "*"; // "*" or a lower-cased host name
    std::string prefix;     // starts with '/'
    std::string plugin;     // a PluginConfig::name
    bool blocking = false;  // run the plugin's on_request on the thread pool
    // "allow": only these clients are served (403 for others); absent: everyone, except on a
    // plugin that declares itself private (TRELLIS_PRIVATE), which then serves loopback only.
    AddressSet allow;
    bool has_allow = false;
    // The route's "config" (any JSON value) as JSON text; empty when absent.
    std::string config_json;

    bool operator==(const RouteConfig &) const = default;
};

// "access_log": standard output, off, or a file, in one of two formats.
struct AccessLogConfig {
    enum class Target { Stdout, Off, File };
    Target target = Target::Stdout;
    std::string path; // resolved, for File
    AccessLogFormat format = AccessLogFormat::Combined;

    bool operator==(const AccessLogConfig &) const = default;
};

// "error_log": standard error, or a file.
struct ErrorLogConfig {
    std::string path; // resolved; empty: standard error
    bool to_stderr() const { return path.empty(); }

    bool operator==(const ErrorLogConfig &) const = default;
};

struct Config {
    std::string source_path; // the file this came from
    std::string base_dir;    // its directory: relative paths resolve against it
    unsigned workers = 1;
    std::string plugin_dir;
    std::vector<ListenConfig> listen;
    Limits limits;
    ThreadPoolConfig thread_pool;
    std::vector<PluginConfig> plugins;
    std::vector<RouteConfig> routes;
    AccessLogConfig access_log;
    ErrorLogConfig error_log;
    // "health": {"path": ...}: answered by the server itself, 200 while serving, 503 once a drain
    // has begun (empty: no such endpoint).
    std::string health_path;
    bool has_tls = false; // a top-level "tls" object was given
    LogLevel log_level = LogLevel::Info;
};

// Parses and validates; throws ConfigError.
Config parse_config(const std::string &text, const std::string &source_path);
Config load_config(const std::string &path);

// The top-level keys whose change between `running` and `next` a reload cannot apply (listen,
// workers, thread_pool, access_log, error_log, and tls.hsts, which open connections read), in
// that order; empty when a reload applies everything that changed.
std::vector<std::string> restart_only_changes(const Config &running, const Config &next);

// "dir/x" for relative "x"; absolute paths unchanged.
std::string resolve_path(const std::string &base_dir, const std::string &path);

} // namespace trellis
