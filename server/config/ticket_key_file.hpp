// tls.ticket_key_file's contents: 80 random bytes (or 48), as nginx's ssl_session_ticket_key.
// Checked when the configuration is read (so --check, a start and a reload name the JSON path) and
// read again by the TLS layer when it loads the key.
#pragma once

#include <string>

namespace trellis {

// The file's bytes; empty with `error` ("FILE: No such file or directory", "FILE: 12 bytes; ...")
// when it cannot be read or has the wrong length.
std::string read_ticket_key_file(const std::string &path, std::string &error);

} // namespace trellis
