// HTTP/1.1 request framing: llhttp's callbacks turn bytes into a trellis_request (spans into the
// read buffer, never copies of the head) and apply the checks llhttp leaves to us. What the
// reader cannot decide alone (a head for a body-streaming plugin, body bytes for it, the limits
// of the moment) it asks its sink.
#pragma once

#include "http/request.hpp"
#include "http1/request_checks.hpp"

#include <llhttp.h>

#include <cstddef>
#include <cstdint>

namespace trellis::http1 {

// The connection side of a reader.
class RequestSink {
  public:
    // A request's first byte.
    virtual void on_message_begin() = 0;
    // The head is complete and passed its checks: false to pause before its body (the request is
    // for a plugin that streams bodies, and gets the head first).
    virtual bool on_head_complete() = 0;
    // Body bytes of a request whose body is not buffered (body_streamed()).
    enum class BodyVerdict { Take, Pause, Fail };
    virtual BodyVerdict on_streamed_body(const char *at, size_t len) = 0;
    // A 100-continue is owed (the client waits for it before sending the body).
    virtual void on_continue_expected() = 0;
    // The largest head allowed now (limits.max_header_bytes, or less for a small buffer).
    virtual size_t max_head_bytes() const = 0;
    virtual uint64_t max_body_bytes() const = 0;
    // Whether body bytes are handed to on_streamed_body (rather than buffered in request.body).
    virtual bool body_streamed() const = 0;

  protected:
    ~RequestSink() = default;
};

class RequestReader {
  public:
    // What one execute() call ended with.
    enum class Outcome {
        NeedMore,        // every byte was taken; the request (if any) is not complete
        HeadForStreamer, // paused after a head on_head_complete wants handed over first
        BodyPaused,      // on_streamed_body said Pause
        BodyFailed,      // on_streamed_body said Fail
        MessageComplete, // a whole request; nothing after it was parsed
        Error,           // the bytes are not a request we take: error_status() says which
    };

    // Starts reading requests into `request`, whose spans are offsets into `buffer`.
    void start(RequestSink *sink, trellis_request *request, const char *buffer);
    // Parses buffer[from, end); `consumed_to` is where parsing stopped.
    Outcome execute(size_t from, size_t end, size_t &consumed_to);

    bool in_message() const { return in_message_; }
    bool in_body() const { return in_body_; }
    bool in_header_field() const { return in_header_field_; }
    void end_message() { in_message_ = in_body_ = false; }
    // Where the current request's head begins, and where its body begins once the head is read.
    size_t request_start = 0;
    size_t head_end = 0;
    int error_status() const { return error_status_; }
    // llhttp's own verdict on keep-alive for the request just read.
    bool should_keep_alive() const { return llhttp_should_keep_alive(&parser_) != 0; }
    // Body bytes since the connection last reset it (the minimum body rate).
    uint64_t body_received = 0;

  private:
    static const llhttp_settings_t &settings();
    static RequestReader &from(llhttp_t *p) { return *static_cast<RequestReader *>(p->data); }
    uint32_t offset_of(const char *at) const { return static_cast<uint32_t>(at - buffer_); }
    int refuse(int status) {
        error_status_ = status;
        return -1;
    }
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
    int head_checks();

    llhttp_t parser_;
    RequestSink *sink_ = nullptr;
    trellis_request *request_ = nullptr;
    const char *buffer_ = nullptr;
    size_t parse_from_ = 0; // where the current execute() began
    bool in_message_ = false;
    bool in_body_ = false;
    bool in_header_field_ = false;
    bool in_header_value_ = false;
    // Why the parser paused (read once by execute()).
    bool head_pause_ = false;
    RequestSink::BodyVerdict body_verdict_ = RequestSink::BodyVerdict::Take;
    HeadFacts head_facts_;
    int error_status_ = 0;
    uint32_t chunk_extension_bytes_ = 0; // bounded like a head (CVE-2024-22019)
};

} // namespace trellis::http1
