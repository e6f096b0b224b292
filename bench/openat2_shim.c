/*
 * LD_PRELOAD shim for bench/profile.sh: lets Trellis's static plugin run under
 * valgrind 3.19, which does not know the openat2 syscall (437) and fails it with
 * ENOSYS, so the plugin refuses to start ("needs openat2 (Linux 5.6 or later)").
 *
 * libc's syscall() is replaced: SYS_openat2 becomes openat() with the same
 * directory descriptor, path, flags and mode (the RESOLVE_* restrictions are
 * dropped: safe for the benchmark's own temp www dir, and for nothing else);
 * every other number goes to the real syscall() unchanged.
 *
 * Only the static plugin calls openat2, and only on an open-file-cache miss or
 * revalidation (once per file per second), so the per-request path measured
 * is the plugin's real one. Never use this outside the benchmark.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdarg.h>
#include <sys/syscall.h>

long syscall(long number, ...) {
    static long (*real)(long, ...);
    va_list ap;
    long a[6];
    va_start(ap, number);
    for (int i = 0; i < 6; i++)
        a[i] = va_arg(ap, long);
    va_end(ap);
    if (number == SYS_openat2) {
        const struct open_how *how = (const struct open_how *)a[2];
        return openat((int)a[0], (const char *)a[1], (int)how->flags, (mode_t)how->mode);
    }
    if (!real)
        real = (long (*)(long, ...))dlsym(RTLD_NEXT, "syscall");
    return real(number, a[0], a[1], a[2], a[3], a[4], a[5]);
}
