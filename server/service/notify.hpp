// The service manager's readiness protocol (systemd's Type=notify, sd_notify(3)): a state change
// is one datagram ("READY=1", "RELOADING=1", "STOPPING=1", ...) to the Unix socket named by
// $NOTIFY_SOCKET, "@name" for the abstract namespace. Without the variable nothing is sent, so
// running by hand or under another supervisor costs nothing.
#pragma once

#include <string_view>

namespace trellis {

// Sends `state` (one or more "KEY=value" lines) if a service manager listens. Best effort: a
// failure is logged at debug level and changes nothing.
void notify_service_manager(std::string_view state);

// "RELOADING=1" with the MONOTONIC_USEC systemd 253 wants beside it (older ones ignore it).
void notify_reloading();

} // namespace trellis
