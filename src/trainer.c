/* The training run: data, model and optimizer set up on every rank, then the step loop, read top to
 * bottom. Every collective is reached by every rank in the same order: per step the optional sync-BN
 * reductions, the gradient allreduce and one status reduction (loss, signal, fault); per validation the
 * evaluation's reductions and rank 0's broadcast decision. */
#include "resnet/trainer.h"

#include <errno.h>
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
#include "resnet/evaluate.h"
#include "resnet/metrics.h"
#include "resnet/optim.h"
#include "resnet/report.h"
#include "resnet/resnet.h"
#include "resnet/util.h"

/* ---- pieces shared by the subcommands -------------------------------------------------------------- */

static volatile sig_atomic_t stop_signal = 0;

static void on_signal(int sig) { stop_signal = sig; }

static void install_signal_handlers(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
}

/* A failure that every rank learns about together: the lowest failing rank prints its message, all
 * ranks return 1 from here, and nobody waits in a collective. */
int agree_failure(int failed) {
    if (!dist_any(failed)) return 0;
    const double first = -dist_max_double(failed ? -(double)dist_rank() : -1e18);
    if (failed && (int)first == dist_rank()) {
        if (dist_size() > 1) fprintf(stderr, "resnet_mpi: rank %d: %s\n", dist_rank(), rn_last_error());
        else fprintf(stderr, "resnet_mpi: %s\n", rn_last_error());
    }
    return 1;
}

static int cores_available(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) return CPU_COUNT(&set);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

/* Threads per rank: the node's cores shared among its ranks unless --threads says otherwise. */
int choose_threads(int requested, int quiet) {
    long node_cores = sysconf(_SC_NPROCESSORS_ONLN);
    if (node_cores < 1) node_cores = 1;
    const int local = dist_local_size(), bound = cores_available();
    int threads = requested;
    if (threads <= 0) {
        threads = (int)(node_cores / local);
        if (threads > bound) threads = bound;   /* a launcher that bound us to fewer cores knows better */
        if (threads < 1) threads = 1;
    }
    if (!quiet && dist_local_rank() == 0 && (long)threads * local > node_cores)
        fprintf(stderr, "resnet_mpi: warning: %d rank(s) x %d thread(s) on a node with %ld cores oversubscribes it\n",
                local, threads, node_cores);
    else if (!quiet && dist_rank() == 0 && threads > bound)
        fprintf(stderr, "resnet_mpi: warning: %d threads but this rank is bound to %d core(s); "
                        "launch with mpirun --bind-to none or --map-by slot:PE=%d\n", threads, bound, threads);
    compute_set_threads(threads);
    return threads;
}

static void format_duration(char *buf, size_t size, double seconds) {
    if (!(seconds >= 0) || seconds > 1e8) snprintf(buf, size, "?");
    else if (seconds >= 3600) snprintf(buf, size, "%dh%02dm", (int)(seconds / 3600), (int)(seconds / 60) % 60);
    else if (seconds >= 60) snprintf(buf, size, "%dm", (int)(seconds / 60 + 0.5));
    else snprintf(buf, size, "%ds", (int)(seconds + 0.5));
}

static int mkdir_p(const char *path) {
    char tmp[1024];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(tmp, 0777) && errno != EEXIST) return rn_error("%s: cannot create folder: %s", tmp, strerror(errno));
        *p = '/';
    }
    if (mkdir(tmp, 0777) && errno != EEXIST) return rn_error("%s: cannot create folder: %s", tmp, strerror(errno));
    return 0;
}

/* Settings written beside the flags: what the data and the launch were, for readers of the file. */
static const char *const info_keys[] = {"world-size", "in-channels", "image-size", "classes", "class_names", NULL};

static int is_info_key(const char *key) {
    for (int i = 0; info_keys[i]; i++)
        if (strcmp(info_keys[i], key) == 0) return 1;
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

/* The value a key would have in a config after config_set, for comparing spellings ("1e-3", "0.001"). */
static int normalised_equal(const Config *base, const char *key, const char *a, const char *b) {
    Config ca = *base, cb = *base;
    Settings sa, sb;
    if (config_set(&ca, key, a) || config_set(&cb, key, b)) return strcmp(a, b) == 0;
    config_to_settings(&ca, &sa);
    config_to_settings(&cb, &sb);
    const char *va = settings_get(&sa, key), *vb = settings_get(&sb, key);
    return va && vb && strcmp(va, vb) == 0;
}

/* Resume: the file's settings fill every flag the user did not give; given flags that differ are
 * applied and reported; a different model or data set is an error. Returns 0 or -1 (rn_error). */
int config_merge_checkpoint(Config *cfg, const char *path, int report) {
    Settings file;
    if (checkpoint_read_settings(path, &file)) return -1;
    static const char *const fixed[] = {"arch", "depth", "dataset", NULL};
    for (int i = 0; i < file.count; i++) {
        const char *key = file.items[i].key, *value = file.items[i].value;
        if (is_info_key(key)) continue;
        const char *given = settings_get(&cfg->given, key);
        if (!given) {
            if (config_set(cfg, key, value)) {
                char why[512];   /* rn_error writes the buffer rn_last_error reads */
                snprintf(why, sizeof why, "%s", rn_last_error());
                return rn_error("%s: setting %s = '%s' in /config: %s", path, key, value, why);
            }
            continue;
        }
        if (normalised_equal(cfg, key, given, value)) continue;
        for (int f = 0; fixed[f]; f++)
            if (strcmp(fixed[f], key) == 0)
                return rn_error("%s: checkpoint was trained with --%s %s; cannot resume it with --%s %s", path, key,
                                value, key, given);
        if (report) printf("resume: --%s %s (the checkpoint had %s)\n", key, given, value);
    }
    return 0;
}

static double total_started;

/* Seconds of training so far in this process (the total timer while it runs). */
static double timer_elapsed_total(void) { return rn_now() - total_started; }

/* RESNET_TRACE=1: per-step losses and per-rank parameter hashes on stderr, for the MPI tests. */
static int trace_steps(void) {
    static int cached = -1;
    if (cached < 0) {
        const char *v = getenv("RESNET_TRACE");
        cached = v && *v == '1';
    }
    return cached;
}

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
    if (trace_steps()) fprintf(stderr, "trace: rank %d step-end params hash %016llx\n", dist_rank(), (unsigned long long)mine);
    if (dist_rank() == 0 && (differ || !quiet))
        fprintf(differ ? stderr : stdout, "%s parameters: hash %016llx %s\n", differ ? "resnet_mpi: warning:" : "replica",
                (unsigned long long)root, differ ? "DIFFERS between ranks" : "identical on every rank");
}

/* ---- the early-stopping rule ------------------------------------------------------------------------ */

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
    if (rule == EARLY_STOP_OFF) return 0;
    return *non_increase_count > patience;
}

/* ---- training --------------------------------------------------------------------------------------- */

typedef struct {
    Config *cfg;
    ImageSet train_set, test_set;
    uint32_t *train_records, *val_records, *order;
    int num_train, num_val;
    Model model;
    Optimizer opt;
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
    char last_path[1024], best_path[1024];
    int show_progress;
    double elapsed_before;    /* training seconds of the runs this one resumes */
    long *test_confusion;     /* the end-of-run test, for the report */
} Run;

static void run_free(Run *r) {
    imageset_free(&r->train_set);
    imageset_free(&r->test_set);
    free(r->train_records);
    free(r->val_records);
    free(r->order);
    model_free(&r->model);
    optim_free(&r->opt);
    evaluator_free(&r->evaluator);
    history_free(&r->history);
    metrics_close(&r->metrics);
    rn_free(r->images);
    rn_free(r->labels);
    free(r->test_confusion);
}

static int resolve_resume(const Config *cfg, char *path, size_t size) {
    if (!cfg->resume[0]) return 0;
    if (strcmp(cfg->resume, "auto") == 0) {
        snprintf(path, size, "%s/last.h5", cfg->checkpoint_dir);
        return access(path, F_OK) == 0;
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

/* Everything before the first step. Collective: returns 0 on every rank or 1 on every rank. */
static int setup(Run *r, const char *resume_path) {
    Config *cfg = r->cfg;
    const int rank0 = dist_rank() == 0;
    int failed = 0;
    if (dataset_load(cfg->dataset, cfg->data_dir, 1, &r->train_set) ||
        dataset_load(cfg->dataset, cfg->data_dir, 0, &r->test_set))
        failed = 1;
    if (agree_failure(failed)) return 1;

    if (dataset_split(r->train_set.count, cfg->val_size, cfg->split_seed, &r->train_records, &r->num_train,
                      &r->val_records, &r->num_val))
        failed = 1;
    else if (cfg->limit_train > r->num_train)
        failed = rn_error("--limit-train %ld: only %d training records after the split", cfg->limit_train,
                          r->num_train) != 0;
    else if (cfg->limit_train > 0)
        r->num_train = (int)cfg->limit_train;
    if (!failed && cfg->batch_size < dist_size())
        failed = rn_error("--batch-size %d is smaller than the %d ranks", cfg->batch_size, dist_size()) != 0;
    if (!failed && r->num_train % cfg->batch_size && r->num_train % cfg->batch_size < dist_size())
        failed = rn_error("the last batch of an epoch (%d samples) has fewer samples than the %d ranks; "
                          "change --batch-size or --limit-train", r->num_train % cfg->batch_size, dist_size()) != 0;
    if (agree_failure(failed)) return 1;
    r->steps_per_epoch = (r->num_train + cfg->batch_size - 1) / cfg->batch_size;
    r->total_steps = (long)cfg->epochs * r->steps_per_epoch;
    if (cfg->max_steps > 0 && cfg->max_steps < r->total_steps) r->total_steps = cfg->max_steps;
    config_schedule(cfg, r->steps_per_epoch, &r->schedule);

    ModelConfig mc = config_model(cfg, r->train_set.channels, r->train_set.size, r->train_set.classes);
    OptimConfig oc;
    config_optim(cfg, &oc);
    const int local_max = (cfg->batch_size + dist_size() - 1) / dist_size();
    const size_t pixels = (size_t)r->train_set.channels * r->train_set.size * r->train_set.size;
    int eval_max = r->num_val > r->test_set.count ? r->num_val : r->test_set.count;
    if (model_init(&r->model, &mc, cfg->seed) || model_reserve(&r->model, local_max, 1) ||
        optim_init(&r->opt, &oc, r->model.num_params) || evaluator_init(&r->evaluator, &r->model, eval_max) ||
        !(r->images = rn_alloc(sizeof(float) * pixels * local_max)) ||
        !(r->labels = rn_alloc(sizeof(int) * local_max)) ||
        !(r->order = malloc(sizeof(uint32_t) * (r->train_set.count + 1))))
        failed = 1;
    if (agree_failure(failed)) return 1;
    if (cfg->sync_bn) r->model.train_reducer = (StatReducer){dist_stat_sum, NULL};
    r->model.eval_reducer = (StatReducer){dist_stat_sum, NULL};

    r->ts = (TrainState){.best_val_acc = -1.0, .prev_val_acc = -INFINITY};
    if (resume_path) {
        if (checkpoint_read(resume_path, &r->model, &r->opt, &r->ts, &r->history)) failed = 1;
        else r->ts.stop_reason[0] = '\0';
        r->elapsed_before = r->ts.elapsed_s;
    }
    if (agree_failure(failed)) return 1;
    /* replicas start identical even if some rank's initialisation or file read differed */
    dist_bcast(r->model.params, sizeof(float) * r->model.num_params, 0);

    run_settings(cfg, &r->train_set, r->threads, &r->settings);
    snprintf(r->last_path, sizeof r->last_path, "%s/last.h5", cfg->checkpoint_dir);
    snprintf(r->best_path, sizeof r->best_path, "%s/best.h5", cfg->checkpoint_dir);
    if (rank0) {
        char metrics_path[1024];
        if (cfg->metrics[0]) snprintf(metrics_path, sizeof metrics_path, "%s", cfg->metrics);
        else snprintf(metrics_path, sizeof metrics_path, "%s/metrics.jsonl", cfg->checkpoint_dir);
        if (mkdir_p(cfg->checkpoint_dir) || metrics_open(&r->metrics, metrics_path, resume_path != NULL))
            failed = 1;
        else
            remove_stale_temporaries(cfg->checkpoint_dir);
        if (!failed && resume_path)
            metrics_mark_resume(&r->metrics, r->ts.step, r->ts.epoch + 1, r->elapsed_before, resume_path);
    }
    if (agree_failure(failed)) return 1;
    r->show_progress = rank0 && !cfg->quiet &&
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
        fprintf(stderr, "resnet_mpi: warning: %s: %s\n", numbered, strerror(errno));
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

/* Rank 0 writes path (and, with --keep, a numbered hard link to it); every rank learns whether it
 * worked. Collective. */
static int save_checkpoint(Run *r, const char *path, int snapshot) {
    int failed = 0;
    timer_start(TIMER_IO);
    if (r->model.num_buffer_floats) evaluate_sync_running_stats(&r->model);
    if (dist_rank() == 0) {
        r->ts.elapsed_s = r->elapsed_before + timer_elapsed_total();
        failed = checkpoint_write(path, &r->model, &r->opt, &r->ts, &r->history, &r->settings) != 0;
        if (!failed && snapshot && r->cfg->keep > 0) keep_snapshot(r, path);
    }
    timer_stop(TIMER_IO);
    return agree_failure(failed);
}

static void print_progress(Run *r, long batch, double loss, double images_per_s) {
    fprintf(stderr, "\r[epoch %ld, batch %ld/%ld] loss %.3f | %.0f img/s   ", r->ts.epoch + 1, batch,
            r->steps_per_epoch, loss, images_per_s);
    fflush(stderr);
}

/* Validation, the report line, early stopping and checkpoints. Returns 1 when training should stop,
 * -1 on a failure every rank agrees on. Collective. */
static int validate(Run *r, long batch_in_epoch, double run_start_s, long run_start_step) {
    Config *cfg = r->cfg;
    timer_start(TIMER_VALIDATION);
    const double acc = evaluate_records(&r->evaluator, &r->model, &r->train_set, r->val_records, r->num_val,
                                        cfg->bn_eval, NULL);
    timer_stop(TIMER_VALIDATION);
    const double loss = r->ts.running_loss_count ? r->ts.running_loss_sum / r->ts.running_loss_count : 0.0;
    r->ts.running_loss_sum = 0;
    r->ts.running_loss_count = 0;
    int decision[2] = {0, 0};   /* stop, improved */
    if (dist_rank() == 0) {
        const double prev_best = r->ts.best_val_acc;
        decision[0] = early_stop_update(cfg->early_stop, cfg->patience, acc, &r->ts.prev_val_acc,
                                        &r->ts.best_val_acc, &r->ts.non_increase_count);
        decision[1] = r->ts.best_val_acc > prev_best;
        if (decision[1]) r->ts.best_step = r->ts.step;
        const double now = rn_now(), elapsed = now - run_start_s;
        const long done = r->ts.step - run_start_step;
        const double per_step = done > 0 ? elapsed / done : 0;
        const double ips = elapsed > 0 ? (double)done * cfg->batch_size / elapsed : 0;
        char eta[32];
        format_duration(eta, sizeof eta, per_step * (double)(r->total_steps - r->ts.step));
        if (r->show_progress) fprintf(stderr, "\r\033[K");
        if (!cfg->quiet) {
            printf("[epoch %ld, batch %ld]: running train cross entropy: %.3f | validation accuracy: %.3f | %.0f img/s | eta %s\n",
                   r->ts.epoch + 1, batch_in_epoch, loss, acc, ips, eta);
            fflush(stdout);
        }
        history_append(&r->history, r->ts.step, r->ts.epoch + 1, loss, acc, r->elapsed_before + timer_elapsed_total());
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
typedef enum { STEP_OK = 0, STEP_SIGNAL, STEP_NONFINITE } StepStatus;

static double train_step(Run *r, long batch_in_epoch, StepStatus *status) {
    Config *cfg = r->cfg;
    const int P = dist_size(), rank = dist_rank();
    const long start = batch_in_epoch * cfg->batch_size;
    const int count = (int)(r->num_train - start < cfg->batch_size ? r->num_train - start : cfg->batch_size);
    const int lo = (int)((long)count * rank / P), n = (int)((long)count * (rank + 1) / P) - lo;

    timer_start(TIMER_DATA);
    uint32_t records[n > 0 ? n : 1];
    for (int i = 0; i < n; i++) records[i] = r->train_records[r->order[start + lo + i]];
    dataset_fill_batch(&r->train_set, records, n, r->images, r->labels, cfg->augment, cfg->seed, (int)r->ts.epoch);
    timer_stop(TIMER_DATA);

    timer_start(TIMER_COMPUTE);
    model_zero_grad(&r->model);
    model_forward(&r->model, r->images, n, BN_TRAIN);
    double loss_sum = model_loss(&r->model, r->labels, n, count);
    model_backward(&r->model);
    timer_stop(TIMER_COMPUTE);

    static long fault_step = -2;
    static int fault_rank = -1;
    if (fault_step == -2) {
        const char *s = getenv("RESNET_FAULT_STEP"), *rk = getenv("RESNET_FAULT_RANK");
        fault_step = s ? atol(s) : -1;
        fault_rank = rk ? atoi(rk) : 0;
    }
    if (fault_step >= 0 && r->ts.step == fault_step && rank == fault_rank) {
        char msg[128];
        snprintf(msg, sizeof msg, "injected fault at step %ld (RESNET_FAULT_STEP)", fault_step);
        dist_fail(1, msg);
    }

    timer_start(TIMER_ALLREDUCE);
    dist_allreduce_sum_float(r->model.grads, r->model.num_params);
    double state[2] = {loss_sum, stop_signal ? 1.0 : 0.0};
    dist_allreduce_sum_double(state, 2);
    timer_stop(TIMER_ALLREDUCE);

    const double loss = state[0] / count;
    if (trace_steps() && rank == 0) fprintf(stderr, "trace: step %ld loss %.10g\n", r->ts.step + 1, loss);
    *status = STEP_OK;
    if (!isfinite(loss)) {
        *status = STEP_NONFINITE;
        return loss;
    }
    timer_start(TIMER_OPTIMIZER);
    optim_step(&r->opt, r->model.params, r->model.grads, schedule_lr(&r->schedule, r->ts.step));
    timer_stop(TIMER_OPTIMIZER);
    r->ts.step++;
    r->ts.running_loss_sum += loss;
    r->ts.running_loss_count++;
    if (state[1] > 0) *status = STEP_SIGNAL;
    return loss;
}

static void performance_report(Run *r, double images, double seconds) {
    double t[TIMER_COUNT];
    for (int i = 0; i < TIMER_COUNT; i++) t[i] = dist_max_double(timer_seconds((TimerId)i));
    const long rss = (long)dist_max_double((double)rn_peak_rss_kib());
    if (dist_rank() != 0 || r->cfg->quiet) return;
    printf("performance (max over %d rank(s), %d thread(s) each):\n", dist_size(), r->threads);
    for (int i = 0; i < TIMER_COUNT; i++)
        printf("  %-15s %10.2f s %6.1f%%\n", timer_name((TimerId)i), t[i],
               t[TIMER_TOTAL] > 0 ? 100.0 * t[i] / t[TIMER_TOTAL] : 0.0);
    printf("  training images/s %.1f, %.2f GFLOP/s; peak memory per rank %.0f MiB\n",
           seconds > 0 ? images / seconds : 0.0,
           seconds > 0 ? images * model_flops_per_image(&r->model, 1) / seconds * 1e-9 : 0.0, rss / 1024.0);
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
        .steps_this_run = steps, .batch_size = r->cfg->batch_size, .ranks = dist_size(), .threads = r->threads,
        .exit_code = exit_code, .seconds_this_run = seconds,
        .training_seconds_total = r->elapsed_before + timer_seconds(TIMER_TOTAL),
        .flops_per_image = model_flops_per_image(&r->model, 1)};
    if (report_write(&facts)) fprintf(stderr, "resnet_mpi: warning: no run report: %s\n", rn_last_error());
}

static int final_test(Run *r) {
    const int k = r->model.cfg.classes;
    long *confusion = calloc((size_t)k * k, sizeof *confusion);
    uint32_t *all = malloc(sizeof(uint32_t) * r->test_set.count);
    if (!confusion || !all) dist_fail(1, "out of memory for the test evaluation");
    for (int i = 0; i < r->test_set.count; i++) all[i] = (uint32_t)i;
    const double acc = evaluate_records(&r->evaluator, &r->model, &r->test_set, all, r->test_set.count,
                                        r->cfg->bn_eval, confusion);
    if (dist_rank() == 0) {
        /* the report's first line is the seed's "test accuracy: 0.8578", with the counts after it */
        if (r->cfg->quiet) printf("test accuracy: %.4f\n", acc);
        else evaluate_report(stdout, confusion, k, (const char (*)[32])r->test_set.class_names, 0, "test");
        fflush(stdout);
    }
    r->test_confusion = confusion;
    free(all);
    return 0;
}

int train_main(Config *cfg) {
    Run run = {.cfg = cfg};
    Run *r = &run;
    const int rank0 = dist_rank() == 0;
    char resume_path[1024];
    int resuming = resolve_resume(cfg, resume_path, sizeof resume_path);
    if (resuming && agree_failure(config_merge_checkpoint(cfg, resume_path, rank0) != 0)) return EXIT_FAILED;
    if (agree_failure(config_validate(cfg) != 0)) return EXIT_USAGE;
    r->threads = choose_threads(cfg->threads, cfg->quiet);
    install_signal_handlers();
    timers_reset();
    if (setup(r, resuming ? resume_path : NULL)) {
        run_free(r);
        return EXIT_FAILED;
    }
    if (rank0 && !cfg->quiet) {
        printf("resnet_mpi %s: %s depth %d (%zu parameters), %s: %d train / %d validation / %d test, "
               "%d rank(s) x %d thread(s), batch %d, %ld steps/epoch%s%s\n",
               RESNET_VERSION, cfg->arch == ARCH_SEED ? "seed" : "paper", cfg->depth, r->model.num_params,
               cfg->dataset, r->num_train, r->num_val, r->test_set.count, dist_size(), r->threads, cfg->batch_size,
               r->steps_per_epoch, resuming ? ", resumed from " : "", resuming ? resume_path : "");
        fflush(stdout);
    }

    int exit_code = EXIT_OK, stop = 0;
    const double run_start = rn_now();
    const long run_start_step = r->ts.step;
    double last_progress = 0;
    timer_start(TIMER_TOTAL);
    total_started = rn_now();
    while (!stop && r->ts.epoch < cfg->epochs) {
        dataset_epoch_order(r->order, r->num_train, cfg->seed, (int)r->ts.epoch);
        while (r->ts.batch_in_epoch < r->steps_per_epoch) {
            StepStatus status;
            const double loss = train_step(r, r->ts.batch_in_epoch, &status);
            if (status == STEP_NONFINITE) {
                if (rank0)
                    fprintf(stderr, "\nresnet_mpi: loss is %g at step %ld (epoch %ld, batch %ld): training diverged; "
                                    "lower --lr or resume from %s\n",
                            loss, r->ts.step + 1, r->ts.epoch + 1, r->ts.batch_in_epoch + 1, r->last_path);
                exit_code = EXIT_FAILED;
                stop = 1;
                snprintf(r->ts.stop_reason, sizeof r->ts.stop_reason, "non-finite loss");
                break;
            }
            const long batch = ++r->ts.batch_in_epoch;
            const int epoch_end = batch == r->steps_per_epoch;
            if (r->show_progress && rn_now() - last_progress > 0.5) {
                last_progress = rn_now();
                print_progress(r, batch, loss, (r->ts.step - run_start_step) * (double)cfg->batch_size /
                                                   (last_progress - run_start));
            }
            const int eval_now = cfg->eval_every > 0 ? batch % cfg->eval_every == 0 : epoch_end;
            if (epoch_end) {
                r->ts.epoch++;
                r->ts.batch_in_epoch = 0;
            }
            if (eval_now) {
                /* the report names the epoch the batch belonged to */
                if (epoch_end) r->ts.epoch--;
                const int v = validate(r, batch, run_start, run_start_step);
                if (epoch_end) r->ts.epoch++;
                if (v < 0) { exit_code = EXIT_FAILED; stop = 1; break; }
                if (v > 0) { stop = 1; break; }
            } else if (cfg->checkpoint_every > 0 && r->ts.step % cfg->checkpoint_every == 0) {
                if (save_checkpoint(r, r->last_path, 1)) { exit_code = EXIT_FAILED; stop = 1; break; }
            }
            if (status == STEP_SIGNAL) {
                snprintf(r->ts.stop_reason, sizeof r->ts.stop_reason, "signal");
                if (rank0 && r->show_progress) fprintf(stderr, "\r\033[K");
                if (rank0) fprintf(stderr, "resnet_mpi: signal received: stopping at step %ld\n", r->ts.step);
                if (trace_steps()) fprintf(stderr, "trace: rank %d stopped at step %ld\n", dist_rank(), r->ts.step);
                exit_code = save_checkpoint(r, r->last_path, 0) ? EXIT_FAILED : EXIT_SIGNALLED;
                if (rank0 && exit_code == EXIT_SIGNALLED)
                    fprintf(stderr, "resnet_mpi: checkpoint %s written; continue with --resume auto\n", r->last_path);
                stop = 1;
                break;
            }
            if (cfg->max_steps > 0 && r->ts.step >= cfg->max_steps) {
                snprintf(r->ts.stop_reason, sizeof r->ts.stop_reason, "max-steps");
                stop = 1;
                break;
            }
            if (epoch_end) break;
        }
    }
    timer_stop(TIMER_TOTAL);
    if (r->show_progress) fprintf(stderr, "\r\033[K");
    check_replicas(&r->model, cfg->quiet);
    if (!stop) snprintf(r->ts.stop_reason, sizeof r->ts.stop_reason, "epochs");
    if (exit_code == EXIT_OK) {
        if (save_checkpoint(r, r->last_path, 0)) exit_code = EXIT_FAILED;
    }
    if (exit_code == EXIT_OK) {
        if (rank0 && !cfg->quiet) {
            printf("stopped: %s after %ld steps (epoch %ld); best validation accuracy: %.4f at step %ld\n",
                   r->ts.stop_reason, r->ts.step, r->ts.epoch + (r->ts.batch_in_epoch > 0), r->ts.best_val_acc,
                   r->ts.best_step);
        }
        final_test(r);
    }
    performance_report(r, (double)(r->ts.step - run_start_step) * cfg->batch_size, rn_now() - run_start);
    write_report(r, exit_code, r->ts.step - run_start_step, rn_now() - run_start, resuming ? resume_path : NULL);
    run_free(r);
    return exit_code;
}
