/* The metrics log: one JSON object per line per validation, appended and flushed, for plotting. */
#ifndef RESNET_METRICS_H
#define RESNET_METRICS_H

#include <stdio.h>

typedef struct { FILE *file; } MetricsLog;

int metrics_open(MetricsLog *log, const char *path, int append);   /* 0 or -1 with rn_error */
void metrics_write(MetricsLog *log, long step, long epoch, long batch, double train_loss,
                   double val_acc, double lr, double images_per_s, double time_s);
/* The same line with "val_acc_ema", the accuracy of the parameters' moving average (--ema), after val_acc. */
void metrics_write_ema(MetricsLog *log, long step, long epoch, long batch, double train_loss, double val_acc,
                       double val_acc_ema, double lr, double images_per_s, double time_s);
/* A resumed run marks where it picked up: {"event":"resume","from_step":S,...}. Plots draw the restart
 * there, and points of an abandoned continuation past S are superseded by the new ones. (No "step"
 * key, so readers that pick validation lines by "step" skip it.) */
void metrics_mark_resume(MetricsLog *log, long step, long epoch, double time_s, const char *from);
void metrics_close(MetricsLog *log);

#endif
