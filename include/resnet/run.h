/* What every subcommand does first, below train, eval and bench: exit codes, signals, thread choice,
 * applying a checkpoint's settings, agreeing on failure. (The tests' hooks are hooks.h.) */
#ifndef RESNET_RUN_H
#define RESNET_RUN_H

#include "resnet/config.h"
#include "resnet/imageset.h"
#include "resnet/optim.h"
#include "resnet/resnet.h"

#define EXIT_OK 0
#define EXIT_FAILED 1
#define EXIT_USAGE 2
#define EXIT_SIGNALLED 75

/* Resume and eval: the checkpoint's /config fills every setting the user did not give; given ones
 * that differ are applied (and reported when report != 0); another arch, depth or data set is an error.
 * 0, or an exit code with rn_error: EXIT_FAILED when the file cannot be read or its /config holds a bad
 * value, EXIT_USAGE when a flag given conflicts with it. evaluating: the message says "evaluate". */
int config_merge_checkpoint(Config *cfg, const char *path, int report, int evaluating);

/* Collective: 0 when no rank failed; else the lowest failing rank prints its rn_last_error() and every
 * rank gets 1. */
int agree_failure(int failed);

/* agree_failure with exit codes: 0 when every rank passed 0; else the message of the lowest failing rank
 * is printed and every rank gets the largest code any rank passed (EXIT_USAGE over EXIT_FAILED). */
int agree_exit(int code);

/* Handlers for SIGINT, SIGTERM and SIGUSR1 (unblocked if the launcher blocked them). Until the step
 * loop starts a signal ends the process at once with a one-line message: exit 75 for training (nothing
 * was written; --resume auto continues), 1 for eval and bench. Call after dist_init. */
void signals_install(int training);

/* The checkpoint's /config records the image shape and classes its model was trained on: the data must
 * have the same (the model would run on other sizes without complaint). 0 or -1 with rn_error. */
int check_data_matches_checkpoint(const char *checkpoint, const ImageSet *set, const char *data_dir);

/* After a failed data load: when the data folder came from checkpoint's /config (no --data given), the
 * rn_error message is extended to say so. */
void note_data_from_checkpoint(const Config *cfg, const char *checkpoint);

/* The convolution kernels: the path RESNET_ISA (hooks.h) names, else the fastest the CPU runs. Before any
 * model is sized. 0, or EXIT_USAGE on every rank when a rank's CPU lacks the path asked for or the name is
 * none (the lowest such rank's message printed). Collective. */
int choose_kernels(void);

/* Sets and returns the compute threads of this rank (0: the node's cores over its ranks). */
int choose_threads(int requested, int quiet);

/* The FMA peak (peak.c) of `threads` threads on every rank at once, as they will compute: returns the
 * sum over ranks, and this rank's own in *rank_peak unless NULL. Collective. */
double measure_peak(int threads, double *rank_peak);

/* optim_init for the model's parameters; LAMB's layers are the model's parameter tensors. 0 or -1. */
int optimizer_setup(Optimizer *opt, const OptimConfig *oc, const Model *m);

/* The gradient's reduction over ranks, as train and bench both step. bucket_mb > 0 (--bucket-mb): in
 * buckets started during model_backward (Model.grads_final); 0: one allreduce after it. finish: what is
 * left once the backward is done (with buckets, the part the backward did not hide). Collective.
 * setup returns the number of buckets (0: one allreduce after the backward). */
int gradient_reduction_setup(Model *m, float bucket_mb);
void gradient_reduction_finish(Model *m);

/* The step loop has started: from now on a signal sets the flag stop_requested() reads, and the loop
 * stops every rank at the same step. */
void signals_startup_over(void);
int stop_requested(void);

/* mkdir -p. 0 or -1 with rn_error. */
int mkdir_p(const char *path);

#endif
