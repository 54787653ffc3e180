/* What every subcommand does first: see run.h. */
#include "resnet/run.h"

#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "resnet/checkpoint.h"
#include "resnet/conv.h"
#include "resnet/dist.h"
#include "resnet/hooks.h"
#include "resnet/peak.h"
#include "resnet/util.h"

static volatile sig_atomic_t stop_signal = 0;
/* Before the step loop there is nothing to save, and start-up may wait in a system call that a signal
 * does not end (a read on a hung file system, a collective another rank never joins): a signal then ends
 * the process at once with a message, instead of a flag nobody reads yet. */
static volatile sig_atomic_t in_startup = 1;
static int startup_exit_code = EXIT_FAILED;
static char startup_message[3][200];   /* for SIGINT, SIGTERM, SIGUSR1 */
static const int stop_signals[3] = {SIGINT, SIGTERM, SIGUSR1};

static void on_signal(int sig) {
    if (in_startup) {
        const char *msg = startup_message[sig == SIGINT ? 0 : sig == SIGTERM ? 1 : 2];
        ssize_t written = write(STDERR_FILENO, msg, strlen(msg));   /* both async-signal-safe */
        (void)written;
        _exit(startup_exit_code);
    }
    stop_signal = sig;
}

void signals_install(int training) {
    static const char *const names[3] = {"SIGINT", "SIGTERM", "SIGUSR1"};
    /* built now: the handler may only write(2) what is ready */
    char prefix[48] = RN_PREFIX;
    if (dist_size() > 1) snprintf(prefix, sizeof prefix, RN_PREFIX "rank %d: ", dist_rank());
    /* training: exit 75, as after a checkpoint: the folder holds what it held, and --resume auto goes on */
    startup_exit_code = training ? EXIT_SIGNALLED : EXIT_FAILED;
    for (int i = 0; i < 3; i++)
        snprintf(startup_message[i], sizeof startup_message[i], "%s%s received%s\n", prefix, names[i],
                 training ? " during start-up: stopped before the first step, nothing written (continue with "
                            "--resume auto)"
                          : ": stopped");
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigset_t mask;
    sigemptyset(&mask);
    for (int i = 0; i < 3; i++) {
        sigaction(stop_signals[i], &sa, NULL);
        sigaddset(&mask, stop_signals[i]);
    }
    /* a launcher may have started us with them blocked; stopping cleanly depends on them */
    sigprocmask(SIG_UNBLOCK, &mask, NULL);
}

/* From the first step on, a signal asks the step loop to checkpoint and stop. */
void signals_startup_over(void) { in_startup = 0; }

int stop_requested(void) { return stop_signal != 0; }

/* A failure that every rank learns about together: the lowest failing rank prints its message, all
 * ranks return 1 from here, and nobody waits in a collective. */
int agree_failure(int failed) {
    if (!dist_any(failed)) return 0;
    /* the job ends now: mpirun's SIGTERM to the ranks still finishing must not read as a start-up stop */
    in_startup = 0;
    const double first = -dist_max_double(failed ? -(double)dist_rank() : -1e18);
    if (failed && (int)first == dist_rank()) {
        if (dist_size() > 1) rn_message("rank %d: %s", dist_rank(), rn_last_error());
        else rn_message("%s", rn_last_error());
    }
    return 1;
}

int agree_exit(int code) {
    if (!agree_failure(code != 0)) return 0;
    const int worst = (int)dist_max_double(code);
    return worst ? worst : EXIT_FAILED;
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
        rn_message("warning: %d rank(s) x %d thread(s) on a node with %ld cores oversubscribes it", local, threads,
                   node_cores);
    else if (!quiet && dist_rank() == 0 && threads > bound)
        rn_message("warning: %d threads but this rank is bound to %d core(s); "
                   "launch with mpirun --bind-to none or --map-by slot:PE=%d", threads, bound, threads);
    compute_set_threads(threads);
    return threads;
}

int choose_kernels(void) {
    int failed = hooks_read_isa();
    if (!failed && conv_select_isa(hooks()->isa)) {
        char why[512];
        snprintf(why, sizeof why, "%s", rn_last_error());
        failed = rn_error("RESNET_ISA=%s: %s", hooks()->isa, why);
    }
    if (!failed) conv_use_winograd(hooks()->winograd);
    return agree_exit(failed ? EXIT_USAGE : 0);
}

int mkdir_p(const char *path) {
    char tmp[1024];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1;; p++) {
        if (*p != '/' && *p) continue;
        const char c = *p;
        *p = '\0';
        if (mkdir(tmp, 0777) && errno != EEXIST)
            return rn_error("--checkpoint-dir %s: cannot create folder %s: %s", path, tmp, strerror(errno));
        *p = c;
        if (!c) return 0;
    }
}

/* Settings written beside the flags: what the data and the launch were, for readers of the file. */
static const char *const info_keys[] = {"world-size", "in-channels", "image-size", "classes", "class_names", NULL};

static int is_info_key(const char *key) {
    for (int i = 0; info_keys[i]; i++)
        if (strcmp(info_keys[i], key) == 0) return 1;
    return 0;
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

/* Resume and eval: the file's settings fill every flag the user did not give; given flags that differ
 * are applied and reported; a different model or data set is a usage error. 0, EXIT_FAILED (the file, or
 * a bad value in its /config) or EXIT_USAGE (a flag given), with rn_error. */
int config_merge_checkpoint(Config *cfg, const char *path, int report, int evaluating) {
    Settings file;
    if (checkpoint_read_settings(path, &file)) return EXIT_FAILED;
    config_fill_missing(cfg, &file);
    static const char *const fixed[] = {"arch", "depth", "dataset", NULL};
    for (int i = 0; i < file.count; i++) {
        const char *key = file.items[i].key, *value = file.items[i].value;
        if (is_info_key(key)) continue;
        const char *given = settings_get(&cfg->given, key);
        if (!given) {
            if (config_set(cfg, key, value)) {
                char why[512];   /* rn_error writes the buffer rn_last_error reads */
                snprintf(why, sizeof why, "%s", rn_last_error());
                rn_error("%s: setting %s = '%s' in /config: %s", path, key, value, why);
                return EXIT_FAILED;
            }
            continue;
        }
        if (normalised_equal(cfg, key, given, value)) continue;
        for (int f = 0; fixed[f]; f++)
            if (strcmp(fixed[f], key) == 0) {
                rn_error("%s: checkpoint was trained with --%s %s; cannot %s it with --%s %s", path, key, value,
                         evaluating ? "evaluate" : "resume", key, given);
                return EXIT_USAGE;
            }
        if (report) printf("resume: --%s %s (the checkpoint had %s)\n", key, given, value);
    }
    return 0;
}

int check_data_matches_checkpoint(const char *checkpoint, const ImageSet *set, const char *data_dir) {
    Settings file;
    if (checkpoint_read_settings(checkpoint, &file)) return -1;
    const char *channels = settings_get(&file, "in-channels"), *size = settings_get(&file, "image-size");
    const char *classes = settings_get(&file, "classes");
    if ((channels && atol(channels) != set->channels) || (size && atol(size) != set->size) ||
        (classes && atol(classes) != set->classes))
        return rn_error("%s: the model was trained on %sx%s images with %s channel(s) and %s classes, but %s holds "
                        "%dx%d images with %d channel(s) and %d classes", checkpoint, size ? size : "?",
                        size ? size : "?", channels ? channels : "?", classes ? classes : "?", data_dir, set->size,
                        set->size, set->channels, set->classes);
    return 0;
}

/* After a failed load: a data folder the user never typed (taken from the checkpoint's /config) is named
 * as such, or the message would send them looking for a flag they did not give. */
void note_data_from_checkpoint(const Config *cfg, const char *checkpoint) {
    if (!checkpoint || settings_get(&cfg->given, "data")) return;
    char why[768];
    snprintf(why, sizeof why, "%s", rn_last_error());
    rn_error("%s (the data folder %s was taken from %s's /config; give --data DIR to use another)", why,
             cfg->data_dir, checkpoint);
}

double measure_peak(int threads, double *rank_peak) {
    dist_barrier();
    const double mine = peak_fma_gflops(threads, conv_direct_isa());
    double all = mine;
    dist_allreduce_sum_double(&all, 1);
    if (rank_peak) *rank_peak = mine;
    return all;
}

int optimizer_setup(Optimizer *opt, const OptimConfig *oc, const Model *m) {
    if (optim_init(opt, oc, m->num_params)) return -1;
    if (oc->kind != OPT_LAMB) return 0;
    size_t *ends = malloc(sizeof *ends * (size_t)m->num_param_tensors);
    if (!ends) return rn_error("out of memory for %d optimizer layers", m->num_param_tensors);
    for (int i = 0; i < m->num_param_tensors; i++) ends[i] = m->param_info[i].offset + m->param_info[i].numel;
    const int failed = optim_set_layers(opt, ends, m->num_param_tensors);
    free(ends);
    return failed;
}

int gradient_reduction_setup(Model *m, float bucket_mb) {
    if (bucket_mb <= 0) return 0;
    const int num = dist_buckets_init(m->grads, m->num_params, (size_t)((double)bucket_mb * (1 << 20) / sizeof(float)));
    m->grads_final = dist_buckets_ready;   /* each finished part starts its allreduce */
    return num;
}

void gradient_reduction_finish(Model *m) {
    if (m->grads_final) dist_buckets_wait();
    else dist_allreduce_sum_float(m->grads, m->num_params);
}
