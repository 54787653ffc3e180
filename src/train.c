/* The training run: data, model and optimizer set up on every rank, then the step loop, read top to
 * bottom. Every collective is reached by every rank in the same order: per step the optional sync-BN
 * reductions, the gradient allreduce and one status reduction (loss, signal, non-finite parameters);
 * per validation the evaluation's reductions and rank 0's broadcast decision. */
#include "resnet/train.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <sched.h>
#include <dirent.h>

#include "resnet/checkpoint.h"
#include "resnet/conv.h"
#include "resnet/dataset.h"
#include "resnet/dist.h"
#include "resnet/ema.h"
#include "resnet/evaluate.h"
#include "resnet/hooks.h"
#include "resnet/metrics.h"
#include "resnet/optim.h"
#include "resnet/run.h"
#include "resnet/perf.h"
#include "resnet/report.h"
#include "resnet/resnet.h"
#include "resnet/stall.h"
#include "resnet/train_state.h"
#include "resnet/util.h"

/* ---- training --------------------------------------------------------------------------------------- */

static void format_duration(char *buf, size_t size, double seconds) {
    if (!(seconds >= 0) || seconds > 1e8) snprintf(buf, size, "?");
    else if (seconds >= 3600) snprintf(buf, size, "%dh%02dm", (int)(seconds / 3600), (int)(seconds / 60) % 60);
    else if (seconds >= 60) snprintf(buf, size, "%dm", (int)(seconds / 60 + 0.5));
    else snprintf(buf, size, "%ds", (int)(seconds + 0.5));
}

/* Checked on rank 0 before any data is read, so that a wrong flag fails at once rather than after
 * loading (or, for a folder that is a file, at the first checkpoint): --checkpoint-dir must be a folder
 * or creatable as one, and a folder holding a previous run's checkpoints is only taken over when asked
 * (--resume, --overwrite). --metrics must not be a folder. 0, or -1 with rn_error naming the flag. */
static int check_output_paths(const Config *cfg) {
    char path[1024];
    snprintf(path, sizeof path, "%s", cfg->checkpoint_dir);
    struct stat st;
    for (char *p = path + 1;; p++) {
        if (*p != '/' && *p) continue;
        const char c = *p;
        *p = '\0';
        if (stat(path, &st) == 0 && !S_ISDIR(st.st_mode))
            return strcmp(path, cfg->checkpoint_dir) == 0
                       ? rn_error("--checkpoint-dir %s: not a folder", cfg->checkpoint_dir)
                       : rn_error("--checkpoint-dir %s: %s is not a folder", cfg->checkpoint_dir, path);
        *p = c;
        if (!c) break;
    }
    if (cfg->metrics[0] && stat(cfg->metrics, &st) == 0 && S_ISDIR(st.st_mode))
        return rn_error("--metrics %s: a folder, not a file", cfg->metrics);
    if (cfg->resume[0] || cfg->overwrite) return 0;
    static const char *const previous[] = {"last.h5", "best.h5"};
    for (int i = 0; i < 2; i++) {
        snprintf(path, sizeof path, "%s/%s", cfg->checkpoint_dir, previous[i]);
        if (access(path, F_OK) == 0)
            return rn_error("--checkpoint-dir %s already holds a run (%s): continue it with --resume auto, or "
                            "replace it with --overwrite", cfg->checkpoint_dir, previous[i]);
    }
    return 0;
}

static void run_settings(const Config *cfg, const ImageSet *set, int threads, Settings *out) {
    char buf[512];
    config_to_settings(cfg, out);
    snprintf(buf, sizeof buf, "%d", threads);
    settings_put(out, "threads", buf);
    snprintf(buf, sizeof buf, "%d", dist_size());
    settings_put(out, "world-size", buf);
    snprintf(buf, sizeof buf, "%d", set->channels);
    settings_put(out, "in-channels", buf);
    snprintf(buf, sizeof buf, "%d", set->size);
    settings_put(out, "image-size", buf);
    snprintf(buf, sizeof buf, "%d", set->classes);
    settings_put(out, "classes", buf);
    buf[0] = '\0';
    for (int c = 0; c < set->classes; c++) {
        if (c) strncat(buf, ",", sizeof buf - strlen(buf) - 1);
        strncat(buf, set->class_names[c], sizeof buf - strlen(buf) - 1);
    }
    settings_put(out, "class_names", buf);
}

static double total_started;

/* Seconds of training so far in this process (the total timer while it runs). */
static double timer_elapsed_total(void) { return rn_now() - total_started; }

/* FNV-1a over the parameter bytes: replicas must agree bit for bit. */
static uint64_t params_hash(const Model *m) {
    const unsigned char *p = (const unsigned char *)m->params;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < m->num_params * sizeof(float); i++) h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

/* Checks at the end of a run that every replica holds the same parameters. Collective. */
static void check_replicas(const Model *m, int quiet) {
    const uint64_t mine = params_hash(m);
    uint64_t root = mine;
    dist_bcast(&root, sizeof root, 0);
    const int differ = dist_any(mine != root);
    if (hooks()->trace) fprintf(stderr, "trace: rank %d step-end params hash %016llx\n", dist_rank(), (unsigned long long)mine);
    if (dist_rank() != 0) return;
    if (differ) rn_message("warning: parameters: hash %016llx DIFFERS between ranks", (unsigned long long)root);
    else if (!quiet) printf("replica parameters: hash %016llx identical on every rank\n", (unsigned long long)root);
}

/* ---- the early-stopping rule ------------------------------------------------------------------------ */

/* whether the rule stops a run that has had non_increase_count checks without a rise */
static int early_stop_fires(int rule, int patience, int non_increase_count) {
    return rule != EARLY_STOP_OFF && non_increase_count > patience;
}

int early_stop_update(int rule, int patience, double val_acc, double *prev_val_acc, double *best_val_acc,
                      int *non_increase_count) {
    if (rule == EARLY_STOP_BEST) {
        if (val_acc > *best_val_acc) *non_increase_count = 0;
        else (*non_increase_count)++;
    } else {
        /* the seed: compare with the previous check, then replace it */
        if (val_acc <= *prev_val_acc) (*non_increase_count)++;
        else *non_increase_count = 0;
    }
    *prev_val_acc = val_acc;
    if (val_acc > *best_val_acc) *best_val_acc = val_acc;
    return early_stop_fires(rule, patience, *non_increase_count);
}

/* ---- training --------------------------------------------------------------------------------------- */

typedef struct {
    Config *cfg;
    ImageSet train_set, test_set;
    uint32_t *train_records, *val_records, *order;
    int num_train, num_val;
    Model model;
    Optimizer opt;
    Ema ema;                  /* --ema: the parameters' moving average (allocated only then) */
    Schedule schedule;
    Evaluator evaluator;
    TrainState ts;
    History history;
    Settings settings;
    MetricsLog metrics;
    float *images;
    int *labels;
    int threads;
    long steps_per_epoch, total_steps;
    int eval_every;           /* validate every N batches of an epoch (0: at its end), see setup_data */
    char last_path[1024], best_path[1024];
    long saved_step;          /* the step last_path holds, from this run or the one resumed; -1: none */
    int show_progress;
    double elapsed_before;    /* training seconds of the runs this one resumes */
    const char *nonfinite_tensor;   /* the first parameter found non-finite after an update */
    StallClock pace;          /* durations that set the stall deadline under --timeout auto */
    long *test_confusion;     /* the end-of-run test, for the report */
    double test_other_accuracy;   /* the same under the other --eval-protocol */
    double test_ema_accuracy[2];  /* --ema: the average's, under --eval-protocol and the other one */
    double run_start;         /* when this process's step loop began, and the step it began at */
    long run_start_step;
    double last_progress;     /* when the progress line was last drawn */
    long reference_step;      /* the step the model's reference BN statistics were measured at; -1: none */
    int resumed_early_stop;   /* the checkpoint resumed is of a run its early-stopping rule ended */
} Run;

static void run_free(Run *r) {
    imageset_free(&r->train_set);
    imageset_free(&r->test_set);
    free(r->train_records);
    free(r->val_records);
    free(r->order);
    model_free(&r->model);
    optim_free(&r->opt);
    ema_free(&r->ema);
    evaluator_free(&r->evaluator);
    history_free(&r->history);
    metrics_close(&r->metrics);
    rn_free(r->images);
    rn_free(r->labels);
    free(r->test_confusion);
}

/* The checkpoint of folder that passes checkpoint_verify and is furthest on: best.h5 or a --keep
 * snapshot (step-XXXXXXXX.h5). Its path into out and 1, or 0 when none passes. */
static int newest_verified(const char *folder, char *out, size_t size) {
    long newest = -1;
    char candidate[1024];
    long step;
    if ((size_t)snprintf(candidate, sizeof candidate, "%s/best.h5", folder) < sizeof candidate &&
        access(candidate, F_OK) == 0 && checkpoint_verify(candidate, &step) == 0 && step > newest) {
        newest = step;
        snprintf(out, size, "%s", candidate);
    }
    DIR *dir = opendir(folder);
    struct dirent *e;
    while (dir && (e = readdir(dir))) {
        long n;
        char tail[8];
        if (sscanf(e->d_name, "step-%ld.%7s", &n, tail) != 2 || strcmp(tail, "h5") != 0) continue;
        if ((size_t)snprintf(candidate, sizeof candidate, "%s/%s", folder, e->d_name) >= sizeof candidate) continue;
        /* a snapshot wins a tie with best.h5: it is the one last.h5 was */
        if (checkpoint_verify(candidate, &step) == 0 && step >= newest) {
            newest = step;
            snprintf(out, size, "%s", candidate);
        }
    }
    if (dir) closedir(dir);
    return newest >= 0;
}

/* --resume auto: a last.h5 that fails its checksums (or does not parse) is replaced by the newest
 * checkpoint of the folder that passes, and rank 0 says so; when none passes, last.h5 stays and its
 * read fails with the damage named. Rank 0 reads the files; every rank gets its choice. Collective. */
static void fall_back_if_damaged(const char *folder, char *path, size_t size) {
    char chosen[1024];
    snprintf(chosen, sizeof chosen, "%s", path);
    if (dist_rank() == 0 && checkpoint_verify(path, NULL) != 0) {
        char damage[1024];
        snprintf(damage, sizeof damage, "%s", rn_last_error());
        if (newest_verified(folder, chosen, sizeof chosen))
            rn_message("warning: %s; resuming from %s instead", damage, chosen);
        else
            rn_message("warning: %s; no best.h5 or step-*.h5 in %s passes its checksums either", damage, folder);
    }
    dist_bcast(chosen, sizeof chosen, 0);
    snprintf(path, size, "%s", chosen);
}

static int resolve_resume(const Config *cfg, char *path, size_t size) {
    if (!cfg->resume[0]) return 0;
    if (strcmp(cfg->resume, "auto") == 0) {
        snprintf(path, size, "%s/last.h5", cfg->checkpoint_dir);
        if (access(path, F_OK) != 0) return 0;
        fall_back_if_damaged(cfg->checkpoint_dir, path, size);
        return 1;
    }
    snprintf(path, size, "%s", cfg->resume);
    return 1;
}

/* A writer killed mid-checkpoint leaves its temporary file (.last.h5.tmp.<pid>) behind; nothing reads
 * them, so the next run of the folder removes them. */
static void remove_stale_temporaries(const char *folder) {
    DIR *dir = opendir(folder);
    if (!dir) return;
    struct dirent *e;
    char path[1300];
    while ((e = readdir(dir))) {
        if (e->d_name[0] == '.' && strstr(e->d_name, ".h5.tmp.")) {
            snprintf(path, sizeof path, "%s/%s", folder, e->d_name);
            unlink(path);
        }
    }
    closedir(dir);
}

/* Data, split and the batch size against them. Collective: 0 on every rank, or the agreed exit code
 * (EXIT_USAGE when only a flag's value does not fit the data or the rank count). */
static int setup_data(Run *r, const char *resume_path) {
    Config *cfg = r->cfg;
    int failed = dataset_load(cfg->dataset, cfg->data_dir, 1, &r->train_set) ||
                 dataset_load(cfg->dataset, cfg->data_dir, 0, &r->test_set);
    if (failed) note_data_from_checkpoint(cfg, resume_path);
    else if (resume_path) failed = check_data_matches_checkpoint(resume_path, &r->train_set, cfg->data_dir) != 0;
    int code = agree_exit(failed ? EXIT_FAILED : 0);
    if (code) return code;

    if (dataset_split(r->train_set.count, cfg->val_size, cfg->split_seed, &r->train_records, &r->num_train,
                      &r->val_records, &r->num_val))
        code = EXIT_USAGE;
    else if (cfg->limit_train > r->num_train)
        code = rn_error("--limit-train %ld: only %d training records after the split", cfg->limit_train,
                        r->num_train) ? EXIT_USAGE : 0;
    else if (cfg->limit_train > 0)
        r->num_train = (int)cfg->limit_train;
    /* refused rather than capped: buffers are sized by the batch (65536 would ask for 89 GiB) */
    if (!code && cfg->batch_size > r->num_train)
        code = rn_error("--batch-size %d is larger than the %d training records (see --limit-train, --val-size)",
                        cfg->batch_size, r->num_train) ? EXIT_USAGE : 0;
    if (!code && cfg->batch_size < dist_size())
        code = rn_error("--batch-size %d is smaller than the %d ranks", cfg->batch_size, dist_size()) ? EXIT_USAGE : 0;
    if (!code && r->num_train % cfg->batch_size && r->num_train % cfg->batch_size < dist_size())
        code = rn_error("the last batch of an epoch (%d samples) has fewer samples than the %d ranks; "
                        "change --batch-size or --limit-train", r->num_train % cfg->batch_size, dist_size())
                   ? EXIT_USAGE : 0;
    code = agree_exit(code);
    if (code) return code;
    r->steps_per_epoch = (r->num_train + cfg->batch_size - 1) / cfg->batch_size;
    r->total_steps = (long)cfg->epochs * r->steps_per_epoch;
    if (cfg->max_steps > 0 && cfg->max_steps < r->total_steps) r->total_steps = cfg->max_steps;
    config_schedule(cfg, r->steps_per_epoch, &r->schedule);
    /* scale-out: the validation cadence in images (N batches of --base-batch), so that validation and the
     * seed's early stop (counted in validations) mean the same at any global batch */
    r->eval_every = cfg->eval_every;
    if (cfg->batch_per_rank > 0 && cfg->eval_every > 0) {
        const long steps = lround((double)cfg->eval_every * cfg->base_batch / cfg->batch_size);
        r->eval_every = steps < 1 ? 1 : steps > INT_MAX ? INT_MAX : (int)steps;
    }
    return 0;
}

/* Model, optimizer, evaluator and batch buffers. Collective: 0 or EXIT_FAILED on every rank. */
/* --bn-sample, at most the training records */
static int reference_sample(const Run *r) {
    return r->cfg->bn_sample < r->num_train ? r->cfg->bn_sample : r->num_train;
}

/* Whether validations evaluate the trained weights: always without --ema, where they are the model;
 * with it only under --validate-raw on, since early stopping and best.h5 follow the average. */
static int validates_raw(const Config *cfg) { return cfg->ema <= 0 || cfg->validate_raw; }

/* With --bn-eval reference, the reference statistics of the current parameters, measured unless they
 * already are (a validation and its checkpoints share one measurement). Collective. */
static void refresh_reference(Run *r) {
    if (r->cfg->bn_eval != BN_EVAL_REFERENCE || (r->model.reference_valid && r->reference_step == r->ts.step)) return;
    evaluate_measure_reference(&r->evaluator, &r->model, &r->train_set, r->train_records, reference_sample(r));
    r->reference_step = r->ts.step;
}

/* The moving average in the model's place: its parameters and its reference statistics swapped with the
 * model's (the raw weights'). A second call swaps them back. */
static void swap_in_average(Run *r) {
    Model *m = &r->model;
    Ema *e = &r->ema;
    float *params = m->params, *reference = m->reference;
    const int valid = m->reference_valid;
    m->params = e->params;
    m->reference = e->reference;
    m->reference_valid = e->reference_valid;
    e->params = params;
    e->reference = reference;
    e->reference_valid = valid;
}

/* With --ema and --bn-eval reference, the average's own reference statistics, measured as the raw
 * weights' are unless they already are for the average as it is (an update clears them): a validation
 * and its checkpoints share one measurement, and the checkpoint stores them as /ema/reference. Collective. */
static void refresh_ema_reference(Run *r) {
    if (r->cfg->ema <= 0 || r->cfg->bn_eval != BN_EVAL_REFERENCE || r->ema.reference_valid) return;
    swap_in_average(r);
    evaluate_measure_reference(&r->evaluator, &r->model, &r->train_set, r->train_records, reference_sample(r));
    swap_in_average(r);
}

/* The moving average's accuracy (--ema), under --bn-eval reference with its own statistics. Collective. */
static double evaluate_average(Run *r, const ImageSet *set, const uint32_t *records, int n, EvalProtocol protocol) {
    if (r->cfg->bn_eval != BN_EVAL_REFERENCE)
        return evaluate_records_with_weights(&r->evaluator, &r->model, r->ema.params, set, records, n,
                                             r->cfg->bn_eval, protocol, NULL);
    refresh_ema_reference(r);
    swap_in_average(r);
    const double acc = evaluate_records_as(&r->evaluator, &r->model, set, records, n, BN_EVAL_REFERENCE, protocol,
                                           NULL);
    swap_in_average(r);
    return acc;
}

static int setup_model(Run *r) {
    Config *cfg = r->cfg;
    ModelConfig mc = config_model(cfg, r->train_set.channels, r->train_set.size, r->train_set.classes);
    OptimConfig oc;
    config_optim(cfg, &oc);
    const int local_max = (cfg->batch_size + dist_size() - 1) / dist_size();
    const size_t pixels = (size_t)r->train_set.channels * r->train_set.size * r->train_set.size;
    int eval_max = r->num_val > r->test_set.count ? r->num_val : r->test_set.count;
    if (cfg->bn_eval == BN_EVAL_REFERENCE && reference_sample(r) > eval_max) eval_max = reference_sample(r);
    int failed = 0;
    if (model_init(&r->model, &mc, cfg->seed) || model_reserve(&r->model, local_max, 1) ||
        optimizer_setup(&r->opt, &oc, &r->model) ||
        (cfg->ema > 0 && (ema_init(&r->ema, cfg->ema, r->model.params, r->model.num_params) ||
                          ema_reserve_reference(&r->ema, r->model.num_reference_floats))) ||
        evaluator_init(&r->evaluator, &r->model, eval_max) ||
        !(r->images = rn_alloc(sizeof(float) * pixels * local_max)) ||
        !(r->labels = rn_alloc(sizeof(int) * local_max)) ||
        !(r->order = malloc(sizeof(uint32_t) * (r->train_set.count + 1))))
        failed = 1;
    if (agree_failure(failed)) return EXIT_FAILED;
    if (cfg->sync_bn) r->model.train_reducer = (StatReducer){dist_stat_sum, NULL};
    r->model.eval_reducer = (StatReducer){dist_stat_sum, NULL};
    gradient_reduction_setup(&r->model, cfg->bucket_mb);
    return 0;
}

/* A checkpoint taken mid-epoch goes on at the same batch when the batch size and the training set are
 * the same. With another --batch-size the batch index would mean other images, and with a smaller
 * --limit-train it may lie past the end of the shorter epoch (where the step loop never got going): the
 * position is carried over as the images of the epoch already seen, rounded down to a whole batch, and
 * when they cover the new epoch the next one starts. Rank 0 says what it did. */
static void map_resume_position(Run *r, long file_batch_size) {
    TrainState *ts = &r->ts;
    const long seen = ts->batch_in_epoch * file_batch_size, batch = seen / r->cfg->batch_size;
    if (batch == ts->batch_in_epoch && batch < r->steps_per_epoch) return;
    const int rank0 = dist_rank() == 0;
    if (seen >= r->num_train || batch >= r->steps_per_epoch) {
        if (rank0)
            printf("resume: epoch %ld was %ld images in (batch %ld at batch size %ld); it now has %d images in %ld "
                   "batches: starting epoch %ld\n", ts->epoch + 1, seen, ts->batch_in_epoch, file_batch_size,
                   r->num_train, r->steps_per_epoch, ts->epoch + 2);
        ts->epoch++;
        ts->batch_in_epoch = 0;
    } else {
        if (rank0)
            printf("resume: epoch %ld was %ld images in (batch %ld at batch size %ld): going on at batch %ld of "
                   "%ld at batch size %d\n", ts->epoch + 1, seen, ts->batch_in_epoch, file_batch_size, batch,
                   r->steps_per_epoch, r->cfg->batch_size);
        ts->batch_in_epoch = batch;
    }
    fflush(stdout);
}

/* --ema after the parameters are in place on every rank: the checkpoint's average goes on (loaded), at the
 * decay of this run (a new --ema on the resume's command line was reported by the merge); otherwise it
 * starts from the parameters as a new AveragedModel would, and a resume says so. Collective. */
static void start_ema(Run *r, int loaded, const char *resume_path) {
    if (r->cfg->ema <= 0) return;
    if (loaded) {
        r->ema.decay = r->cfg->ema;
        r->ema.warmup = r->cfg->ema_warmup;
        dist_bcast(r->ema.params, sizeof(float) * r->ema.n, 0);
        dist_bcast(&r->ema.reference_valid, sizeof r->ema.reference_valid, 0);
        if (r->ema.reference_valid) dist_bcast(r->ema.reference, sizeof(float) * r->ema.reference_floats, 0);
        return;
    }
    ema_reset(&r->ema, r->model.params);
    r->ema.warmup = r->cfg->ema_warmup;
    if (resume_path && dist_rank() == 0)
        printf("resume: %s has no moving average: --ema starts one at step %ld\n", resume_path, r->ts.step);
}

/* The checkpoint's state into the model, optimizer and train state. Collective: 0 or EXIT_FAILED. */
static int setup_resume(Run *r, const char *resume_path) {
    r->ts = (TrainState){.best_val_acc = -1.0, .prev_val_acc = -INFINITY};
    r->saved_step = -1;
    int failed = 0, ema_loaded = 0;
    long file_batch_size = r->cfg->batch_size;
    if (resume_path) {
        Settings file;
        failed = checkpoint_read_settings(resume_path, &file) != 0;
        /* the file's average goes on when it has one and this run keeps one */
        const char *file_ema = failed ? NULL : settings_get(&file, "ema");
        ema_loaded = r->cfg->ema > 0 && file_ema && atof(file_ema) > 0;
        if (failed || checkpoint_read_ema(resume_path, &r->model, &r->opt, &r->ts, &r->history,
                                          ema_loaded ? &r->ema : NULL)) {
            failed = 1;
        } else {
            const char *b = settings_get(&file, "batch-size");
            if (b && atol(b) > 0) file_batch_size = atol(b);
            r->resumed_early_stop = strcmp(r->ts.stop_reason, "early-stop") == 0;
            r->ts.stop_reason[0] = '\0';
            r->elapsed_before = r->ts.elapsed_s;
            if (strcmp(resume_path, r->last_path) == 0) r->saved_step = r->ts.step;
        }
    }
    if (agree_failure(failed)) return EXIT_FAILED;
    if (resume_path) map_resume_position(r, file_batch_size);
    /* replicas start identical even if some rank's initialisation or file read differed */
    dist_bcast(r->model.params, sizeof(float) * r->model.num_params, 0);
    dist_bcast(&r->model.reference_valid, sizeof r->model.reference_valid, 0);
    if (r->model.reference_valid) dist_bcast(r->model.reference, sizeof(float) * r->model.num_reference_floats, 0);
    r->reference_step = r->model.reference_valid ? r->ts.step : -1;
    start_ema(r, ema_loaded, resume_path);
    return 0;
}

/* --overwrite: the previous run's checkpoints go before the new run starts, so that its best.h5 or
 * numbered snapshots are never taken for the new run's. */
static int remove_previous_run(const Config *cfg) {
    DIR *dir = opendir(cfg->checkpoint_dir);
    if (!dir) return 0;
    struct dirent *e;
    char path[1300];
    int rc = 0;
    while ((e = readdir(dir)) && rc == 0) {
        long step;
        char tail[8];
        const int snapshot = sscanf(e->d_name, "step-%ld.%7s", &step, tail) == 2 && strcmp(tail, "h5") == 0;
        if (!snapshot && strcmp(e->d_name, "last.h5") != 0 && strcmp(e->d_name, "best.h5") != 0) continue;
        snprintf(path, sizeof path, "%s/%s", cfg->checkpoint_dir, e->d_name);
        if (unlink(path) != 0) rc = rn_error("--overwrite: cannot remove %s: %s", path, strerror(errno));
    }
    closedir(dir);
    return rc;
}

/* Rank 0's output folder and metrics log. Collective: 0 or EXIT_FAILED. */
static int setup_output(Run *r, const char *resume_path) {
    const int resuming = resume_path != NULL;
    Config *cfg = r->cfg;
    int failed = 0;
    if (dist_rank() == 0) {
        char metrics_path[1024];
        if (cfg->metrics[0]) snprintf(metrics_path, sizeof metrics_path, "%s", cfg->metrics);
        else snprintf(metrics_path, sizeof metrics_path, "%s/metrics.jsonl", cfg->checkpoint_dir);
        if (mkdir_p(cfg->checkpoint_dir) || (cfg->overwrite && !resuming && remove_previous_run(cfg)) ||
            metrics_open(&r->metrics, metrics_path, resuming))
            failed = 1;
        else
            remove_stale_temporaries(cfg->checkpoint_dir);
        if (!failed && resume_path)
            metrics_mark_resume(&r->metrics, r->ts.step, r->ts.epoch + 1, r->elapsed_before, resume_path);
    }
    return agree_failure(failed) ? EXIT_FAILED : 0;
}

/* Everything before the first step. Collective: 0 on every rank, or the exit code on every rank. */
static int setup(Run *r, const char *resume_path) {
    Config *cfg = r->cfg;
    snprintf(r->last_path, sizeof r->last_path, "%s/last.h5", cfg->checkpoint_dir);
    snprintf(r->best_path, sizeof r->best_path, "%s/best.h5", cfg->checkpoint_dir);
    int code = setup_data(r, resume_path);
    if (!code) code = setup_model(r);
    if (!code) code = setup_resume(r, resume_path);
    if (!code) code = setup_output(r, resume_path);
    if (code) return code;
    run_settings(cfg, &r->train_set, r->threads, &r->settings);
    r->show_progress = dist_rank() == 0 && !cfg->quiet &&
                       (cfg->progress == PROGRESS_ALWAYS || (cfg->progress == PROGRESS_AUTO && isatty(2)));
    return 0;
}

static int compare_names(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* --keep: a numbered hard link to the checkpoint just written (no second write), and the oldest
 * numbered ones beyond `keep` removed. Snapshots are a convenience: failures here only warn. */
static void keep_snapshot(Run *r, const char *path) {
    char numbered[1100];
    snprintf(numbered, sizeof numbered, "%s/step-%08ld.h5", r->cfg->checkpoint_dir, r->ts.step);
    unlink(numbered);
    if (link(path, numbered) != 0) {
        rn_message("warning: %s: %s", numbered, strerror(errno));
        return;
    }
    DIR *dir = opendir(r->cfg->checkpoint_dir);
    if (!dir) return;
    char *names[4096];
    int count = 0;
    struct dirent *e;
    while ((e = readdir(dir)) && count < 4096) {
        long step;
        char tail[8];
        if (sscanf(e->d_name, "step-%ld.%7s", &step, tail) == 2 && strcmp(tail, "h5") == 0)
            names[count++] = strdup(e->d_name);
    }
    closedir(dir);
    qsort(names, count, sizeof *names, compare_names);   /* zero-padded: name order is step order */
    for (int i = 0; i < count; i++) {
        if (i < count - r->cfg->keep) {
            snprintf(numbered, sizeof numbered, "%s/%s", r->cfg->checkpoint_dir, names[i]);
            unlink(numbered);
        }
        free(names[i]);
    }
}

/* RESNET_FAULT_HANG_STEP (hooks.h): a hung file system under the first checkpoint write at or after
 * that step. */
static void maybe_hang_in_write(long step) {
    const Hooks *h = hooks();
    if (h->hang_step < 0 || step < h->hang_step || dist_rank() != h->fault_rank) return;
    rn_message("rank %d: hanging in the checkpoint write at step %ld (RESNET_FAULT_HANG_STEP)", dist_rank(), step);
    for (;;) pause();   /* signals interrupt pause, not the hang */
}

/* What this rank does now, for the stall watchdog's message; RESNET_FAULT_SIGNAL_AT (hooks.h) preempts
 * the run as it begins one of these. */
static void begin_activity(const char *what) {
    dist_set_activity(what);
    const Hooks *h = hooks();
    if (h->signal_at[0] && strcmp(h->signal_at, what) == 0 && dist_rank() == h->fault_rank) raise(SIGUSR1);
}

/* Rank 0 writes path (and, with --keep, a numbered hard link to it); every rank learns whether it
 * worked. Collective. */
static int save_checkpoint(Run *r, const char *path, int snapshot) {
    int failed = 0;
    char doing[64];
    snprintf(doing, sizeof doing, "checkpoint at step %ld", r->ts.step);
    begin_activity(doing);
    /* before the I/O timer: they are forward passes. Without raw validations the raw weights'
     * statistics are not measured for checkpoints either (eval measures them when asked); ones of an
     * earlier step are not saved as these weights'. */
    if (validates_raw(r->cfg)) refresh_reference(r);
    else if (r->reference_step != r->ts.step) r->model.reference_valid = 0;
    refresh_ema_reference(r);
    perf_start(PERF_CHECKPOINT_IO);
    if (r->model.num_buffer_floats) evaluate_sync_running_stats(&r->model);
    maybe_hang_in_write(r->ts.step);
    if (dist_rank() == 0) {
        r->ts.elapsed_s = r->elapsed_before + timer_elapsed_total();
        failed = checkpoint_write_ema(path, &r->model, &r->opt, &r->ts, &r->history, &r->settings,
                                      r->cfg->ema > 0 ? &r->ema : NULL) != 0;
        if (!failed && snapshot && r->cfg->keep > 0) keep_snapshot(r, path);
    }
    perf_stop(PERF_CHECKPOINT_IO);
    if (agree_failure(failed)) return 1;
    if (path == r->last_path) r->saved_step = r->ts.step;
    return 0;
}

static void print_progress(Run *r, long batch, double loss, double images_per_s) {
    fprintf(stderr, "\r[epoch %ld, batch %ld/%ld] loss %.3f | %.0f img/s   ", r->ts.epoch + 1, batch,
            r->steps_per_epoch, loss, images_per_s);
    fflush(stderr);
}

/* --eval-protocol (other: the one it is not), without test-time augmentation */
static EvalProtocol eval_protocol(const Config *cfg, int other) {
    const int seed = strcmp(cfg->eval_protocol, "seed") == 0;
    return (EvalProtocol){.augment = other ? !seed : seed, .tta_flip = 0};
}

/* Validation, the report line, early stopping and checkpoints. Returns 1 when training should stop,
 * -1 on a failure every rank agrees on. Collective. */
static int validate(Run *r, long batch_in_epoch) {
    Config *cfg = r->cfg;
    char doing[64];
    snprintf(doing, sizeof doing, "validation at step %ld", r->ts.step);
    begin_activity(doing);
    perf_start(PERF_VALIDATION);
    double acc = NAN;   /* the trained weights', when validated (validates_raw) */
    if (validates_raw(cfg)) {
        refresh_reference(r);
        acc = evaluate_records_as(&r->evaluator, &r->model, &r->train_set, r->val_records, r->num_val, cfg->bn_eval,
                                  eval_protocol(cfg, 0), NULL);
    }
    /* with --ema the average is the model a user deploys: early stopping and best.h5 follow its accuracy */
    const double acc_ema = cfg->ema > 0 ? evaluate_average(r, &r->train_set, r->val_records, r->num_val,
                                                           eval_protocol(cfg, 0))
                                        : NAN;
    const double score = cfg->ema > 0 ? acc_ema : acc;
    perf_stop(PERF_VALIDATION);
    const double loss = r->ts.running_loss_count ? r->ts.running_loss_sum / r->ts.running_loss_count : 0.0;
    r->ts.running_loss_sum = 0;
    r->ts.running_loss_count = 0;
    int decision[2] = {0, 0};   /* stop, improved */
    if (dist_rank() == 0) {
        const double prev_best = r->ts.best_val_acc;
        decision[0] = early_stop_update(cfg->early_stop, cfg->patience, score, &r->ts.prev_val_acc,
                                        &r->ts.best_val_acc, &r->ts.non_increase_count);
        decision[1] = r->ts.best_val_acc > prev_best;
        if (decision[1]) r->ts.best_step = r->ts.step;
        const double now = rn_now(), elapsed = now - r->run_start;
        const long done = r->ts.step - r->run_start_step;
        const double per_step = done > 0 ? elapsed / done : 0;
        const double ips = elapsed > 0 ? (double)done * cfg->batch_size / elapsed : 0;
        char eta[32];
        format_duration(eta, sizeof eta, per_step * (double)(r->total_steps - r->ts.step));
        if (r->show_progress) fprintf(stderr, "\r\033[K");
        char raw_text[48] = "", ema_text[48] = "";
        if (validates_raw(cfg)) snprintf(raw_text, sizeof raw_text, " | validation accuracy: %.3f", acc);
        if (cfg->ema > 0) snprintf(ema_text, sizeof ema_text, " | EMA validation accuracy: %.3f", acc_ema);
        if (!cfg->quiet) {
            printf("[epoch %ld, batch %ld]: running train cross entropy: %.3f%s%s | %.0f img/s | eta %s\n",
                   r->ts.epoch + 1, batch_in_epoch, loss, raw_text, ema_text, ips, eta);
            fflush(stdout);
        }
        history_append(&r->history, r->ts.step, r->ts.epoch + 1, loss, acc, r->elapsed_before + timer_elapsed_total());
        if (cfg->ema > 0)
            metrics_write_ema(&r->metrics, r->ts.step, r->ts.epoch + 1, batch_in_epoch, loss, acc, acc_ema,
                              schedule_lr(&r->schedule, r->ts.step), ips, r->elapsed_before + timer_elapsed_total());
        else
            metrics_write(&r->metrics, r->ts.step, r->ts.epoch + 1, batch_in_epoch, loss, acc,
                          schedule_lr(&r->schedule, r->ts.step), ips, r->elapsed_before + timer_elapsed_total());
        if (decision[0]) snprintf(r->ts.stop_reason, sizeof r->ts.stop_reason, "early-stop");
    }
    dist_bcast(decision, sizeof decision, 0);
    dist_bcast(&r->ts, sizeof r->ts, 0);
    if (save_checkpoint(r, r->last_path, 1)) return -1;
    if (decision[1] && save_checkpoint(r, r->best_path, 0)) return -1;
    return decision[0];
}

/* One optimizer step on this rank's slice of the global batch. Returns the global mean loss, or NaN
 * with *status set when a signal or a failure stops the run. */
typedef enum { STEP_OK = 0, STEP_SIGNAL, STEP_NONFINITE, STEP_DIVERGED } StepStatus;

/* The first parameter whose value or optimizer state is NaN or Inf after an update, or NULL. BN and ReLU
 * can keep non-finite weights out of the loss for many steps, so the loss check alone misses them; the
 * scan reads the parameters and moments once (0.1-0.3 ms a step beside the step's 100+ ms). */
static const char *nonfinite_parameter(const Run *r) {
    const Model *m = &r->model;
    size_t bad = rn_first_nonfinite(m->params, m->num_params);
    if (bad == m->num_params) {
        const size_t state = optim_state_floats(&r->opt);
        bad = rn_first_nonfinite(r->opt.state, state);
        if (bad == state) return NULL;
        bad %= m->num_params;   /* the state holds one parameter-sized slice per moment */
    }
    for (int i = 0; i < m->num_param_tensors; i++)
        if (bad >= m->param_info[i].offset && bad < m->param_info[i].offset + m->param_info[i].numel)
            return m->param_info[i].name;
    return "?";
}

static double train_step(Run *r, long batch_in_epoch, StepStatus *status) {
    Config *cfg = r->cfg;
    const int rank = dist_rank();
    const long start = batch_in_epoch * cfg->batch_size;
    const int count = (int)(r->num_train - start < cfg->batch_size ? r->num_train - start : cfg->batch_size);
    int lo, n;
    dist_slice(count, &lo, &n);

    perf_start(PERF_DATA);
    uint32_t records[n > 0 ? n : 1];
    for (int i = 0; i < n; i++) records[i] = r->train_records[r->order[start + lo + i]];
    dataset_fill_batch(&r->train_set, records, n, r->images, r->labels, cfg->augment, cfg->seed, (int)r->ts.epoch);
    perf_stop(PERF_DATA);

    perf_start(PERF_COMPUTE);
    model_zero_grad(&r->model);
    model_forward(&r->model, r->images, n, BN_TRAIN);
    double loss_sum = model_loss(&r->model, r->labels, n, count);
    model_backward(&r->model);
    perf_stop(PERF_COMPUTE);

    const Hooks *h = hooks();
    if (h->fault_step >= 0 && r->ts.step == h->fault_step && rank == h->fault_rank) {
        char msg[128];
        snprintf(msg, sizeof msg, "injected fault at step %ld (RESNET_FAULT_STEP)", h->fault_step);
        dist_fail(1, msg);
    }

    /* what is left of the reduction once the backward is done: with buckets, only the exposed part */
    perf_start(PERF_ALLREDUCE);
    gradient_reduction_finish(&r->model);
    perf_stop(PERF_ALLREDUCE);
    /* The update comes before the status reduction, so that the finite check of its result travels in
     * that reduction and every rank reaches the same verdict without another collective. A step that
     * fails (non-finite loss or parameters) ends the run and nothing after it is written, so updating
     * with a bad gradient there does no harm. */
    perf_start(PERF_OPTIMIZER);
    optim_step(&r->opt, r->model.params, r->model.grads, schedule_lr(&r->schedule, r->ts.step));
    if (cfg->ema > 0) ema_update(&r->ema, r->model.params);
    r->nonfinite_tensor = nonfinite_parameter(r);
    perf_stop(PERF_OPTIMIZER);
    perf_start(PERF_ALLREDUCE);
    double state[3] = {loss_sum, stop_requested() ? 1.0 : 0.0, r->nonfinite_tensor ? 1.0 : 0.0};
    dist_allreduce_sum_double(state, 3);
    perf_stop(PERF_ALLREDUCE);

    const double loss = state[0] / count;
    if (h->trace && rank == 0) fprintf(stderr, "trace: step %ld loss %.10g\n", r->ts.step + 1, loss);
    *status = STEP_OK;
    if (!isfinite(loss)) {
        *status = STEP_NONFINITE;
        return loss;
    }
    if (state[2] > 0) {
        *status = STEP_DIVERGED;
        return loss;
    }
    r->ts.step++;
    r->ts.running_loss_sum += loss;
    r->ts.running_loss_count++;
    if (state[1] > 0) *status = STEP_SIGNAL;
    return loss;
}

/* Under --timeout auto the stall deadline follows the run's own pace, which every rank measures. */
static void note_pace(Run *r, StallKind kind, double started) {
    stall_clock_add(&r->pace, kind, rn_now() - started);
    if (r->cfg->timeout < 0) dist_set_timeout(stall_clock_timeout(&r->pace));
}

/* report.md and report.json in the checkpoint folder; a report that cannot be written only warns. */
static void write_report(Run *r, int exit_code, long steps, double seconds, const char *resumed_from) {
    char metrics_path[1100];
    if (r->cfg->metrics[0]) snprintf(metrics_path, sizeof metrics_path, "%s", r->cfg->metrics);
    else snprintf(metrics_path, sizeof metrics_path, "%s/metrics.jsonl", r->cfg->checkpoint_dir);
    const RunFacts facts = {
        .settings = &r->settings, .ts = &r->ts, .checkpoint_dir = r->cfg->checkpoint_dir,
        .metrics_path = metrics_path, .resumed_from = resumed_from, .num_train = r->num_train,
        .num_val = r->num_val, .num_test = r->test_set.count, .classes = r->model.cfg.classes,
        .class_names = (const char (*)[32])r->test_set.class_names, .test_confusion = r->test_confusion,
        .test_protocol = r->cfg->eval_protocol, .test_other_accuracy = r->test_other_accuracy,
        .ema = r->cfg->ema, .test_ema_accuracy = {r->test_ema_accuracy[0], r->test_ema_accuracy[1]},
        .steps_this_run = steps, .batch_size = r->cfg->batch_size, .ranks = dist_size(), .threads = r->threads,
        .exit_code = exit_code, .seconds_this_run = seconds,
        .training_seconds_total = r->elapsed_before + perf_seconds(PERF_TOTAL),
        .flops_per_image = model_flops_per_image(&r->model, 1)};
    if (report_write(&facts)) rn_message("warning: no run report: %s", rn_last_error());
}

/* --ema: the average's test accuracy beside the final model's, under both protocols. Collective. */
static void test_ema(Run *r, const uint32_t *all) {
    for (int other = 0; other < 2; other++)
        r->test_ema_accuracy[other] = evaluate_average(r, &r->test_set, all, r->test_set.count,
                                                       eval_protocol(r->cfg, other));
    if (dist_rank() != 0) return;
    printf("EMA test accuracy: %.4f\nEMA %s protocol test accuracy: %.4f\n", r->test_ema_accuracy[0],
           strcmp(r->cfg->eval_protocol, "seed") ? "seed" : "clean", r->test_ema_accuracy[1]);
    fflush(stdout);
}

static int final_test(Run *r) {
    const int k = r->model.cfg.classes;
    long *confusion = calloc((size_t)k * k, sizeof *confusion);
    uint32_t *all = malloc(sizeof(uint32_t) * r->test_set.count);
    if (!confusion || !all) dist_fail(1, "out of memory for the test evaluation");
    for (int i = 0; i < r->test_set.count; i++) all[i] = (uint32_t)i;
    refresh_reference(r);
    const double acc = evaluate_records_as(&r->evaluator, &r->model, &r->test_set, all, r->test_set.count,
                                           r->cfg->bn_eval, eval_protocol(r->cfg, 0), confusion);
    /* the other protocol beside it: clean and the seed's augmented test compare like with like */
    r->test_other_accuracy = evaluate_records_as(&r->evaluator, &r->model, &r->test_set, all, r->test_set.count,
                                                 r->cfg->bn_eval, eval_protocol(r->cfg, 1), NULL);
    if (dist_rank() == 0) {
        /* the report's first line is the seed's "test accuracy: 0.8578", with the counts after it */
        if (r->cfg->quiet) printf("test accuracy: %.4f\n", acc);
        else evaluate_report(stdout, confusion, k, (const char (*)[32])r->test_set.class_names, 0, "test");
        printf("%s protocol test accuracy: %.4f\n", strcmp(r->cfg->eval_protocol, "seed") ? "seed" : "clean",
               r->test_other_accuracy);
        fflush(stdout);
    }
    if (r->cfg->ema > 0) test_ema(r, all);
    r->test_confusion = confusion;
    free(all);
    return 0;
}

/* Rank 0's line when training diverged (loss or parameters not finite at the step being taken): where
 * the last good state is, so that nobody resumes into the same divergence unawares. */
static void report_divergence(const Run *r, StepStatus status, double loss) {
    if (dist_rank() != 0) return;
    char what[160], back[1200];
    if (status == STEP_NONFINITE) snprintf(what, sizeof what, "loss is %g", loss);
    else snprintf(what, sizeof what, "%s became non-finite (loss %g)",
                  r->nonfinite_tensor ? r->nonfinite_tensor : "a parameter", loss);
    if (r->saved_step >= 0) snprintf(back, sizeof back, " or resume from %s (step %ld)", r->last_path, r->saved_step);
    else snprintf(back, sizeof back, " (no checkpoint was written)");
    if (r->show_progress) fputs("\r\033[K", stderr);
    rn_message("%s at step %ld (epoch %ld, batch %ld): training diverged; lower --lr%s", what, r->ts.step + 1,
               r->ts.epoch + 1, r->ts.batch_in_epoch + 1, back);
}

/* A signal reached some rank: every rank stops at this step and the checkpoint is written. The exit code. */
static int stop_for_signal(Run *r) {
    const int rank0 = dist_rank() == 0;
    snprintf(r->ts.stop_reason, sizeof r->ts.stop_reason, "signal");
    if (rank0 && r->show_progress) fprintf(stderr, "\r\033[K");
    if (rank0) rn_message("signal received: stopping at step %ld", r->ts.step);
    if (hooks()->trace) fprintf(stderr, "trace: rank %d stopped at step %ld\n", dist_rank(), r->ts.step);
    const int code = save_checkpoint(r, r->last_path, 0) ? EXIT_FAILED : EXIT_SIGNALLED;
    if (rank0 && code == EXIT_SIGNALLED)
        rn_message("checkpoint %s written; continue with --resume auto", r->last_path);
    return code;
}

/* The epochs are done or --max-steps is reached. Asked before every step, not after it: a run resumed
 * from the checkpoint of its final step (a stop by signal there, a crash after it) takes no step more. */
static int training_over(const Run *r) {
    return r->ts.epoch >= r->cfg->epochs || (r->cfg->max_steps > 0 && r->ts.step >= r->cfg->max_steps);
}

/* A run its early-stopping rule ended stays ended when it is resumed (a requeued job, a `--resume auto`
 * in a script run twice) while the rule still says stop: without this it would train until the rule,
 * whose count of checks without a rise is already past --patience, fired again at the next validation.
 * --early-stop off, or a --patience the count does not exceed, continues it. 1 when the run is over;
 * collective. */
static int stays_stopped(Run *r) {
    const Config *cfg = r->cfg;
    /* rank 0's reading decides for all (every rank read the same file, but no rank may train alone) */
    int stopped = r->resumed_early_stop && early_stop_fires(cfg->early_stop, cfg->patience, r->ts.non_increase_count);
    dist_bcast(&stopped, sizeof stopped, 0);
    if (!stopped) return 0;
    snprintf(r->ts.stop_reason, sizeof r->ts.stop_reason, "early-stop");
    if (dist_rank() == 0 && !cfg->quiet)
        printf("resume: this run stopped early at step %ld, so no step is taken (--early-stop off, or a "
               "--patience of %d or more, trains on)\n", r->ts.step, r->ts.non_increase_count);
    return 1;
}

/* Why training stopped and the best validation, when there was one (-1 only means "none yet"). */
static void print_stop_line(const Run *r) {
    const TrainState *ts = &r->ts;
    printf("stopped: %s after %ld steps (epoch %ld); ", ts->stop_reason, ts->step,
           ts->epoch + (ts->batch_in_epoch > 0));
    if (ts->best_val_acc < 0) printf("no validation ran\n");
    else printf("best validation accuracy%s: %.4f at step %ld\n", r->cfg->ema > 0 ? " (EMA)" : "", ts->best_val_acc,
                ts->best_step);
}

/* --batch-per-rank sets the global batch from the ranks of this run (a resume on another rank count
 * changes it: said on rank 0). A --batch-size given on the command line takes over from a resumed
 * --batch-per-rank. 0 or EXIT_USAGE, the same on every rank. */
static int resolve_global_batch(Config *cfg, int rank0, int resuming) {
    if (settings_get(&cfg->given, "batch-size") && !settings_get(&cfg->given, "batch-per-rank"))
        cfg->batch_per_rank = 0;
    if (cfg->batch_per_rank <= 0) return 0;
    const long global = (long)cfg->batch_per_rank * dist_size();
    if (global > 65536) {
        if (rank0) rn_error("--batch-per-rank %d x %d ranks = a global batch of %ld, above 65536", cfg->batch_per_rank,
                            dist_size(), global);
        return EXIT_USAGE;
    }
    if (rank0 && resuming && global != cfg->batch_size)
        printf("resume: global batch %ld (--batch-per-rank %d x %d ranks; the checkpoint's was %d)\n", global,
               cfg->batch_per_rank, dist_size(), cfg->batch_size);
    cfg->batch_size = (int)global;
    return 0;
}

/* The rate the schedule starts from, when scaling or warmup change it: one line on rank 0. */
static void print_lr_plan(const Run *r) {
    const Config *cfg = r->cfg;
    if (cfg->lr_scaling == LR_SCALING_NONE && r->schedule.warmup_steps == 0 && cfg->batch_per_rank == 0) return;
    const char *rule = cfg->lr_scaling == LR_SCALING_LINEAR ? "linear" : cfg->lr_scaling == LR_SCALING_SQRT ? "sqrt" : "none";
    printf("global batch %d%s; learning rate %g x %.6g (--lr-scaling %s, --base-batch %d) = %.6g", cfg->batch_size,
           cfg->batch_per_rank ? " (--batch-per-rank x ranks)" : "", (double)cfg->lr, config_lr_factor(cfg), rule,
           cfg->base_batch, (double)r->schedule.base_lr);
    if (r->schedule.warmup_steps > 0) printf(", warmed up linearly over %ld steps", r->schedule.warmup_steps);
    printf("\n");
}

/* Start-up: checks that need no data first (fast failures), then the resumed settings and setup.
 * 0, or the exit code every rank returns. */
static int start(Run *r, const char *resume_path) {
    Config *cfg = r->cfg;
    const int rank0 = dist_rank() == 0;
    int code = agree_exit(hooks_read(dist_size()) ? EXIT_USAGE : 0);
    if (code || (code = choose_kernels())) return code;
    if (resume_path && (code = agree_exit(config_merge_checkpoint(cfg, resume_path, rank0, 0)))) return code;
    if (agree_failure(config_validate(cfg) != 0)) return EXIT_USAGE;
    if ((code = resolve_global_batch(cfg, rank0, resume_path != NULL))) return code;
    if ((code = agree_exit(rank0 && check_output_paths(cfg) ? EXIT_USAGE : 0))) return code;
    r->threads = choose_threads(cfg->threads, cfg->quiet);
    /* the cores' FMA peak (~0.1 s), for the share the performance report prints: not measured when
     * --quiet leaves the report out (every rank knows, so the collective stays on all or none) */
    if (!cfg->quiet) perf_set_peak(measure_peak(r->threads, NULL));
    perf_reset();
    if ((code = setup(r, resume_path))) return code;
    if (rank0 && !cfg->quiet) {
        printf("resnet_mpi %s: %s depth %d (%zu parameters), %s: %d train / %d validation / %d test, "
               "%d rank(s) x %d thread(s), batch %d, %ld steps/epoch%s%s\n",
               RESNET_VERSION, cfg->arch == ARCH_SEED ? "seed" : "paper", cfg->depth, r->model.num_params,
               cfg->dataset, r->num_train, r->num_val, r->test_set.count, dist_size(), r->threads, cfg->batch_size,
               r->steps_per_epoch, resume_path ? ", resumed from " : "", resume_path ? resume_path : "");
        print_lr_plan(r);
        fflush(stdout);
    }
    return 0;
}

/* After a step: the progress line, the epoch's end, a validation or a checkpoint, and the reasons to
 * stop. 1 when training stops here (*exit_code set when it failed or a signal came), else 0. */
static int after_step(Run *r, StepStatus status, double loss, int *exit_code) {
    const Config *cfg = r->cfg;
    const long batch = ++r->ts.batch_in_epoch;
    const int epoch_end = batch == r->steps_per_epoch;
    if (r->show_progress && rn_now() - r->last_progress > 0.5) {
        r->last_progress = rn_now();
        print_progress(r, batch, loss, (r->ts.step - r->run_start_step) * (double)cfg->batch_size /
                                           (r->last_progress - r->run_start));
    }
    const int eval_now = r->eval_every > 0 ? batch % r->eval_every == 0 : epoch_end;
    if (epoch_end) {
        r->ts.epoch++;
        r->ts.batch_in_epoch = 0;
    }
    if (eval_now) {
        /* the report names the epoch the batch belonged to */
        if (epoch_end) r->ts.epoch--;
        const double started = rn_now();
        const int v = validate(r, batch);
        note_pace(r, STALL_VALIDATION, started);
        if (epoch_end) r->ts.epoch++;
        if (v < 0) *exit_code = EXIT_FAILED;
        if (v) return 1;
    } else if (cfg->checkpoint_every > 0 && r->ts.step % cfg->checkpoint_every == 0) {
        const double started = rn_now();
        if (save_checkpoint(r, r->last_path, 1)) {
            *exit_code = EXIT_FAILED;
            return 1;
        }
        note_pace(r, STALL_CHECKPOINT, started);
    }
    if (status == STEP_SIGNAL) {
        *exit_code = stop_for_signal(r);
        return 1;
    }
    /* the step limit is checked before each step (training_over), so that a run resumed from its last
     * step takes none */
    return 0;
}

/* The rest of the epoch in progress. 1 when training stops in it (*exit_code as after_step's), 0 when
 * the epoch ended. */
static int run_epoch(Run *r, int *exit_code) {
    dataset_epoch_order(r->order, r->num_train, r->cfg->seed, (int)r->ts.epoch);
    while (r->ts.batch_in_epoch < r->steps_per_epoch && !training_over(r)) {
        StepStatus status;
        char doing[32];
        snprintf(doing, sizeof doing, "step %ld", r->ts.step + 1);
        begin_activity(doing);
        const double started = rn_now();
        const double loss = train_step(r, r->ts.batch_in_epoch, &status);
        note_pace(r, STALL_STEP, started);
        if (status == STEP_NONFINITE || status == STEP_DIVERGED) {
            report_divergence(r, status, loss);
            snprintf(r->ts.stop_reason, sizeof r->ts.stop_reason, "non-finite %s",
                     status == STEP_NONFINITE ? "loss" : "parameters");
            *exit_code = EXIT_FAILED;
            return 1;
        }
        if (after_step(r, status, loss, exit_code)) return 1;
        if (r->ts.batch_in_epoch == 0) break;   /* after_step began the next epoch */
    }
    return 0;
}

/* The end of the run on every rank: the replicas compared, the final checkpoint and test when training
 * went well, the performance report and the run report. The exit code. */
static int finish(Run *r, int stop, int exit_code, const char *resumed_from) {
    const Config *cfg = r->cfg;
    const int rank0 = dist_rank() == 0;
    begin_activity("end of training");
    if (r->show_progress) fprintf(stderr, "\r\033[K");
    check_replicas(&r->model, cfg->quiet);
    if (!stop)
        snprintf(r->ts.stop_reason, sizeof r->ts.stop_reason, "%s",
                 cfg->max_steps > 0 && r->ts.step >= cfg->max_steps ? "max-steps" : "epochs");
    if (exit_code == EXIT_OK) {
        if (save_checkpoint(r, r->last_path, 0)) exit_code = EXIT_FAILED;
    }
    if (exit_code == EXIT_OK) {
        if (rank0 && !cfg->quiet) print_stop_line(r);
        begin_activity("final test");
        final_test(r);
    }
    perf_report(rank0 && !cfg->quiet ? stdout : NULL, dist_min_sum_max, dist_size(), r->threads,
                (double)(r->ts.step - r->run_start_step) * cfg->batch_size, rn_now() - r->run_start,
                model_flops_per_image(&r->model, 1));
    write_report(r, exit_code, r->ts.step - r->run_start_step, rn_now() - r->run_start, resumed_from);
    /* a preemption after the last step's status reduction: the run is whole, and the log should say why
     * a signal that a launcher or batch script reports did not stop it */
    if (rank0 && exit_code == EXIT_OK && stop_requested())
        rn_message("signal received after the last step: training is complete, nothing to resume");
    return exit_code;
}

int train_main(Config *cfg) {
    Run run = {.cfg = cfg};
    Run *r = &run;
    char resume_path[1024];
    const int resuming = resolve_resume(cfg, resume_path, sizeof resume_path);
    const int start_code = start(r, resuming ? resume_path : NULL);
    if (start_code) {
        run_free(r);
        return start_code;
    }
    signals_startup_over();

    int exit_code = EXIT_OK, stop = stays_stopped(r);
    r->run_start = rn_now();
    r->run_start_step = r->ts.step;
    perf_start(PERF_TOTAL);
    total_started = rn_now();
    while (!stop && !training_over(r)) stop = run_epoch(r, &exit_code);
    perf_stop(PERF_TOTAL);
    exit_code = finish(r, stop, exit_code, resuming ? resume_path : NULL);
    run_free(r);
    return exit_code;
}
