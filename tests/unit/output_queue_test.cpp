#include "output_queue.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <fcntl.h>
#include <string>
#include <sys/uio.h>
#include <unistd.h>

using trellis::OutputQueue;

namespace {

// Takes at most `budget` bytes per call (then EAGAIN once the budget is spent), and counts calls.
class RecordingTransport final : public trellis::Transport {
  public:
    std::string received;
    size_t budget = SIZE_MAX;
    int writes = 0, send_files = 0;
    int fail_with = 0;

    void start(trellis::TransportEvents *) override {}
    void hand_over(trellis::TransportEvents *) override {}
    void set_reading(bool) override {}
    void want_writable(bool) override {}
    ssize_t write(const struct iovec *iov, int count) override {
        ++writes;
        if (fail_with)
            return -fail_with;
        if (budget == 0)
            return -EAGAIN;
        size_t taken = 0;
        for (int i = 0; i < count && budget > 0; ++i) {
            size_t n = std::min(iov[i].iov_len, budget);
            received.append(static_cast<const char *>(iov[i].iov_base), n);
            budget -= n;
            taken += n;
        }
        return static_cast<ssize_t>(taken);
    }
    ssize_t send_file(int fd, int64_t offset, size_t length) override {
        ++send_files;
        if (budget == 0)
            return -EAGAIN;
        std::string chunk(std::min(length, budget), '\0');
        ssize_t n = pread(fd, chunk.data(), chunk.size(), offset);
        if (n > 0) {
            received.append(chunk.data(), static_cast<size_t>(n));
            budget -= static_cast<size_t>(n);
        }
        return n;
    }
    void shutdown_write() override {}
    void close() override {}
    const char *name() const override { return "recording"; }
};

// A temporary file holding `content`, open for reading.
int temp_file(const std::string &content) {
    char path[] = "/tmp/trellis-output-queue-XXXXXX";
    int fd = mkstemp(path);
    REQUIRE(fd >= 0);
    unlink(path);
    REQUIRE(::write(fd, content.data(), content.size()) == static_cast<ssize_t>(content.size()));
    return fd;
}

bool is_open(int fd) {
    return fcntl(fd, F_GETFD) != -1;
}

} // namespace

TEST_CASE("output queue: buffered pieces leave in one write, files with send_file, in order") {
    OutputQueue queue;
    RecordingTransport transport;
    int file = temp_file("FILE-BYTES");
    queue.append("head1 ");
    queue.append("body1 ");
    size_t mark = queue.text().size();
    queue.text().append("head2 ");
    queue.commit_from(mark);
    queue.append_file(dup(file), 5, 5); // "BYTES"
    queue.append(" tail");
    CHECK(queue.pending_bytes() == 6 + 6 + 6 + 5 + 5);
    CHECK(queue.open_files() == 1);
    uint64_t written = 0;
    int error = 0;
    CHECK(queue.write_to(transport, written, error) == OutputQueue::Flush::Drained);
    CHECK(transport.received == "head1 body1 head2 BYTES tail");
    CHECK(written == transport.received.size());
    CHECK(transport.writes == 2); // the three adjacent pieces together, then the tail
    CHECK(transport.send_files == 1);
    CHECK(queue.empty());
    CHECK(queue.open_files() == 0);
    CHECK(queue.buffered_bytes() == 0);
    ::close(file);
}

TEST_CASE("output queue: a full transport stops it, and it goes on where it stopped") {
    OutputQueue queue;
    RecordingTransport transport;
    queue.append("0123456789");
    int file = temp_file("abcdef");
    CHECK(queue.append_file_contents(file, 1, 4)); // "bcde", read now
    ::close(file);
    transport.budget = 7;
    uint64_t written = 0;
    int error = 0;
    CHECK(queue.write_to(transport, written, error) == OutputQueue::Flush::Blocked);
    CHECK(written == 7);
    CHECK(queue.pending_bytes() == 7);
    transport.budget = SIZE_MAX;
    CHECK(queue.write_to(transport, written, error) == OutputQueue::Flush::Drained);
    CHECK(transport.received == "0123456789bcde");
}

TEST_CASE("output queue: rollback takes back what was queued after a mark, files closed") {
    OutputQueue queue;
    int file = temp_file("xyz");
    queue.append("kept ");
    OutputQueue::Mark mark = queue.mark();
    queue.append("dropped");
    int owned = dup(file);
    queue.append_file(owned, 0, 3);
    CHECK(queue.open_files() == 1);
    queue.rollback(mark);
    CHECK_FALSE(is_open(owned));
    CHECK(queue.open_files() == 0);
    CHECK(queue.pending_bytes() == 5);
    RecordingTransport transport;
    uint64_t written;
    int error;
    CHECK(queue.write_to(transport, written, error) == OutputQueue::Flush::Drained);
    CHECK(transport.received == "kept ");
    ::close(file);
}

TEST_CASE("output queue: failures") {
    OutputQueue queue;
    RecordingTransport transport;
    SUBCASE("a write error is reported with its errno") {
        queue.append("x");
        transport.fail_with = EPIPE;
        uint64_t written;
        int error = 0;
        CHECK(queue.write_to(transport, written, error) == OutputQueue::Flush::Failed);
        CHECK(error == EPIPE);
    }
    SUBCASE("a file that shrank under it cannot keep the promised length") {
        int file = temp_file("short");
        queue.append_file(file, 0, 100);
        uint64_t written;
        int error = 0;
        CHECK(queue.write_to(transport, written, error) == OutputQueue::Flush::Failed);
        CHECK(error == EIO);
    }
    SUBCASE("a file that cannot be read whole queues nothing") {
        int file = temp_file("abc");
        CHECK_FALSE(queue.append_file_contents(file, 0, 10));
        CHECK(queue.empty());
        CHECK(queue.buffered_bytes() == 0);
        ::close(file);
    }
    SUBCASE("clear closes what was never sent") {
        int file = temp_file("abc");
        queue.append_file(file, 0, 3);
        queue.clear();
        CHECK_FALSE(is_open(file));
        CHECK(queue.empty());
    }
}

TEST_CASE("output queue: move_front_to cuts the front off as frames, files read into the buffer") {
    OutputQueue stream, frames;
    RecordingTransport transport;
    int file = temp_file("0123456789");
    stream.append("abc");
    stream.append_file(dup(file), 2, 6); // "234567"
    stream.append("xyz");
    CHECK(stream.move_front_to(frames, 2)); // "ab"
    CHECK(stream.pending_bytes() == 1 + 6 + 3);
    CHECK(stream.move_front_to(frames, 4));   // "c" and "234" of the file
    CHECK(stream.open_files() == 1);          // the rest of the file is still queued
    CHECK(stream.move_front_to(frames, 100)); // "567xyz": everything left
    CHECK(stream.empty());
    CHECK(stream.open_files() == 0); // the descriptor went with the last of its bytes
    CHECK(frames.open_files() == 0); // the frames hold bytes, never descriptors
    CHECK(stream.buffered_bytes() == 0);
    uint64_t written = 0;
    int error = 0;
    CHECK(frames.write_to(transport, written, error) == OutputQueue::Flush::Drained);
    CHECK(transport.received == "abc234567xyz");
    close(file);
}

TEST_CASE("output queue: move_front_to fails on a file that shrank") {
    OutputQueue stream, frames;
    int file = temp_file("short");
    stream.append_file(dup(file), 0, 100);
    CHECK_FALSE(stream.move_front_to(frames, 50));
    CHECK(frames.pending_bytes() == 0);
    close(file);
}
