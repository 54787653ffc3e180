/* The default stall deadline from the durations of the run's own steps, validations and checkpoints. */
#include "resnet/stall.h"

#include <stdlib.h>
#include <string.h>

void stall_clock_add(StallClock *c, StallKind kind, double seconds) {
    if (kind < 0 || kind >= STALL_KINDS || !(seconds >= 0)) return;
    c->seconds[kind][c->next[kind]] = seconds;
    c->next[kind] = (c->next[kind] + 1) % STALL_SAMPLES;
    if (c->count[kind] < STALL_SAMPLES) c->count[kind]++;
}

static int compare_doubles(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The median rather than the mean or the maximum: one slow outlier (a page-cache flush, a neighbour's
 * burst) neither inflates the deadline for good nor is mistaken for the pace. */
static double median(const double *values, int n) {
    double sorted[STALL_SAMPLES];
    memcpy(sorted, values, sizeof(double) * (size_t)n);
    qsort(sorted, (size_t)n, sizeof(double), compare_doubles);
    return n % 2 ? sorted[n / 2] : 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]);
}

double stall_clock_timeout(const StallClock *c) {
    double timeout = STALL_FLOOR_S;
    for (int k = 0; k < STALL_KINDS; k++) {
        if (c->count[k] == 0) continue;
        const double t = STALL_FACTOR * median(c->seconds[k], c->count[k]);
        if (t > timeout) timeout = t;
    }
    return timeout;
}
