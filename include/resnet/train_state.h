/* Where training stands and what its validations said: the state a checkpoint saves so that a run
 * continues bit for bit (checkpoint.c writes and reads it, train.c keeps it, report.c reports it). */
#ifndef RESNET_TRAIN_STATE_H
#define RESNET_TRAIN_STATE_H

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

/* 0, or -1 with rn_error (out of memory); a failure leaves the history as it was. */
int history_append(History *h, long step, long epoch, double train_loss, double val_acc, double time_s);
void history_free(History *h);

#endif
