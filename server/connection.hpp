// One client connection: the HTTP/1.1 session on top of a Transport.
//
// An idle keep-alive connection holds only this object and its transport (about 400 bytes with
// malloc overhead): the parser, the read buffer, the request and the output queue live in an
// ActiveSession borrowed from the worker's pool when bytes arrive and returned once every
// response is written and no partial request is buffered.
//
// States (see update_timeout): idle (keep-alive timeout), reading a head (header timeout, a total
// deadline), reading a body (body timeout between reads), writing (send timeout between
// progress), lingering after the last response (a short drain, then close).
#pragma once

#include "http/file_response.hpp"
#include "http/request.hpp"
#include "timeouts.hpp"
#include "transport/transport.hpp"
#include "worker_context.hpp"

#include <llhttp.h>

#include <memory>
#include <netinet/in.h>
#include <string>
#include <sys/stat.h>
#include <vector>

namespace trellis {

// A piece of the output queue: bytes [begin, end) of the output buffer, or of file `fd`.
struct OutSegment {
    uint64_t begin;
    uint64_t end;
    int fd; // -1 for the output buffer
};

// What a plugin hands over to answer with a file.
struct FileResponse {
    int status = 200;
    int fd = -1;
    bool borrowed = false;             // the plugin keeps fd (a cache); otherwise it is closed here
    uint32_t max_ranges = 0;           // 0: 16
    const struct stat *stat = nullptr; // when the caller already has it
};

struct ActiveSession {
    explicit ActiveSession(size_t read_buffer_size);
    ~ActiveSession();
    llhttp_t parser;
    Request request;
    std::unique_ptr<char[]> read_buffer;
    size_t read_capacity;
    size_t read_end = 0;      // bytes in read_buffer
    size_t parse_pos = 0;     // bytes given to llhttp
    size_t request_start = 0; // where the current request's head begins
    size_t head_end = 0;      // where its body begins, once the head is complete
    std::string out;          // serialised responses waiting to be written
    std::vector<OutSegment> segments;
    size_t segment_index = 0;      // first segment not fully written
    size_t open_files = 0;         // file segments still holding a descriptor
    std::vector<ByteRange> ranges; // scratch for respond_file
    // Parser bookkeeping for the request being read.
    bool in_message = false;
    bool in_body = false;
    bool in_header_field = false;
    bool in_header_value = false;
    int host_count = 0;
    bool expect_continue = false;
    int error_status = 0; // set by a callback that refuses the request
    void reset_for_reuse();
};

class Connection final : public TimeoutNode, public TransportEvents {
  public:
    // Takes ownership of `transport` and starts reading.
    // `listen` (may be null in tests) carries HSTS and redirect_to_https; it outlives connections.
    static Connection *start(WorkerContext &worker, Transport *transport, const sockaddr *peer,
                             const ListenConfig *listen = nullptr);

    // Called by the worker when a timeout of this connection expires.
    void on_timeout(TimeoutKind kind);
    // Shutdown: close now if idle; otherwise the request in progress is answered with
    // "Connection: close" and the connection closes after it.
    void begin_drain();
    // Shutdown deadline: close whatever state it is in.
    void abort();

    // ---- used by the host API while a plugin handles a request ----
    void respond(int status, std::string_view body);
    // Answers with a file: validators, conditional requests and ranges for status 200, the body
    // read now (small) or sent later by send_file (large). False when it is not a readable regular
    // file (the request was answered with 500).
    bool respond_file(const FileResponse &file);
    void respond_error(int status);
    size_t peer_text(char *buf, size_t len) const;
    unsigned worker_index() const { return worker_.index(); }
    // TLS facts of this connection, or null on plain.
    const TlsFacts *tls_facts() { return transport_ ? transport_->tls_facts() : nullptr; }

    // TransportEvents
    std::span<char> on_read_buffer() override;
    void on_read(size_t n) override;
    void on_read_end(int status) override;
    void on_writable() override;

  private:
    Connection(WorkerContext &worker, Transport *transport, const sockaddr *peer, const ListenConfig *listen);
    ~Connection();

    // Input.
    void process_input();
    bool parse_step();
    void after_message();
    void dispatch();
    bool redirect_to_https();
    void compact_read_buffer();
    int status_for_parse_error(llhttp_errno_t err) const;
    bool is_http09_request_line() const;
    // Output.
    void write_head(int status, uint64_t content_length, bool with_length);
    void append_body(std::string_view body);
    bool queue_file_bytes(int fd, uint64_t offset, uint64_t length);
    static std::string take_header(std::string &headers, std::string_view name);
    void log_access(int status, uint64_t body_bytes);
    void flush();
    void after_flush();
    // Lifecycle.
    void update_timeout();
    void release_session_if_idle();
    void finish_and_close();
    void close_now();
    void start_lingering();
    struct Guard;

    static int on_message_begin(llhttp_t *p) noexcept;
    static int on_method(llhttp_t *p, const char *at, size_t len) noexcept;
    static int on_url(llhttp_t *p, const char *at, size_t len) noexcept;
    static int on_header_field(llhttp_t *p, const char *at, size_t len) noexcept;
    static int on_header_field_complete(llhttp_t *p) noexcept;
    static int on_header_value(llhttp_t *p, const char *at, size_t len) noexcept;
    static int on_header_value_complete(llhttp_t *p) noexcept;
    static int on_headers_complete(llhttp_t *p) noexcept;
    static int on_body(llhttp_t *p, const char *at, size_t len) noexcept;
    static int on_message_complete(llhttp_t *p) noexcept;
    int headers_complete();
    int check_header(const HeaderSpan &header);
    int parse_target();
    static const llhttp_settings_t &parser_settings();

    WorkerContext &worker_;
    Transport *transport_;
    const ListenConfig *listen_;
    ActiveSession *session_ = nullptr;
    sockaddr_in6 peer_; // AF_INET peers are stored as sockaddr_in in the same bytes
    uint16_t callback_depth_ = 0;
    bool keep_alive_ = true;         // of the request being answered
    bool close_after_flush_ = false; // no more requests on this connection
    bool peer_done_ = false;         // the peer sent EOF
    bool closed_ = false;
    bool lingering_ = false;
    bool write_blocked_ = false;
};

} // namespace trellis
