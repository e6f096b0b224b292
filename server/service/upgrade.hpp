// Binary upgrade without downtime (SIGUSR2, nginx's convention): the running process starts the
// binary found at the path it was started from, with the same arguments, handing it every
// listening socket (LISTEN_FDS/LISTEN_FDNAMES, as systemd's socket activation does, so no
// connection waiting in a backlog is lost), and waits until the new process says it serves
// (a line on a pipe, TRELLIS_UPGRADE_READY_FD). Only then does the old process drain and exit. A
// new process that fails to start, or is not ready within a minute, leaves the old one serving.
#pragma once

#include <string>
#include <sys/types.h>
#include <uv.h>
#include <vector>

namespace trellis {

// At start, before anything else: how this process was started (argv[0] made absolute, without
// resolving links, so a replaced file or a switched symlink is what SIGUSR2 starts), and, in the
// new process of an upgrade, the pipe to tell the old one it is ready.
void remember_command_line(int argc, char **argv);
// The new process of an upgrade, once it serves: tells the old one (nothing otherwise).
void tell_old_process_ready();

struct ListeningSocket {
    int fd;
    std::string name; // LISTEN_FDNAMES entry: which "listen" entry it belongs to
};

class BinaryUpgrade {
  public:
    // `on_ready` runs on `loop`'s thread when the new process is ready, with its pid.
    BinaryUpgrade(uv_loop_t *loop, void (*on_ready)(pid_t pid, void *data), void *data)
        : loop_(loop), on_ready_(on_ready), data_(data) {}
    ~BinaryUpgrade();
    BinaryUpgrade(const BinaryUpgrade &) = delete;
    BinaryUpgrade &operator=(const BinaryUpgrade &) = delete;

    bool in_progress() const { return attempt_ != nullptr; }
    // Starts the new process with `sockets`; logs what happens. False if it did not start.
    bool start(const std::vector<ListeningSocket> &sockets);
    // The main loop is ending: lets go of the new process (which lives on) and of every handle.
    void close();

  private:
    struct Attempt;
    void finish(Attempt *attempt);
    static void uv_on_exit(uv_process_t *process, int64_t status, int signal) noexcept;
    static void uv_on_ready_readable(uv_poll_t *poll, int status, int events) noexcept;
    static void uv_on_timeout(uv_timer_t *timer) noexcept;

    uv_loop_t *loop_;
    void (*on_ready_)(pid_t pid, void *data);
    void *data_;
    Attempt *attempt_ = nullptr; // the upgrade under way (waiting for the new process)
};

} // namespace trellis
