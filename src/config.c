/* Settings, defaults, the three recipes and the command line, all generated from one table (`table[]`
 * below). A row is one flag: its long name (also its key in the checkpoint's /config), the Config field
 * it sets, its type and range, the subcommands that take it, whether a checkpoint keeps it, the seed
 * recipe's and the paper recipe's value, and its --help line. The default recipe, tuned, is the seed's
 * with the few changes in `tuned_changes[]`. Parsing, validation, writing
 * back for /config and --help are loops over the table, so adding a flag is adding a row (and its
 * Config field). Every value a user or a checkpoint gives passes through config_set: one place decides
 * what is valid, with one spelling of each key. */
#include "resnet/config.h"

#include <errno.h>
#include <float.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "resnet/util.h"

#define DEFAULT_CIFAR_DIR "data/cifar-10-batches-bin"
#define DEFAULT_FASHION_DIR "/usr/share/datasets/fashion-mnist"
/* ResNet-1202 is the deepest CIFAR network of He et al.; anything deeper is a typo, not an experiment. */
#define DEPTH_MAX 1202
/* Generous but finite, so that epochs * steps_per_epoch and friends cannot overflow a long. */
#define STEP_LIMIT 1000000000000L
/* a week: beyond that a deadline is a typo, and MPI_Wtime arithmetic stays exact */
#define TIMEOUT_MAX_S 604800.0

/* ---- the settings table ----------------------------------------------------------------------------- */

typedef enum {
    FLAG,            /* int 0/1; given without a value on the command line */
    NOT_FLAG,        /* the inverse of a saved FLAG row with the same field (--no-augment of augment) */
    INT,             /* int, lo..hi */
    LONG,            /* long, lo..hi */
    U64,             /* uint64_t */
    FLOAT,           /* float, lo <= x, and x < hi where hi > lo */
    POSITIVE,        /* float > 0 */
    NAME,            /* char[]: one of names */
    ENUM,            /* an enum: one of names, stored as lo + its index */
    PATH,            /* char[], not empty */
    PATH_OR_EMPTY,   /* char[] */
    DEPTH,           /* int 6n+2 from 8 to DEPTH_MAX */
    EVAL_EVERY,      /* int > 0, or "epoch" stored as 0 */
    MILESTONES,      /* increasing steps "S1,S2,..." into milestones[] and num_milestones */
    SECONDS,         /* double 0..hi, or "auto" stored as -1 */
    DECAY,           /* double: 0 (off), or in (0, 1) */
} ValueType;

/* Where a row applies: the subcommands that take it on the command line, and SAVED when the checkpoint's
 * /config keeps it (then a resume or an eval restores it from the file unless the user gives it). */
enum { TRAIN = 1, EVAL = 2, BENCH = 4, ALL = 7, SAVED = 8 };

typedef enum { G_DATA, G_MODEL, G_RECIPE, G_OPTIM, G_MACHINE, G_OUTPUT, G_EVAL, G_BENCH, G_HIDDEN } Group;

static const struct {
    const char *title, *footer;
} groups[] = {
    [G_DATA] = {"Data:", NULL},
    [G_MODEL] = {"Model:", NULL},
    [G_RECIPE] = {"Recipe:",
                  "      tuned: the seed recipe with --ema 0.999 --ema-warmup on --bn-eval reference\n"
                  "             --validate-raw off (the default)\n"
                  "      seed:  --arch seed --optimizer adam --lr 1e-3 --weight-decay 1e-4 --batch-size 128\n"
                  "             --epochs 50 --schedule constant --early-stop seed --bn-eval batch --ema 0\n"
                  "             --ema-warmup off --validate-raw on --eval-every 50 (the seed notebook's\n"
                  "             semantics)\n"
                  "      paper: --arch paper --optimizer sgd --momentum 0.9 --lr 0.1 --weight-decay 1e-4\n"
                  "             --batch-size 128 --max-steps 64000 (--epochs does not cap it) --schedule step\n"
                  "             --milestones 32000,48000 --bn-eval running --eval-every epoch --early-stop off\n"
                  "             --ema 0 --ema-warmup off --validate-raw on\n"},
    [G_OPTIM] = {"Optimization:", NULL},
    [G_MACHINE] = {"Machine:", NULL},
    [G_OUTPUT] = {"Output:", NULL},
    [G_EVAL] = {"eval (also takes the data, model and machine options):", NULL},
    [G_BENCH] = {"bench (also takes --arch, --depth, --batch-size, --threads, ...):", NULL},
};

typedef struct {
    const char *key;              /* the flag without "--" */
    size_t offset, size;          /* the Config field */
    ValueType type;
    double lo, hi;                /* range (see ValueType) */
    const char *const *names;     /* NAME, ENUM */
    int scope;
    const char *value;            /* the seed recipe's value, the default unless tuned_changes[] has the
                                   * row (NULL: zero or empty) */
    const char *paper;            /* a recipe setting: the paper recipe's value (NULL: not a recipe setting) */
    Group group;                  /* where --help lists it */
    const char *meta, *help;      /* "--key META  help"; a '\n' in help starts an indented line */
} SettingDef;

static const char *const dataset_names[] = {"cifar10", "fashion-mnist", NULL};
static const char *const arch_names[] = {"seed", "paper", NULL};                /* Arch order */
static const char *const recipe_names[] = {"tuned", "seed", "paper", NULL};
static const char *const early_stop_names[] = {"seed", "best", "off", NULL};    /* EarlyStopRule order */
static const char *const eval_protocol_names[] = {"clean", "seed", NULL};
static const char *const tta_names[] = {"none", "flip", NULL};
static const char *const lr_scaling_names[] = {"none", "linear", "sqrt", NULL};   /* LrScaling order */
static const char *const bn_eval_names[] = {"batch", "running", "reference", NULL};          /* from BN_EVAL_BATCH */
static const char *const progress_names[] = {"auto", "always", "never", NULL};  /* ProgressMode order */
static const char *const split_names[] = {"test", "val", NULL};
static const char *const weights_names[] = {"raw", "ema", NULL};
static const char *const off_on_names[] = {"off", "on", NULL};

#define F(field) offsetof(Config, field), sizeof(((Config *)0)->field)

/* In --help order within each group. The paper recipe's 1000000 epochs only have to be too many to end
 * its 64,000 steps first. */
static const SettingDef table[] = {
    /* key, field, type, lo, hi, names, scope, default, paper, group, meta, help */
    {"data", F(data_dir), PATH, 0, 0, NULL, ALL | SAVED, NULL, NULL, G_DATA, "DIR",
     "data set folder (default: $RESNET_DATA, else data/cifar-10-batches-bin;\n"
     "for fashion-mnist /usr/share/datasets/fashion-mnist);\nget CIFAR-10 with scripts/get-cifar10.sh"},
    {"dataset", F(dataset), NAME, 0, 0, dataset_names, ALL | SAVED, "cifar10", NULL, G_DATA, "NAME",
     "cifar10 | fashion-mnist (default cifar10)"},
    {"val-size", F(val_size), INT, 1, INT_MAX, NULL, ALL | SAVED, "5000", NULL, G_DATA, "N",
     "training records held out for validation (default 5000)"},
    {"split-seed", F(split_seed), U64, 0, 0, NULL, ALL | SAVED, "0", NULL, G_DATA, "N",
     "seed of the train/validation split (default 0)"},
    {"limit-train", F(limit_train), LONG, 0, INT_MAX, NULL, ALL | SAVED, "0", NULL, G_DATA, "N",
     "use only the first N training records, for quick runs (default 0: all)"},
    {"no-augment", F(augment), NOT_FLAG, 0, 0, NULL, ALL, NULL, NULL, G_DATA, NULL,
     "no random flips and crops of training images"},
    {"augment", F(augment), FLAG, 0, 0, NULL, SAVED, "1", NULL, G_HIDDEN, NULL, NULL},
    {"arch", F(arch), ENUM, ARCH_SEED, 0, arch_names, ALL | SAVED, "seed", "paper", G_MODEL, "seed|paper",
     "the seed's network (one BN per block, batch statistics) or He et al.'s\n(default seed)"},
    {"depth", F(depth), DEPTH, 0, 0, NULL, ALL | SAVED, "20", NULL, G_MODEL, "N",
     "6n+2 from 8 to 1202: 20, 32, 44, 56, 110, ... (default 20)"},
    {"recipe", F(recipe), NAME, 0, 0, recipe_names, ALL | SAVED, "tuned", NULL, G_RECIPE, "NAME",
     "tuned | seed | paper: sets the defaults below (default tuned); any flag\ngiven overrides it"},
    {"optimizer", F(optimizer), ENUM, OPT_ADAM, 0, optim_names, ALL | SAVED, "adam", "sgd", G_OPTIM, "NAME",
     "adam | adamw | sgd | lamb (Adam's moments, each layer's update scaled to\nlr x its weights' norm: large batches) (default adam)"},
    {"lr", F(lr), POSITIVE, 0, 0, NULL, ALL | SAVED, "1e-3", "0.1", G_OPTIM, "X",
     "base learning rate, > 0 (default 1e-3)"},
    {"weight-decay", F(weight_decay), FLOAT, 0, 0, NULL, ALL | SAVED, "1e-4", "1e-4", G_OPTIM, "X",
     "L2 (adam, sgd) or decoupled (adamw, lamb) decay, >= 0 (default 1e-4)"},
    {"momentum", F(momentum), FLOAT, 0, 1, NULL, ALL | SAVED, "0.9", "0.9", G_OPTIM, "X",
     "sgd momentum in [0, 1) (default 0.9)"},
    {"nesterov", F(nesterov), FLAG, 0, 0, NULL, ALL | SAVED, "0", "0", G_OPTIM, NULL,
     "Nesterov momentum (sgd with momentum > 0)"},
    {"schedule", F(schedule), ENUM, SCHED_CONSTANT, 0, schedule_names, ALL | SAVED, "constant", "step", G_OPTIM,
     "NAME", "constant | step | cosine learning rate (default constant)"},
    {"milestones", F(milestones), MILESTONES, 0, 0, NULL, ALL | SAVED, "none", "32000,48000", G_OPTIM, "S1,S2",
     "step schedule: lr divided by 10 at these steps (at most 8)"},
    {"batch-size", F(batch_size), INT, 1, 65536, NULL, ALL | SAVED, "128", "128", G_OPTIM, "N",
     "global batch over all ranks, 1..65536 (default 128)"},
    {"batch-per-rank", F(batch_per_rank), INT, 0, 65536, NULL, ALL | SAVED, "0", NULL, G_OPTIM, "N",
     "images per rank instead: the global batch is N x ranks, on a resume too\n(default 0: --batch-size decides)"},
    {"lr-scaling", F(lr_scaling), ENUM, LR_SCALING_NONE, 0, lr_scaling_names, ALL | SAVED, "none", NULL, G_OPTIM,
     "RULE", "none | linear | sqrt: --lr times (global batch / --base-batch), or its\nsquare root (default none)"},
    {"base-batch", F(base_batch), INT, 1, 65536, NULL, ALL | SAVED, "128", NULL, G_OPTIM, "N",
     "the global batch --lr is meant for (default 128)"},
    {"warmup-steps", F(warmup_steps), LONG, 0, STEP_LIMIT, NULL, ALL | SAVED, "0", NULL, G_OPTIM, "N",
     "linear warmup: step s runs at (s+1)/N of the schedule's rate (default 0)"},
    {"warmup-epochs", F(warmup_epochs), FLOAT, 0, 1000000, NULL, ALL | SAVED, "0", NULL, G_OPTIM, "X",
     "the warmup in epochs, rounded up to steps (default 0)"},
    {"epochs", F(epochs), INT, 1, 1000000, NULL, ALL | SAVED, "50", "1000000", G_OPTIM, "N",
     "at most N epochs, 1..1000000 (default 50)"},
    {"max-steps", F(max_steps), LONG, 0, STEP_LIMIT, NULL, ALL | SAVED, "0", "64000", G_OPTIM, "N",
     "stop after N optimizer steps (default 0: no limit)"},
    {"eval-every", F(eval_every), EVAL_EVERY, 0, 0, NULL, ALL | SAVED, "50", "epoch", G_OPTIM, "N|epoch",
     "validate every N batches of an epoch, or at its end (default 50)"},
    {"early-stop", F(early_stop), ENUM, EARLY_STOP_SEED, 0, early_stop_names, ALL | SAVED, "seed", "off", G_OPTIM,
     "RULE", "seed (accuracy not above the previous check) | best | off (default seed)"},
    {"patience", F(patience), INT, 1, INT_MAX, NULL, ALL | SAVED, "5", NULL, G_OPTIM, "N",
     "checks without improvement tolerated before stopping (default 5)"},
    {"bn-eval", F(bn_eval), ENUM, BN_EVAL_BATCH, 0, bn_eval_names, ALL | SAVED, "batch", "running", G_OPTIM, "MODE",
     "batch (statistics of the evaluated set) | running (paper arch only) |\nreference (statistics measured over --bn-sample augmented training images\nat every validation and checkpoint, saved in it) (default reference;\n--recipe seed: batch)"},
    {"bn-sample", F(bn_sample), INT, 1, 1000000, NULL, ALL | SAVED, "2048", NULL, G_OPTIM, "N",
     "--bn-eval reference: training images the statistics are measured over,\nat most the training records (default 2048)"},
    {"sync-bn", F(sync_bn), FLAG, 0, 0, NULL, ALL | SAVED, NULL, NULL, G_OPTIM, NULL,
     "batch statistics over the global batch, not each rank's slice"},
    {"ema", F(ema), DECAY, 0, 0, NULL, TRAIN | SAVED, "0", "0", G_OPTIM, "DECAY",
     "exponential moving average of the parameters (PyTorch's AveragedModel,\n"
     "avg = DECAY x avg + (1 - DECAY) x p after every step), validated and\n"
     "checkpointed (/ema) beside the raw weights; early stopping and best.h5\n"
     "then follow its validation accuracy; 0 < DECAY < 1, or 0: off\n(default 0.999; --recipe seed: 0)"},
    {"ema-warmup", F(ema_warmup), ENUM, 0, 0, off_on_names, TRAIN | SAVED, "off", "off", G_OPTIM, "on|off",
     "on: the n-th update averages with min(DECAY, (1 + n) / (10 + n)), so that\n"
     "the average of a short run is not mostly its initial weights\n(default on; --recipe seed: off)"},
    {"validate-raw", F(validate_raw), ENUM, 0, 0, off_on_names, TRAIN | SAVED, "on", "on", G_OPTIM, "on|off",
     "with --ema: validate the trained weights too (off: only the average, which\n"
     "early stopping and best.h5 follow; half the validation's cost under\n"
     "--bn-eval reference); without --ema they are always validated\n(default off; --recipe seed: on)"},
    {"seed", F(seed), U64, 0, 0, NULL, ALL | SAVED, "0", NULL, G_OPTIM, "N",
     "seed of initialisation, epoch order and augmentation (default 0)"},
    {"threads", F(threads), INT, 0, 1024, NULL, ALL | SAVED, "0", NULL, G_MACHINE, "N",
     "compute threads per rank, 0..1024 (default 0: the node's cores / its ranks)"},
    {"bucket-mb", F(bucket_mb), FLOAT, 0, 1024, NULL, TRAIN | BENCH, "0", NULL, G_MACHINE, "X",
     "reduce the gradient in buckets of X MiB, each started as soon as the\nbackward has finished it (overlapped with the rest of the backward);\n0: one allreduce after the backward (default 0)"},
    {"timeout", F(timeout), SECONDS, 0, TIMEOUT_MAX_S, NULL, ALL, "auto", NULL, G_MACHINE, "S|auto",
     "stall watchdog: a collective not complete in S seconds names the ranks that\nhave not arrived and ends the job (exit 3); 0 turns it off (default auto:\nthe larger of 120 s and 20 times the median step, validation or checkpoint)"},
    {"checkpoint-dir", F(checkpoint_dir), PATH, 0, 0, NULL, ALL | SAVED, "checkpoints", NULL, G_OUTPUT, "DIR",
     "where last.h5, best.h5 and metrics.jsonl go (default checkpoints)"},
    {"checkpoint-every", F(checkpoint_every), LONG, 0, STEP_LIMIT, NULL, ALL | SAVED, "0", NULL, G_OUTPUT, "N",
     "also checkpoint every N steps (default 0: at validations and the end)"},
    {"keep", F(keep), INT, 0, INT_MAX, NULL, ALL | SAVED, "0", NULL, G_OUTPUT, "N",
     "numbered snapshots kept besides last.h5 and best.h5 (default 0)"},
    {"resume", F(resume), PATH_OR_EMPTY, 0, 0, NULL, ALL, NULL, NULL, G_OUTPUT, "FILE|auto",
     "continue from a checkpoint; auto: DIR/last.h5 if it exists"},
    {"overwrite", F(overwrite), FLAG, 0, 0, NULL, ALL, NULL, NULL, G_OUTPUT, NULL,
     "start afresh in a DIR that holds a run: its last.h5, best.h5 and\nstep-*.h5 are removed first (without --overwrite or --resume such a\nDIR is refused)"},
    {"metrics", F(metrics), PATH_OR_EMPTY, 0, 0, NULL, ALL, NULL, NULL, G_OUTPUT, "FILE",
     "metrics log, JSON lines (default DIR/metrics.jsonl)"},
    {"progress", F(progress), ENUM, PROGRESS_AUTO, 0, progress_names, ALL, "auto", NULL, G_OUTPUT, "MODE",
     "auto (when stderr is a terminal) | always | never (default auto)"},
    {"quiet", F(quiet), FLAG, 0, 0, NULL, ALL, NULL, NULL, G_OUTPUT, NULL, "only the final results"},
    {"checkpoint", F(checkpoint), PATH, 0, 0, NULL, EVAL, NULL, NULL, G_EVAL, "FILE",
     "the checkpoint to evaluate (required)"},
    {"split", F(split), NAME, 0, 0, split_names, EVAL, "test", NULL, G_EVAL, "test|val",
     "the set to score (default test)"},
    {"json", F(json), FLAG, 0, 0, NULL, EVAL, NULL, NULL, G_EVAL, NULL, "print the results as one JSON object"},
    {"eval-protocol", F(eval_protocol), NAME, 0, 0, eval_protocol_names, ALL | SAVED, "clean", NULL, G_EVAL,
     "clean|seed", "validation and test on clean images, or the seed's protocol: each image\nflipped and cropped as in training, from a fixed evaluation draw; the\nother is reported too at the end (default clean)"},
    {"tta", F(tta), NAME, 0, 0, tta_names, EVAL, "none", NULL, G_EVAL, "none|flip",
     "test-time augmentation: flip averages the logits of each image and its\nmirror (default none)"},
    {"weights", F(weights), NAME, 0, 0, weights_names, EVAL, NULL, NULL, G_EVAL, "raw|ema",
     "the trained parameters or their moving average (--ema); default: ema when\nthe checkpoint has one (/ema), else raw"},
    {"steps", F(steps), INT, 1, INT_MAX, NULL, BENCH, "20", NULL, G_BENCH, "N", "timed training steps (default 20)"},
    {"warmup", F(warmup), INT, 0, INT_MAX, NULL, BENCH, "3", NULL, G_BENCH, "N", "untimed steps first (default 3)"},
    {"eval-images", F(eval_images), INT, 0, 1000000, NULL, BENCH, "5000", NULL, G_BENCH, "N",
     "images of the timed evaluation (the seed's validation), 0 for none (default 5000)"},
    {"profile", F(profile), FLAG, 0, 0, NULL, BENCH, NULL, NULL, G_BENCH, NULL,
     "also print where a step's and the evaluation's time goes, per layer"},
};
#define NUM_SETTINGS ((int)(sizeof table / sizeof table[0]))

/* The default recipe: the seed's with these values. Measured on CIFAR-10 (README, Results): the moving
 * average and BN statistics of augmented training images add about 4 points on clean test images
 * without changing a single training step, so they are the default; --recipe seed is the notebook. */
static const struct {
    const char *key, *value;
} tuned_changes[] = {{"ema", "0.999"}, {"ema-warmup", "on"}, {"bn-eval", "reference"}, {"validate-raw", "off"}};
#define NUM_TUNED_CHANGES ((int)(sizeof tuned_changes / sizeof tuned_changes[0]))

static const SettingDef *find_setting(const char *key, size_t len) {
    for (int i = 0; i < NUM_SETTINGS; i++)
        if (strlen(table[i].key) == len && strncmp(table[i].key, key, len) == 0) return &table[i];
    return NULL;
}

/* ---- value parsers: each names the flag and the value in its one-line error ------------------------- */

/* strtol without its leniencies (leading blanks, the empty string as 0, trailing text):
 * 0 an integer, 1 not an integer, 2 outside long (*out then LONG_MIN or LONG_MAX). */
static int read_long(const char *v, long *out) {
    if (!v[0] || v[0] == ' ' || v[0] == '\t') return 1;
    char *end;
    errno = 0;
    *out = strtol(v, &end, 10);
    if (*end) return 1;
    return errno == ERANGE ? 2 : 0;
}

static int parse_long(const char *flag, const char *v, long lo, long hi, long *out) {
    long x;
    const int bad = read_long(v, &x);
    if (bad == 1) return rn_error("--%s: '%s' is not an integer", flag, v);
    if (bad == 2 || x < lo || x > hi) {
        /* an upper bound that only guards against overflow is not worth showing unless it was hit */
        const int unbounded = hi == STEP_LIMIT || hi == INT_MAX;
        if (!unbounded) return rn_error("--%s: %s is out of range %ld..%ld", flag, v, lo, hi);
        if (x < lo) return rn_error("--%s: %s must be at least %ld", flag, v, lo);
        return rn_error("--%s: %s is larger than %ld", flag, v, hi);
    }
    *out = x;
    return 0;
}

static int parse_u64(const char *flag, const char *v, uint64_t *out) {
    char *end;
    errno = 0;
    /* strtoull quietly negates "-1" into 2^64-1 */
    if (v[0] < '0' || v[0] > '9') return rn_error("--%s: '%s' is not a non-negative integer", flag, v);
    unsigned long long x = strtoull(v, &end, 10);
    if (*end) return rn_error("--%s: '%s' is not a non-negative integer", flag, v);
    if (errno == ERANGE) return rn_error("--%s: %s is larger than 2^64-1", flag, v);
    *out = (uint64_t)x;
    return 0;
}

/* The value as the float the program will use: a double that overflows or vanishes in float is caught. */
static int parse_float(const char *flag, const char *v, float *out) {
    char *end;
    errno = 0;
    if (!v[0] || v[0] == ' ' || v[0] == '\t') return rn_error("--%s: '%s' is not a number", flag, v);
    double x = strtod(v, &end);
    if (*end) return rn_error("--%s: '%s' is not a number", flag, v);
    if (!isfinite(x)) return rn_error("--%s: %s is not a finite number", flag, v);
    if (fabs(x) > FLT_MAX) return rn_error("--%s: %s is too large for a float", flag, v);
    *out = (float)x;
    return 0;
}

static int parse_bool(const char *flag, const char *v, int *out) {
    if (strcmp(v, "1") == 0) *out = 1;
    else if (strcmp(v, "0") == 0) *out = 0;
    else return rn_error("--%s takes no value (got '%s'; as a setting it is 0 or 1)", flag, v);
    return 0;
}

/* names[] is NULL-terminated; *out becomes the index of the match */
static int parse_enum(const char *flag, const char *v, const char *const *names, int *out) {
    for (int i = 0; names[i]; i++)
        if (strcmp(v, names[i]) == 0) {
            *out = i;
            return 0;
        }
    char list[256] = "";
    for (int i = 0; names[i]; i++) {
        if (i) strncat(list, ", ", sizeof list - strlen(list) - 1);
        strncat(list, names[i], sizeof list - strlen(list) - 1);
    }
    return rn_error("--%s: '%s' is not one of %s", flag, v, list);
}

static int parse_path(const char *flag, const char *v, int allow_empty, char *out, size_t size) {
    if (!allow_empty && !v[0]) return rn_error("--%s: the path is empty", flag);
    if (strlen(v) >= size) return rn_error("--%s: path longer than %zu characters: '%.60s...'", flag, size - 1, v);
    snprintf(out, size, "%s", v);
    return 0;
}

static int parse_depth(const char *v, int *out) {
    long d;
    if (read_long(v, &d)) return rn_error("--depth: '%s' is not an integer", v);
    if (d < 8 || d > DEPTH_MAX || (d - 2) % 6 != 0)
        return rn_error("--depth: %s is not 6n+2 between 8 and %d (20, 32, 44, 56, 110, ...)", v, DEPTH_MAX);
    *out = (int)d;
    return 0;
}

static int parse_seconds(const char *flag, const char *v, double hi, double *out) {
    if (!strcmp(v, "auto")) {
        *out = -1;
        return 0;
    }
    char *end;
    errno = 0;
    const double x = strtod(v, &end);
    if (!v[0] || v[0] == ' ' || *end || errno == ERANGE || !(x >= 0 && x <= hi))
        return rn_error("--%s: '%s' is not a number of seconds from 0 (off) to %.0f, or 'auto'", flag, v, hi);
    *out = x;
    return 0;
}

/* --ema: a Python float's worth of decay (PyTorch computes 1 - DECAY in double), 0 for off. */
static int parse_decay(const char *flag, const char *v, double *out) {
    char *end;
    errno = 0;
    const double x = strtod(v, &end);
    if (!v[0] || v[0] == ' ' || v[0] == '\t' || *end || errno == ERANGE || !(x >= 0 && x < 1))
        return rn_error("--%s: '%s' is not 0 (off) or a number between 0 and 1 (exclusive)", flag, v);
    *out = x;
    return 0;
}

static int parse_eval_every(const char *v, int *out) {
    long x;
    if (!strcmp(v, "epoch")) x = 0;
    else if (read_long(v, &x) || x < 1 || x > INT_MAX)
        return rn_error("--eval-every: '%s' is not a positive integer or 'epoch'", v);
    *out = (int)x;
    return 0;
}

/* "S1,S2,..." strictly increasing positive steps; "none" or "" is the empty list (as written back). */
static int parse_milestones(const char *flag, const char *v, int *count, long *steps) {
    long parsed[SCHED_MAX_MILESTONES];
    int n = 0;
    if (v[0] && strcmp(v, "none") != 0) {
        const char *p = v;
        for (;;) {
            char *end;
            if (*p < '0' || *p > '9')
                return rn_error("--%s: '%s' is not a list of increasing positive steps S1,S2,...", flag, v);
            errno = 0;
            long x = strtol(p, &end, 10);
            if (errno == ERANGE || x < 1 || x > STEP_LIMIT || (*end && *end != ','))
                return rn_error("--%s: '%s' is not a list of increasing positive steps S1,S2,...", flag, v);
            if (n == SCHED_MAX_MILESTONES)
                return rn_error("--%s: '%s' has more than %d milestones", flag, v, SCHED_MAX_MILESTONES);
            if (n > 0 && x <= parsed[n - 1])
                return rn_error("--%s: '%s' is not increasing (%ld after %ld)", flag, v, x, parsed[n - 1]);
            parsed[n++] = x;
            if (!*end) break;
            p = end + 1;
        }
    }
    *count = n;
    memset(steps, 0, sizeof(long) * SCHED_MAX_MILESTONES);
    memcpy(steps, parsed, sizeof(long) * (size_t)n);
    return 0;
}

/* Parses v as row d's type and stores it in d's field of c. 0, or -1 with rn_error. */
static int set_value(Config *c, const SettingDef *d, const char *v) {
    const char *k = d->key;
    void *field = (char *)c + d->offset;
    int *as_int = field;
    long x = 0;
    float y = 0;
    int e = 0;
    switch (d->type) {
    case FLAG: return parse_bool(k, v, as_int);
    case NOT_FLAG:
        if (parse_bool(k, v, &e)) return -1;
        *as_int = !e;
        return 0;
    case INT:
        if (parse_long(k, v, (long)d->lo, (long)d->hi, &x)) return -1;
        *as_int = (int)x;
        return 0;
    case LONG: return parse_long(k, v, (long)d->lo, (long)d->hi, field);
    case U64: return parse_u64(k, v, field);
    case FLOAT:
    case POSITIVE:
        if (parse_float(k, v, &y)) return -1;
        if (d->type == POSITIVE && !(y > 0)) return rn_error("--%s: %s must be greater than 0", k, v);
        if (d->type == FLOAT && d->hi > d->lo && (y < d->lo || y >= d->hi))
            return rn_error("--%s: %s is not in [%g, %g)", k, v, d->lo, d->hi);
        if (d->type == FLOAT && y < d->lo) return rn_error("--%s: %s must be at least %g", k, v, d->lo);
        *(float *)field = y;
        return 0;
    case NAME:
        if (parse_enum(k, v, d->names, &e)) return -1;
        snprintf(field, d->size, "%s", d->names[e]);
        return 0;
    case ENUM:
        if (parse_enum(k, v, d->names, &e)) return -1;
        *as_int = (int)d->lo + e;
        return 0;
    case PATH:
    case PATH_OR_EMPTY: return parse_path(k, v, d->type == PATH_OR_EMPTY, field, d->size);
    case DEPTH: return parse_depth(v, as_int);
    case EVAL_EVERY: return parse_eval_every(v, as_int);
    case MILESTONES: return parse_milestones(k, v, &c->num_milestones, c->milestones);
    case SECONDS: return parse_seconds(k, v, d->hi, field);
    case DECAY: return parse_decay(k, v, field);
    }
    return rn_error("--%s: no parser for its type", k);
}

/* names[index], or "?" when index is not one of them */
static const char *name_at(const char *const *names, int index) {
    for (int i = 0; names[i]; i++)
        if (i == index) return names[i];
    return "?";
}

/* Row d's value in c as config_set reads it back. "none" rather than an empty milestone list: an HDF5
 * string attribute cannot be empty. Returns buf. */
static const char *format_value(const Config *c, const SettingDef *d, char *buf, size_t size) {
    const void *field = (const char *)c + d->offset;
    const int *as_int = field;
    buf[0] = '\0';
    switch (d->type) {
    case FLAG: snprintf(buf, size, "%d", *as_int ? 1 : 0); break;
    case NOT_FLAG: snprintf(buf, size, "%d", *as_int ? 0 : 1); break;
    case INT:
    case DEPTH: snprintf(buf, size, "%d", *as_int); break;
    case LONG: snprintf(buf, size, "%ld", *(const long *)field); break;
    case U64: snprintf(buf, size, "%" PRIu64, *(const uint64_t *)field); break;
    case FLOAT:
    case POSITIVE: rn_format_float(buf, size, *(const float *)field); break;
    case NAME:
    case PATH:
    case PATH_OR_EMPTY: snprintf(buf, size, "%s", (const char *)field); break;
    case ENUM: snprintf(buf, size, "%s", name_at(d->names, *as_int - (int)d->lo)); break;
    case EVAL_EVERY:
        if (*as_int > 0) snprintf(buf, size, "%d", *as_int);
        else snprintf(buf, size, "epoch");
        break;
    case MILESTONES:
        for (int i = 0; i < c->num_milestones; i++)
            snprintf(buf + strlen(buf), size - strlen(buf), "%s%ld", i ? "," : "", c->milestones[i]);
        if (!buf[0]) snprintf(buf, size, "none");
        break;
    case SECONDS:
        if (*(const double *)field < 0) snprintf(buf, size, "auto");
        else snprintf(buf, size, "%.17g", *(const double *)field);
        break;
    case DECAY: rn_format_double(buf, size, *(const double *)field); break;
    }
    return buf;
}

/* ---- defaults and recipes --------------------------------------------------------------------------- */

/* A recipe setting's value under the named recipe (tuned, seed or paper). */
static const char *recipe_value(const SettingDef *d, const char *recipe) {
    if (!strcmp(recipe, "paper")) return d->paper;
    if (!strcmp(recipe, "tuned"))
        for (int k = 0; k < NUM_TUNED_CHANGES; k++)
            if (!strcmp(tuned_changes[k].key, d->key)) return tuned_changes[k].value;
    return d->value;
}

/* Everything a recipe decides; config_set("recipe") only records the name, because the resume merge
 * replays a checkpoint's settings in whatever order the file keeps them, and a recipe applied there
 * would overwrite values already restored. The values parse (config_check_table). */
static void apply_recipe(Config *c, const char *recipe) {
    for (int i = 0; i < NUM_SETTINGS; i++)
        if (table[i].paper) set_value(c, &table[i], recipe_value(&table[i], recipe));
}

void config_fill_missing(Config *c, const Settings *file) {
    const char *recipe = settings_get(&c->given, "recipe") ? c->recipe : settings_get(file, "recipe");
    int known = 0;
    for (int k = 0; recipe && recipe_names[k]; k++) known |= !strcmp(recipe_names[k], recipe);
    if (!known) recipe = "seed";   /* files older than the recipes: the seed's was the only one */
    for (int i = 0; i < NUM_SETTINGS; i++)
        if (table[i].paper && (table[i].scope & SAVED) && !settings_get(file, table[i].key) &&
            !settings_get(&c->given, table[i].key))
            set_value(c, &table[i], recipe_value(&table[i], recipe));
}

void config_defaults(Config *c) {
    memset(c, 0, sizeof *c);
    snprintf(c->command, sizeof c->command, "train");
    const char *env = getenv("RESNET_DATA");
    snprintf(c->data_dir, sizeof c->data_dir, "%s", env && env[0] ? env : DEFAULT_CIFAR_DIR);
    for (int i = 0; i < NUM_SETTINGS; i++)
        if (table[i].value) set_value(c, &table[i], table[i].value);
    apply_recipe(c, c->recipe);
}

int config_set(Config *c, const char *key, const char *value) {
    const SettingDef *d = find_setting(key, strlen(key));
    if (!d) return rn_error("unknown option --%s; see resnet_mpi --help", key);
    return set_value(c, d, value);
}

void config_to_settings(const Config *c, Settings *out) {
    char buf[512];
    out->count = 0;
    for (int i = 0; i < NUM_SETTINGS; i++)
        if (table[i].scope & SAVED) settings_put(out, table[i].key, format_value(c, &table[i], buf, sizeof buf));
}

/* ---- the command line ------------------------------------------------------------------------------- */

typedef struct {
    const SettingDef *def;
    const char *value;
} Given;

/* The row saved in a checkpoint for the same field as an unsaved one (--no-augment: augment), so that
 * `given` records what a resume must compare against the file; NULL when there is none. */
static const SettingDef *saved_twin(const SettingDef *d) {
    if (d->scope & SAVED) return NULL;
    for (int i = 0; i < NUM_SETTINGS; i++)
        if ((table[i].scope & SAVED) && table[i].offset == d->offset) return &table[i];
    return NULL;
}

/* "eval", "train and bench": the subcommands that take an option of this scope */
static const char *scope_names(int scope, char *buf, size_t size) {
    static const char *const commands[] = {"train", "eval", "bench"};   /* TRAIN, EVAL, BENCH */
    buf[0] = '\0';
    for (int b = 0; b < 3; b++)
        if (scope & (1 << b)) snprintf(buf + strlen(buf), size - strlen(buf), "%s%s", buf[0] ? " and " : "", commands[b]);
    return buf;
}

/* argv[i..] as (row, value) pairs in *given, checked against the subcommand's scope. 0 or -1. */
static int collect_options(int argc, char **argv, int i, int scope, const char *command, Given *given, int *n) {
    *n = 0;
    for (; i < argc; i++) {
        const char *arg = argv[i];
        if (arg[0] != '-' || arg[1] != '-' || !arg[2])
            return rn_error("unexpected argument '%s'; see resnet_mpi --help", arg);
        const char *name = arg + 2, *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        const SettingDef *d = find_setting(name, len);
        if (!d || !(d->scope & ALL)) return rn_error("unknown option --%.*s; see resnet_mpi --help", (int)len, name);
        if (!(d->scope & scope)) {
            char owners[32];
            return rn_error("--%s is an option of %s, not of %s; see resnet_mpi --help", d->key,
                            scope_names(d->scope, owners, sizeof owners), command);
        }
        const char *value;
        if (eq) value = eq + 1;
        else if (d->type == FLAG || d->type == NOT_FLAG) value = "1";
        else if (i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0) value = argv[++i];
        else return rn_error("--%s: missing value; see resnet_mpi --help", d->key);
        given[(*n)++] = (Given){d, value};
    }
    return 0;
}

/* The recipe first, wherever it stands, then every option in order (the last of a repeated one wins),
 * each recorded in c->given under its settings key. 0 or -1. */
static int apply_options(Config *c, const Given *given, int n) {
    const char *recipe = NULL;
    for (int g = 0; g < n; g++)
        if (!strcmp(given[g].def->key, "recipe")) recipe = given[g].value;
    if (recipe) {
        if (config_set(c, "recipe", recipe)) return -1;
        apply_recipe(c, c->recipe);
    }
    for (int g = 0; g < n; g++) {
        const SettingDef *d = given[g].def, *twin = saved_twin(d);
        char buf[512];
        if (set_value(c, d, given[g].value)) return -1;
        if (twin ? settings_put(&c->given, twin->key, format_value(c, twin, buf, sizeof buf))
                 : settings_put(&c->given, d->key, given[g].value))
            return -1;
    }
    if (!strcmp(c->dataset, "fashion-mnist") && !settings_get(&c->given, "data"))
        snprintf(c->data_dir, sizeof c->data_dir, "%s", DEFAULT_FASHION_DIR);
    return 0;
}

int config_parse(Config *c, int argc, char **argv) {
    /* help and version win over anything else on the line, as users expect */
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            config_usage(stdout);
            return 1;
        }
        if (!strcmp(argv[i], "--version")) {
            printf("resnet_mpi %s\n", RESNET_VERSION);
            return 1;
        }
    }
    int i = 1, scope = TRAIN;
    const char *command = "train";
    if (i < argc && argv[i][0] != '-') {
        if (!strcmp(argv[i], "train")) scope = TRAIN;
        else if (!strcmp(argv[i], "eval")) scope = EVAL;
        else if (!strcmp(argv[i], "bench")) scope = BENCH;
        else return rn_error("unknown command '%s' (expected train, eval or bench); see resnet_mpi --help", argv[i]);
        command = argv[i++];
    }
    snprintf(c->command, sizeof c->command, "%s", command);

    /* Collect first, apply afterwards: the recipe must land before every other flag wherever it stands. */
    Given *given = malloc(sizeof *given * (size_t)(argc > 0 ? argc : 1));
    if (!given) return rn_error("out of memory parsing the command line");
    int n, rc = collect_options(argc, argv, i, scope, command, given, &n);
    if (rc == 0) rc = apply_options(c, given, n);
    free(given);
    return rc;
}

int config_validate(const Config *c) {
    if (!strcmp(c->command, "eval") && !c->checkpoint[0]) return rn_error("eval needs --checkpoint FILE");
    if (c->bn_eval == BN_EVAL_RUNNING && c->arch == ARCH_SEED)
        return rn_error("--bn-eval running: the seed architecture has no running statistics "
                        "(track_running_stats=False); use --arch paper");
    if (c->nesterov && (c->optimizer != OPT_SGD || !(c->momentum > 0)))
        return rn_error("--nesterov needs --optimizer sgd and --momentum greater than 0 (got --optimizer %s "
                        "--momentum %g)", optim_name(c->optimizer), (double)c->momentum);
    if (c->schedule == SCHED_STEP && c->num_milestones == 0)
        return rn_error("--schedule step needs --milestones S1,S2,...");
    if (c->batch_per_rank > 0 && settings_get(&c->given, "batch-size") && settings_get(&c->given, "batch-per-rank"))
        return rn_error("--batch-size and --batch-per-rank: give one (the global batch, or the images per rank)");
    if (c->warmup_steps > 0 && c->warmup_epochs > 0)
        return rn_error("--warmup-steps and --warmup-epochs: give one");
    return 0;
}

/* ---- what the other modules take from a config ----------------------------------------------------- */

ModelConfig config_model(const Config *c, int in_channels, int image_size, int classes) {
    return (ModelConfig){
        .arch = c->arch, .depth = c->depth, .in_channels = in_channels, .image_size = image_size, .classes = classes};
}

void config_optim(const Config *c, OptimConfig *out) {
    /* PyTorch's Adam betas and eps, written here rather than taken from optim_defaults so that the
     * command line alone decides the optimizer (no hidden dependency on optim.c's defaults) */
    *out = (OptimConfig){.kind = c->optimizer,
                         .lr = c->lr,
                         .weight_decay = c->weight_decay,
                         .beta1 = 0.9f,
                         .beta2 = 0.999f,
                         .eps = 1e-8f,
                         .momentum = c->momentum,
                         .nesterov = c->nesterov};
}

double config_lr_factor(const Config *c) {
    const double ratio = (double)c->batch_size / c->base_batch;
    return c->lr_scaling == LR_SCALING_LINEAR ? ratio : c->lr_scaling == LR_SCALING_SQRT ? sqrt(ratio) : 1.0;
}

long config_warmup_steps(const Config *c, long steps_per_epoch) {
    if (c->warmup_epochs > 0) return (long)ceil((double)c->warmup_epochs * (double)steps_per_epoch - 1e-9);
    return c->warmup_steps;
}

void config_schedule(const Config *c, long steps_per_epoch, Schedule *out) {
    memset(out, 0, sizeof *out);
    out->kind = c->schedule;
    out->base_lr = (float)(c->lr * config_lr_factor(c));
    out->warmup_steps = config_warmup_steps(c, steps_per_epoch);
    /* the run ends at whichever comes first, and a cosine must reach 0 exactly there */
    long total = (long)c->epochs * steps_per_epoch;
    if (c->max_steps > 0 && (total <= 0 || c->max_steps < total)) total = c->max_steps;
    out->total_steps = total;
    if (c->schedule == SCHED_STEP) {
        out->num_milestones = c->num_milestones;
        memcpy(out->milestones, c->milestones, sizeof out->milestones);
    }
    out->gamma = 0.1f;
}

/* ---- --help ----------------------------------------------------------------------------------------- */

static void print_option(FILE *out, const SettingDef *d) {
    char head[64];
    snprintf(head, sizeof head, "--%s%s%s", d->key, d->meta ? " " : "", d->meta ? d->meta : "");
    fprintf(out, "  %-22s ", head);
    for (const char *line = d->help; line;) {
        const char *next = strchr(line, '\n');
        fprintf(out, "%.*s\n", next ? (int)(next - line) : (int)strlen(line), line);
        line = next ? next + 1 : NULL;
        if (line) fprintf(out, "%25s", "");
    }
}

void config_usage(FILE *out) {
    fputs("usage: resnet_mpi [train] [options]            train (the subcommand may be left out)\n"
          "       resnet_mpi eval --checkpoint FILE [options]\n"
          "       resnet_mpi bench [options]\n"
          "       resnet_mpi summary [--arch --depth --image-size --in-channels --classes]   the model's layers\n"
          "       resnet_mpi --help | --version\n"
          "Run under mpirun to train on several ranks: mpirun -np 8 resnet_mpi\n"
          "Options are --key value or --key=value; a flag given overrides the recipe wherever it stands.\n"
          "\n",
          out);
    for (int g = 0; g < G_HIDDEN; g++) {
        fprintf(out, "%s\n", groups[g].title);
        for (int i = 0; i < NUM_SETTINGS; i++)
            if (table[i].group == (Group)g) print_option(out, &table[i]);
        if (groups[g].footer) fputs(groups[g].footer, out);
        fputs("\n", out);
    }
    fputs("Environment:\n"
          "  RESNET_DATA            default CIFAR-10 folder\n"
          "\n"
          "Exit codes: 0 finished (early stop included)\n"
          "            1 failed: an input file missing, unreadable or corrupt (data, checkpoint; also a FIFO or\n"
          "              a folder in its place), a metrics log that cannot be written, training diverged,\n"
          "              an I/O error\n"
          "            2 usage error: an option or RESNET_FAULT_* value refused, on its own or against another\n"
          "              option, the data set (--batch-size, --limit-train, --val-size), the number of ranks,\n"
          "              the checkpoint resumed or evaluated (--arch, --depth, --dataset), or an output path\n"
          "              (--checkpoint-dir not a folder, or holding a run without --resume or --overwrite;\n"
          "              --metrics a folder)\n"
          "            3 stalled: a collective did not complete within --timeout (the ranks missing named)\n"
          "            75 stopped by a signal: after writing a checkpoint, or during start-up before\n"
          "              writing anything (either way continue with --resume auto)\n",
          out);
}

/* ---- the table checked against itself --------------------------------------------------------------- */

/* Bytes the field of a row of this type must have; 0 for character arrays (any size). */
static size_t field_bytes(ValueType t) {
    switch (t) {
    case LONG: return sizeof(long);
    case U64: return sizeof(uint64_t);
    case FLOAT:
    case POSITIVE: return sizeof(float);
    case NAME:
    case PATH:
    case PATH_OR_EMPTY: return 0;
    case MILESTONES: return sizeof(long) * SCHED_MAX_MILESTONES;
    case SECONDS:
    case DECAY: return sizeof(double);
    default: return sizeof(int);   /* flags, ints and enums */
    }
}

static int check_row(const SettingDef *d) {
    const size_t bytes = field_bytes(d->type);
    if (bytes ? d->size != bytes : d->size < 2)
        return rn_error("setting %s: a field of %zu bytes does not fit its type", d->key, d->size);
    if ((d->type == NAME || d->type == ENUM) && !d->names) return rn_error("setting %s: no names", d->key);
    if (strlen(d->key) >= sizeof(((Setting *)0)->key)) return rn_error("setting %s: key too long", d->key);
    if (find_setting(d->key, strlen(d->key)) != d) return rn_error("setting %s: key listed twice", d->key);
    if ((d->scope & ALL) && !d->help) return rn_error("setting %s: an option without help", d->key);
    if (d->type == NOT_FLAG && !saved_twin(d)) return rn_error("setting %s: no saved row to invert", d->key);
    if (d->paper && !d->value) return rn_error("setting %s: a recipe setting without the seed's value", d->key);
    Config c;
    memset(&c, 0, sizeof c);
    if ((d->value && set_value(&c, d, d->value)) || (d->paper && set_value(&c, d, d->paper))) return -1;
    /* a default stated in --help is the default recipe's: "(default 5)", "(default 5: ...)" or
     * "(default 5; --recipe seed: ...)" */
    const char *def = d->paper ? recipe_value(d, "tuned") : d->value;
    char stated[128], explained[128], contrasted[128];
    snprintf(stated, sizeof stated, "(default %s)", def ? def : "");
    snprintf(explained, sizeof explained, "(default %s:", def ? def : "");
    snprintf(contrasted, sizeof contrasted, "(default %s;", def ? def : "");
    if (def && d->help && strstr(d->help, "(default") && !strstr(d->help, stated) && !strstr(d->help, explained) &&
        !strstr(d->help, contrasted))
        return rn_error("setting %s: --help states another default than %s", d->key, def);
    return 0;
}

int config_check_table(void) {
    for (int i = 0; i < NUM_SETTINGS; i++)
        if (check_row(&table[i])) return -1;
    for (int k = 0; k < NUM_TUNED_CHANGES; k++) {
        const SettingDef *d = find_setting(tuned_changes[k].key, strlen(tuned_changes[k].key));
        Config c;
        memset(&c, 0, sizeof c);
        if (!d || !d->paper) return rn_error("tuned recipe: %s is not a recipe setting", tuned_changes[k].key);
        if (set_value(&c, d, tuned_changes[k].value)) return -1;
    }
    return 0;
}
