/* The metrics log: one JSON object per validation, one per line, flushed at once so that a plot of a
 * running (or killed) job sees every line written so far. */
#include "resnet/metrics.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "resnet/util.h"

int metrics_open(MetricsLog *log, const char *path, int append) {
    /* a resumed run continues the same log; a fresh run starts a new one */
    log->file = fopen(path, append ? "a" : "w");
    if (!log->file) return rn_error("%s: cannot open metrics log: %s", path, strerror(errno));
    return 0;
}

/* JSON has no inf or nan: a value that is not finite (no validation yet, a diverged loss) is null. */
static void put_number(FILE *f, const char *key, double v, const char *fmt) {
    fprintf(f, ",\"%s\":", key);
    if (isfinite(v)) fprintf(f, fmt, v);
    else fputs("null", f);
}

/* The learning rate is a float widened to double: printed as the shortest decimal that gives the same
 * float back ("0.001", not "0.00100000005"). */
static void put_lr(FILE *f, double lr) {
    if (!isfinite(lr) || (double)(float)lr != lr) {
        put_number(f, "lr", lr, "%.17g");
        return;
    }
    char buf[32];
    for (int p = 1; p <= 9; p++) {
        snprintf(buf, sizeof buf, "%.*g", p, lr);
        if ((float)strtod(buf, NULL) == (float)lr) break;
    }
    fprintf(f, ",\"lr\":%s", buf);
}

void metrics_write(MetricsLog *log, long step, long epoch, long batch, double train_loss, double val_acc,
                   double lr, double images_per_s, double time_s) {
    if (!log || !log->file) return;
    FILE *f = log->file;
    fprintf(f, "{\"step\":%ld,\"epoch\":%ld,\"batch\":%ld", step, epoch, batch);
    /* %.17g: the values read back are the doubles the run computed */
    put_number(f, "train_loss", train_loss, "%.17g");
    put_number(f, "val_acc", val_acc, "%.17g");
    put_lr(f, lr);
    put_number(f, "images_per_s", images_per_s, "%.1f");
    put_number(f, "time_s", time_s, "%.3f");
    fputs("}\n", f);
    fflush(f);
}

void metrics_close(MetricsLog *log) {
    if (log && log->file) {
        fclose(log->file);
        log->file = NULL;
    }
}

void metrics_mark_resume(MetricsLog *log, long step, long epoch, double time_s, const char *from) {
    if (!log || !log->file) return;
    FILE *f = log->file;
    fprintf(f, "{\"event\":\"resume\",\"from_step\":%ld,\"epoch\":%ld", step, epoch);
    put_number(f, "time_s", time_s, "%.3f");
    fputs(",\"checkpoint\":\"", f);
    for (const char *c = from; *c; c++) {
        if (*c == '"' || *c == '\\') fputc('\\', f);
        if ((unsigned char)*c >= 0x20) fputc(*c, f);
    }
    fputs("\"}\n", f);
    fflush(f);
}
