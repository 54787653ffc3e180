/* Settings, defaults, the two recipes and the command line. Every value a user or a checkpoint can give
 * passes through config_set, so there is one place that decides what is valid and one spelling of each
 * key (the flag's long name), shared by argv, the checkpoint's /config and the resume merge. */
#include "resnet/config.h"

#include <errno.h>
#include <float.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "resnet/util.h"

#define DEFAULT_CIFAR_DIR "data/cifar-10-batches-bin"
#define DEFAULT_FASHION_DIR "/usr/share/datasets/fashion-mnist"
/* The paper's schedule is counted in steps; its epoch count only has to be too large to end it first. */
#define PAPER_MAX_STEPS 64000L
#define PAPER_EPOCHS 1000000
/* ResNet-1202 is the deepest CIFAR network of He et al.; anything deeper is a typo, not an experiment. */
#define DEPTH_MAX 1202
/* Generous but finite, so that epochs * steps_per_epoch and friends cannot overflow a long. */
#define STEP_LIMIT 1000000000000L

/* ---- settings --------------------------------------------------------------------------------------- */

const char *settings_get(const Settings *s, const char *key) {
    for (int i = 0; i < s->count; i++)
        if (strcmp(s->items[i].key, key) == 0) return s->items[i].value;
    return NULL;
}

int settings_put(Settings *s, const char *key, const char *value) {
    /* a truncated key or value would silently become another setting: refuse instead */
    if (strlen(key) >= sizeof s->items[0].key) return rn_error("setting name '%s' is too long", key);
    if (strlen(value) >= sizeof s->items[0].value)
        return rn_error("value of setting %s is longer than %zu characters", key, sizeof s->items[0].value - 1);
    int i = 0;
    while (i < s->count && strcmp(s->items[i].key, key) != 0) i++;
    if (i == s->count) {
        if (s->count >= SETTINGS_MAX) return rn_error("more than %d settings", SETTINGS_MAX);
        s->count++;
        snprintf(s->items[i].key, sizeof s->items[i].key, "%s", key);
    }
    snprintf(s->items[i].value, sizeof s->items[i].value, "%s", value);
    return 0;
}

/* ---- defaults and recipes --------------------------------------------------------------------------- */

/* Everything a recipe decides; config_set("recipe") only records the name, because the resume merge
 * replays a checkpoint's settings in whatever order the file keeps them, and a recipe applied there
 * would overwrite values already restored. */
static void apply_recipe(Config *c, int paper) {
    snprintf(c->recipe, sizeof c->recipe, "%s", paper ? "paper" : "seed");
    c->arch = paper ? ARCH_PAPER : ARCH_SEED;
    c->optimizer = paper ? OPT_SGD : OPT_ADAM;
    c->lr = paper ? 0.1f : 1e-3f;
    c->weight_decay = 1e-4f;
    c->momentum = 0.9f;
    c->nesterov = 0;
    c->schedule = paper ? SCHED_STEP : SCHED_CONSTANT;
    c->num_milestones = 0;
    memset(c->milestones, 0, sizeof c->milestones);
    if (paper) {
        c->num_milestones = 2;
        c->milestones[0] = 32000;
        c->milestones[1] = 48000;
    }
    c->batch_size = 128;
    c->epochs = paper ? PAPER_EPOCHS : 50;
    c->max_steps = paper ? PAPER_MAX_STEPS : 0;
    c->eval_every = paper ? 0 : 50;
    c->early_stop = paper ? EARLY_STOP_OFF : EARLY_STOP_SEED;
    c->bn_eval = paper ? BN_EVAL_RUNNING : BN_EVAL_BATCH;
}

void config_defaults(Config *c) {
    memset(c, 0, sizeof *c);
    snprintf(c->command, sizeof c->command, "train");
    const char *env = getenv("RESNET_DATA");
    snprintf(c->data_dir, sizeof c->data_dir, "%s", env && env[0] ? env : DEFAULT_CIFAR_DIR);
    snprintf(c->dataset, sizeof c->dataset, "cifar10");
    c->val_size = 5000;
    c->split_seed = 0;
    c->limit_train = 0;
    c->augment = 1;
    apply_recipe(c, 0);
    c->depth = 20;
    c->patience = 5;
    c->sync_bn = 0;
    c->seed = 0;
    c->threads = 0;
    snprintf(c->checkpoint_dir, sizeof c->checkpoint_dir, "checkpoints");
    c->checkpoint_every = 0;
    c->keep = 0;
    c->progress = PROGRESS_AUTO;
    c->quiet = 0;
    snprintf(c->split, sizeof c->split, "test");
    c->json = 0;
    c->steps = 20;
    c->warmup = 3;
    c->profile = 0;
}

/* ---- value parsers: each names the flag and the value in its one-line error ------------------------- */

static int parse_long(const char *flag, const char *v, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    /* strtol would skip leading blanks and accept an empty string as 0 */
    if (!v[0] || v[0] == ' ' || v[0] == '\t') return rn_error("--%s: '%s' is not an integer", flag, v);
    long x = strtol(v, &end, 10);
    if (*end) return rn_error("--%s: '%s' is not an integer", flag, v);
    if (errno == ERANGE || x < lo || x > hi) {
        /* an upper bound that only guards against overflow is not worth showing unless it was hit */
        const int unbounded = hi == STEP_LIMIT || hi == INT_MAX;
        if (!unbounded) return rn_error("--%s: %s is out of range %ld..%ld", flag, v, lo, hi);
        if (x < lo) return rn_error("--%s: %s must be at least %ld", flag, v, lo);
        return rn_error("--%s: %s is larger than %ld", flag, v, hi);
    }
    *out = x;
    return 0;
}

static int parse_int(const char *flag, const char *v, long lo, long hi, int *out) {
    long x;
    if (parse_long(flag, v, lo, hi, &x)) return -1;
    *out = (int)x;
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

static const char *const dataset_names[] = {"cifar10", "fashion-mnist", NULL};
static const char *const arch_names[] = {"seed", "paper", NULL};          /* Arch order */
static const char *const recipe_names[] = {"seed", "paper", NULL};
static const char *const optimizer_names[] = {"adam", "adamw", "sgd", NULL};   /* OptimizerKind order */
static const char *const schedule_names[] = {"constant", "step", "cosine", NULL};   /* ScheduleKind order */
static const char *const early_stop_names[] = {"seed", "best", "off", NULL};   /* EarlyStopRule order */
static const char *const bn_eval_names[] = {"batch", "running", NULL};
static const char *const progress_names[] = {"auto", "always", "never", NULL};   /* ProgressMode order */
static const char *const split_names[] = {"test", "val", NULL};

int config_set(Config *c, const char *key, const char *value) {
    const char *k = key, *v = value;
    int e;
    /* data */
    if (!strcmp(k, "data")) return parse_path(k, v, 0, c->data_dir, sizeof c->data_dir);
    if (!strcmp(k, "dataset")) {
        if (parse_enum(k, v, dataset_names, &e)) return -1;
        snprintf(c->dataset, sizeof c->dataset, "%s", dataset_names[e]);
        return 0;
    }
    if (!strcmp(k, "val-size")) return parse_int(k, v, 1, INT_MAX, &c->val_size);
    if (!strcmp(k, "split-seed")) return parse_u64(k, v, &c->split_seed);
    if (!strcmp(k, "limit-train")) return parse_long(k, v, 0, INT_MAX, &c->limit_train);
    if (!strcmp(k, "augment")) return parse_bool(k, v, &c->augment);
    if (!strcmp(k, "no-augment")) {
        int off = 0;
        if (parse_bool(k, v, &off)) return -1;
        c->augment = !off;
        return 0;
    }
    /* model */
    if (!strcmp(k, "recipe")) {
        if (parse_enum(k, v, recipe_names, &e)) return -1;
        snprintf(c->recipe, sizeof c->recipe, "%s", recipe_names[e]);
        return 0;
    }
    if (!strcmp(k, "arch")) {
        if (parse_enum(k, v, arch_names, &e)) return -1;
        c->arch = (Arch)e;
        return 0;
    }
    if (!strcmp(k, "depth")) {
        long d;
        char *end;
        errno = 0;
        d = strtol(v, &end, 10);
        if (!v[0] || v[0] == ' ' || *end || errno == ERANGE)
            return rn_error("--depth: '%s' is not an integer", v);
        if (d < 8 || d > DEPTH_MAX || (d - 2) % 6 != 0)
            return rn_error("--depth: %s is not 6n+2 between 8 and %d (20, 32, 44, 56, 110, ...)", v, DEPTH_MAX);
        c->depth = (int)d;
        return 0;
    }
    /* optimization */
    if (!strcmp(k, "optimizer")) {
        if (parse_enum(k, v, optimizer_names, &e)) return -1;
        c->optimizer = (OptimizerKind)e;
        return 0;
    }
    if (!strcmp(k, "lr")) {
        float x;
        if (parse_float(k, v, &x)) return -1;
        if (!(x > 0)) return rn_error("--lr: %s must be greater than 0", v);
        c->lr = x;
        return 0;
    }
    if (!strcmp(k, "weight-decay")) {
        float x;
        if (parse_float(k, v, &x)) return -1;
        if (x < 0) return rn_error("--weight-decay: %s must be at least 0", v);
        c->weight_decay = x;
        return 0;
    }
    if (!strcmp(k, "momentum")) {
        float x;
        if (parse_float(k, v, &x)) return -1;
        if (x < 0 || x >= 1) return rn_error("--momentum: %s is not in [0, 1)", v);
        c->momentum = x;
        return 0;
    }
    if (!strcmp(k, "nesterov")) return parse_bool(k, v, &c->nesterov);
    if (!strcmp(k, "schedule")) {
        if (parse_enum(k, v, schedule_names, &e)) return -1;
        c->schedule = (ScheduleKind)e;
        return 0;
    }
    if (!strcmp(k, "milestones")) return parse_milestones(k, v, &c->num_milestones, c->milestones);
    if (!strcmp(k, "batch-size")) return parse_int(k, v, 1, 65536, &c->batch_size);
    if (!strcmp(k, "epochs")) return parse_int(k, v, 1, 1000000, &c->epochs);
    if (!strcmp(k, "max-steps")) return parse_long(k, v, 0, STEP_LIMIT, &c->max_steps);
    if (!strcmp(k, "eval-every")) {
        if (!strcmp(v, "epoch")) {
            c->eval_every = 0;
            return 0;
        }
        char *end;
        errno = 0;
        long x = strtol(v, &end, 10);
        if (!v[0] || v[0] == ' ' || *end || errno == ERANGE || x < 1 || x > INT_MAX)
            return rn_error("--eval-every: '%s' is not a positive integer or 'epoch'", v);
        c->eval_every = (int)x;
        return 0;
    }
    if (!strcmp(k, "early-stop")) {
        if (parse_enum(k, v, early_stop_names, &e)) return -1;
        c->early_stop = (EarlyStopRule)e;
        return 0;
    }
    if (!strcmp(k, "patience")) return parse_int(k, v, 1, INT_MAX, &c->patience);
    if (!strcmp(k, "bn-eval")) {
        if (parse_enum(k, v, bn_eval_names, &e)) return -1;
        c->bn_eval = e ? BN_EVAL_RUNNING : BN_EVAL_BATCH;
        return 0;
    }
    if (!strcmp(k, "sync-bn")) return parse_bool(k, v, &c->sync_bn);
    if (!strcmp(k, "seed")) return parse_u64(k, v, &c->seed);
    /* machine */
    if (!strcmp(k, "threads")) return parse_int(k, v, 0, 1024, &c->threads);
    /* output */
    if (!strcmp(k, "checkpoint-dir")) return parse_path(k, v, 0, c->checkpoint_dir, sizeof c->checkpoint_dir);
    if (!strcmp(k, "checkpoint-every")) return parse_long(k, v, 0, STEP_LIMIT, &c->checkpoint_every);
    if (!strcmp(k, "keep")) return parse_int(k, v, 0, INT_MAX, &c->keep);
    if (!strcmp(k, "resume")) return parse_path(k, v, 1, c->resume, sizeof c->resume);
    if (!strcmp(k, "metrics")) return parse_path(k, v, 1, c->metrics, sizeof c->metrics);
    if (!strcmp(k, "progress")) {
        if (parse_enum(k, v, progress_names, &e)) return -1;
        c->progress = (ProgressMode)e;
        return 0;
    }
    if (!strcmp(k, "quiet")) return parse_bool(k, v, &c->quiet);
    /* eval */
    if (!strcmp(k, "checkpoint")) return parse_path(k, v, 0, c->checkpoint, sizeof c->checkpoint);
    if (!strcmp(k, "split")) {
        if (parse_enum(k, v, split_names, &e)) return -1;
        snprintf(c->split, sizeof c->split, "%s", split_names[e]);
        return 0;
    }
    if (!strcmp(k, "json")) return parse_bool(k, v, &c->json);
    /* bench */
    if (!strcmp(k, "steps")) return parse_int(k, v, 1, INT_MAX, &c->steps);
    if (!strcmp(k, "warmup")) return parse_int(k, v, 0, INT_MAX, &c->warmup);
    if (!strcmp(k, "profile")) return parse_bool(k, v, &c->profile);
    return rn_error("unknown option --%s; see resnet_mpi --help", k);
}

/* ---- the command line ------------------------------------------------------------------------------- */

enum { FOR_TRAIN = 1, FOR_EVAL = 2, FOR_BENCH = 4, FOR_ALL = 7 };

typedef struct {
    const char *name;
    int is_flag;   /* takes no value */
    int scope;     /* subcommands that accept it */
} Option;

/* Only documented flags are accepted on the command line; config_set also knows "augment", the
 * settings key that --no-augment writes. */
static const Option options[] = {
    {"data", 0, FOR_ALL},           {"dataset", 0, FOR_ALL},         {"val-size", 0, FOR_ALL},
    {"split-seed", 0, FOR_ALL},     {"limit-train", 0, FOR_ALL},     {"no-augment", 1, FOR_ALL},
    {"recipe", 0, FOR_ALL},         {"arch", 0, FOR_ALL},            {"depth", 0, FOR_ALL},
    {"optimizer", 0, FOR_ALL},      {"lr", 0, FOR_ALL},              {"weight-decay", 0, FOR_ALL},
    {"momentum", 0, FOR_ALL},       {"nesterov", 1, FOR_ALL},        {"schedule", 0, FOR_ALL},
    {"milestones", 0, FOR_ALL},     {"batch-size", 0, FOR_ALL},      {"epochs", 0, FOR_ALL},
    {"max-steps", 0, FOR_ALL},      {"eval-every", 0, FOR_ALL},      {"early-stop", 0, FOR_ALL},
    {"patience", 0, FOR_ALL},       {"bn-eval", 0, FOR_ALL},         {"sync-bn", 1, FOR_ALL},
    {"seed", 0, FOR_ALL},           {"threads", 0, FOR_ALL},         {"checkpoint-dir", 0, FOR_ALL},
    {"checkpoint-every", 0, FOR_ALL}, {"keep", 0, FOR_ALL},          {"resume", 0, FOR_ALL},
    {"metrics", 0, FOR_ALL},        {"progress", 0, FOR_ALL},        {"quiet", 1, FOR_ALL},
    {"checkpoint", 0, FOR_EVAL},    {"split", 0, FOR_EVAL},          {"json", 1, FOR_EVAL},
    {"steps", 0, FOR_BENCH},        {"warmup", 0, FOR_BENCH},        {"profile", 1, FOR_BENCH},
};
#define NUM_OPTIONS ((int)(sizeof options / sizeof options[0]))

static const Option *find_option(const char *name, size_t len) {
    for (int i = 0; i < NUM_OPTIONS; i++)
        if (strlen(options[i].name) == len && strncmp(options[i].name, name, len) == 0) return &options[i];
    return NULL;
}

typedef struct {
    const Option *opt;
    const char *value;
} Given;

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
    int i = 1, scope = FOR_TRAIN;
    const char *command = "train";
    if (i < argc && argv[i][0] != '-') {
        if (!strcmp(argv[i], "train")) scope = FOR_TRAIN;
        else if (!strcmp(argv[i], "eval")) scope = FOR_EVAL;
        else if (!strcmp(argv[i], "bench")) scope = FOR_BENCH;
        else return rn_error("unknown command '%s' (expected train, eval or bench); see resnet_mpi --help", argv[i]);
        command = argv[i++];
    }
    snprintf(c->command, sizeof c->command, "%s", command);

    /* Collect first, apply afterwards: the recipe must land before every other flag wherever it stands. */
    Given *given = malloc(sizeof *given * (size_t)(argc > 0 ? argc : 1));
    if (!given) return rn_error("out of memory parsing the command line");
    int n = 0, rc = 0;
    for (; i < argc; i++) {
        const char *arg = argv[i];
        if (arg[0] != '-' || arg[1] != '-' || !arg[2]) {
            rc = rn_error("unexpected argument '%s'; see resnet_mpi --help", arg);
            goto done;
        }
        const char *name = arg + 2, *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        const Option *opt = find_option(name, len);
        if (!opt) {
            rc = rn_error("unknown option --%.*s; see resnet_mpi --help", (int)len, name);
            goto done;
        }
        if (!(opt->scope & scope)) {
            const char *owner = opt->scope == FOR_EVAL ? "eval" : "bench";
            rc = rn_error("--%s is an option of %s, not of %s; see resnet_mpi --help", opt->name, owner, command);
            goto done;
        }
        const char *value;
        if (eq) {
            value = eq + 1;
        } else if (opt->is_flag) {
            value = "1";
        } else if (i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0) {
            value = argv[++i];
        } else {
            rc = rn_error("--%s: missing value; see resnet_mpi --help", opt->name);
            goto done;
        }
        given[n++] = (Given){opt, value};
    }

    const char *recipe = NULL;
    for (int g = 0; g < n; g++)
        if (!strcmp(given[g].opt->name, "recipe")) recipe = given[g].value;
    if (recipe) {
        if (config_set(c, "recipe", recipe)) {
            rc = -1;
            goto done;
        }
        apply_recipe(c, !strcmp(c->recipe, "paper"));
    }
    for (int g = 0; g < n; g++) {
        const char *key = given[g].opt->name;
        if (config_set(c, key, given[g].value)) {
            rc = -1;
            goto done;
        }
        /* recorded under the settings key, so that a resume can tell which of the file's values the user
         * chose to override */
        int put = !strcmp(key, "no-augment") ? settings_put(&c->given, "augment", c->augment ? "1" : "0")
                                             : settings_put(&c->given, key, given[g].value);
        if (put) {
            rc = -1;
            goto done;
        }
    }
    if (!strcmp(c->dataset, "fashion-mnist") && !settings_get(&c->given, "data"))
        snprintf(c->data_dir, sizeof c->data_dir, "%s", DEFAULT_FASHION_DIR);
done:
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
                        "--momentum %g)", optimizer_names[c->optimizer], (double)c->momentum);
    if (c->schedule == SCHED_STEP && c->num_milestones == 0)
        return rn_error("--schedule step needs --milestones S1,S2,...");
    return 0;
}

/* The shortest decimal that reads back as the same float: exact like %.9g, but "0.1" rather than
 * "0.100000001" in a checkpoint someone will read. */
static void format_float(float x, char *buf, size_t size) {
    for (int p = 1; p <= 9; p++) {
        snprintf(buf, size, "%.*g", p, (double)x);
        if ((float)strtod(buf, NULL) == x) return;
    }
}

void config_to_settings(const Config *c, Settings *out) {
    char buf[512];
    out->count = 0;
#define PUT(key, ...) (snprintf(buf, sizeof buf, __VA_ARGS__), settings_put(out, key, buf))
    PUT("dataset", "%s", c->dataset);
    PUT("data", "%s", c->data_dir);
    PUT("val-size", "%d", c->val_size);
    PUT("split-seed", "%" PRIu64, c->split_seed);
    PUT("limit-train", "%ld", c->limit_train);
    PUT("augment", "%d", c->augment ? 1 : 0);
    PUT("recipe", "%s", c->recipe);
    PUT("arch", "%s", arch_names[c->arch == ARCH_PAPER]);
    PUT("depth", "%d", c->depth);
    PUT("optimizer", "%s", optimizer_names[c->optimizer]);
    format_float(c->lr, buf, sizeof buf);
    settings_put(out, "lr", buf);
    format_float(c->weight_decay, buf, sizeof buf);
    settings_put(out, "weight-decay", buf);
    format_float(c->momentum, buf, sizeof buf);
    settings_put(out, "momentum", buf);
    PUT("nesterov", "%d", c->nesterov ? 1 : 0);
    PUT("schedule", "%s", schedule_names[c->schedule]);
    /* "none" rather than "": an HDF5 string attribute cannot be empty */
    buf[0] = '\0';
    for (int i = 0; i < c->num_milestones; i++)
        snprintf(buf + strlen(buf), sizeof buf - strlen(buf), "%s%ld", i ? "," : "", c->milestones[i]);
    settings_put(out, "milestones", buf[0] ? buf : "none");
    PUT("batch-size", "%d", c->batch_size);
    PUT("epochs", "%d", c->epochs);
    PUT("max-steps", "%ld", c->max_steps);
    if (c->eval_every > 0) PUT("eval-every", "%d", c->eval_every);
    else settings_put(out, "eval-every", "epoch");
    PUT("early-stop", "%s", early_stop_names[c->early_stop]);
    PUT("patience", "%d", c->patience);
    PUT("bn-eval", "%s", bn_eval_names[c->bn_eval == BN_EVAL_RUNNING]);
    PUT("sync-bn", "%d", c->sync_bn ? 1 : 0);
    PUT("seed", "%" PRIu64, c->seed);
    PUT("threads", "%d", c->threads);
    PUT("checkpoint-dir", "%s", c->checkpoint_dir);
    PUT("checkpoint-every", "%ld", c->checkpoint_every);
    PUT("keep", "%d", c->keep);
#undef PUT
}

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

void config_schedule(const Config *c, long steps_per_epoch, Schedule *out) {
    memset(out, 0, sizeof *out);
    out->kind = c->schedule;
    out->base_lr = c->lr;
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

void config_usage(FILE *out) {
    fputs(
        "usage: resnet_mpi [train] [options]            train (the subcommand may be left out)\n"
        "       resnet_mpi eval --checkpoint FILE [options]\n"
        "       resnet_mpi bench [options]\n"
        "       resnet_mpi summary [--arch --depth --image-size --in-channels --classes]   the model's layers\n"
        "       resnet_mpi --help | --version\n"
        "Run under mpirun to train on several ranks: mpirun -np 8 resnet_mpi\n"
        "Options are --key value or --key=value; a flag given overrides the recipe wherever it stands.\n"
        "\n", out);
    /* one string per group: ISO C only promises 4095-character literals */
    fputs("Data:\n"
        "  --data DIR             data set folder (default: $RESNET_DATA, else data/cifar-10-batches-bin;\n"
        "                         for fashion-mnist /usr/share/datasets/fashion-mnist);\n"
        "                         get CIFAR-10 with scripts/get-cifar10.sh\n"
        "  --dataset NAME         cifar10 | fashion-mnist (default cifar10)\n"
        "  --val-size N           training records held out for validation (default 5000)\n"
        "  --split-seed N         seed of the train/validation split (default 0)\n"
        "  --limit-train N        use only the first N training records, for quick runs (default 0: all)\n"
        "  --no-augment           no random flips and crops of training images\n"
        "\n",
        out);
    fputs("Model:\n"
        "  --arch seed|paper      the seed's network (one BN per block, batch statistics) or He et al.'s\n"
        "                         (default seed)\n"
        "  --depth N              6n+2 from 8 to 1202: 20, 32, 44, 56, 110, ... (default 20)\n"
        "\n",
        out);
    fputs("Recipe:\n"
        "  --recipe seed|paper    sets the defaults below (default seed); any flag given overrides it\n"
        "      seed:  --arch seed --optimizer adam --lr 1e-3 --weight-decay 1e-4 --batch-size 128\n"
        "             --epochs 50 --schedule constant --early-stop seed --bn-eval batch --eval-every 50\n"
        "      paper: --arch paper --optimizer sgd --momentum 0.9 --lr 0.1 --weight-decay 1e-4\n"
        "             --batch-size 128 --max-steps 64000 (--epochs does not cap it) --schedule step\n"
        "             --milestones 32000,48000 --bn-eval running --eval-every epoch --early-stop off\n"
        "\n",
        out);
    fputs("Optimization:\n"
        "  --optimizer NAME       adam | adamw | sgd (default adam)\n"
        "  --lr X                 base learning rate, > 0 (default 1e-3)\n"
        "  --weight-decay X       L2 (adam, sgd) or decoupled (adamw) decay, >= 0 (default 1e-4)\n"
        "  --momentum X           sgd momentum in [0, 1) (default 0.9)\n"
        "  --nesterov             Nesterov momentum (sgd with momentum > 0)\n"
        "  --schedule NAME        constant | step | cosine learning rate (default constant)\n"
        "  --milestones S1,S2     step schedule: lr divided by 10 at these steps (at most 8)\n"
        "  --batch-size N         global batch over all ranks, 1..65536 (default 128)\n"
        "  --epochs N             at most N epochs, 1..1000000 (default 50)\n"
        "  --max-steps N          stop after N optimizer steps (default 0: no limit)\n"
        "  --eval-every N|epoch   validate every N batches of an epoch, or at its end (default 50)\n"
        "  --early-stop RULE      seed (accuracy not above the previous check) | best | off (default seed)\n"
        "  --patience N           checks without improvement tolerated before stopping (default 5)\n"
        "  --bn-eval MODE         batch (statistics of the evaluated set) | running (paper arch only)\n"
        "                         (default batch)\n"
        "  --sync-bn              batch statistics over the global batch, not each rank's slice\n"
        "  --seed N               seed of initialisation, epoch order and augmentation (default 0)\n"
        "\n",
        out);
    fputs("Machine:\n"
        "  --threads N            compute threads per rank, 0..1024 (default 0: the node's cores / its ranks)\n"
        "\n",
        out);
    fputs("Output:\n"
        "  --checkpoint-dir DIR   where last.h5, best.h5 and metrics.jsonl go (default checkpoints)\n"
        "  --checkpoint-every N   also checkpoint every N steps (default 0: at validations and the end)\n"
        "  --keep N               numbered snapshots kept besides last.h5 and best.h5 (default 0)\n"
        "  --resume FILE|auto     continue from a checkpoint; auto: DIR/last.h5 if it exists\n"
        "  --metrics FILE         metrics log, JSON lines (default DIR/metrics.jsonl)\n"
        "  --progress MODE        auto (when stderr is a terminal) | always | never (default auto)\n"
        "  --quiet                only the final results\n"
        "\n",
        out);
    fputs("eval (also takes the data, model and machine options):\n"
        "  --checkpoint FILE      the checkpoint to evaluate (required)\n"
        "  --split test|val       the set to score (default test)\n"
        "  --json                 print the results as one JSON object\n"
        "\n",
        out);
    fputs("bench (also takes --arch, --depth, --batch-size, --threads, ...):\n"
        "  --steps N              timed training steps (default 20)\n"
        "  --warmup N             untimed steps first (default 3)\n"
        "  --profile              also print where the time of a step goes\n"
        "\n",
        out);
    fputs("Environment:\n"
        "  RESNET_DATA            default CIFAR-10 folder\n"
        "\n"
        "Exit codes: 0 finished (early stop included), 1 failed, 2 usage error,\n"
        "            75 stopped by a signal after writing a checkpoint (resume with --resume auto)\n",
        out);
}
