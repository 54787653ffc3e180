#include "resnet/util.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/resource.h>

static _Thread_local char last_error[1024];

int rn_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return -1;
}

const char *rn_last_error(void) { return last_error[0] ? last_error : "unknown error"; }

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
