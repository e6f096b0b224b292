#include "proxy_header_reader.hpp"

#include "log/log.hpp"
#include "net/proxy_protocol.hpp"

#include <cerrno>
#include <cstring>
#include <sys/epoll.h>
#include <unistd.h>

namespace trellis {

void ProxyHeaderReader::start(WorkerContext &worker, int fd, const sockaddr *socket_peer,
                              const ListenerSettings &settings, std::shared_ptr<const WorkerTls> tls) {
    auto *reader = new ProxyHeaderReader(worker, fd, socket_peer, settings, std::move(tls));
    if (!worker.poller.watch(fd, reader, 0, EPOLLIN)) {
        reader->fail("epoll refused the socket");
        return;
    }
    reader->watched_ = true;
    worker.timeouts.start(*reader, worker.timeout_list(kHeaderTimeout));
}

ProxyHeaderReader::ProxyHeaderReader(WorkerContext &worker, int fd, const sockaddr *socket_peer,
                                     const ListenerSettings &settings, std::shared_ptr<const WorkerTls> tls)
    : worker_(worker), fd_(fd), settings_(settings), tls_(std::move(tls)) {
    memset(&socket_peer_, 0, sizeof socket_peer_);
    memcpy(&socket_peer_, socket_peer,
           socket_peer->sa_family == AF_INET6  ? sizeof(sockaddr_in6)
           : socket_peer->sa_family == AF_INET ? sizeof(sockaddr_in)
                                               : sizeof(sa_family_t));
    worker_.preconnection_opened();
}

void ProxyHeaderReader::close() {
    TimeoutList::remove(*this);
    worker_.poller.retire(fd_, this, watched_ ? uint32_t{EPOLLIN} : 0u); // closes it; deleted after this turn
    worker_.preconnection_closed(false);
}

void ProxyHeaderReader::fail(const char *why) {
    SERVER_LOG_DEBUG("PROXY protocol: %s; connection closed", why);
    worker_.stats.proxy_refused.add();
    close();
}

void ProxyHeaderReader::on_epoll(uint32_t events) {
    if (events & EPOLLERR) {
        fail("socket error");
        return;
    }
    // What came before (if the header arrived in pieces), then what waits in the socket, peeked:
    // only the header's own bytes are taken from the socket, the client's stay for the transport.
    char bytes[kProxyHeaderMax];
    if (received_length_)
        memcpy(bytes, received_.get(), received_length_);
    ssize_t n;
    do {
        n = recv(fd_, bytes + received_length_, sizeof bytes - received_length_, MSG_PEEK);
    } while (n < 0 && errno == EINTR);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return;
    if (n <= 0) {
        fail(n == 0 ? "the peer closed before the header ended" : strerror(errno));
        return;
    }
    size_t seen = received_length_ + static_cast<size_t>(n);
    size_t header_length = 0;
    ProxyHeader header;
    const char *why = nullptr;
    switch (parse_proxy_header(std::string_view(bytes, seen), header_length, header, why)) {
    case ProxyParse::Invalid:
        fail(why);
        return;
    case ProxyParse::NeedMore:
        // Everything seen belongs to the header: take it, so the socket stops reading as ready.
        if (!received_)
            received_ = std::make_unique<char[]>(kProxyHeaderMax);
        if (recv(fd_, received_.get() + received_length_, static_cast<size_t>(n), 0) != n) {
            fail("the socket lost bytes it had shown");
            return;
        }
        received_length_ = seen;
        return;
    case ProxyParse::Done:
        break;
    }
    size_t rest = header_length - received_length_;
    if (recv(fd_, bytes, rest, 0) != static_cast<ssize_t>(rest)) {
        fail("the socket lost bytes it had shown");
        return;
    }
    finish(header.has_source ? reinterpret_cast<const sockaddr *>(&header.source)
                             : reinterpret_cast<const sockaddr *>(&socket_peer_));
}

void ProxyHeaderReader::finish(const sockaddr *client) {
    TimeoutList::remove(*this);
    // The socket moves on to its transport, which adds it to the epoll set again as its own.
    worker_.poller.watch(fd_, this, EPOLLIN, 0);
    worker_.poller.retire(-1, this, 0);
    worker_.preconnection_closed(true);
    start_connection(worker_, fd_, settings_, tls_, client);
}

} // namespace trellis
