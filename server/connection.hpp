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
#include "http1/request_checks.hpp"
#include "output_queue.hpp"
#include "timeouts.hpp"
#include "transport/transport.hpp"
#include "worker_context.hpp"

#include <llhttp.h>

#include <algorithm>
#include <atomic>
#include <memory>
#include <mutex>
#include <netinet/in.h>
#include <string>
#include <sys/stat.h>
#include <vector>

namespace trellis {

// What a plugin hands over to answer with a file.
struct FileResponse {
    int status = 200;
    int fd = -1;
    bool borrowed = false;             // the plugin keeps fd (a cache); otherwise it is closed here
    uint32_t max_ranges = 0;           // 0: 16
    const struct stat *stat = nullptr; // when the caller already has it
};

struct PluginInstance;
struct RouteStats;
class ServerMetrics;
struct WorkerGeneration;
class Mailbox;

// Who holds the request being answered, besides the connection.
enum class Hold : uint8_t {
    None,  // nobody: an inline handler, or no handler yet
    Pool,  // on_request runs on the thread pool
    Async, // the plugin returned TRELLIS_ASYNC and has not released it yet
};

// A response being streamed (response_start ... response_end).
struct StreamState {
    bool active = false;   // started, not ended
    bool chunked = false;  // Transfer-Encoding: chunked
    bool declared = false; // a Content-Length was promised
    uint64_t length = 0;   // ... of this many bytes
    uint64_t sent = 0;     // body bytes taken so far
    int status = 0;
};

// What a plugin thread hands to the loop for a held request. Guarded by ActiveSession::stage_mutex.
struct StagedAnswer {
    enum class Kind : uint8_t { None, Full, File, Stream };
    bool released = false;     // request_release was called
    bool answered = false;     // an answer (full, file, or the head of a stream) was given
    bool gone = false;         // the client left or the request timed out: answers fail now
    bool pool_started = false; // a pool thread has begun on_request (so on_abort is owed)
    bool head_taken = false;
    bool ended = false;         // response_end
    bool want_writable = false; // response_write said TRELLIS_AGAIN
    Kind kind = Kind::None;
    int status = 0;
    int64_t length = -1;
    std::string body; // a full answer's body, or stream bytes the loop has not taken yet
    FileResponse file;
    struct stat file_stat = {};
    size_t unsent = 0; // bytes the loop holds but has not written (for TRELLIS_AGAIN)
    void reset();
};

struct ActiveSession {
    ActiveSession(size_t read_buffer_size, WorkerContext *worker);
    ~ActiveSession();
    llhttp_t parser;
    trellis_request request; // the ABI handle plugins are given
    std::unique_ptr<char[]> read_buffer;
    size_t read_capacity;
    size_t read_end = 0;           // bytes in read_buffer
    size_t parse_pos = 0;          // bytes given to llhttp
    size_t request_start = 0;      // where the current request's head begins
    size_t head_end = 0;           // where its body begins, once the head is complete
    OutputQueue output;            // serialised responses (and files) waiting to be written
    std::vector<ByteRange> ranges; // scratch for respond_file
    // Parser bookkeeping for the request being read.
    bool in_message = false;
    bool in_body = false;
    bool in_header_field = false;
    bool in_header_value = false;
    http1::HeadFacts head_facts;
    int error_status = 0; // set by a callback that refuses the request

    // ---- the request's handler ----
    WorkerContext *worker;     // the worker whose pool lent this session
    unsigned worker_index = 0; // its index, readable after the worker has gone
    const ServerMetrics *metrics = nullptr;
    std::shared_ptr<Mailbox> mailbox; // how other threads reach it (outlives the worker)
    sockaddr_in6 peer;                // the connection's peer, readable after it has gone
    std::shared_ptr<const TlsFacts> tls_facts;
    // The routes this request is dispatched on: the worker's when it arrived (a reload may switch
    // the worker meanwhile), valid while the request runs inline or is held.
    const Router *router = nullptr;
    WorkerGeneration *generation = nullptr;
    int route_index = -1;              // route being tried
    RouteStats *route_stats = nullptr; // its counters (owned by the server, never freed)
    uint64_t started_ns = 0;           // when the request was complete (for latency)
    uint64_t head_started_ms = 0;      // uv_now at the request's first byte (total head deadline)
    uint64_t body_started_ms = 0;      // when the body began (or resumed), for the minimum rate
    uint64_t body_received = 0;        // body bytes since body_started_ms
    StreamState stream;
    bool notify_writable = false;   // an inline response_write said TRELLIS_AGAIN
    bool stop_after_answer = false; // answered before its body: read nothing more
    // A handler holding the request (loop thread only).
    Hold hold = Hold::None;
    PluginInstance *holder = nullptr;
    WorkerGeneration *held_generation = nullptr;
    int pool_result = 0;                // on_request's result on the pool (read after kMailPoolDone)
    bool body_streamed = false;         // TRELLIS_STREAM_BODY: body bytes go to holder's on_body
    bool body_paused = false;           // on_body said TRELLIS_AGAIN
    bool body_pause_now = false;        // ... during this parse step
    bool body_failed = false;           // on_body returned TRELLIS_ERROR
    bool head_dispatch_pending = false; // the head is for a body-streaming plugin
    bool gave_up = false;
    uint32_t chunk_extension_bytes = 0; // of the request: bounded like a head (CVE-2024-22019)
    bool release_seen = false;          // kMailReleased arrived: the plugin will not touch the session again
    bool parser_kick = false; // paused at the end of the input: llhttp still owes a callback               //
                              // the handler timed out: the connection no longer waits for it
    std::mutex stage_mutex;
    StagedAnswer staged;        // under stage_mutex
    std::string staged_scratch; // loop side of staged.body, swapped to keep capacity
    // Mailbox bookkeeping, under the mailbox's mutex.
    unsigned mail_bits = 0;
    std::atomic<bool> mail_queued{false}; // also read without the lock (Mailbox::forget)
    bool orphaned = false;                // the connection went away while a plugin held it

    void reset_for_reuse();
};

// A session a plugin still holds after its worker has exited (a plugin releasing requests in its
// destroy, say): nobody can take it back any more, so it is kept until the process ends.
void keep_after_exit(ActiveSession *session);

class Connection final : public TimeoutNode, public TransportEvents {
  public:
    // Takes ownership of `transport` and starts reading.
    // `listen` (may be null in tests) carries HSTS and redirect_to_https; it outlives connections.
    static Connection *start(WorkerContext &worker, Transport *transport, const sockaddr *peer,
                             const ListenConfig *listen = nullptr);

    // A mailbox delivery for a session whose request a plugin holds (loop thread).
    static void on_mail(ActiveSession *session, unsigned bits);

    // Called by the worker when a timeout of this connection expires.
    void on_timeout(TimeoutKind kind);
    // Shutdown: close now if idle; otherwise the request in progress is answered with
    // "Connection: close" and the connection closes after it.
    void begin_drain();
    // Shutdown deadline: close whatever state it is in.
    void abort();
    // Nothing in progress: no request, no answer, no handler, and no bytes of a request waiting in
    // the socket (draining may close it).
    bool idle() const { return !session_ && !closed_ && !(transport_ && transport_->has_unread_input()); }

    // ---- used by the host API while a plugin handles a request ----
    void respond(int status, std::string_view body);
    // Answers with a file: validators, conditional requests and ranges for status 200, the body
    // read now (small) or sent later by send_file (large). False when it is not a readable regular
    // file (the request was answered with 500).
    bool respond_file(const FileResponse &file);
    void respond_error(int status);
    // A streamed response: head now, body in pieces. start_stream is false for a status without
    // a body; stream_write returns how many bytes wait to be written (for backpressure).
    bool start_stream(int status, int64_t content_length);
    size_t stream_write(std::string_view data);
    void end_stream();
    // Bytes queued for the client and not written yet.
    size_t queued_output() const;
    static size_t peer_text(const sockaddr_in6 &peer, char *buf, size_t len);
    unsigned worker_index() const { return worker_.index(); }

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
    void dispatch(int first_route = 0);
    // Calls the handler of route `index`; true when the route took the request (answered, holds
    // it, or failed), false when it declined.
    // `began_ns`: when the loop began on this request for the plugin (loop_clock()).
    bool call_handler(int index, uint64_t began_ns);
    bool dispatch_head_to_body_streamer();
    void begin_hold(Hold hold, PluginInstance *plugin);
    void end_hold();
    bool apply_staged(); // true when the plugin has released the request
    void on_pool_done();
    void on_handler_timeout();
    void notify_plugin_writable();
    // Leaves the session to the plugin holding it (the connection is going away).
    void abandon_held_session();
    void fail_streamed_body();
    // The client side failed (timeout, bad framing) while a plugin holds the request: answers
    // from the plugin stop, `status` goes out if nothing was answered, and the connection ends.
    void fail_held_request(int status);
    bool body_too_slow() const;
    void resume_body();
    void release_session();
    void record_response(int status, uint64_t body_bytes);
    void record_response_of(ActiveSession &s, int status, uint64_t body_bytes);
    bool redirect_to_https();
    bool answered_by_listener_rules();
    // After a plugin call on the event loop that began at `began_ns`: counts and logs (at most
    // once a minute per route) a call that ran past limits.loop_stall_warn_ms.
    void check_loop_stall(uint64_t began_ns, const PluginInstance &plugin, RouteStats *route);
    // When a plugin call on the loop begins, for check_loop_stall; 0 when the watch is off.
    uint64_t loop_clock() const { return worker_.limits().loop_stall_warn_ms ? uv_hrtime() : 0; }
    // The same from a clock reading taken just before.
    uint64_t loop_clock_from(uint64_t now_ns) const {
        return worker_.limits().loop_stall_warn_ms ? now_ns : 0;
    }
    bool after_handler(int rc, PluginInstance *plugin);
    void clear_hold();
    static void release_hold_of(ActiveSession &s);
    void shift_request_to_front();
    void compact_read_buffer();
    // limits.max_header_bytes, or less for a buffer made before a reload raised it.
    size_t max_head_bytes() const {
        return std::min<size_t>(worker_.limits().max_header_bytes,
                                session_->read_capacity - SessionPool::kReadSlack);
    }
    // Output.
    void write_head(int status, uint64_t content_length, bool with_length);
    void append_body(std::string_view body);
    bool queue_file_bytes(int fd, uint64_t offset, uint64_t length);
    // respond_file's steps. Validators and conditionals of a 200 answer (true when that answered
    // the request: 304, 412), and the ranges asked for; then the 416, one range, or several.
    bool answered_by_file_validators(const struct stat &st, uint32_t max_ranges, RangeOutcome &outcome);
    void respond_range_not_satisfiable(uint64_t size);
    bool queue_single_range(int fd, const ByteRange &range, uint64_t size, uint64_t &body_bytes);
    bool queue_multipart_ranges(int fd, const struct stat &st, uint64_t &body_bytes);
    static std::string take_header(std::string &headers, std::string_view name);
    void log_access(ActiveSession &s, int status, uint64_t body_bytes);
    static void run_on_pool(void *session) noexcept;
    static void finish_orphan(ActiveSession *session);
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
    static int on_chunk_header(llhttp_t *p) noexcept;
    static int on_chunk_extension(llhttp_t *p, const char *at, size_t len) noexcept;
    static int on_message_complete(llhttp_t *p) noexcept;
    int headers_complete();
    static const llhttp_settings_t &parser_settings();

    friend struct ActiveSession;
    WorkerContext &worker_;
    Transport *transport_;
    const ListenConfig *listen_;
    ActiveSession *session_ = nullptr;
    sockaddr_in6 peer_; // AF_INET peers are stored as sockaddr_in in the same bytes
    uint16_t callback_depth_ = 0;
    bool keep_alive_ = true;         // of the request being answered
    bool close_after_flush_ = false; // no more requests on this connection
    bool peer_done_ = false;         // the peer sent EOF
    bool client_left_ = false;       // EOF, a reset or a failed write: a held request's 499
    bool closed_ = false;
    bool lingering_ = false;
    bool write_blocked_ = false;
    bool tls_checked_ = false; // looked at the transport once bytes came (auto listeners decide late)
    bool counted_tls_ = false;
};

} // namespace trellis
