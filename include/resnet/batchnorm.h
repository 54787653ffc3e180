/* Batch normalization over C,N,H,W activations: channel c is the contiguous row x[c*m .. c*m + m) with
 * m = n*hw. Statistics are reduced in double; a StatReducer, when given, sums them over ranks so that
 * the statistics cover the global batch (sync-BN, distributed evaluation). */
#ifndef RESNET_BATCHNORM_H
#define RESNET_BATCHNORM_H

#define BN_EPS 1e-5f
#define BN_MOMENTUM 0.1f

typedef struct {
    /* Sums values[0..count) over all ranks in place. NULL function: this process alone. */
    void (*sum)(double *values, int count, void *ctx);
    void *ctx;
} StatReducer;

/* Training statistics. x [c, m] -> y [c, m] = gamma * (x - mean) * rstd + beta, then ReLU when relu != 0.
 * Writes the batch mean[c] and rstd[c] = 1/sqrt(var + eps) (biased variance) for the backward pass, and
 * var[c] (biased) when var != NULL. Returns the number of values per channel the statistics covered
 * (m summed over ranks). y may alias x. */
double batchnorm_forward_train(float *y, float *mean, float *rstd, float *var, const float *x,
                               const float *gamma, const float *beta, int c, long m, int relu,
                               const StatReducer *reducer);

/* Fixed statistics (running averages): y = gamma * (x - mean) / sqrt(var + eps) + beta [, ReLU]. */
void batchnorm_forward_fixed(float *y, const float *x, const float *gamma, const float *beta,
                             const float *mean, const float *var, int c, long m, int relu);

/* Backward of batchnorm_forward_train, given its input x, statistics and parameters (with relu != 0 the
 * ReLU mask is recomputed from x, bit for bit the forward's). dx [c, m] is overwritten (may alias dy);
 * dgamma, dbeta accumulate. With a reducer the sums over the batch are reduced over ranks, as in sync-BN. */
void batchnorm_backward(float *dx, float *dgamma, float *dbeta, const float *dy, const float *x,
                        const float *mean, const float *rstd, const float *gamma, const float *beta,
                        int c, long m, int relu, const StatReducer *reducer);

/* PyTorch's running-statistics update: running = (1 - momentum) * running + momentum * batch, with the
 * unbiased variance var * count / (count - 1). */
void batchnorm_update_running(float *running_mean, float *running_var, const float *mean,
                              const float *var, int c, double count);

#endif
