/* HDF5 checkpoints (layout in the design's INTERFACE.md). Every HDF5 call of the program lives in
 * checkpoint.c. Writes are atomic: a temporary file in the same folder, flushed, fsync'd, renamed over
 * the old one, then the folder fsync'd. */
#ifndef RESNET_CHECKPOINT_H
#define RESNET_CHECKPOINT_H

#include "resnet/resnet.h"
#include "resnet/optim.h"
#include "resnet/settings.h"

#define CHECKPOINT_FORMAT "resnet-mpi checkpoint"
#define CHECKPOINT_FORMAT_VERSION 1

/* Where training stands: enough to continue bit for bit. */
typedef struct {
    long epoch;               /* 0-based epoch in progress */
    long step;                /* optimizer updates done */
    long batch_in_epoch;      /* batches of `epoch` done */
    double best_val_acc;      /* -1 before any validation */
    long best_step;
    double prev_val_acc;      /* -inf before any validation (the seed's prevValAccuracy) */
    int non_increase_count;
    double running_loss_sum;  /* losses since the last report */
    int running_loss_count;
    double elapsed_s;         /* training wall time so far */
    char stop_reason[64];     /* "" while running */
} TrainState;

/* One entry per validation. */
typedef struct {
    int count, capacity;
    long *step, *epoch;
    double *train_loss, *val_acc, *time_s;
} History;

int history_append(History *h, long step, long epoch, double train_loss, double val_acc, double time_s);
void history_free(History *h);

/* Writes path atomically. settings: every setting of the run (/config attributes, numbers typed).
 * 0, or -1 with rn_error (the previous file at path is then untouched). */
int checkpoint_write(const char *path, const Model *m, const Optimizer *opt, const TrainState *ts,
                     const History *h, const Settings *settings);

/* Reads /config into settings (before a model can be built). 0 or -1 with rn_error (not a file, not
 * HDF5, not a resnet-mpi checkpoint, wrong format_version). */
int checkpoint_read_settings(const char *path, Settings *settings);

/* Loads /model into m (which must be built with the file's configuration: every name and shape must
 * match, else -1), and where not NULL /optimizer into opt, /train into ts, /history into h. */
int checkpoint_read(const char *path, Model *m, Optimizer *opt, TrainState *ts, History *h);

#endif
