// Open-file cache for the static plugin, one per worker thread (so no lock): path -> open
// descriptor + stat, bounded (least recently used goes first) and revalidated after ttl_ms, so a
// hot file costs no open/stat per request and a change on disk shows within the TTL.
#pragma once

#include <chrono>
#include <cstdint>
#include <list>
#include <string>
#include <sys/stat.h>
#include <unistd.h>
#include <unordered_map>

namespace static_files {

struct OpenFile {
    int fd = -1; // -1: the path does not exist (or may not be opened); errno_value says why
    int errno_value = 0;
    struct stat st = {};
};

class FileCache {
  public:
    using Opener = OpenFile (*)(const void *context, const std::string &path);

    FileCache(size_t entries, uint32_t ttl_ms) : capacity_(entries), ttl_(ttl_ms) {}
    ~FileCache() {
        for (auto &entry : lru_)
            if (entry.file.fd >= 0)
                close(entry.file.fd);
    }
    FileCache(const FileCache &) = delete;
    FileCache &operator=(const FileCache &) = delete;

    // The file at `path` (relative to the root), opened by `open` when missing or stale. The
    // descriptor stays owned by the cache; it is valid until the next call.
    const OpenFile &get(const std::string &path, Opener open, const void *context) {
        auto now = std::chrono::steady_clock::now();
        auto found = index_.find(path);
        if (found != index_.end()) {
            Entry &entry = *found->second;
            if (now - entry.checked < ttl_) {
                lru_.splice(lru_.begin(), lru_, found->second);
                return entry.file;
            }
            // Stale: open again; keep the old descriptor if it is still the same file.
            OpenFile fresh = open(context, path);
            if (fresh.fd >= 0 && entry.file.fd >= 0 && same_file(fresh.st, entry.file.st)) {
                close(fresh.fd);
            } else {
                if (entry.file.fd >= 0)
                    close(entry.file.fd);
                entry.file = fresh;
            }
            entry.checked = now;
            lru_.splice(lru_.begin(), lru_, found->second);
            return entry.file;
        }
        if (lru_.size() >= capacity_) {
            Entry &victim = lru_.back();
            if (victim.file.fd >= 0)
                close(victim.file.fd);
            index_.erase(victim.path);
            lru_.pop_back();
        }
        lru_.push_front(Entry{path, open(context, path), now});
        index_[lru_.front().path] = lru_.begin();
        return lru_.front().file;
    }

  private:
    static bool same_file(const struct stat &a, const struct stat &b) {
        return a.st_ino == b.st_ino && a.st_dev == b.st_dev && a.st_size == b.st_size &&
               a.st_mtim.tv_sec == b.st_mtim.tv_sec && a.st_mtim.tv_nsec == b.st_mtim.tv_nsec;
    }
    struct Entry {
        std::string path;
        OpenFile file;
        std::chrono::steady_clock::time_point checked;
    };
    size_t capacity_;
    std::chrono::milliseconds ttl_;
    std::list<Entry> lru_;
    std::unordered_map<std::string, std::list<Entry>::iterator> index_;
};

} // namespace static_files
