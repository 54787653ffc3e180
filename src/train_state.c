/* The training state and the validation history: see train_state.h. */
#include "resnet/train_state.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "resnet/util.h"

int history_append(History *h, long step, long epoch, double train_loss, double val_acc, double time_s) {
    if (h->count == h->capacity) {
        if (h->capacity > INT_MAX / 2) return rn_error("history: too many entries");
        const int cap = h->capacity ? 2 * h->capacity : 64;
        /* each array is swapped in as soon as it has grown, so a failure part way leaves every array at
         * least `capacity` long and the history consistent */
        long *s = realloc(h->step, sizeof(long) * cap);
        if (!s) return rn_error("history: out of memory");
        h->step = s;
        long *e = realloc(h->epoch, sizeof(long) * cap);
        if (!e) return rn_error("history: out of memory");
        h->epoch = e;
        double **d[3] = {&h->train_loss, &h->val_acc, &h->time_s};
        for (int k = 0; k < 3; k++) {
            double *p = realloc(*d[k], sizeof(double) * cap);
            if (!p) return rn_error("history: out of memory");
            *d[k] = p;
        }
        h->capacity = cap;
    }
    h->step[h->count] = step;
    h->epoch[h->count] = epoch;
    h->train_loss[h->count] = train_loss;
    h->val_acc[h->count] = val_acc;
    h->time_s[h->count] = time_s;
    h->count++;
    return 0;
}

void history_free(History *h) {
    free(h->step);
    free(h->epoch);
    free(h->train_loss);
    free(h->val_acc);
    free(h->time_s);
    memset(h, 0, sizeof *h);
}
