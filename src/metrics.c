/* The metrics log: one JSON object per validation, one per line, flushed at once so that a plot of a
 * running (or killed) job sees every line written so far. */
#include "resnet/metrics.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "resnet/util.h"

/* O_NONBLOCK: a FIFO without a reader would block open() for good; with it the open fails (ENXIO) and
 * says so, while a FIFO that some process reads (--metrics /dev/stdout | jq) still works. */
int metrics_open(MetricsLog *log, const char *path, int append) {
    /* a resumed run continues the same log; a fresh run starts a new one */
    const int fd = open(path, O_WRONLY | O_CREAT | O_NOCTTY | O_CLOEXEC | O_NONBLOCK | (append ? O_APPEND : O_TRUNC),
                        0666);
    if (fd < 0 && errno == ENXIO) return rn_error("%s: metrics log is a FIFO that no process reads", path);
    if (fd < 0) return rn_error("%s: cannot open metrics log: %s", path, strerror(errno));
    const int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) < 0 || !(log->file = fdopen(fd, append ? "a" : "w"))) {
        const int e = errno;
        close(fd);
        return rn_error("%s: cannot open metrics log: %s", path, strerror(e));
    }
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
    fprintf(f, ",\"lr\":%s", rn_format_float(buf, sizeof buf, (float)lr));
}

/* One validation line; val_acc_ema NULL: a run without --ema. */
static void write_line(MetricsLog *log, long step, long epoch, long batch, double train_loss, double val_acc,
                       const double *val_acc_ema, double lr, double images_per_s, double time_s) {
    if (!log || !log->file) return;
    FILE *f = log->file;
    fprintf(f, "{\"step\":%ld,\"epoch\":%ld,\"batch\":%ld", step, epoch, batch);
    /* %.17g: the values read back are the doubles the run computed */
    put_number(f, "train_loss", train_loss, "%.17g");
    put_number(f, "val_acc", val_acc, "%.17g");
    if (val_acc_ema) put_number(f, "val_acc_ema", *val_acc_ema, "%.17g");
    put_lr(f, lr);
    put_number(f, "images_per_s", images_per_s, "%.1f");
    put_number(f, "time_s", time_s, "%.3f");
    fputs("}\n", f);
    fflush(f);
}

void metrics_write(MetricsLog *log, long step, long epoch, long batch, double train_loss, double val_acc,
                   double lr, double images_per_s, double time_s) {
    write_line(log, step, epoch, batch, train_loss, val_acc, NULL, lr, images_per_s, time_s);
}

void metrics_write_ema(MetricsLog *log, long step, long epoch, long batch, double train_loss, double val_acc,
                       double val_acc_ema, double lr, double images_per_s, double time_s) {
    write_line(log, step, epoch, batch, train_loss, val_acc, &val_acc_ema, lr, images_per_s, time_s);
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
