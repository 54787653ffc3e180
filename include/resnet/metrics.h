/* The metrics log: one JSON object per line per validation, appended and flushed, for plotting. */
#ifndef RESNET_METRICS_H
#define RESNET_METRICS_H

#include <stdio.h>

typedef struct { FILE *file; } MetricsLog;

int metrics_open(MetricsLog *log, const char *path, int append);   /* 0 or -1 with rn_error */
void metrics_write(MetricsLog *log, long step, long epoch, long batch, double train_loss,
                   double val_acc, double lr, double images_per_s, double time_s);
void metrics_close(MetricsLog *log);

#endif
