#include "resnet/util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/resource.h>
#include <sys/stat.h>

static _Thread_local char last_error[1024];

int rn_error(const char *fmt, ...) {
    const int saved = errno;   /* callers look at errno after reporting (ENOENT gets a hint) */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    errno = saved;
    return -1;
}

const char *rn_last_error(void) { return last_error[0] ? last_error : "unknown error"; }

void rn_message(const char *fmt, ...) {
    char line[4096] = RN_PREFIX;
    const size_t used = strlen(line);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line + used, sizeof line - used - 1, fmt, ap);   /* room left for the newline */
    va_end(ap);
    const size_t len = strlen(line);
    line[len] = '\n';
    line[len + 1] = '\0';
    fputs(line, stderr);
}

/* calloc, not aligned_alloc + memset: for large blocks glibc maps fresh zero pages and touches none of
 * them, so a large evaluation arena costs memory only as far as it is used. The pointer calloc gave
 * sits just before the aligned block, for rn_free. */
void *rn_alloc(size_t bytes) {
    if (bytes > SIZE_MAX - 128) {
        rn_error("out of memory allocating %zu bytes", bytes);
        return NULL;
    }
    char *raw = calloc(1, bytes + 64 + sizeof(void *));
    if (!raw) {
        rn_error("out of memory allocating %.1f MiB", (double)bytes / (1024.0 * 1024.0));
        return NULL;
    }
    uintptr_t aligned = ((uintptr_t)raw + sizeof(void *) + 63) & ~(uintptr_t)63;
    ((void **)aligned)[-1] = raw;
    return (void *)aligned;
}

void rn_free(void *p) {
    if (p) free(((void **)p)[-1]);
}

/* O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer that may never come, before
 * any type check could run. The flag is cleared again once the file is known to be a regular one. */
int rn_open_regular(const char *path) {
    const int fd = open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    if (fd < 0) return rn_error("%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        const int e = errno;
        close(fd);
        errno = e;
        return rn_error("%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        const char *kind = S_ISFIFO(st.st_mode) ? "a FIFO" : S_ISDIR(st.st_mode) ? "a folder"
                         : S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode) ? "a device" : "a special file";
        close(fd);
        errno = EINVAL;
        return rn_error("%s: not a regular file (%s)", path, kind);
    }
    const int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) < 0) {
        const int e = errno;
        close(fd);
        errno = e;
        return rn_error("%s: cannot open: %s", path, strerror(e));
    }
    return fd;
}

FILE *rn_fopen_regular(const char *path) {
    const int fd = rn_open_regular(path);
    if (fd < 0) return NULL;
    FILE *f = fdopen(fd, "rb");
    if (!f) {
        const int e = errno;
        close(fd);
        errno = e;
        rn_error("%s: cannot open: %s", path, strerror(e));
    }
    return f;
}

/* The exponent bits all set is Inf or NaN. An OR over integer lanes vectorizes, where a float test
 * would need -ffast-math (which would also let the compiler assume there is nothing to find). */
size_t rn_first_nonfinite(const float *x, size_t n) {
    const size_t block = 4096;
    for (size_t start = 0; start < n; start += block) {
        const size_t end = n - start < block ? n : start + block;
        uint32_t bad = 0;
        for (size_t i = start; i < end; i++) {
            uint32_t bits;
            memcpy(&bits, &x[i], sizeof bits);
            bad |= (bits & 0x7f800000u) == 0x7f800000u;
        }
        if (!bad) continue;
        for (size_t i = start; i < end; i++) {
            uint32_t bits;
            memcpy(&bits, &x[i], sizeof bits);
            if ((bits & 0x7f800000u) == 0x7f800000u) return i;
        }
    }
    return n;
}

double rn_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

long rn_peak_rss_kib(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;   /* Linux reports KiB */
}

const char *rn_format_float(char *buf, size_t size, float x) {
    for (int p = 1; p <= 9; p++) {
        snprintf(buf, size, "%.*g", p, (double)x);
        if ((float)strtod(buf, NULL) == x) break;
    }
    return buf;
}

const char *rn_format_double(char *buf, size_t size, double x) {
    for (int p = 1; p <= 17; p++) {
        snprintf(buf, size, "%.*g", p, x);
        if (strtod(buf, NULL) == x) break;
    }
    return buf;
}
