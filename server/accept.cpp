#include "accept.hpp"

#include "http1/connection.hpp"
#include "transport/factory.hpp"
#include "worker_context.hpp"

namespace trellis {

void start_connection(WorkerContext &worker, int fd, const ListenerSettings &settings,
                      const std::shared_ptr<const WorkerTls> &tls, const sockaddr *peer) {
    Transport *transport = create_transport(worker.poller, fd, settings.config.transport, tls);
    if (!transport) {
        worker.open_connections->fetch_sub(1, std::memory_order_relaxed);
        return;
    }
    Connection::start(worker, transport, peer, &settings.config);
}

} // namespace trellis
