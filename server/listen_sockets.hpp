// Where the listening sockets come from. TCP: each worker binds its own to the same address with
// SO_REUSEPORT, so the kernel spreads new connections with no shared accept lock. A Unix socket
// is one file, bound once and accepted from by every worker. Either kind may instead be inherited:
// from the process before this one (SIGUSR2, see service/upgrade.hpp) or from systemd's socket
// activation, both by the LISTEN_FDS convention, so no connection waiting in a backlog is lost.
#pragma once

#include "config/config.hpp"

#include <cstdint>
#include <string>
#include <vector>

namespace trellis {

// Listening sockets handed to this process (LISTEN_FDS, from LISTEN_PID = this process or from
// an upgrading Trellis), with their LISTEN_FDNAMES. Taking them clears the variables, so nothing
// this process starts inherits them by mistake.
struct InheritedSockets {
    std::vector<int> fds;
    std::vector<std::string> names;
    bool from_upgrade = false; // from the Trellis before this one (else from systemd)
};
InheritedSockets take_inherited_sockets();
// The inherited sockets of entry number `index`: bound to its address and port (or its Unix path),
// or, for port 0, named "listen<index>" by the process before. Removed from `inherited`.
std::vector<int> claim_inherited(InheritedSockets &inherited, const ListenConfig &config, size_t index);
// LISTEN_FDNAMES name of entry `index`'s sockets when handing them on.
std::string inherited_name(size_t index);

// Throws StartupError ("listen URL: Address already in use") when any socket, of this process or
// another, holds the listener's address (a live Unix socket included), or the Unix path is not a
// socket. Call before anything binds.
void ensure_address_free(const ListenConfig &config);
// A non-blocking listening TCP socket with SO_REUSEPORT; throws StartupError naming the address.
int bind_tcp_socket(const ListenConfig &config, uint16_t port);
// A non-blocking listening Unix socket with the entry's mode and owner; a stale socket file left
// by a process that died is replaced. Throws StartupError naming the path.
int bind_unix_socket(const ListenConfig &config);
// The port a TCP socket is bound to (0 for a Unix socket).
uint16_t bound_port(int fd);

// "http://127.0.0.1:8080", "https://[::1]:8443", "unix:/run/trellis/http.sock" (an auto
// listener shows its http:// URL; a TLS Unix socket "https+unix:PATH").
std::string listener_url(const ListenConfig &config, uint16_t port);

} // namespace trellis
