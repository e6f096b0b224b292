// Session ticket keys from a file (tls.ticket_key_file), so that every instance behind a balancer
// encrypts tickets alike and a client resumes on whichever instance it reaches. The file holds 80
// random bytes (48 are accepted too), like nginx's ssl_session_ticket_key: the first 16 name the
// key, the rest are its secret (AES-256-GCM under their SHA-256). Replacing the file and sending
// SIGHUP rotates the key; tickets made under the previous one are still accepted.
#pragma once

#include <mbedtls/gcm.h>
#include <mbedtls/ssl.h>

#include <cstdint>
#include <mutex>
#include <string>

namespace trellis {

class FileTicketKeys {
  public:
    using Random = int (*)(void *, unsigned char *, size_t);
    // `random` (with `random_state`, used under this object's lock) makes the IVs. Throws StartupError.
    FileTicketKeys(const std::string &path, uint32_t lifetime_s, Random random, void *random_state);
    ~FileTicketKeys();
    FileTicketKeys(const FileTicketKeys &) = delete;
    FileTicketKeys &operator=(const FileTicketKeys &) = delete;

    // Reads the file again: a new key becomes the current one and the current one the previous.
    // Returns whether the key changed; throws StartupError (keeping the keys) on a bad file.
    bool reload(const std::string &path);
    // mbedTLS's ticket callbacks (mbedtls_ssl_conf_session_tickets_cb), `self` being this object.
    static int write(void *self, const mbedtls_ssl_session *session, unsigned char *start,
                     const unsigned char *end, size_t *length, uint32_t *lifetime);
    static int parse(void *self, mbedtls_ssl_session *session, unsigned char *buf, size_t length);

  private:
    struct Key {
        bool set = false;
        unsigned char name[16] = {};
        mbedtls_gcm_context gcm;
    };
    static void install(Key &key, const std::string &bytes);

    std::mutex mutex_; // GCM contexts and the random generator are used by every worker
    Key current_, previous_;
    uint32_t lifetime_s_;
    Random random_;
    void *random_state_;
};

} // namespace trellis
