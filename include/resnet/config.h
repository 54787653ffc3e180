/* Every setting of a run, its defaults, the recipes, and the validation of every value. Settings travel
 * as key/value strings (the command line, the checkpoint's /config attributes) and are parsed here only,
 * from one table in config.c that also writes them back and prints --help. */
#ifndef RESNET_CONFIG_H
#define RESNET_CONFIG_H

#include <stdint.h>
#include <stdio.h>
#include "resnet/resnet.h"
#include "resnet/optim.h"
#include "resnet/settings.h"

typedef enum { EARLY_STOP_SEED = 0, EARLY_STOP_BEST, EARLY_STOP_OFF } EarlyStopRule;
typedef enum { PROGRESS_AUTO = 0, PROGRESS_ALWAYS, PROGRESS_NEVER } ProgressMode;
typedef enum { LR_SCALING_NONE = 0, LR_SCALING_LINEAR, LR_SCALING_SQRT } LrScaling;

typedef struct {
    char command[16];         /* train | eval | bench */
    /* data */
    char data_dir[512];
    char dataset[32];         /* cifar10 | fashion-mnist */
    int val_size;
    uint64_t split_seed;
    long limit_train;         /* 0: all */
    int augment;
    /* model */
    char recipe[16];          /* tuned | seed | paper */
    Arch arch;
    int depth;
    /* optimization */
    OptimizerKind optimizer;
    float lr, weight_decay, momentum;
    int nesterov;
    ScheduleKind schedule;
    int num_milestones;
    long milestones[SCHED_MAX_MILESTONES];
    int batch_size;           /* global; with batch_per_rank, set to batch_per_rank x ranks at start-up */
    int batch_per_rank;       /* 0: batch_size decides */
    LrScaling lr_scaling;     /* the schedule's rate is lr x config_lr_factor */
    int base_batch;           /* the global batch lr is meant for */
    long warmup_steps;
    float warmup_epochs;      /* 0, or the warmup in epochs (rounded up to steps) */
    int epochs;
    long max_steps;           /* 0: no limit */
    int eval_every;           /* batches within an epoch; 0: at the end of each epoch */
    EarlyStopRule early_stop;
    int patience;
    BnMode bn_eval;           /* BN_EVAL_BATCH, BN_EVAL_RUNNING or BN_EVAL_REFERENCE */
    int bn_sample;            /* images the reference statistics are measured over */
    int sync_bn;
    double ema;               /* --ema DECAY: the parameters' moving average (ema.h); 0: off */
    int ema_warmup;           /* --ema-warmup on|off: the early updates' smaller decay (ema.h) */
    int validate_raw;         /* --validate-raw on|off: with --ema, also validate the trained weights */
    uint64_t seed;
    /* machine */
    int threads;              /* 0: cores on the node / ranks on the node */
    float bucket_mb;          /* gradient allreduce in buckets of this many MiB; 0: one after the backward */
    double timeout;           /* stall watchdog, seconds; 0: off; -1: auto (from the run's own pace) */
    /* output */
    char checkpoint_dir[512];
    long checkpoint_every;    /* steps; 0: only at validations and the end */
    int keep;                 /* numbered snapshots kept; 0: none */
    char resume[512];         /* "", a file, or "auto" */
    int overwrite;            /* a fresh run may replace the checkpoints of --checkpoint-dir */
    char metrics[512];        /* "" : checkpoint_dir/metrics.jsonl */
    ProgressMode progress;
    int quiet;
    /* eval */
    char checkpoint[512];
    char split[8];            /* test | val */
    int json;
    char eval_protocol[8];    /* clean | seed */
    char tta[8];              /* none | flip */
    char weights[8];          /* raw | ema; "": ema when the checkpoint has one, else raw */
    /* bench */
    int steps, warmup, eval_images, profile;

    Settings given;           /* the options the user gave, as typed (key without "--") */
} Config;

/* The defaults: the tuned recipe (the seed's with weight averaging and reference BN statistics). */
void config_defaults(Config *c);
/* Resume and eval of a file whose /config lacks a recipe setting (written before the setting existed):
 * that setting takes the file's recipe's value (seed for files older than the recipes), not today's
 * default, unless the user gave it. */
void config_fill_missing(Config *c, const Settings *file);
/* Applies one option by its long name without dashes ("lr", "batch-size"). 0, or -1 with rn_error
 * naming the flag and the bad value. Flags without a value take "1" (or "0" for no-augment etc.). */
int config_set(Config *c, const char *key, const char *value);
/* Parses argv (subcommand and options). 0 ok, 1 --help/--version printed, -1 usage error (rn_error). */
int config_parse(Config *c, int argc, char **argv);
/* Cross-checks after parsing (e.g. bn-eval running needs the paper arch). 0 or -1 with rn_error. */
int config_validate(const Config *c);
/* Every training setting as strings, for the checkpoint's /config. */
void config_to_settings(const Config *c, Settings *out);
ModelConfig config_model(const Config *c, int in_channels, int image_size, int classes);
void config_optim(const Config *c, OptimConfig *out);
/* --lr-scaling's factor at the config's global batch: 1, B / base, or sqrt(B / base). */
double config_lr_factor(const Config *c);
/* The warmup in steps: --warmup-steps, or --warmup-epochs x steps per epoch rounded up. */
long config_warmup_steps(const Config *c, long steps_per_epoch);
void config_schedule(const Config *c, long steps_per_epoch, Schedule *out);
void config_usage(FILE *out);
/* Checks the settings table against itself (field sizes fit the types, stated defaults match the
 * table's, recipe rows have both values). 0, or -1 with rn_error naming the row. For the tests. */
int config_check_table(void);

#endif
