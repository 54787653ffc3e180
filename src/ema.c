/* The parameters' exponential moving average: see ema.h. */
#include "resnet/ema.h"

#include <math.h>
#include <string.h>

#include "resnet/util.h"

int ema_init(Ema *e, double decay, const float *params, size_t n) {
    memset(e, 0, sizeof *e);
    e->params = rn_alloc(sizeof(float) * (n ? n : 1));
    if (!e->params) return -1;
    e->decay = decay;
    e->n = n;
    ema_reset(e, params);
    return 0;
}

void ema_free(Ema *e) {
    rn_free(e->params);
    rn_free(e->reference);
    memset(e, 0, sizeof *e);
}

int ema_reserve_reference(Ema *e, size_t floats) {
    rn_free(e->reference);
    e->reference = rn_alloc(sizeof(float) * (floats ? floats : 1));
    e->reference_floats = e->reference ? floats : 0;
    e->reference_valid = 0;
    return e->reference ? 0 : -1;
}

void ema_reset(Ema *e, const float *params) {
    memcpy(e->params, params, sizeof(float) * e->n);
    e->n_averaged = 0;
    e->reference_valid = 0;
}

void ema_update(Ema *e, const float *params) {
    e->reference_valid = 0;
    if (e->n_averaged == 0) {
        ema_reset(e, params);
        e->n_averaged = 1;
        return;
    }
    /* PyTorch: D * avg (the Python float as the tensor's float), (1 - D) computed in double, then
     * rounded, times p; the two products summed. Separate statements and -std=c11 (GCC's
     * -ffp-contract=off) keep the compiler from fusing a product into the sum. The warmup's ratio is
     * Python's int / int, a double. */
    const double n_before = (double)e->n_averaged;
    const double decay = e->warmup ? fmin(e->decay, (1.0 + n_before) / (10.0 + n_before)) : e->decay;
    const float keep = (float)decay, take = (float)(1.0 - decay);
    float *restrict avg = e->params;
    const float *restrict p = params;
    const long n = (long)e->n;
#pragma omp parallel for schedule(static)
    for (long i = 0; i < n; i++) {
        const float kept = keep * avg[i];
        const float taken = take * p[i];
        avg[i] = kept + taken;
    }
    e->n_averaged++;
}
