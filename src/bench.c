/* The benchmark: full training steps (forward, backward, allreduce, optimizer) on synthetic data, timed
 * per phase, and the seed's validation (batch statistics over a whole 5,000-image set) timed alone. */
#include "resnet/bench.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "resnet/conv.h"
#include "resnet/dist.h"
#include "resnet/evaluate.h"
#include "resnet/optim.h"
#include "resnet/peak.h"
#include "resnet/perf.h"
#include "resnet/resnet.h"
#include "resnet/rng.h"
#include "resnet/run.h"
#include "resnet/util.h"

#define BENCH_CLASSES 10
#define BENCH_CHANNELS 3
#define BENCH_SIZE 32

static void synthetic_images(float *images, int *labels, int n, uint64_t seed) {
    Rng rng;
    rng_init(&rng, seed, 0x62656e6368 /* "bench" */);
    const size_t pixels = (size_t)BENCH_CHANNELS * BENCH_SIZE * BENCH_SIZE;
    for (size_t i = 0; i < (size_t)n * pixels; i++) images[i] = (float)rng_uniform(&rng);
    for (int i = 0; i < n; i++) labels[i] = (int)rng_below(&rng, BENCH_CLASSES);
}

/* One step's split in milliseconds, for scripts/bench-overlap.sh. The allreduce phase is the part of the
 * reduction the backward did not hide (all of it without buckets) plus the wait for slower ranks; its
 * least over ranks comes closest to the exposed communication alone, since the last rank to finish its
 * backward waits for nobody. */
static void print_step_split(const Config *cfg, const PerfSummary *train, int buckets) {
    const double ms = 1000.0 / cfg->steps;
    const PerfStat *allreduce = &train->phase[PERF_ALLREDUCE];
    char how[96] = "in one allreduce after the backward";
    if (buckets > 0) snprintf(how, sizeof how, "in %d bucket(s) of --bucket-mb %g during the backward", buckets,
                              (double)cfg->bucket_mb);
    printf("step: %.2f ms; compute %.2f, allreduce %.2f, optimizer %.2f ms (mean over ranks); allreduce least "
           "%.2f, most %.2f ms over ranks; gradient reduced %s\n", ms * train->phase[PERF_TOTAL].max,
           ms * train->phase[PERF_COMPUTE].mean, ms * allreduce->mean, ms * train->phase[PERF_OPTIMIZER].mean,
           ms * allreduce->min, ms * allreduce->max, how);
}

/* The lines scripts/bench-vs-torch.sh reads (train:, eval:, peak memory:), then the phases over ranks.
 * train: the summary after the timed steps; all: after the evaluation too (its peak memory). */
static void report(const Config *cfg, const Model *model, const PerfSummary *train, const PerfSummary *all,
                   int threads, int eval_images, int eval_rounds, double peak_gflops, int buckets) {
    const double elapsed = train->phase[PERF_TOTAL].max, B = cfg->batch_size;
    const double train_ips = B * cfg->steps / elapsed;
    const double eval_ips = eval_images > 0 ? (double)eval_images * eval_rounds / all->phase[PERF_VALIDATION].max : 0;
    printf("resnet_mpi bench: %s depth %d, %zu parameters, global batch %d, %d rank(s) x %d thread(s), "
           "%d steps after %d warm-up, BLIS kernels %s, direct convolutions %s%s%s\n",
           cfg->arch == ARCH_SEED ? "seed" : "paper", cfg->depth, model->num_params, cfg->batch_size, train->ranks,
           threads, cfg->steps, cfg->warmup, compute_kernel_name(),
           conv_direct_isa() ? conv_direct_isa() : "none (im2col + BLIS)",
           conv_winograd_name() ? ", Winograd " : "", conv_winograd_name() ? conv_winograd_name() : "");
    printf("train: %.1f images/s, %.1f ms/step, %.1f GFLOP/s (compute %.1f%%, allreduce %.1f%%, optimizer %.1f%%)\n",
           train_ips, 1000.0 * elapsed / cfg->steps, train_ips * model_flops_per_image(model, 1) * 1e-9,
           100.0 * train->phase[PERF_COMPUTE].mean / elapsed, 100.0 * train->phase[PERF_ALLREDUCE].mean / elapsed,
           100.0 * train->phase[PERF_OPTIMIZER].mean / elapsed);
    print_step_split(cfg, train, buckets);
    const double train_gflops = train_ips * model_flops_per_image(model, 1) * 1e-9;
    const double eval_gflops = eval_ips * model_flops_per_image(model, 0) * 1e-9;
    printf("peak: %.1f GFLOP/s measured FMA peak of the %d rank(s) x %d thread(s) (%s); train %.1f%%, eval %.1f%% of it\n",
           peak_gflops, train->ranks, threads, peak_isa(conv_direct_isa()), 100.0 * train_gflops / peak_gflops,
           100.0 * eval_gflops / peak_gflops);
    if (eval_images > 0) {
        printf("eval: %.1f images/s, %.1f GFLOP/s (batch statistics over %d images)\n", eval_ips, eval_gflops,
               eval_images);
        printf("peak memory: %.0f MiB per rank training, %.0f MiB with the %d-image evaluation (max over ranks)\n",
               train->peak_mib.max, all->peak_mib.max, eval_images);
    } else {
        printf("peak memory: %.0f MiB per rank training (max over ranks)\n", train->peak_mib.max);
    }
    perf_print_phases(stdout, train, threads);
}

/* Warm-up steps, then the timed ones, each phase in perf's timers (which start at zero after the warm-up)
 * and the whole under PERF_TOTAL between barriers. n: this rank's images of the global batch. */
static void timed_steps(const Config *cfg, Model *model, Optimizer *opt, const float *images, const int *labels,
                        int n, float lr) {
    for (int s = 0; s < cfg->warmup + cfg->steps; s++) {
        if (s == cfg->warmup) {
            dist_barrier();
            perf_reset();
            perf_profile_reset();
            perf_profile_enable(cfg->profile);
            perf_start(PERF_TOTAL);
        }
        perf_start(PERF_COMPUTE);
        model_zero_grad(model);
        model_forward(model, images, n, BN_TRAIN);
        model_loss(model, labels, n, cfg->batch_size);
        model_backward(model);
        perf_stop(PERF_COMPUTE);
        perf_start(PERF_ALLREDUCE);   /* with --bucket-mb: the part of the reduction the backward did not hide */
        gradient_reduction_finish(model);
        perf_stop(PERF_ALLREDUCE);
        perf_start(PERF_OPTIMIZER);
        optim_step(opt, model->params, model->grads, lr);
        perf_stop(PERF_OPTIMIZER);
    }
    dist_barrier();
    perf_stop(PERF_TOTAL);
    perf_profile_enable(0);
}

int bench_main(Config *cfg) {
    const int P = dist_size(), rank = dist_rank(), rank0 = rank == 0;
    const int kernels_code = choose_kernels();
    if (kernels_code) return kernels_code;
    const int threads = choose_threads(cfg->threads, 0);
    const int B = cfg->batch_size;
    if (B < P) {
        if (rank0) rn_message("--batch-size %d is smaller than the %d ranks", B, P);
        return EXIT_USAGE;
    }
    int lo, n;
    dist_slice(B, &lo, &n);
    (void)lo;
    ModelConfig mc = config_model(cfg, BENCH_CHANNELS, BENCH_SIZE, BENCH_CLASSES);
    OptimConfig oc;
    config_optim(cfg, &oc);
    Model model;
    Optimizer opt = {0};
    const size_t pixels = (size_t)BENCH_CHANNELS * BENCH_SIZE * BENCH_SIZE;
    float *images = NULL;
    int *labels = NULL;
    int failed = model_init(&model, &mc, cfg->seed) || model_reserve(&model, n, 1) ||
                 optimizer_setup(&opt, &oc, &model) ||
                 !(images = rn_alloc(sizeof(float) * pixels * n)) || !(labels = rn_alloc(sizeof(int) * n));
    if (agree_failure(failed)) return EXIT_FAILED;
    if (cfg->sync_bn) model.train_reducer = (StatReducer){dist_stat_sum, NULL};
    const int buckets = gradient_reduction_setup(&model, cfg->bucket_mb);
    synthetic_images(images, labels, n, cfg->seed + (uint64_t)rank);

    double rank_peak, rank_peak_after;
    double peak = measure_peak(threads, &rank_peak);
    timed_steps(cfg, &model, &opt, images, labels, n, oc.lr);
    /* and again after the steps, keeping the larger: a shared machine slows one measurement now and then
     * for longer than its rounds last (half the peak for 0.4 s seen at start-up), which would double the
     * share printed against it */
    const double peak_after = measure_peak(threads, &rank_peak_after);
    if (peak_after > peak) peak = peak_after;
    if (rank_peak_after > rank_peak) rank_peak = rank_peak_after;
    PerfSummary train;
    perf_summarize(&train, dist_min_sum_max, P);
    /* the training profile is printed after the report, and the evaluation's goes into the same table */
    char *train_profile = NULL;
    size_t train_profile_len = 0;
    if (rank0 && cfg->profile) {
        FILE *f = open_memstream(&train_profile, &train_profile_len);
        if (f) {
            perf_profile_report(f, cfg->steps, 0, rank_peak);
            fclose(f);
        }
    }

    /* the seed's validation: one batch-statistics forward over --eval-images (5,000), spread over the
     * ranks; a rank's slice may be empty, but every rank joins the reductions of the forward */
    const int eval_n = cfg->eval_images, rounds = 2;
    Evaluator ev = {0};
    if (eval_n > 0) {
        if (agree_failure(evaluator_init(&ev, &model, eval_n) != 0)) return EXIT_FAILED;
        model.eval_reducer = (StatReducer){dist_stat_sum, NULL};
        int elo, en;
        dist_slice(eval_n, &elo, &en);
        (void)elo;
        synthetic_images(ev.images, ev.labels, en, cfg->seed + 1000 + (uint64_t)rank);
        model_forward(&model, ev.images, en, BN_EVAL_BATCH);   /* warm-up */
        dist_barrier();
        perf_profile_reset();
        perf_profile_enable(cfg->profile);
        perf_start(PERF_VALIDATION);
        for (int i = 0; i < rounds; i++) model_forward(&model, ev.images, en, BN_EVAL_BATCH);
        dist_barrier();
        perf_stop(PERF_VALIDATION);
        perf_profile_enable(0);
    }
    PerfSummary all;
    perf_summarize(&all, dist_min_sum_max, P);
    if (rank0) {
        report(cfg, &model, &train, &all, threads, eval_n, rounds, peak, buckets);
        if (train_profile) fputs(train_profile, stdout);
        if (cfg->profile && eval_n > 0) perf_profile_report(stdout, rounds, 1, rank_peak);
        fflush(stdout);
    }
    free(train_profile);
    if (eval_n > 0) evaluator_free(&ev);
    optim_free(&opt);
    model_free(&model);
    rn_free(images);
    rn_free(labels);
    return EXIT_OK;
}
