/* Measurement helper: the time of an allreduce alone, without the waiting for slower ranks that the step
 * timers of `bench` and the performance report include. Every round starts after a barrier; a round's
 * time is that of its slowest rank; the median over rounds is printed.
 * usage: mpirun ... allreduce_time [ROUNDS [FLOATS...]]
 *   no FLOATS: the gradient of the seed ResNet-20 on CIFAR-10 (scripts/bench-cluster.sh), ROUNDS rounds;
 *   FLOATS: one line per message size (scripts/bench-overlap.sh fits latency and bandwidth to them), at
 *   most ROUNDS rounds each and at least MIN_ROUNDS, fewer once a size has taken SIZE_BUDGET_S. */
#include <stdio.h>
#include <stdlib.h>

#include "resnet/dist.h"
#include "resnet/resnet.h"
#include "resnet/util.h"

#define WARMUP_ROUNDS 5
#define MIN_ROUNDS 10
#define SIZE_BUDGET_S 2.0

static int compare_doubles(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Times up to `rounds` allreduces of count floats into times[]; returns how many were timed. Every rank
 * stops after the same round: the stopping rule reads only the slowest rank's times, which all share. */
static int time_allreduce(float *values, size_t count, int rounds, double budget_s, double *times) {
    double spent = 0;
    int timed = 0;
    /* the first rounds open the connections (TCP connects lazily) */
    for (int r = -WARMUP_ROUNDS; r < rounds; r++) {
        dist_barrier();
        const double t0 = rn_now();
        dist_allreduce_sum_float(values, count);
        const double slowest = dist_max_double(rn_now() - t0);
        if (r < 0) continue;
        times[timed++] = slowest;
        spent += slowest;
        if (timed >= MIN_ROUNDS && spent > budget_s) break;
    }
    qsort(times, (size_t)timed, sizeof(double), compare_doubles);
    return timed;
}

static void print_line(size_t count, const double *times, int timed) {
    if (dist_rank() != 0) return;
    printf("allreduce of %zu floats (%.2f MB) on %d rank(s), %d per node: median %.4f ms, min %.4f ms, "
           "max %.4f ms over %d rounds\n", count, count * 4 / 1e6, dist_size(), dist_local_size(),
           times[timed / 2] * 1e3, times[0] * 1e3, times[timed - 1] * 1e3, timed);
}

int main(int argc, char **argv) {
    if (dist_init(&argc, &argv)) {
        fprintf(stderr, "allreduce_time: %s\n", rn_last_error());
        dist_finalize();
        return 1;
    }
    const int rounds = argc > 1 ? atoi(argv[1]) : 50, sizes = argc > 2 ? argc - 2 : 1;
    size_t *counts = calloc((size_t)sizes, sizeof(size_t)), largest = 0;
    int bad = rounds < 1 || !counts;
    for (int i = 0; !bad && i < sizes && argc > 2; i++) {
        char *end;
        const long long n = strtoll(argv[2 + i], &end, 10);
        bad = *end != '\0' || n < 1 || n > (1LL << 30);
        if (!bad) counts[i] = (size_t)n;
    }
    const ModelConfig mc = {ARCH_SEED, 20, 3, 32, 10};
    Model model;
    if (bad || model_init(&model, &mc, 0)) {
        if (dist_rank() == 0) fprintf(stderr, "allreduce_time: usage: allreduce_time [ROUNDS [FLOATS...]] "
                                              "(positive numbers, FLOATS at most 2^30)\n");
        dist_fail(2, "allreduce_time: bad arguments");
    }
    if (argc <= 2) counts[0] = model.num_params;
    for (int i = 0; i < sizes; i++) largest = counts[i] > largest ? counts[i] : largest;
    float *values = calloc(largest, sizeof(float));
    double *times = malloc(sizeof(double) * (size_t)rounds);
    if (!values || !times) dist_fail(1, "allreduce_time: out of memory");
    for (int i = 0; i < sizes; i++) {
        const int timed = time_allreduce(values, counts[i], rounds, argc > 2 ? SIZE_BUDGET_S : 1e30, times);
        print_line(counts[i], times, timed);
    }
    fflush(stdout);
    free(values);
    free(times);
    free(counts);
    model_free(&model);
    dist_finalize();
    return 0;
}
