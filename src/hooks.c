/* The tests' fault-injection and tracing hooks: see hooks.h. */
#include "resnet/hooks.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "resnet/util.h"

static Hooks current = {.fault_step = -1, .hang_step = -1, .fault_rank = 0, .trace = 0, .isa = "", .winograd = 1};

/* A step number from variable name: -1 when unset or empty; 0, or -1 with rn_error. */
static int read_step(const char *name, long *step) {
    const char *s = getenv(name);
    *step = -1;
    if (!s || !*s) return 0;
    char *end;
    errno = 0;
    const long v = strtol(s, &end, 10);
    if (*end || errno || v < 0 || s[0] == ' ') return rn_error("%s: '%s' is not a step number (0 or more)", name, s);
    *step = v;
    return 0;
}

int hooks_read(int world_size) {
    Hooks h = {.fault_step = -1, .hang_step = -1, .fault_rank = 0, .trace = 0};
    if (read_step("RESNET_FAULT_STEP", &h.fault_step) || read_step("RESNET_FAULT_HANG_STEP", &h.hang_step)) return -1;
    const char *rank = getenv("RESNET_FAULT_RANK");
    if (rank && *rank) {
        char *end;
        errno = 0;
        const long v = strtol(rank, &end, 10);
        if (*end || errno || v < 0 || v >= world_size || rank[0] == ' ')
            return rn_error("RESNET_FAULT_RANK: '%s' is not a rank of this job (0..%d)", rank, world_size - 1);
        h.fault_rank = (int)v;
    }
    const char *trace = getenv("RESNET_TRACE");
    h.trace = trace && *trace == '1';
    const char *signal_at = getenv("RESNET_FAULT_SIGNAL_AT");
    if (signal_at && strlen(signal_at) >= sizeof h.signal_at)
        return rn_error("RESNET_FAULT_SIGNAL_AT: '%s' is longer than any activity name", signal_at);
    if (signal_at) snprintf(h.signal_at, sizeof h.signal_at, "%s", signal_at);
    memcpy(h.isa, current.isa, sizeof h.isa);   /* hooks_read_isa's, read apart: every subcommand needs it */
    h.winograd = current.winograd;
    current = h;
    return 0;
}

int hooks_read_isa(void) {
    const char *isa = getenv("RESNET_ISA");
    if (!isa) isa = "";
    if (strlen(isa) >= sizeof current.isa)
        return rn_error("RESNET_ISA: '%s' is longer than any kernel path's name (avx512, avx2, generic)", isa);
    snprintf(current.isa, sizeof current.isa, "%s", isa);
    const char *winograd = getenv("RESNET_WINOGRAD");
    if (winograd && *winograd && strcmp(winograd, "0") != 0 && strcmp(winograd, "1") != 0)
        return rn_error("RESNET_WINOGRAD: '%s' is neither 0 (direct kernels) nor 1 (Winograd F(2x2,3x3))", winograd);
    current.winograd = !(winograd && strcmp(winograd, "0") == 0);
    return 0;
}

const Hooks *hooks(void) { return &current; }
