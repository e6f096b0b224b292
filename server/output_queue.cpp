#include "output_queue.hpp"

#include <algorithm>
#include <cerrno>
#include <fcntl.h>
#include <sys/uio.h>
#include <unistd.h>

namespace trellis {
namespace {
// Pieces gathered into one writev.
constexpr int kMaxIov = 64;
// A buffer that grew past this (a large inline answer) is given back when the queue is cleared.
constexpr size_t kKeptCapacity = 256u << 10;
} // namespace

OutputQueue::~OutputQueue() {
    if (open_files_)
        close_files_from(next_);
}

void OutputQueue::close_files_from(size_t index) {
    for (size_t i = index; i < pieces_.size(); ++i)
        if (pieces_[i].fd >= 0) {
            ::close(pieces_[i].fd);
            pieces_[i].fd = -1;
            --open_files_;
        }
}

bool OutputQueue::append_file_contents(int fd, uint64_t offset, uint64_t length) {
    size_t mark = buffer_.size();
    buffer_.resize(mark + length);
    size_t done = 0;
    while (done < length) {
        ssize_t n = pread(fd, buffer_.data() + mark + done, length - done, static_cast<off_t>(offset + done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        done += static_cast<size_t>(n);
    }
    if (done != length) {
        buffer_.resize(mark);
        return false;
    }
    commit_from(mark);
    return true;
}

void OutputQueue::append_file(int fd, uint64_t offset, uint64_t length) {
    pieces_.push_back({offset, offset + length, fd});
    ++open_files_;
}

void OutputQueue::rollback(Mark mark) {
    close_files_from(mark.pieces);
    pieces_.resize(mark.pieces);
    if (!pieces_.empty() && pieces_.back().fd < 0 && pieces_.back().end > mark.buffer)
        pieces_.back().end = mark.buffer;
    buffer_.resize(mark.buffer);
}

size_t OutputQueue::pending_bytes() const {
    size_t total = 0;
    for (size_t i = next_; i < pieces_.size(); ++i)
        total += pieces_[i].end - pieces_[i].begin;
    return total;
}

OutputQueue::Flush OutputQueue::write_to(Transport &transport, uint64_t &written, int &error) {
    written = 0;
    while (next_ < pieces_.size()) {
        Piece &piece = pieces_[next_];
        ssize_t n;
        if (piece.fd >= 0) {
            n = transport.send_file(piece.fd, static_cast<int64_t>(piece.begin), piece.end - piece.begin);
            if (n == 0)
                n = -EIO; // the file shrank under us: the promised length cannot be kept
        } else {
            struct iovec iov[kMaxIov];
            int count = 0;
            for (size_t i = next_; i < pieces_.size() && count < kMaxIov && pieces_[i].fd < 0; ++i) {
                iov[count].iov_base = buffer_.data() + pieces_[i].begin;
                iov[count].iov_len = pieces_[i].end - pieces_[i].begin;
                ++count;
            }
            n = transport.write(iov, count);
        }
        if (n == -EAGAIN)
            return Flush::Blocked;
        if (n < 0) {
            error = static_cast<int>(-n);
            return Flush::Failed;
        }
        // Advance over what was taken; a send_file result only ever covers the current piece.
        size_t taken = static_cast<size_t>(n);
        written += taken;
        while (next_ < pieces_.size()) {
            Piece &current = pieces_[next_];
            size_t left = current.end - current.begin;
            if (taken < left) {
                current.begin += taken;
                break;
            }
            taken -= left;
            current.begin = current.end;
            if (current.fd >= 0) {
                ::close(current.fd);
                current.fd = -1;
                --open_files_;
            }
            ++next_;
        }
    }
    pieces_.clear();
    next_ = 0;
    buffer_.clear();
    return Flush::Drained;
}

bool OutputQueue::move_front_to(OutputQueue &dest, size_t n) {
    while (n > 0 && next_ < pieces_.size()) {
        Piece &piece = pieces_[next_];
        size_t take = static_cast<size_t>(std::min<uint64_t>(n, piece.end - piece.begin));
        if (piece.fd < 0)
            dest.append(std::string_view(buffer_.data() + piece.begin, take));
        else if (!dest.append_file_contents(piece.fd, piece.begin, take))
            return false;
        piece.begin += take;
        n -= take;
        if (piece.begin < piece.end)
            break;
        if (piece.fd >= 0) {
            ::close(piece.fd);
            piece.fd = -1;
            --open_files_;
        }
        ++next_;
    }
    if (next_ == pieces_.size()) {
        pieces_.clear();
        next_ = 0;
        buffer_.clear();
    }
    return true;
}

void OutputQueue::clear() {
    if (open_files_)
        close_files_from(next_);
    pieces_.clear();
    next_ = 0;
    open_files_ = 0;
    if (buffer_.capacity() > kKeptCapacity)
        std::string().swap(buffer_);
    buffer_.clear();
}

} // namespace trellis
