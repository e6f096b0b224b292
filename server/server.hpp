// The server: owns the configuration, the plugin instances, the routes and the workers, and runs
// the main thread's loop, which only waits for signals and for the workers to finish.
#pragma once

#include "config/config.hpp"

#include <atomic>
#include <memory>
#include <string>
#include <vector>

namespace trellis {

class AccessLog;
class ServerMetrics;
class ThreadPool;
class Worker;
struct Generation;
struct ListeningSocket;
struct ListenerSettings;

class Server {
  public:
    explicit Server(Config config);
    ~Server();

    // Loads plugins, opens the access log and every listener (logging "listening on URL"), and
    // starts the workers. Throws StartupError or ConfigError.
    void start();
    // Runs until SIGINT/SIGTERM has stopped every worker. Returns the exit status.
    int run();
    // SIGHUP: re-reads the configuration file. Plugins and routes become a new generation that new
    // requests take; requests in flight finish on theirs. A file that fails validation, or a plugin
    // that fails to load, leaves the running generation in place (logged). Then the certificates.
    void reload();
    // Reloads every TLS listener's certificates and keys. New handshakes use them; open
    // connections keep theirs. A listener whose files fail to load keeps its old ones (logged).
    void reload_certificates();
    // SIGUSR1: reopens the error log and the access log files at their paths (after logrotate
    // renamed them). Logs what it did; a file that cannot be opened leaves the old one in use.
    void reopen_logs();
    // Main thread: destroys generations no worker uses any more.
    void collect_generations();
    // A new binary serves the listening sockets now: a Unix socket's file stays at exit.
    void sockets_handed_over() { handed_over_ = true; }
    // Every worker serves: a Unix socket's file is this process's to remove at exit (not after a
    // start that failed, which may have found it in the hands of the process it was to replace).
    void now_serving() { served_ = true; }
    // Every listening socket, named by its "listen" entry, for a new binary (SIGUSR2).
    std::vector<ListeningSocket> listening_sockets() const;
    // The drain began: the main thread's copies of the listening sockets go, so that the kernel
    // stops queueing connections once the workers close theirs.
    void close_listening_copies();

  private:
    // Binds (or inherits) every listener's sockets and gives them to the workers.
    void open_listeners();

    Config config_;
    std::unique_ptr<ServerMetrics> metrics_;
    std::unique_ptr<ThreadPool> thread_pool_;
    std::shared_ptr<const Generation> generation_;
    std::vector<std::shared_ptr<const Generation>> retired_; // still used by some worker
    uint64_t reloads_ = 0, reload_failures_ = 0;
    std::unique_ptr<AccessLog> access_log_;
    std::atomic<uint32_t> open_connections_{0};
    std::vector<std::unique_ptr<ListenerSettings>> listeners_; // outlive every connection
    std::vector<std::unique_ptr<Worker>> workers_;
    std::vector<std::string> bound_unix_paths_; // removed at exit
    bool handed_over_ = false;                  // a new binary serves the sockets now (SIGUSR2)
    bool served_ = false;                       // every worker started
};

// Checks a configuration as start() would, without listening: loads and creates every plugin,
// then destroys them. Throws StartupError or ConfigError.
void check_configuration(const Config &config);

// Loads the plugins and builds the routes of `config`, sharing unchanged instances with `previous`
// (a reload). `metrics` (may be null) gets the routes' counters. Throws StartupError.
std::shared_ptr<Generation> build_generation(const Config &config, const Generation *previous,
                                             ServerMetrics *metrics, uint64_t number);

} // namespace trellis
