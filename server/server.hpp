// The server: owns the configuration, the plugin instances, the routes and the workers, and runs
// the main thread's loop, which only waits for signals and for the workers to finish.
#pragma once

#include "config/config.hpp"

#include <atomic>
#include <memory>
#include <vector>

namespace trellis {

class AccessLog;
class PluginSet;
class Router;
class Worker;
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
    // SIGHUP: reloads every TLS listener's certificates and keys. New handshakes use them; open
    // connections keep theirs. A listener whose files fail to load keeps its old ones (logged).
    void reload_certificates();

  private:
    Config config_;
    std::unique_ptr<PluginSet> plugins_;
    std::unique_ptr<Router> router_;
    std::unique_ptr<AccessLog> access_log_;
    std::atomic<uint32_t> open_connections_{0};
    std::vector<std::unique_ptr<ListenerSettings>> listeners_; // outlive every connection
    std::vector<std::unique_ptr<Worker>> workers_;
};

// Checks a configuration as start() would, without listening: loads and creates every plugin,
// then destroys them. Throws StartupError or ConfigError.
void check_configuration(const Config &config);

} // namespace trellis
