/* Batch normalization over C,N,H,W activations (see batchnorm.h).
 *
 * Each channel is one contiguous row of m floats, so the statistics of a channel are a single streaming
 * pass and OpenMP splits the work by channel: no two threads share a sum, and the result of every
 * channel is independent of the number of threads (bitwise reproducible).
 *
 * Sums are kept in double. Products of two floats are exact in double, so the sum / sum-of-squares
 * form loses only ~1e-16 * (mean/std)^2 of the variance to cancellation: far below float resolution,
 * and it needs one pass and one reduction over ranks (a centred two-pass form would need two).
 *
 * Without a reducer, a channel's statistics and its normalization run back to back in one thread, so
 * the second pass reads a row that is still in cache. With a reducer, all channels' sums travel in one
 * call, between two parallel loops. */
#include "resnet/batchnorm.h"

#include <math.h>
#include <stdlib.h>

#include "resnet/util.h"

/* Channels whose reduction buffer lives on the stack; wider layers fall back to the heap. */
#define STACK_CHANNELS 512

static int has_reducer(const StatReducer *r) { return r != NULL && r->sum != NULL; }

/* Buffer of n doubles: the stack one when it fits, else the heap (a failure here has no return path
 * through the void API, and a few KiB that cannot be found mean the process is lost anyway). */
static double *reduce_buffer(double *stack, size_t stack_len, size_t n) {
    if (n <= stack_len) return stack;
    double *p = malloc(n * sizeof(double));
    if (!p) {
        rn_message("batchnorm: out of memory for %zu reduction values", n);
        abort();
    }
    return p;
}

static void release_buffer(double *buf, const double *stack) {
    if (buf != stack) free(buf);
}

/* row [m] -> sum and sum of squares, in double. */
static void row_moments(const float *row, long m, double *sum_out, double *sumsq_out) {
    double s = 0.0, ss = 0.0;
    #pragma omp simd reduction(+:s, ss)
    for (long i = 0; i < m; i++) {
        const double v = row[i];
        s += v;
        ss += v * v;
    }
    *sum_out = s;
    *sumsq_out = ss;
}

/* Global sums (sum, sumsq over count values) -> mean [1], rstd [1], biased var [1] when var != NULL. */
static void finish_stats(double sum, double sumsq, double count, float *mean, float *rstd, float *var) {
    double mu = 0.0, v = 0.0;
    if (count > 0) {
        mu = sum / count;
        v = sumsq / count - mu * mu;
        if (v < 0.0) v = 0.0;   /* rounding when every value is equal */
    }
    *mean = (float)mu;
    *rstd = (float)(1.0 / sqrt(v + (double)BN_EPS));
    if (var) *var = (float)v;
}

/* The normalized value before the ReLU. Subtracting the mean first keeps the precision of x - mean when
 * |mean| >> std (x * scale + (shift - mean * scale) would cancel). The backward recomputes the ReLU mask
 * with this same function from the same floats, so its mask is bit for bit the forward's. */
static inline float bn_value(float x, float mean, float scale, float shift) { return (x - mean) * scale + shift; }

/* x row [m] -> y row [m] = (x - mean) * scale + shift [, ReLU]. */
static void row_normalize(float *y, const float *x, long m, float mean, float scale, float shift,
                          int relu) {
    if (relu) {
        #pragma omp simd
        for (long i = 0; i < m; i++) {
            const float v = bn_value(x[i], mean, scale, shift);
            y[i] = v > 0.0f ? v : 0.0f;
        }
    } else {
        #pragma omp simd
        for (long i = 0; i < m; i++) y[i] = bn_value(x[i], mean, scale, shift);
    }
}

double batchnorm_forward_train(float *y, float *mean, float *rstd, float *var, const float *x,
                               const float *gamma, const float *beta, int c, long m, int relu,
                               const StatReducer *reducer) {
    if (!has_reducer(reducer)) {
        #pragma omp parallel for schedule(static)
        for (int ch = 0; ch < c; ch++) {
            const float *xr = x + (size_t)ch * m;
            double s, ss;
            row_moments(xr, m, &s, &ss);
            finish_stats(s, ss, (double)m, &mean[ch], &rstd[ch], var ? &var[ch] : NULL);
            row_normalize(y + (size_t)ch * m, xr, m, mean[ch], gamma[ch] * rstd[ch], beta[ch], relu);
        }
        return (double)m;
    }

    /* layout: [sum x (c) | sum x^2 (c) | count], one reducer call for the whole layer */
    double stack[2 * STACK_CHANNELS + 1];
    const size_t nvals = 2 * (size_t)c + 1;
    double *buf = reduce_buffer(stack, sizeof stack / sizeof stack[0], nvals);
    #pragma omp parallel for schedule(static)
    for (int ch = 0; ch < c; ch++) row_moments(x + (size_t)ch * m, m, &buf[ch], &buf[c + ch]);
    buf[2 * c] = (double)m;
    reducer->sum(buf, (int)nvals, reducer->ctx);
    const double count = buf[2 * c];

    #pragma omp parallel for schedule(static)
    for (int ch = 0; ch < c; ch++) {
        finish_stats(buf[ch], buf[c + ch], count, &mean[ch], &rstd[ch], var ? &var[ch] : NULL);
        row_normalize(y + (size_t)ch * m, x + (size_t)ch * m, m, mean[ch], gamma[ch] * rstd[ch], beta[ch],
                      relu);
    }
    release_buffer(buf, stack);
    return count;
}

void batchnorm_forward_fixed(float *y, const float *x, const float *gamma, const float *beta,
                             const float *mean, const float *var, int c, long m, int relu) {
    #pragma omp parallel for schedule(static)
    for (int ch = 0; ch < c; ch++) {
        const float scale = (float)((double)gamma[ch] / sqrt((double)var[ch] + (double)BN_EPS));
        row_normalize(y + (size_t)ch * m, x + (size_t)ch * m, m, mean[ch], scale, beta[ch], relu);
    }
}

/* Floats masked at a time in row_grad_sums: a block that stays in L1. */
#define MASK_BLOCK 256

/* One channel's backward sums: g = dy masked by the ReLU when relu (where the forward's value, recomputed
 * from x with the forward's scale and shift, is > 0: reading x alone instead of x and y saves a third of
 * the memory traffic); sum g and sum g * (x - mean), double.
 * The mask goes through a small float block: GCC does not vectorize a float select feeding double sums
 * in one loop ("control flow in loop"), and the unvectorized loop ran ~10x slower. dy is loaded whether
 * or not the lane is kept (here and in row_grad_input): "y > 0 ? dy : 0" reads dy only where y > 0, and
 * GCC honours that with a masked load (vmaskmovps on AVX2), measured several times slower than a plain
 * load and a select on AMD Zen. */
static void row_grad_sums(const float *dy, const float *x, long m, float mean, float scale, float shift,
                          int relu, double *sum_g, double *sum_gxc) {
    double sg = 0.0, sgx = 0.0;
    const double mu = mean;
    float block[MASK_BLOCK];
    for (long i0 = 0; i0 < m; i0 += MASK_BLOCK) {
        const int len = m - i0 < MASK_BLOCK ? (int)(m - i0) : MASK_BLOCK;
        const float *g = dy + i0, *xb = x + i0;
        if (relu) {
            #pragma omp simd
            for (int i = 0; i < len; i++) {
                const float gi = g[i];
                block[i] = bn_value(xb[i], mean, scale, shift) > 0.0f ? gi : 0.0f;
            }
            g = block;
        }
        #pragma omp simd reduction(+:sg, sgx)
        for (int i = 0; i < len; i++) {
            const double v = g[i];
            sg += v;
            sgx += v * ((double)xb[i] - mu);
        }
    }
    *sum_g = sg;
    *sum_gxc = sgx;
}

/* dx row [m] = k * (g - a - (x - mean) * b), with k = gamma * rstd (also the forward's scale, so the ReLU
 * mask is bn_value(x, mean, k, shift) > 0), a = mean(g), b = rstd * mean(g*xhat).
 * dx may alias dy: element i is read before it is written. */
static void row_grad_input(float *dx, const float *dy, const float *x, long m, float mean, float shift, float k,
                           float a, float b, int relu) {
    if (relu) {
        #pragma omp simd
        for (long i = 0; i < m; i++) {
            const float dyi = dy[i], g = bn_value(x[i], mean, k, shift) > 0.0f ? dyi : 0.0f;
            dx[i] = k * (g - a - (x[i] - mean) * b);
        }
    } else {
        #pragma omp simd
        for (long i = 0; i < m; i++) dx[i] = k * (dy[i] - a - (x[i] - mean) * b);
    }
}

/* Turns the global sums of one channel into the coefficients of row_grad_input. */
static void grad_coefficients(double sum_g, double sum_gxhat, double count, float gamma, float rstd,
                              float *k, float *a, float *b) {
    const double inv = count > 0 ? 1.0 / count : 0.0;
    *k = gamma * rstd;
    *a = (float)(sum_g * inv);
    *b = (float)(sum_gxhat * inv * (double)rstd);
}

void batchnorm_backward(float *dx, float *dgamma, float *dbeta, const float *dy, const float *x,
                        const float *mean, const float *rstd, const float *gamma, const float *beta,
                        int c, long m, int relu, const StatReducer *reducer) {
    /* dgamma and dbeta take this rank's sums only: the gradient all-reduce adds the other ranks' later,
     * so adding the reduced sums here would count them world-size times. */
    if (!has_reducer(reducer)) {
        #pragma omp parallel for schedule(static)
        for (int ch = 0; ch < c; ch++) {
            const size_t off = (size_t)ch * m;
            double sg, sgx;
            row_grad_sums(dy + off, x + off, m, mean[ch], gamma[ch] * rstd[ch], beta[ch], relu, &sg, &sgx);
            const double sgxh = sgx * (double)rstd[ch];
            dbeta[ch] += (float)sg;
            dgamma[ch] += (float)sgxh;
            float k, a, b;
            grad_coefficients(sg, sgxh, (double)m, gamma[ch], rstd[ch], &k, &a, &b);
            row_grad_input(dx + off, dy + off, x + off, m, mean[ch], beta[ch], k, a, b, relu);
        }
        return;
    }

    /* layout: [sum g (c) | sum g * xhat (c) | count] */
    double stack[2 * STACK_CHANNELS + 1];
    const size_t nvals = 2 * (size_t)c + 1;
    double *buf = reduce_buffer(stack, sizeof stack / sizeof stack[0], nvals);
    #pragma omp parallel for schedule(static)
    for (int ch = 0; ch < c; ch++) {
        const size_t off = (size_t)ch * m;
        double sg, sgx;
        row_grad_sums(dy + off, x + off, m, mean[ch], gamma[ch] * rstd[ch], beta[ch], relu, &sg, &sgx);
        buf[ch] = sg;
        buf[c + ch] = sgx * (double)rstd[ch];
        dbeta[ch] += (float)sg;
        dgamma[ch] += (float)buf[c + ch];
    }
    buf[2 * c] = (double)m;
    reducer->sum(buf, (int)nvals, reducer->ctx);
    const double count = buf[2 * c];

    #pragma omp parallel for schedule(static)
    for (int ch = 0; ch < c; ch++) {
        const size_t off = (size_t)ch * m;
        float k, a, b;
        grad_coefficients(buf[ch], buf[c + ch], count, gamma[ch], rstd[ch], &k, &a, &b);
        row_grad_input(dx + off, dy + off, x + off, m, mean[ch], beta[ch], k, a, b, relu);
    }
    release_buffer(buf, stack);
}

void batchnorm_update_running(float *running_mean, float *running_var, const float *mean,
                              const float *var, int c, double count) {
    /* PyTorch's unbiased factor; with one value per channel it would divide by zero (PyTorch refuses to
     * train then), so the biased variance stands in. */
    const double unbias = count > 1.0 ? count / (count - 1.0) : 1.0;
    const double mom = BN_MOMENTUM;
    for (int ch = 0; ch < c; ch++) {
        running_mean[ch] = (float)((1.0 - mom) * running_mean[ch] + mom * mean[ch]);
        running_var[ch] = (float)((1.0 - mom) * running_var[ch] + mom * (double)var[ch] * unbias);
    }
}
