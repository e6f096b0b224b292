#include "service/upgrade.hpp"

#include "log/log.hpp"
#include "transport/poller.hpp"

#include <cerrno>
#include <climits>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <unistd.h>

extern char **environ;

namespace trellis {
namespace {

constexpr uint64_t kReadyTimeoutMs = 60000;
constexpr const char kReadyLine[] = "READY\n";

std::string g_executable;             // absolute, as started
std::vector<std::string> g_arguments; // argv[1..]
int g_ready_fd = -1;                  // the new process of an upgrade: where to say it is ready

std::string absolute_executable(const char *argv0) {
    std::string name = argv0 ? argv0 : "trellis";
    if (name.find('/') == std::string::npos) {
        // Started through $PATH: the first directory that has it, as the shell found it.
        const char *path = getenv("PATH");
        std::string dirs = path ? path : "/usr/local/bin:/usr/bin:/bin";
        for (size_t at = 0; at <= dirs.size();) {
            size_t colon = dirs.find(':', at);
            std::string dir = dirs.substr(at, colon == std::string::npos ? std::string::npos : colon - at);
            std::string candidate = (dir.empty() ? "." : dir) + "/" + name;
            if (access(candidate.c_str(), X_OK) == 0) {
                name = candidate;
                break;
            }
            if (colon == std::string::npos)
                break;
            at = colon + 1;
        }
    }
    if (!name.empty() && name[0] != '/') {
        char cwd[PATH_MAX];
        if (getcwd(cwd, sizeof cwd))
            name = std::string(cwd) + "/" + name;
    }
    return name;
}

bool variable_of_ours(const char *entry) {
    for (const char *name : {"LISTEN_FDS=", "LISTEN_PID=", "LISTEN_FDNAMES=", "TRELLIS_UPGRADE_FROM=",
                             "TRELLIS_UPGRADE_READY_FD="})
        if (strncmp(entry, name, strlen(name)) == 0)
            return true;
    return false;
}

} // namespace

void remember_command_line(int argc, char **argv) {
    g_executable = absolute_executable(argc > 0 ? argv[0] : nullptr);
    g_arguments.assign(argv + (argc > 0 ? 1 : 0), argv + argc);
    if (const char *fd = getenv("TRELLIS_UPGRADE_READY_FD")) {
        g_ready_fd = atoi(fd);
        if (g_ready_fd < 3 || fcntl(g_ready_fd, F_SETFD, FD_CLOEXEC) != 0)
            g_ready_fd = -1;
        unsetenv("TRELLIS_UPGRADE_READY_FD");
    }
}

void tell_old_process_ready() {
    if (g_ready_fd < 0)
        return;
    ssize_t n;
    do {
        n = write(g_ready_fd, kReadyLine, sizeof kReadyLine - 1);
    } while (n < 0 && errno == EINTR);
    ::close(g_ready_fd);
    g_ready_fd = -1;
}

struct BinaryUpgrade::Attempt {
    BinaryUpgrade *owner;
    uv_process_t process;
    // The pipe's read end, read and closed by us (not a uv_pipe_t: libuv closes descriptors with
    // a raw system call, which ThreadSanitizer cannot see, and a worker's accept that reuses the
    // number then looks like a race).
    uv_poll_t ready_poll;
    int ready_fd = -1;
    uv_timer_t timer;
    int open_handles = 0;
    bool exited = false, ready = false, over = false;
    char buffer[16];
    size_t received = 0;
};

BinaryUpgrade::~BinaryUpgrade() {
    close();
}

bool BinaryUpgrade::start(const std::vector<ListeningSocket> &sockets) {
    int ready[2];
    if (pipe2(ready, O_CLOEXEC | O_NONBLOCK) != 0) {
        SERVER_LOG_ERROR("SIGUSR2: cannot make a pipe: %s; still serving", strerror(errno));
        return false;
    }
    // The new process finds the sockets at 3, 4, ... and the pipe right after them.
    std::vector<std::string> env_text;
    for (char **entry = environ; *entry; ++entry)
        if (!variable_of_ours(*entry))
            env_text.push_back(*entry);
    std::string names;
    for (const ListeningSocket &socket : sockets)
        names += (names.empty() ? "" : ":") + socket.name;
    env_text.push_back("LISTEN_FDS=" + std::to_string(sockets.size()));
    env_text.push_back("LISTEN_FDNAMES=" + names);
    env_text.push_back("TRELLIS_UPGRADE_FROM=" + std::to_string(getpid()));
    env_text.push_back("TRELLIS_UPGRADE_READY_FD=" + std::to_string(3 + sockets.size()));
    std::vector<char *> env, args;
    for (std::string &entry : env_text)
        env.push_back(entry.data());
    env.push_back(nullptr);
    args.push_back(g_executable.data());
    for (std::string &argument : g_arguments)
        args.push_back(argument.data());
    args.push_back(nullptr);
    std::vector<uv_stdio_container_t> stdio(3 + sockets.size() + 1);
    for (size_t i = 0; i < stdio.size(); ++i) {
        stdio[i].flags = UV_INHERIT_FD;
        stdio[i].data.fd = i < 3                    ? static_cast<int>(i)
                           : i < 3 + sockets.size() ? sockets[i - 3].fd
                                                    : ready[1];
    }
    uv_process_options_t options{};
    options.exit_cb = uv_on_exit;
    options.file = g_executable.c_str();
    options.args = args.data();
    options.env = env.data();
    options.stdio_count = static_cast<int>(stdio.size());
    options.stdio = stdio.data();

    auto *attempt = new Attempt{};
    attempt->owner = this;
    attempt->process.data = attempt->ready_poll.data = attempt->timer.data = attempt;
    int rc;
    {
        // uv_spawn returns once the child has exec'd (or failed): its copies are gone by then.
        auto no_closing = hold_descriptors_for_spawn();
        rc = uv_spawn(loop_, &attempt->process, &options);
    }
    ::close(ready[1]);
    if (rc != 0) {
        ::close(ready[0]);
        SERVER_LOG_ERROR("SIGUSR2: cannot start %s: %s; still serving", g_executable.c_str(),
                         uv_strerror(rc));
        // uv_spawn leaves a handle to close even when it fails.
        uv_close(reinterpret_cast<uv_handle_t *>(&attempt->process),
                 [](uv_handle_t *handle) { delete static_cast<Attempt *>(handle->data); });
        return false;
    }
    attempt->open_handles = 3;
    SERVER_LOG_INFO("SIGUSR2: starting %s (pid %d) with the listening sockets", g_executable.c_str(),
                    attempt->process.pid);
    attempt->ready_fd = ready[0];
    uv_poll_init(loop_, &attempt->ready_poll, ready[0]);
    uv_poll_start(&attempt->ready_poll, UV_READABLE, uv_on_ready_readable);
    uv_timer_init(loop_, &attempt->timer);
    uv_timer_start(&attempt->timer, uv_on_timeout, kReadyTimeoutMs, 0);
    attempt_ = attempt;
    return true;
}

void BinaryUpgrade::uv_on_ready_readable(uv_poll_t *poll, int status, int) noexcept {
    auto *attempt = static_cast<Attempt *>(poll->data);
    ssize_t n = -1;
    if (status == 0)
        n = read(attempt->ready_fd, attempt->buffer + attempt->received,
                 sizeof attempt->buffer - attempt->received);
    if (n < 0 && status == 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n > 0)
        attempt->received += static_cast<size_t>(n);
    std::string_view said(attempt->buffer, attempt->received);
    if (!attempt->over && said == kReadyLine) {
        attempt->ready = true;
        BinaryUpgrade *owner = attempt->owner;
        pid_t pid = attempt->process.pid;
        owner->finish(attempt);
        SERVER_LOG_INFO("upgrade: process %d is ready; draining this one (pid %d)", pid, getpid());
        owner->on_ready_(pid, owner->data_);
        return;
    }
    // The pipe closed (or said something else) without READY: its exit status tells the rest.
    if (n <= 0 || attempt->received == sizeof attempt->buffer)
        uv_poll_stop(poll);
}

void BinaryUpgrade::uv_on_exit(uv_process_t *process, int64_t status, int signal) noexcept {
    auto *attempt = static_cast<Attempt *>(process->data);
    attempt->exited = true;
    if (!attempt->over) {
        if (signal)
            SERVER_LOG_ERROR("upgrade: process %d was killed by signal %d before it was ready; still serving",
                             process->pid, signal);
        else
            SERVER_LOG_ERROR("upgrade: process %d exited with status %lld before it was ready; still serving",
                             process->pid, static_cast<long long>(status));
        attempt->owner->finish(attempt);
    }
    uv_close(reinterpret_cast<uv_handle_t *>(process), [](uv_handle_t *handle) {
        auto *a = static_cast<Attempt *>(handle->data);
        if (--a->open_handles == 0)
            delete a;
    });
}

void BinaryUpgrade::uv_on_timeout(uv_timer_t *timer) noexcept {
    auto *attempt = static_cast<Attempt *>(timer->data);
    if (attempt->over)
        return;
    SERVER_LOG_ERROR("upgrade: process %d was not ready within %llu s; stopped it; still serving",
                     attempt->process.pid, static_cast<unsigned long long>(kReadyTimeoutMs / 1000));
    // SIGKILL: it holds our listening sockets and has not said it serves; nothing to drain.
    uv_process_kill(&attempt->process, SIGKILL);
    attempt->owner->finish(attempt);
}

void BinaryUpgrade::finish(Attempt *attempt) {
    // The attempt is over (ready, failed or given up): the pipe and the timer go; the process
    // handle stays until the process exits (to reap it) or the loop ends (close()).
    attempt->over = true;
    if (attempt_ == attempt)
        attempt_ = nullptr;
    auto release = [](uv_handle_t *handle) {
        auto *a = static_cast<Attempt *>(handle->data);
        if (--a->open_handles == 0)
            delete a;
    };
    uv_close(reinterpret_cast<uv_handle_t *>(&attempt->ready_poll), release);
    ::close(attempt->ready_fd); // out of the loop's watch since uv_close
    attempt->ready_fd = -1;
    uv_close(reinterpret_cast<uv_handle_t *>(&attempt->timer), release);
    if (attempt->ready)
        uv_close(reinterpret_cast<uv_handle_t *>(&attempt->process),
                 release); // it lives on, not ours to reap
}

void BinaryUpgrade::close() {
    if (attempt_) {
        Attempt *attempt = attempt_;
        finish(attempt);
        if (!attempt->exited)
            uv_close(reinterpret_cast<uv_handle_t *>(&attempt->process), [](uv_handle_t *handle) {
                auto *a = static_cast<Attempt *>(handle->data);
                if (--a->open_handles == 0)
                    delete a;
            });
    }
}

} // namespace trellis
