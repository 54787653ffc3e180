/* The stall watchdog's default deadline (--timeout auto): generous against the run's own pace, so that
 * it never fires on a healthy run (a validation or a checkpoint write takes many steps' time) and still
 * ends a stalled job long before a wall-time limit. */
#ifndef RESNET_STALL_H
#define RESNET_STALL_H

#define STALL_FLOOR_S 120.0   /* never less: start-up, the first validation and checkpoint are unmeasured */
#define STALL_FACTOR 20.0     /* times the median duration of each kind of phase */
#define STALL_SAMPLES 63      /* the most recent durations kept per kind */

typedef enum { STALL_STEP = 0, STALL_VALIDATION, STALL_CHECKPOINT, STALL_KINDS } StallKind;

typedef struct {
    double seconds[STALL_KINDS][STALL_SAMPLES];
    int count[STALL_KINDS];   /* samples held, up to STALL_SAMPLES */
    int next[STALL_KINDS];    /* where the next sample goes (oldest first out) */
} StallClock;

void stall_clock_add(StallClock *c, StallKind kind, double seconds);
/* max(STALL_FLOOR_S, STALL_FACTOR x the median of each kind's recent durations) */
double stall_clock_timeout(const StallClock *c);

#endif
