#include "transport/ticket_keys.hpp"

#include "config/ticket_key_file.hpp"
#include "errors.hpp"

#include <mbedtls/platform_time.h>
#include <mbedtls/platform_util.h>
#include <mbedtls/sha256.h>

#include <cstring>

namespace trellis {
namespace {

// name(16) | iv(12) | tag(16) | the session, encrypted (mbedtls_ssl_session_save's format)
constexpr size_t kNameBytes = 16, kIvBytes = 12, kTagBytes = 16;
constexpr size_t kOverhead = kNameBytes + kIvBytes + kTagBytes;

// The file's bytes; throws StartupError naming it.
std::string load_key_file(const std::string &path) {
    std::string error;
    std::string bytes = read_ticket_key_file(path, error);
    if (bytes.empty())
        throw StartupError("tls: ticket_key_file " + error);
    return bytes;
}

} // namespace

FileTicketKeys::FileTicketKeys(const std::string &path, uint32_t lifetime_s, Random random,
                               void *random_state)
    : lifetime_s_(lifetime_s ? lifetime_s : 1), random_(random), random_state_(random_state) {
    mbedtls_gcm_init(&current_.gcm);
    mbedtls_gcm_init(&previous_.gcm);
    install(current_, load_key_file(path));
}

FileTicketKeys::~FileTicketKeys() {
    mbedtls_gcm_free(&current_.gcm);
    mbedtls_gcm_free(&previous_.gcm);
}

void FileTicketKeys::install(Key &key, const std::string &bytes) {
    memcpy(key.name, bytes.data(), kNameBytes);
    unsigned char secret[32];
    mbedtls_sha256_ret(reinterpret_cast<const unsigned char *>(bytes.data()) + kNameBytes,
                       bytes.size() - kNameBytes, secret, 0);
    mbedtls_gcm_free(&key.gcm);
    mbedtls_gcm_init(&key.gcm);
    mbedtls_gcm_setkey(&key.gcm, MBEDTLS_CIPHER_ID_AES, secret, 256);
    mbedtls_platform_zeroize(secret, sizeof secret);
    key.set = true;
}

bool FileTicketKeys::reload(const std::string &path) {
    std::string bytes = load_key_file(path); // throws before anything changes
    std::lock_guard<std::mutex> lock(mutex_);
    if (memcmp(bytes.data(), current_.name, kNameBytes) == 0)
        return false; // same name, same key: nothing to rotate
    // The current key becomes the previous one: the GCM contexts move by swapping.
    std::swap(current_, previous_);
    install(current_, bytes);
    return true;
}

int FileTicketKeys::write(void *self_, const mbedtls_ssl_session *session, unsigned char *start,
                          const unsigned char *end, size_t *length, uint32_t *lifetime) {
    auto *self = static_cast<FileTicketKeys *>(self_);
    size_t room = static_cast<size_t>(end - start);
    if (room < kOverhead)
        return MBEDTLS_ERR_SSL_BUFFER_TOO_SMALL;
    unsigned char *name = start, *iv = start + kNameBytes, *tag = iv + kIvBytes, *state = tag + kTagBytes;
    size_t state_length = 0;
    int rc = mbedtls_ssl_session_save(session, state, room - kOverhead, &state_length);
    if (rc != 0)
        return rc;
    std::lock_guard<std::mutex> lock(self->mutex_);
    if ((rc = self->random_(self->random_state_, iv, kIvBytes)) != 0)
        return rc;
    memcpy(name, self->current_.name, kNameBytes);
    // The name and IV are authenticated too: a ticket cannot be moved under another key's name.
    rc = mbedtls_gcm_crypt_and_tag(&self->current_.gcm, MBEDTLS_GCM_ENCRYPT, state_length, iv, kIvBytes, name,
                                   kNameBytes + kIvBytes, state, state, kTagBytes, tag);
    if (rc != 0)
        return rc;
    *length = kOverhead + state_length;
    *lifetime = self->lifetime_s_;
    return 0;
}

int FileTicketKeys::parse(void *self_, mbedtls_ssl_session *session, unsigned char *buf, size_t length) {
    auto *self = static_cast<FileTicketKeys *>(self_);
    if (length < kOverhead)
        return MBEDTLS_ERR_SSL_BAD_INPUT_DATA;
    unsigned char *name = buf, *iv = buf + kNameBytes, *tag = iv + kIvBytes, *state = tag + kTagBytes;
    size_t state_length = length - kOverhead;
    {
        std::lock_guard<std::mutex> lock(self->mutex_);
        Key *key = memcmp(name, self->current_.name, kNameBytes) == 0 ? &self->current_
                   : self->previous_.set && memcmp(name, self->previous_.name, kNameBytes) == 0
                       ? &self->previous_
                       : nullptr;
        if (!key)
            return MBEDTLS_ERR_SSL_INVALID_MAC; // another key, or none we still hold: a full handshake
        int rc = mbedtls_gcm_auth_decrypt(&key->gcm, state_length, iv, kIvBytes, name, kNameBytes + kIvBytes,
                                          tag, kTagBytes, state, state);
        if (rc != 0)
            return rc == MBEDTLS_ERR_GCM_AUTH_FAILED ? MBEDTLS_ERR_SSL_INVALID_MAC : rc;
    }
    int rc = mbedtls_ssl_session_load(session, state, state_length);
    if (rc != 0)
        return rc;
    // Tickets carry when their session began; older than the lifetime, they resume nothing.
    mbedtls_time_t now = mbedtls_time(nullptr);
    if (now < session->start || static_cast<uint64_t>(now - session->start) > self->lifetime_s_)
        return MBEDTLS_ERR_SSL_SESSION_TICKET_EXPIRED;
    return 0;
}

} // namespace trellis
