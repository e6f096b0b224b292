// Responses waiting for the socket, in order: bytes in one buffer, and ranges of files that go
// out with send_file. Consecutive buffered pieces leave in one writev; nothing is copied twice.
// Protocol-neutral: HTTP/1.1 queues whole framed responses here, and any protocol that writes to
// a Transport can do the same.
#pragma once

#include "transport/transport.hpp"

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace trellis {

class OutputQueue {
  public:
    OutputQueue() = default;
    ~OutputQueue();
    OutputQueue(const OutputQueue &) = delete;
    OutputQueue &operator=(const OutputQueue &) = delete;

    // Bytes, queued behind everything else.
    void append(std::string_view bytes) {
        size_t mark = buffer_.size();
        buffer_.append(bytes);
        commit_from(mark);
    }
    // Text built in place: note text().size(), append to text(), then commit_from(that mark).
    std::string &text() { return buffer_; }
    void commit_from(size_t mark) {
        if (mark == buffer_.size())
            return;
        // Joined to the last piece when it is unwritten buffer text ending where this begins.
        Piece *last = pieces_.size() > next_ ? &pieces_.back() : nullptr;
        if (last && last->fd < 0 && last->end == mark)
            last->end = buffer_.size();
        else
            pieces_.push_back({mark, buffer_.size(), -1});
    }
    // `length` bytes of `fd` from `offset`, read now (behind what is queued, so a batch of small
    // answers still leaves in one write). False when the file could not be read whole; nothing
    // is then queued.
    bool append_file_contents(int fd, uint64_t offset, uint64_t length);
    // `length` bytes of `fd` from `offset`, sent later with send_file. The queue owns `fd` and
    // closes it once sent (or when cleared).
    void append_file(int fd, uint64_t offset, uint64_t length);

    // Where the queue stands, to take back what was queued after it (an answer that failed
    // half-way through being queued).
    struct Mark {
        size_t buffer;
        size_t pieces;
    };
    Mark mark() const { return {buffer_.size(), pieces_.size()}; }
    void rollback(Mark mark);

    bool empty() const { return next_ == pieces_.size(); }
    // Bytes queued and not yet written.
    size_t pending_bytes() const;
    // Bytes held in memory (written or not, until the queue drains): the high-water mark's measure.
    size_t buffered_bytes() const { return buffer_.size(); }
    // Files waiting to be sent, each holding a descriptor.
    size_t open_files() const { return open_files_; }

    enum class Flush {
        Drained, // everything was written; the queue is empty
        Blocked, // the transport takes no more for now (EAGAIN)
        Failed,  // a write failed (`error` says why), or a file shrank under us
    };
    // Writes as much as `transport` takes; `written` counts the bytes that went out.
    Flush write_to(Transport &transport, uint64_t &written, int &error);
    // Moves the first `n` bytes queued to the end of `dest` (file ranges are read into its buffer:
    // HTTP/2 cuts a body into DATA frames). False when a file could not be read.
    bool move_front_to(OutputQueue &dest, size_t n);

    // Drops everything (closing files); keeps the buffer's memory unless it grew large.
    void clear();

  private:
    // Bytes [begin, end) of the buffer (fd < 0), or of file `fd`.
    struct Piece {
        uint64_t begin;
        uint64_t end;
        int fd;
    };
    void close_files_from(size_t index);

    std::string buffer_;
    std::vector<Piece> pieces_;
    size_t next_ = 0; // the first piece not wholly written
    size_t open_files_ = 0;
};

} // namespace trellis
