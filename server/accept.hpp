// What an accepted socket becomes: its listener's transport (plain, TLS, or decided by the first
// byte) under an HTTP/1.1 connection, which may hand it to HTTP/2. Shared by the listener and by
// the PROXY header reader, which accepts on the listener's behalf once it knows the client.
#pragma once

#include "config/config.hpp"

#include <cstdint>
#include <memory>
#include <vector>

struct sockaddr;

namespace trellis {

class TlsContext;
class WorkerContext;
class WorkerTls;

// One "listen" entry as the workers share it: its settings and, for tls/auto, its TLS context.
struct ListenerSettings {
    ListenConfig config;
    uint16_t bound_port = 0; // the real port (config.port may be 0); 0 for a Unix socket
    std::shared_ptr<TlsContext> tls;
    // The main thread's copies of this entry's listening sockets (every worker's), which a new
    // binary inherits on SIGUSR2. Closed with the server.
    std::vector<int> sockets;
};

// Takes ownership of `fd` (accepted, non-blocking) and starts the connection; `peer` is the client
// (the socket's peer, or what a PROXY header said). `tls` is this worker's TLS state, else null.
void start_connection(WorkerContext &worker, int fd, const ListenerSettings &settings,
                      const std::shared_ptr<const WorkerTls> &tls, const sockaddr *peer);

} // namespace trellis
