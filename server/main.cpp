// trellis: command line, configuration, start, and the exit status.
#include "config/config.hpp"
#include "log/log.hpp"
#include "server.hpp"
#include "service/upgrade.hpp"

#include <csignal>
#include <cstdio>
#include <cstring>
#include <string>

#ifndef TRELLIS_VERSION
#define TRELLIS_VERSION "0.0.0"
#endif

namespace {

const char *kUsage = "usage: trellis [--config FILE] [--check] [--version] [--help]\n"
                     "\n"
                     "  --config FILE  configuration file (default: ./server.json)\n"
                     "  --check        validate the configuration and load every plugin, then exit:\n"
                     "                 prints \"configuration OK\" (exit 0) or the error (exit 1)\n"
                     "  --version      print the version and exit\n"
                     "  --help         print this help and exit\n"
                     "\n"
                     "Signals: SIGTERM/SIGINT stop gracefully (in-flight responses finish, bounded by\n"
                     "limits.shutdown_timeout_ms). SIGHUP reloads the configuration. SIGUSR1 reopens\n"
                     "the access and error log files (after logrotate renamed them). SIGUSR2 starts the\n"
                     "binary at the same path with the listening sockets and, once it serves, drains\n"
                     "this process (an upgrade without downtime).\n";

} // namespace

int main(int argc, char **argv) {
    std::string config_path = "server.json";
    bool check = false;
    for (int i = 1; i < argc; ++i) {
        std::string arg = argv[i];
        if (arg == "--help" || arg == "-h") {
            fputs(kUsage, stdout);
            return 0;
        }
        if (arg == "--version") {
            printf("trellis %s\n", TRELLIS_VERSION);
            return 0;
        }
        if (arg == "--check") {
            check = true;
        } else if (arg == "--config" || arg.rfind("--config=", 0) == 0) {
            bool joined = arg.size() > 8;
            if (!joined && i + 1 >= argc) {
                fprintf(stderr, "trellis: --config needs a file name (--config FILE)\n%s", kUsage);
                return 1;
            }
            config_path = joined ? arg.substr(9) : argv[++i];
            if (config_path.empty()) {
                fprintf(stderr, "trellis: --config needs a file name (--config FILE)\n%s", kUsage);
                return 1;
            }
        } else {
            fprintf(stderr, "trellis: unknown argument '%s'\n%s", arg.c_str(), kUsage);
            return 1;
        }
    }
    trellis::remember_command_line(argc, argv);
    // Writes to a vanished peer must fail with EPIPE, not kill the process.
    signal(SIGPIPE, SIG_IGN);
    // What this thread logs is the operator's doing (start, signals, reloads), never a client's.
    trellis::exempt_thread_from_log_limit();
    try {
        trellis::Config config = trellis::load_config(config_path);
        if (check) {
            trellis::check_configuration(config);
            printf("configuration OK\n");
            return 0;
        }
        trellis::Server server(std::move(config));
        server.start();
        return server.run();
    } catch (const std::exception &e) {
        trellis::log_fatal(e.what());
        return 1;
    }
}
