/* Phase timers, the layer profile, FLOP counts and the report over ranks: see perf.h. */
#include "resnet/perf.h"

#include <stdlib.h>
#include <string.h>

#include "resnet/util.h"

/* ---- phase timers ----------------------------------------------------------------------------------- */

static double phase_total[PERF_COUNT];
static double phase_started[PERF_COUNT];
static const char *const phase_names[PERF_COUNT] = {
    "compute", "allreduce", "optimizer", "data", "validation", "checkpoint I/O", "total",
};

void perf_start(PerfPhase phase) { phase_started[phase] = rn_now(); }
void perf_stop(PerfPhase phase) { phase_total[phase] += rn_now() - phase_started[phase]; }
double perf_seconds(PerfPhase phase) { return phase_total[phase]; }
const char *perf_phase_name(PerfPhase phase) { return phase_names[phase]; }
void perf_reset(void) { memset(phase_total, 0, sizeof phase_total); }

/* ---- the layer profile ------------------------------------------------------------------------------ */

#define PROFILE_MAX 64
typedef struct { char label[64]; double seconds, flops; long calls; } ProfileEntry;
static ProfileEntry profile[PROFILE_MAX];
static int profile_count, profile_on;

void perf_profile_enable(int on) { profile_on = on; }
int perf_profile_enabled(void) { return profile_on; }
void perf_profile_reset(void) { profile_count = 0; }

static ProfileEntry *profile_entry(const char *label) {
    for (int i = 0; i < profile_count; i++)
        if (strcmp(profile[i].label, label) == 0) return &profile[i];
    if (profile_count == PROFILE_MAX) return &profile[PROFILE_MAX - 1];
    ProfileEntry *e = &profile[profile_count++];
    memset(e, 0, sizeof *e);
    snprintf(e->label, sizeof e->label, "%s", label);
    return e;
}

void perf_profile_add(const char *label, double seconds, double flops) {
    ProfileEntry *e = profile_entry(label);
    e->seconds += seconds;
    e->flops += flops;
    e->calls++;
}

static int slower_first(const void *a, const void *b) {
    const double x = ((const ProfileEntry *)a)->seconds, y = ((const ProfileEntry *)b)->seconds;
    return (x < y) - (x > y);
}

void perf_profile_report(FILE *out, int passes, int evaluation, double peak_gflops) {
    double total = 0;
    for (int i = 0; i < profile_count; i++) total += profile[i].seconds;
    qsort(profile, profile_count, sizeof *profile, slower_first);
    fprintf(out, "%s (per %s; %d of them; GFLOP/s count the model's FLOPs (a Winograd layer "
                 "does fewer: it can pass 100%%); %% of peak: of this rank's measured FMA peak, %.1f GFLOP/s):\n"
                 "  %-38s %9s %7s %9s %8s\n", evaluation ? "evaluation profile" : "profile",
            evaluation ? "evaluation forward" : "step", passes, peak_gflops, "layer", "ms", "share", "GFLOP/s",
            "of peak");
    for (int i = 0; i < profile_count; i++) {
        const ProfileEntry *e = &profile[i];
        fprintf(out, "  %-38s %9.2f %6.1f%%", e->label, 1000.0 * e->seconds / passes, 100.0 * e->seconds / total);
        if (e->flops > 0) {
            const double gflops = e->flops / e->seconds * 1e-9;
            fprintf(out, " %9.1f", gflops);
            if (peak_gflops > 0) fprintf(out, " %7.1f%%", 100.0 * gflops / peak_gflops);
        }
        fprintf(out, "\n");
    }
    fprintf(out, "  %-38s %9.2f\n", evaluation ? "total (forward)" : "total (forward + backward)",
            1000.0 * total / passes);
}

/* ---- FLOP counts ------------------------------------------------------------------------------------ */

double perf_conv_flops(int cin, int cout, int k, int h_out, int n) {
    return 2.0 * cout * cin * k * k * (double)h_out * h_out * n;
}

/* ---- the report over ranks -------------------------------------------------------------------------- */

void perf_summarize(PerfSummary *s, PerfReduce reduce, int ranks) {
    /* one reduction for all: the phases, then the peak memory */
    double local[PERF_COUNT + 1], min[PERF_COUNT + 1], sum[PERF_COUNT + 1], max[PERF_COUNT + 1];
    for (int i = 0; i < PERF_COUNT; i++) local[i] = phase_total[i];
    local[PERF_COUNT] = (double)rn_peak_rss_kib() / 1024.0;
    reduce(local, min, sum, max, PERF_COUNT + 1);
    s->ranks = ranks;
    for (int i = 0; i <= PERF_COUNT; i++) {
        PerfStat *st = i < PERF_COUNT ? &s->phase[i] : &s->peak_mib;
        *st = (PerfStat){min[i], sum[i] / ranks, max[i]};
    }
}

void perf_print_phases(FILE *out, const PerfSummary *s, int threads) {
    const double total = s->phase[PERF_TOTAL].mean;
    /* the share is the mean's, so that the phases of the average rank add up to its total */
    fprintf(out, "performance (%d rank(s), %d thread(s) each; seconds min / mean / max over ranks, share of the "
                 "total by the mean):\n", s->ranks, threads);
    for (int i = 0; i < PERF_COUNT; i++) {
        const PerfStat *st = &s->phase[i];
        if (st->max <= 0 && i != PERF_TOTAL) continue;
        /* a phase outside the step loop (the final checkpoint of a run that took no step) has no share */
        if (total > 0 && st->mean <= total)
            fprintf(out, "  %-15s %10.2f %10.2f %10.2f %6.1f%%\n", phase_names[i], st->min, st->mean, st->max,
                    100.0 * st->mean / total);
        else
            fprintf(out, "  %-15s %10.2f %10.2f %10.2f %7s\n", phase_names[i], st->min, st->mean, st->max, "-");
    }
}

static double machine_peak_gflops;   /* all ranks' threads together; 0: not measured */

void perf_set_peak(double gflops) { machine_peak_gflops = gflops; }

void perf_report(FILE *out, PerfReduce reduce, int ranks, int threads, double images, double seconds,
                 double flops_per_image) {
    PerfSummary s;
    perf_summarize(&s, reduce, ranks);
    if (!out) return;
    perf_print_phases(out, &s, threads);
    if (images <= 0) {
        fprintf(out, "  no training step in this run; peak memory per rank %.0f / %.0f / %.0f MiB\n",
                s.peak_mib.min, s.peak_mib.mean, s.peak_mib.max);
        return;
    }
    const double gflops = seconds > 0 ? images * flops_per_image / seconds * 1e-9 : 0.0;
    char share[96] = "";
    if (machine_peak_gflops > 0)
        snprintf(share, sizeof share, " (%.1f%% of the measured FMA peak, %.0f GFLOP/s)",
                 100.0 * gflops / machine_peak_gflops, machine_peak_gflops);
    fprintf(out, "  training images/s %.1f, %.2f GFLOP/s%s; peak memory per rank %.0f / %.0f / %.0f MiB\n",
            seconds > 0 ? images / seconds : 0.0, gflops, share, s.peak_mib.min, s.peak_mib.mean, s.peak_mib.max);
}
