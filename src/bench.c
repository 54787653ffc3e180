/* The benchmark: full training steps (forward, backward, allreduce, optimizer) on synthetic data, timed
 * per phase, and the seed's validation (batch statistics over a whole 5,000-image set) timed alone. */
#include "resnet/trainer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "resnet/conv.h"
#include "resnet/dist.h"
#include "resnet/evaluate.h"
#include "resnet/optim.h"
#include "resnet/resnet.h"
#include "resnet/rng.h"
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

int bench_main(Config *cfg) {
    const int P = dist_size(), rank = dist_rank(), rank0 = rank == 0;
    const int threads = choose_threads(cfg->threads, 0);
    const int B = cfg->batch_size;
    if (B < P) {
        if (rank0) fprintf(stderr, "resnet_mpi: --batch-size %d is smaller than the %d ranks\n", B, P);
        return EXIT_USAGE;
    }
    const int lo = (int)((long)B * rank / P), n = (int)((long)B * (rank + 1) / P) - lo;
    ModelConfig mc = config_model(cfg, BENCH_CHANNELS, BENCH_SIZE, BENCH_CLASSES);
    OptimConfig oc;
    config_optim(cfg, &oc);
    Model model;
    Optimizer opt = {0};
    const size_t pixels = (size_t)BENCH_CHANNELS * BENCH_SIZE * BENCH_SIZE;
    float *images = NULL;
    int *labels = NULL;
    int failed = model_init(&model, &mc, cfg->seed) || model_reserve(&model, n, 1) ||
                 optim_init(&opt, &oc, model.num_params) ||
                 !(images = rn_alloc(sizeof(float) * pixels * n)) || !(labels = rn_alloc(sizeof(int) * n));
    if (agree_failure(failed)) return EXIT_FAILED;
    if (cfg->sync_bn) model.train_reducer = (StatReducer){dist_stat_sum, NULL};
    synthetic_images(images, labels, n, cfg->seed + (uint64_t)rank);

    double t_compute = 0, t_comm = 0, t_opt = 0;
    double start = 0;
    for (int s = 0; s < cfg->warmup + cfg->steps; s++) {
        if (s == cfg->warmup) {
            dist_barrier();
            start = rn_now();
            t_compute = t_comm = t_opt = 0;
            model_profile_reset();
            model_profile_enable(cfg->profile);
        }
        double t0 = rn_now();
        model_zero_grad(&model);
        model_forward(&model, images, n, BN_TRAIN);
        model_loss(&model, labels, n, B);
        model_backward(&model);
        double t1 = rn_now();
        dist_allreduce_sum_float(model.grads, model.num_params);
        double t2 = rn_now();
        optim_step(&opt, model.params, model.grads, oc.lr);
        double t3 = rn_now();
        t_compute += t1 - t0;
        t_comm += t2 - t1;
        t_opt += t3 - t2;
    }
    dist_barrier();
    const double elapsed = rn_now() - start;
    model_profile_enable(0);
    const long train_rss = (long)dist_max_double((double)rn_peak_rss_kib());
    const double comm_share = dist_max_double(t_comm) / elapsed;
    const double train_ips = (double)B * cfg->steps / elapsed;
    const double train_flops = model_flops_per_image(&model, 1);

    /* the seed's validation: one batch-statistics forward over 5,000 images, spread over the ranks */
    const int eval_n = 5000;
    Evaluator ev;
    double eval_ips = 0;
    if (agree_failure(evaluator_init(&ev, &model, eval_n) != 0)) return EXIT_FAILED;
    model.eval_reducer = (StatReducer){dist_stat_sum, NULL};
    {
        const int elo = (int)((long)eval_n * rank / P), en = (int)((long)eval_n * (rank + 1) / P) - elo;
        synthetic_images(ev.images, ev.labels, en, cfg->seed + 1000 + (uint64_t)rank);
        const int rounds = 2;
        model_forward(&model, ev.images, en, BN_EVAL_BATCH);   /* warm-up */
        dist_barrier();
        double e0 = rn_now();
        for (int i = 0; i < rounds; i++) model_forward(&model, ev.images, en, BN_EVAL_BATCH);
        dist_barrier();
        eval_ips = eval_n * rounds / (rn_now() - e0);
    }
    const long rss = (long)dist_max_double((double)rn_peak_rss_kib());
    if (rank0) {
        printf("resnet_mpi bench: %s depth %d, %zu parameters, global batch %d, %d rank(s) x %d thread(s), "
               "%d steps after %d warm-up, BLIS kernels %s\n",
               cfg->arch == ARCH_SEED ? "seed" : "paper", cfg->depth, model.num_params, B, P, threads, cfg->steps,
               cfg->warmup, compute_kernel_name());
        printf("train: %.1f images/s, %.1f ms/step, %.1f GFLOP/s (compute %.1f%%, allreduce %.1f%%, optimizer %.1f%%)\n",
               train_ips, 1000.0 * elapsed / cfg->steps, train_ips * train_flops * 1e-9,
               100.0 * t_compute / elapsed, 100.0 * comm_share, 100.0 * t_opt / elapsed);
        printf("eval: %.1f images/s, %.1f GFLOP/s (batch statistics over %d images)\n", eval_ips,
               eval_ips * model_flops_per_image(&model, 0) * 1e-9, eval_n);
        printf("peak memory: %.0f MiB per rank training, %.0f MiB with the 5,000-image evaluation (max over ranks)\n",
               train_rss / 1024.0, rss / 1024.0);
        if (cfg->profile) model_profile_report(stdout, cfg->steps);
        fflush(stdout);
    }
    evaluator_free(&ev);
    optim_free(&opt);
    model_free(&model);
    rn_free(images);
    rn_free(labels);
    return EXIT_OK;
}
