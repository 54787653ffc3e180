/* The run report (report.h): report.md for people, report.json for scripts (jobs/summary.sbatch,
 * scripts/plot.py), both written by rank 0 at the end of a training run. Each is built in memory and
 * then written atomically, like the checkpoints, so a reader never sees half a report. */
#include "resnet/report.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "resnet/dist.h"
#include "resnet/perf.h"
#include "resnet/util.h"

#define IMAGES_BEGIN "<!-- images: scripts/plot.py replaces this section -->"
#define IMAGES_END "<!-- end of images -->"
#define MAX_LISTED 256

static char command_line[4096];

/* Shell-quoted where needed, so the line can be pasted back into a shell. */
void report_set_command_line(int argc, char **argv) {
    size_t used = 0;
    command_line[0] = '\0';
    for (int i = 0; i < argc && used + 4 < sizeof command_line; i++) {
        const char *a = i == 0 ? "resnet_mpi" : argv[i];
        const int plain = *a && strspn(a, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_=.,/:+@%") ==
                                    strlen(a);
        int n = snprintf(command_line + used, sizeof command_line - used, "%s%s%s%s", i ? " " : "",
                         plain ? "" : "'", a, plain ? "" : "'");
        if (n < 0 || (size_t)n >= sizeof command_line - used) break;
        used += (size_t)n;
    }
}

/* ---- what is measured over all ranks -------------------------------------------------------------- */

typedef struct {
    double phase_s[PERF_COUNT];      /* max over ranks */
    double peak_rss_max_mib, peak_rss_sum_mib;
} Measured;

static void measure(Measured *ms) {
    for (int i = 0; i < PERF_COUNT; i++) ms->phase_s[i] = dist_max_double(perf_seconds((PerfPhase)i));
    const long kib = rn_peak_rss_kib();
    ms->peak_rss_max_mib = dist_max_double((double)kib) / 1024.0;
    ms->peak_rss_sum_mib = (double)dist_sum_long(kib) / 1024.0;
}

/* ---- the checkpoint folder ------------------------------------------------------------------------ */

typedef struct {
    char name[256];
    long bytes, step;                 /* step -1: not known from the name */
} Listed;

static int compare_listed(const void *a, const void *b) { return strcmp(((const Listed *)a)->name, ((const Listed *)b)->name); }

static int list_checkpoints(const RunFacts *x, Listed *out) {
    DIR *dir = opendir(x->checkpoint_dir);
    if (!dir) return 0;
    int count = 0;
    struct dirent *e;
    while ((e = readdir(dir)) && count < MAX_LISTED) {
        const size_t len = strlen(e->d_name);
        if (e->d_name[0] == '.' || len < 4 || strcmp(e->d_name + len - 3, ".h5") || len >= sizeof out->name) continue;
        char path[1400];
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", x->checkpoint_dir, e->d_name);
        if (stat(path, &st) || !S_ISREG(st.st_mode)) continue;
        Listed *l = &out[count++];
        memcpy(l->name, e->d_name, len + 1);
        l->bytes = (long)st.st_size;
        l->step = -1;
        if (!strcmp(l->name, "last.h5")) l->step = x->ts->step;
        else if (!strcmp(l->name, "best.h5")) l->step = x->ts->best_step;
        else if (sscanf(l->name, "step-%ld.h5", &l->step) != 1) l->step = -1;
    }
    closedir(dir);
    qsort(out, count, sizeof *out, compare_listed);
    return count;
}

/* ---- derived figures ------------------------------------------------------------------------------ */

static long confusion_sum(const RunFacts *x, int diagonal_only) {
    long sum = 0;
    for (int t = 0; t < x->classes; t++)
        for (int p = 0; p < x->classes; p++)
            if (!diagonal_only || t == p) sum += x->test_confusion[t * x->classes + p];
    return sum;
}

static double class_accuracy(const RunFacts *x, int t) {
    long row = 0;
    for (int p = 0; p < x->classes; p++) row += x->test_confusion[t * x->classes + p];
    return row ? (double)x->test_confusion[t * x->classes + t] / row : 0.0;
}

static const char *setting(const RunFacts *x, const char *key) {
    const char *v = settings_get(x->settings, key);
    return v ? v : "?";
}

/* Why training stopped, in words. */
static void stop_text(const RunFacts *x, char *buf, size_t size) {
    const char *r = x->ts->stop_reason;
    if (!strcmp(r, "epochs")) snprintf(buf, size, "all %s epochs done", setting(x, "epochs"));
    else if (!strcmp(r, "max-steps")) snprintf(buf, size, "reached --max-steps %s", setting(x, "max-steps"));
    else if (!strcmp(r, "early-stop"))
        snprintf(buf, size, "early stopping (--early-stop %s): validation accuracy did not rise for more than %s checks",
                 setting(x, "early-stop"), setting(x, "patience"));
    else if (!strcmp(r, "signal"))
        snprintf(buf, size, "stopped by a signal; last.h5 written (continue with --resume auto)");
    else if (!strcmp(r, "non-finite loss")) snprintf(buf, size, "training diverged (the loss was not finite)");
    else snprintf(buf, size, "%s", *r ? r : "unknown");
}

static double core_hours(const RunFacts *x) { return x->seconds_this_run * x->ranks * x->threads / 3600.0; }

static double images_this_run(const RunFacts *x) { return (double)x->steps_this_run * x->batch_size; }

/* After the training loop: the replica check, the final checkpoint and the test. */
static double end_of_run_s(const RunFacts *x, const Measured *ms) {
    const double s = x->seconds_this_run - ms->phase_s[PERF_TOTAL];
    return s > 0 ? s : 0.0;
}

static double per_second(double amount, double seconds) { return seconds > 0 ? amount / seconds : 0.0; }

/* ---- report.md -------------------------------------------------------------------------------------- */

static void md_outcome(FILE *f, const RunFacts *x) {
    char why[256];
    stop_text(x, why, sizeof why);
    fprintf(f, "## Outcome\n\n| | |\n|---|---|\n");
    fprintf(f, "| stopped | %s, after %ld steps (epoch %ld) |\n", why, x->ts->step,
            x->ts->epoch + (x->ts->batch_in_epoch > 0));
    fprintf(f, "| validation that decided early stopping and best.h5 | %s; --eval-protocol %s; --bn-eval %s |\n",
            x->ema > 0 ? "the moving average (--ema)" : "the trained weights", setting(x, "eval-protocol"),
            setting(x, "bn-eval"));
    if (x->ts->best_val_acc >= 0)
        fprintf(f, "| best validation accuracy%s | %.4f at step %ld (best.h5) |\n",
                x->ema > 0 ? " (the moving average, --ema)" : "", x->ts->best_val_acc, x->ts->best_step);
    else
        fprintf(f, "| best validation accuracy | no validation ran |\n");
    if (x->test_confusion) {
        const int seed = x->test_protocol && !strcmp(x->test_protocol, "seed");
        fprintf(f, "| test accuracy (final model = last.h5, --bn-eval %s, %s) | **%.4f** (%ld of %ld) |\n",
                setting(x, "bn-eval"), seed ? "seed protocol: augmented as in training" : "clean images",
                (double)confusion_sum(x, 1) / (double)confusion_sum(x, 0), confusion_sum(x, 1), confusion_sum(x, 0));
        fprintf(f, "| test accuracy, %s | %.4f |\n", seed ? "clean images" : "seed protocol (augmented as in training)",
                x->test_other_accuracy);
        if (x->ema > 0)
            fprintf(f, "| EMA test accuracy (the moving average of last.h5's /ema, --ema %g), %s / %s | **%.4f** / %.4f |\n",
                    x->ema, seed ? "seed protocol" : "clean images", seed ? "clean images" : "seed protocol",
                    x->test_ema_accuracy[0], x->test_ema_accuracy[1]);
    } else
        fprintf(f, "| test accuracy | not measured (the run did not finish) |\n");
    fprintf(f, "| exit code | %d |\n\n", x->exit_code);
}

static void md_data(FILE *f, const RunFacts *x) {
    fprintf(f, "## Data\n\n%s from `%s`: %d train / %d validation / %d test images, %d classes. ",
            setting(x, "dataset"), setting(x, "data"), x->num_train, x->num_val, x->num_test, x->classes);
    fprintf(f, "Split: %s images held out for validation by split seed %s", setting(x, "val-size"),
            setting(x, "split-seed"));
    if (strcmp(setting(x, "limit-train"), "0")) fprintf(f, ", training limited to the first %s", setting(x, "limit-train"));
    fprintf(f, ". Augmentation (flip, 4-pixel pad and crop): %s; seed %s.\n\n",
            strcmp(setting(x, "augment"), "0") ? "on" : "off", setting(x, "seed"));
}

static void md_test(FILE *f, const RunFacts *x) {
    if (!x->test_confusion) return;
    fprintf(f, "## Test set: per-class accuracy and confusion matrix\n\n");
    fprintf(f, "Rows: true class; columns: predicted class.\n\n| true \\ predicted |");
    for (int p = 0; p < x->classes; p++) fprintf(f, " %s |", x->class_names[p]);
    fprintf(f, " accuracy |\n|---|");
    for (int p = 0; p <= x->classes; p++) fprintf(f, "---:|");
    fprintf(f, "\n");
    for (int t = 0; t < x->classes; t++) {
        fprintf(f, "| %s |", x->class_names[t]);
        for (int p = 0; p < x->classes; p++) {
            const long v = x->test_confusion[t * x->classes + p];
            fprintf(f, t == p ? " **%ld** |" : " %ld |", v);
        }
        fprintf(f, " %.4f |\n", class_accuracy(x, t));
    }
    fprintf(f, "\n");
}

static void md_time(FILE *f, const RunFacts *x, const Measured *ms) {
    const double total = ms->phase_s[PERF_TOTAL], imgs = images_this_run(x);
    fprintf(f, "## Time and resources\n\n%d rank(s) x %d thread(s). Time per phase of this run (max over ranks); "
               "the phases above `total` make up the training loop:\n\n", x->ranks, x->threads);
    fprintf(f, "| phase | seconds | share of the loop |\n|---|---:|---:|\n");
    for (int i = 0; i < PERF_COUNT; i++)
        fprintf(f, "| %s | %.2f | %.1f%% |\n", perf_phase_name((PerfPhase)i), ms->phase_s[i],
                total > 0 ? 100.0 * ms->phase_s[i] / total : 0.0);
    fprintf(f, "| after the loop (final checkpoint, test) | %.2f | |\n", end_of_run_s(x, ms));
    fprintf(f, "\n| | |\n|---|---|\n");
    fprintf(f, "| wall time, this run | %.1f s |\n", x->seconds_this_run);
    fprintf(f, "| training time, all runs of this folder | %.1f s |\n", x->training_seconds_total);
    fprintf(f, "| training images/s (loop time, validation included) | %.1f |\n", per_second(imgs, total));
    fprintf(f, "| training images/s (compute, allreduce, optimizer and data only) | %.1f |\n",
            per_second(imgs, ms->phase_s[PERF_COMPUTE] + ms->phase_s[PERF_ALLREDUCE] +
                                 ms->phase_s[PERF_OPTIMIZER] + ms->phase_s[PERF_DATA]));
    fprintf(f, "| training GFLOP/s (loop time) | %.2f |\n", per_second(imgs * x->flops_per_image * 1e-9, total));
    fprintf(f, "| core-hours, this run (wall x ranks x threads) | %.4f |\n", core_hours(x));
    fprintf(f, "| peak memory per rank (max) / all ranks | %.0f MiB / %.0f MiB |\n\n", ms->peak_rss_max_mib,
            ms->peak_rss_sum_mib);
}

static void md_files(FILE *f, const RunFacts *x, const Listed *ck, int n) {
    fprintf(f, "## Checkpoints\n\n| file | step | size |\n|---|---:|---:|\n");
    for (int i = 0; i < n; i++) {
        if (ck[i].step >= 0) fprintf(f, "| %s | %ld | %.1f MiB |\n", ck[i].name, ck[i].step, ck[i].bytes / 1048576.0);
        else fprintf(f, "| %s | | %.1f MiB |\n", ck[i].name, ck[i].bytes / 1048576.0);
    }
    fprintf(f, "\nMetrics log: `%s` (one line per validation). Score another checkpoint with "
               "`resnet_mpi eval --checkpoint %s/best.h5`.\n\n", x->metrics_path, x->checkpoint_dir);
}

static void md_settings(FILE *f, const RunFacts *x) {
    fprintf(f, "## Settings\n\n| setting | value |\n|---|---|\n");
    for (int i = 0; i < x->settings->count; i++)
        fprintf(f, "| %s | %s |\n", x->settings->items[i].key, x->settings->items[i].value);
    fprintf(f, "\n");
}

static void write_markdown(FILE *f, const RunFacts *x, const Measured *ms, const Listed *ck, int n, const char *when) {
    fprintf(f, "# Run report: %s\n\n", x->checkpoint_dir);
    fprintf(f, "resnet_mpi %s, written %s. Command (rank 0 of %d):\n\n    %s\n\n", RESNET_VERSION, when, x->ranks,
            command_line[0] ? command_line : "(unknown)");
    if (x->resumed_from) fprintf(f, "This run continued `%s`.\n\n", x->resumed_from);
    md_outcome(f, x);
    md_data(f, x);
    md_test(f, x);
    md_time(f, x, ms);
    md_files(f, x, ck, n);
    md_settings(f, x);
    fprintf(f, "## Images\n\n%s\nTraining curves, the confusion matrix and the augmentation figure: run\n"
               "`/usr/bin/python3 scripts/plot.py %s`.\n%s\n", IMAGES_BEGIN, x->checkpoint_dir, IMAGES_END);
}

/* ---- report.json ------------------------------------------------------------------------------------ */

static void json_string(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        const unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
        else if (c < 0x20) fprintf(f, "\\u%04x", c);
        else fputc(c, f);
    }
    fputc('"', f);
}

static void json_key(FILE *f, const char *key) {
    json_string(f, key);
    fputc(':', f);
}

static void json_test(FILE *f, const RunFacts *x) {
    json_key(f, "test");
    if (!x->test_confusion) {
        fputs("null", f);
        return;
    }
    const int seed = x->test_protocol && !strcmp(x->test_protocol, "seed");
    fprintf(f, "{\"split\":\"test\",\"model\":\"last.h5\",\"images\":%ld,\"correct\":%ld,\"accuracy\":%.6f,"
               "\"protocol\":\"%s\",\"other_protocol\":{\"protocol\":\"%s\",\"accuracy\":%.6f},",
            confusion_sum(x, 0), confusion_sum(x, 1), (double)confusion_sum(x, 1) / (double)confusion_sum(x, 0),
            seed ? "seed" : "clean", seed ? "clean" : "seed", x->test_other_accuracy);
    if (x->ema > 0)
        fprintf(f, "\"ema\":{\"decay\":%.17g,\"accuracy\":%.6f,\"other_protocol\":{\"protocol\":\"%s\",\"accuracy\":%.6f}},",
                x->ema, x->test_ema_accuracy[0], seed ? "clean" : "seed", x->test_ema_accuracy[1]);
    else
        fputs("\"ema\":null,", f);
    json_key(f, "per_class");
    fputc('{', f);
    for (int t = 0; t < x->classes; t++) {
        if (t) fputc(',', f);
        json_key(f, x->class_names[t]);
        fprintf(f, "%.6f", class_accuracy(x, t));
    }
    fputs("},\"confusion\":[", f);
    for (int t = 0; t < x->classes; t++) {
        fprintf(f, "%s[", t ? "," : "");
        for (int p = 0; p < x->classes; p++) fprintf(f, "%s%ld", p ? "," : "", x->test_confusion[t * x->classes + p]);
        fputc(']', f);
    }
    fputs("]}", f);
}

static void json_data(FILE *f, const RunFacts *x) {
    fputs("\"data\":{\"dataset\":", f);
    json_string(f, setting(x, "dataset"));
    fputs(",\"dir\":", f);
    json_string(f, setting(x, "data"));
    fprintf(f, ",\"train\":%d,\"validation\":%d,\"test\":%d,\"classes\":[", x->num_train, x->num_val, x->num_test);
    for (int t = 0; t < x->classes; t++) {
        if (t) fputc(',', f);
        json_string(f, x->class_names[t]);
    }
    fputs("]}", f);
}

static void json_outcome(FILE *f, const RunFacts *x) {
    char why[256];
    stop_text(x, why, sizeof why);
    fprintf(f, "\"outcome\":{\"exit_code\":%d,\"stop_reason\":", x->exit_code);
    json_string(f, x->ts->stop_reason);
    fputs(",\"stop_text\":", f);
    json_string(f, why);
    fprintf(f, ",\"step\":%ld,\"epoch\":%ld,\"batch_in_epoch\":%ld,", x->ts->step, x->ts->epoch, x->ts->batch_in_epoch);
    if (x->ts->best_val_acc >= 0) fprintf(f, "\"best_val_acc\":%.17g,\"best_step\":%ld}", x->ts->best_val_acc, x->ts->best_step);
    else fputs("\"best_val_acc\":null,\"best_step\":null}", f);
}

static void json_time(FILE *f, const RunFacts *x, const Measured *ms) {
    const double imgs = images_this_run(x), loop = ms->phase_s[PERF_TOTAL];
    fputs("\"time\":{\"phases_s\":{", f);
    for (int i = 0; i < PERF_COUNT; i++) {
        json_key(f, perf_phase_name((PerfPhase)i));
        fprintf(f, "%.3f,", ms->phase_s[i]);
    }
    fprintf(f, "\"after the loop\":%.3f},\"wall_s\":%.3f,\"training_total_s\":%.3f,\"steps\":%ld,\"images\":%.0f,",
            end_of_run_s(x, ms), x->seconds_this_run, x->training_seconds_total, x->steps_this_run, imgs);
    fprintf(f, "\"images_per_s\":%.2f,\"gflop_per_s\":%.3f,\"ranks\":%d,\"threads\":%d,\"core_hours\":%.6f,",
            per_second(imgs, loop), per_second(imgs * x->flops_per_image * 1e-9, loop), x->ranks, x->threads,
            core_hours(x));
    fprintf(f, "\"peak_rss_mib_max\":%.1f,\"peak_rss_mib_sum\":%.1f}", ms->peak_rss_max_mib, ms->peak_rss_sum_mib);
}

static void json_files(FILE *f, const RunFacts *x, const Listed *ck, int n) {
    fputs("\"checkpoints\":[", f);
    for (int i = 0; i < n; i++) {
        fprintf(f, "%s{\"file\":", i ? "," : "");
        json_string(f, ck[i].name);
        if (ck[i].step >= 0) fprintf(f, ",\"step\":%ld", ck[i].step);
        fprintf(f, ",\"bytes\":%ld}", ck[i].bytes);
    }
    fputs("],\"metrics\":", f);
    json_string(f, x->metrics_path);
}

static void write_json(FILE *f, const RunFacts *x, const Measured *ms, const Listed *ck, int n, const char *when) {
    fprintf(f, "{\"format\":\"%s\",\"format_version\":%d,\"program_version\":\"%s\",\"created\":", REPORT_FORMAT,
            REPORT_FORMAT_VERSION, RESNET_VERSION);
    json_string(f, when);
    fputs(",\"command_line\":", f);
    json_string(f, command_line);
    fputs(",\"checkpoint_dir\":", f);
    json_string(f, x->checkpoint_dir);
    fputs(",\"resumed_from\":", f);
    if (x->resumed_from) json_string(f, x->resumed_from);
    else fputs("null", f);
    fputs(",\"settings\":{", f);
    for (int i = 0; i < x->settings->count; i++) {
        if (i) fputc(',', f);
        json_key(f, x->settings->items[i].key);
        json_string(f, x->settings->items[i].value);
    }
    fputs("},", f);
    json_data(f, x);
    fputc(',', f);
    json_outcome(f, x);
    fputc(',', f);
    json_test(f, x);
    fputc(',', f);
    json_time(f, x, ms);
    fputc(',', f);
    json_files(f, x, ck, n);
    fputs("}\n", f);
}

/* ---- atomic write ----------------------------------------------------------------------------------- */

static int write_atomic(const char *folder, const char *name, const char *text, size_t len) {
    char path[1400], tmp[1500];
    snprintf(path, sizeof path, "%s/%s", folder, name);
    snprintf(tmp, sizeof tmp, "%s/.%s.tmp.%ld", folder, name, (long)getpid());
    const int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return rn_error("%s: cannot write: %s", tmp, strerror(errno));
    size_t done = 0;
    while (done < len) {
        const ssize_t w = write(fd, text + done, len - done);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) break;
        done += (size_t)w;
    }
    const int ok = done == len && fsync(fd) == 0;
    const int saved = errno;
    if (close(fd) != 0 || !ok || rename(tmp, path) != 0) {
        const int err = ok ? errno : saved;
        unlink(tmp);
        return rn_error("%s: cannot write: %s", path, strerror(err));
    }
    const int dfd = open(folder, O_RDONLY | O_DIRECTORY);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    return 0;
}

typedef void (*Writer)(FILE *, const RunFacts *, const Measured *, const Listed *, int, const char *);

static int render_and_write(Writer writer, const char *name, const RunFacts *x, const Measured *ms, const Listed *ck,
                            int n, const char *when) {
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f) return rn_error("out of memory writing %s", name);
    writer(f, x, ms, ck, n, when);
    if (fclose(f) != 0) {
        free(text);
        return rn_error("out of memory writing %s", name);
    }
    const int rc = write_atomic(x->checkpoint_dir, name, text, len);
    free(text);
    return rc;
}

int report_write(const RunFacts *x) {
    Measured ms;
    measure(&ms);
    if (dist_rank() != 0) return 0;
    Listed *ck = calloc(MAX_LISTED, sizeof *ck);
    if (!ck) return rn_error("out of memory writing the report");
    const int n = list_checkpoints(x, ck);
    char when[64];
    const time_t now = time(NULL);
    struct tm utc;
    gmtime_r(&now, &utc);
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &utc);
    int rc = render_and_write(write_markdown, "report.md", x, &ms, ck, n, when);
    if (!rc) rc = render_and_write(write_json, "report.json", x, &ms, ck, n, when);
    free(ck);
    return rc;
}
