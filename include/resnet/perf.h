/* Where the time goes (CoMD's performance timers): named phase timers, the per-layer and per-shape
 * profile of `bench --profile`, FLOP counts, and the end-of-run report with min / mean / max over ranks.
 * The reduction over ranks comes in as a function (dist_min_sum_max), so this module stays below
 * dist.c and the model can profile itself without knowing about ranks. */
#ifndef RESNET_PERF_H
#define RESNET_PERF_H

#include <stdio.h>

typedef enum {
    PERF_COMPUTE, PERF_ALLREDUCE, PERF_OPTIMIZER, PERF_DATA, PERF_VALIDATION, PERF_CHECKPOINT_IO, PERF_TOTAL,
    PERF_COUNT
} PerfPhase;

/* Phase timers accumulate over start/stop pairs until perf_reset. */
void perf_start(PerfPhase phase);
void perf_stop(PerfPhase phase);
double perf_seconds(PerfPhase phase);
const char *perf_phase_name(PerfPhase phase);
void perf_reset(void);

/* The profile: time and FLOPs per label (a layer kind, or a convolution's shape and pass). Off by
 * default, when a profiled call costs one branch. */
void perf_profile_enable(int on);
int perf_profile_enabled(void);
void perf_profile_reset(void);
void perf_profile_add(const char *label, double seconds, double flops);
/* The per-layer table, slowest first: ms per pass (a training step, or an evaluation forward when
 * evaluation is set), share and GFLOP/s; peak_gflops (this rank's measured FMA peak, 0: none) adds each
 * layer's share of it. */
void perf_profile_report(FILE *out, int passes, int evaluation, double peak_gflops);
/* The FMA peak of all ranks' threads together (peak.c, summed over ranks): perf_report then prints the
 * achieved share beside GFLOP/s. */
void perf_set_peak(double gflops);

/* Floating-point operations of a k x k convolution producing h_out x h_out pixels of cout channels
 * from cin, for n images (a multiply-add counts two). */
double perf_conv_flops(int cin, int cout, int k, int h_out, int n);

/* min, sum and max over ranks of values[0..count), element by element. Collective. */
typedef void (*PerfReduce)(const double *values, double *min, double *sum, double *max, int count);

typedef struct { double min, mean, max; } PerfStat;

typedef struct {
    int ranks;
    PerfStat phase[PERF_COUNT];   /* seconds */
    PerfStat peak_mib;            /* peak resident memory per rank */
} PerfSummary;

/* Every phase timer and the peak memory of this rank, over all ranks. Collective through reduce. */
void perf_summarize(PerfSummary *s, PerfReduce reduce, int ranks);
/* The phases that took time: seconds min / mean / max over ranks and the mean's share of the total. */
void perf_print_phases(FILE *out, const PerfSummary *s, int threads);

/* The end-of-run report of training: the phases, then images/s, GFLOP/s and peak memory. images were
 * trained in seconds. Collective (every rank calls it); prints where out is not NULL. */
void perf_report(FILE *out, PerfReduce reduce, int ranks, int threads, double images, double seconds,
                 double flops_per_image);

#endif
