/* The subcommands: train (the step loop, validation cadence, early stopping, checkpoints, signals, the
 * end-of-run test), eval of a checkpoint, and the benchmark. Each returns the process exit code. */
#ifndef RESNET_TRAINER_H
#define RESNET_TRAINER_H

#include "resnet/config.h"

#define EXIT_OK 0
#define EXIT_FAILED 1
#define EXIT_USAGE 2
#define EXIT_SIGNALLED 75

int train_main(Config *cfg);
int eval_main(Config *cfg);
int bench_main(Config *cfg);

/* The seed's early-stopping rule and its alternatives, as pure state updates (tested alone).
 * Returns 1 when training should stop after this validation. */
int early_stop_update(int rule, int patience, double val_acc, double *prev_val_acc, double *best_val_acc,
                      int *non_increase_count);

/* Resume and eval: the checkpoint's /config fills every setting the user did not give; given ones
 * that differ are applied (and reported when report != 0); another arch, depth or data set is an error.
 * 0 or -1 with rn_error. */
int config_merge_checkpoint(Config *cfg, const char *path, int report);

/* Collective: 0 when no rank failed; else the lowest failing rank prints its rn_last_error() and every
 * rank gets 1. */
int agree_failure(int failed);

/* Sets and returns the compute threads of this rank (0: the node's cores over its ranks). */
int choose_threads(int requested, int quiet);

#endif
