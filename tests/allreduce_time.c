/* Measurement helper: the time of the training step's gradient allreduce alone, without the waiting for
 * slower ranks that the step timers of `bench` and the performance report include. Every round starts
 * after a barrier; a round's time is that of its slowest rank; the median over rounds is printed.
 * usage: mpirun ... allreduce_time [ROUNDS]   (the gradient of the seed ResNet-20 on CIFAR-10) */
#include <stdio.h>
#include <stdlib.h>

#include "resnet/dist.h"
#include "resnet/resnet.h"
#include "resnet/util.h"

static int compare_doubles(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    if (dist_init(&argc, &argv)) {
        fprintf(stderr, "allreduce_time: %s\n", rn_last_error());
        dist_finalize();
        return 1;
    }
    const int rounds = argc > 1 ? atoi(argv[1]) : 50, warmup = 5;
    const ModelConfig mc = {ARCH_SEED, 20, 3, 32, 10};
    Model model;
    double *times = NULL;
    if (rounds < 1 || model_init(&model, &mc, 0) || !(times = malloc(sizeof(double) * (size_t)rounds))) {
        fprintf(stderr, "allreduce_time: bad round count or out of memory\n");
        dist_fail(1, "allreduce_time: set-up failed");
    }
    /* the first rounds open the connections (TCP connects lazily) */
    for (int r = -warmup; r < rounds; r++) {
        dist_barrier();
        const double t0 = rn_now();
        dist_allreduce_sum_float(model.grads, model.num_params);
        const double slowest = dist_max_double(rn_now() - t0);
        if (r >= 0) times[r] = slowest;
    }
    qsort(times, (size_t)rounds, sizeof(double), compare_doubles);
    if (dist_rank() == 0)
        printf("allreduce of %zu floats (%.2f MB) on %d rank(s), %d per node: median %.3f ms, min %.3f ms, "
               "max %.3f ms over %d rounds\n", model.num_params, model.num_params * 4 / 1e6, dist_size(),
               dist_local_size(), times[rounds / 2] * 1e3, times[0] * 1e3, times[rounds - 1] * 1e3, rounds);
    free(times);
    model_free(&model);
    dist_finalize();
    return 0;
}
