/* The run report: at the end of a training run rank 0 writes DIR/report.md (for people) and
 * DIR/report.json (for scripts) into the checkpoint folder: the command line and settings, the data and
 * split, why training stopped, the best validation, the test results, time per phase, throughput,
 * core-hours, peak memory and the checkpoints written. scripts/plot.py adds its pictures to report.md. */
#ifndef RESNET_REPORT_H
#define RESNET_REPORT_H

#include "resnet/train_state.h"
#include "resnet/config.h"

#define REPORT_FORMAT "resnet-mpi report"
#define REPORT_FORMAT_VERSION 1

/* What the trainer knows at the end of a run. Pointers are borrowed for the call. */
typedef struct {
    const Settings *settings;       /* every setting of the run, as in the checkpoint's /config */
    const TrainState *ts;           /* step, epoch, best validation, stop reason */
    const char *checkpoint_dir, *metrics_path;
    const char *resumed_from;       /* the checkpoint this run continued, or NULL */
    int num_train, num_val, num_test, classes;
    const char (*class_names)[32];
    const long *test_confusion;     /* classes x classes (true row, predicted column); NULL: no test */
    const char *test_protocol;      /* --eval-protocol of test_confusion (and of the validations) */
    double test_other_accuracy;     /* the test accuracy under the other protocol */
    double ema;                     /* --ema DECAY, 0: off */
    double test_ema_accuracy[2];    /* with ema: the average's test accuracy, under test_protocol and the other */
    long steps_this_run;            /* optimizer steps this process took */
    int batch_size, ranks, threads, exit_code;
    double seconds_this_run;        /* wall time of this process's training loop and test */
    double training_seconds_total;  /* this run and the runs it resumed */
    double flops_per_image;         /* one training step's forward + backward */
} RunFacts;

/* Keeps the program's argv for the report (main calls it once). */
void report_set_command_line(int argc, char **argv);

/* Collective: reduces the phase timers and peak memory over ranks; rank 0 then writes report.md and
 * report.json, each atomically (temporary file, fsync, rename). Returns 0, or -1 on rank 0 with
 * rn_error when a file could not be written (the run's result does not depend on it). */
int report_write(const RunFacts *facts);

#endif
