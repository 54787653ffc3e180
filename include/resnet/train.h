/* The train subcommand: the step loop, validation cadence, early stopping, checkpoints, signals and the
 * end-of-run test. Returns the process exit code. */
#ifndef RESNET_TRAIN_H
#define RESNET_TRAIN_H

#include "resnet/config.h"

int train_main(Config *cfg);

/* The seed's early-stopping rule and its alternatives, as pure state updates (tested alone).
 * Returns 1 when training should stop after this validation. */
int early_stop_update(int rule, int patience, double val_acc, double *prev_val_acc, double *best_val_acc,
                      int *non_increase_count);

#endif
