/* --ema DECAY: an exponential moving average of the parameters, kept beside them in one flat buffer of
 * the same layout (Model.params). It is PyTorch 1.13's torch.optim.swa_utils.AveragedModel with
 * avg_fn(avg, p, n) = D * avg + (1 - D) * p and use_buffers=False, its update_parameters called after
 * every optimizer step: the first update copies the parameters, later ones average. D is DECAY, or with
 * --ema-warmup on min(DECAY, (1 + n) / (10 + n)) for the n-th update (TensorFlow's
 * ExponentialMovingAverage with num_updates): without it an average of 0.999 still holds 88% of the
 * initial weights after 125 steps, which makes it useless to a short run. No MPI:
 * every rank holds the same parameters after each step, so every rank's average is the same. */
#ifndef RESNET_EMA_H
#define RESNET_EMA_H

#include <stddef.h>

typedef struct {
    double decay;         /* DECAY, in (0, 1); a Python float in PyTorch, hence a double */
    int warmup;           /* --ema-warmup: the decay of early updates is min(DECAY, (1 + n) / (10 + n)) */
    long n_averaged;      /* updates so far (AveragedModel.n_averaged) */
    size_t n;             /* parameters */
    float *params;        /* n floats, laid out as Model.params */
    /* --bn-eval reference: the average's own reference BN statistics, laid out as Model.reference (the
     * raw weights' statistics normalize the average wrongly). NULL until ema_reserve_reference; valid
     * only for params as they are (every update or reset clears reference_valid). */
    float *reference;
    size_t reference_floats;
    int reference_valid;
} Ema;

/* A copy of params (AveragedModel deep-copies the model it is built from), n_averaged 0, no warmup.
 * 0, or -1 with rn_error (no memory). */
int ema_init(Ema *e, double decay, const float *params, size_t n);
void ema_free(Ema *e);

/* Room for the average's reference statistics (floats: Model.num_reference_floats), not yet valid.
 * 0, or -1 with rn_error (no memory). */
int ema_reserve_reference(Ema *e, size_t floats);

/* Back to a copy of params with n_averaged 0, as a fresh AveragedModel of them (reference statistics no
 * longer valid). */
void ema_reset(Ema *e, const float *params);

/* update_parameters(model) with the model's params [n]. Each element in float as PyTorch computes it
 * (D and 1 - D rounded to float from double, two products, one sum, no fused multiply-add), so
 * the result is bitwise PyTorch's and the same on any number of threads. The reference statistics are
 * no longer valid. */
void ema_update(Ema *e, const float *params);

#endif
