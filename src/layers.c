/* The small layers (see layers.h). All are memory-bound streams or tiny matrices: the large loops are
 * split over OpenMP threads by element or by channel, each output written by exactly one thread in a
 * fixed order, so results do not depend on the thread count. Loops too short to repay waking the
 * thread team run on the calling thread. */
#include "resnet/layers.h"

#include <math.h>
#include <string.h>

/* Elements below which a streaming loop stays on one thread (a team wake-up costs a few microseconds,
 * about the time to stream this many floats). */
#define PAR_MIN_ELEMS 32768

/* images [n, c, hw] -> out [c, n, hw]: one contiguous copy of hw floats per (channel, image). */
void nchw_to_cnhw(float *out, const float *images, int n, int c, int hw) {
    const size_t row = (size_t)hw;
    #pragma omp parallel for collapse(2) schedule(static) if ((size_t)n * c * hw >= PAR_MIN_ELEMS)
    for (int ch = 0; ch < c; ch++)
        for (int i = 0; i < n; i++)
            memcpy(out + ((size_t)ch * n + i) * row, images + ((size_t)i * c + ch) * row, row * sizeof(float));
}

/* x [count] -> y [count] = max(x, 0); y may alias x. */
void relu_forward(float *y, const float *x, size_t count) {
    #pragma omp parallel for simd schedule(static) if (count >= PAR_MIN_ELEMS)
    for (size_t i = 0; i < count; i++) y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

/* dy, y [count] -> dx [count] = dy where y > 0, else 0. The mask comes from the output so that the input
 * need not be kept; dx may alias dy. dy is loaded for every lane: read only where y > 0, GCC would emit a
 * masked load (slow on AMD, see batchnorm.c's row_grad_sums). */
void relu_backward(float *dx, const float *dy, const float *y, size_t count) {
    #pragma omp parallel for simd schedule(static) if (count >= PAR_MIN_ELEMS)
    for (size_t i = 0; i < count; i++) {
        const float g = dy[i];
        dx[i] = y[i] > 0.0f ? g : 0.0f;
    }
}

/* a, b [count] -> y [count] = a + b; y may alias a or b. */
void add_forward(float *y, const float *a, const float *b, size_t count) {
    #pragma omp parallel for simd schedule(static) if (count >= PAR_MIN_ELEMS)
    for (size_t i = 0; i < count; i++) y[i] = a[i] + b[i];
}

/* y [count] += x [count] */
void add_inplace(float *y, const float *x, size_t count) {
    #pragma omp parallel for simd schedule(static) if (count >= PAR_MIN_ELEMS)
    for (size_t i = 0; i < count; i++) y[i] += x[i];
}

/* x [c, n, hw] -> y [n, c] = mean over hw. The sum is in double: with hw values of one sign the float
 * sum would drift by ~hw ulps. */
void avgpool_forward(float *y, const float *x, int c, int n, int hw) {
    const double inv = hw > 0 ? 1.0 / hw : 0.0;
    #pragma omp parallel for schedule(static) if ((size_t)n * c * hw >= PAR_MIN_ELEMS)
    for (int ch = 0; ch < c; ch++) {
        for (int i = 0; i < n; i++) {
            const float *row = x + ((size_t)ch * n + i) * hw;
            double s = 0.0;
            #pragma omp simd reduction(+:s)
            for (int j = 0; j < hw; j++) s += row[j];
            y[(size_t)i * c + ch] = (float)(s * inv);
        }
    }
}

/* dy [n, c] -> dx [c, n, hw] = dy / hw (overwritten) */
void avgpool_backward(float *dx, const float *dy, int c, int n, int hw) {
    const float inv = hw > 0 ? (float)(1.0 / hw) : 0.0f;
    #pragma omp parallel for schedule(static) if ((size_t)n * c * hw >= PAR_MIN_ELEMS)
    for (int ch = 0; ch < c; ch++) {
        for (int i = 0; i < n; i++) {
            float *row = dx + ((size_t)ch * n + i) * hw;
            const float v = dy[(size_t)i * c + ch] * inv;
            for (int j = 0; j < hw; j++) row[j] = v;
        }
    }
}

/* x [n, in], weight [out, in], bias [out] (may be NULL) -> y [n, out]. The classifier is 64 -> 10 on a
 * batch of ~128: a few thousand multiply-adds, so plain loops (dot products in double) beat any GEMM
 * call overhead and stay reproducible. */
void linear_forward(float *y, const float *x, const float *weight, const float *bias, int n, int in, int out) {
    for (int i = 0; i < n; i++) {
        const float *xr = x + (size_t)i * in;
        for (int o = 0; o < out; o++) {
            const float *wr = weight + (size_t)o * in;
            double s = bias ? (double)bias[o] : 0.0;
            for (int k = 0; k < in; k++) s += (double)xr[k] * wr[k];
            y[(size_t)i * out + o] = (float)s;
        }
    }
}

/* dy [n, out], x [n, in], weight [out, in] -> dx [n, in] = dy W (overwritten; NULL skips),
 * dweight [out, in] += dy^T x, dbias [out] += column sums of dy (NULL skips). */
void linear_backward(float *dx, float *dweight, float *dbias, const float *dy, const float *x,
                     const float *weight, int n, int in, int out) {
    if (dx) {
        for (int i = 0; i < n; i++) {
            const float *dyr = dy + (size_t)i * out;
            for (int k = 0; k < in; k++) {
                double s = 0.0;
                for (int o = 0; o < out; o++) s += (double)dyr[o] * weight[(size_t)o * in + k];
                dx[(size_t)i * in + k] = (float)s;
            }
        }
    }
    for (int o = 0; o < out; o++) {
        for (int k = 0; k < in; k++) {
            double s = 0.0;
            for (int i = 0; i < n; i++) s += (double)dy[(size_t)i * out + o] * x[(size_t)i * in + k];
            dweight[(size_t)o * in + k] += (float)s;
        }
        if (dbias) {
            double s = 0.0;
            for (int i = 0; i < n; i++) s += dy[(size_t)i * out + o];
            dbias[o] += (float)s;
        }
    }
}

/* logits [n, classes], labels [n] in [0, classes) -> returns the sum of the n losses -log softmax[label];
 * dlogits [n, classes] = (softmax - onehot) / denom when not NULL (may alias logits). Log-sum-exp is
 * shifted by the row maximum and evaluated in double, so no logit overflows exp. Sequential: n is one
 * batch of 10-way rows, and a fixed summation order keeps the loss reproducible. */
double softmax_xent(float *dlogits, const float *logits, const int *labels, int n, int classes, double denom) {
    double total = 0.0;
    const double inv = 1.0 / denom;
    for (int i = 0; i < n; i++) {
        const float *z = logits + (size_t)i * classes;
        double zmax = -INFINITY;
        for (int k = 0; k < classes; k++) if (z[k] > zmax) zmax = z[k];
        double se = 0.0;
        for (int k = 0; k < classes; k++) se += exp((double)z[k] - zmax);
        const double lse = zmax + log(se);
        const int label = labels[i];
        total += lse - (double)z[label];
        if (dlogits) {
            float *d = dlogits + (size_t)i * classes;
            for (int k = 0; k < classes; k++) {
                const double p = exp((double)z[k] - lse);
                d[k] = (float)((p - (k == label ? 1.0 : 0.0)) * inv);
            }
        }
    }
    return total;
}

/* Output extent of the strided subsampling: every stride-th pixel from 0, i.e. ceil(h / stride), which
 * matches PyTorch's x[:, :, ::2, ::2] and the 3x3 stride-2 pad-1 convolution of the other branch for
 * odd sizes too (header's h/stride is the even-size case). */
static int sub_size(int h, int stride) { return (h - 1) / stride + 1; }

/* x [cin, n, h, w] -> y [cout, n, ho, wo], ho = ceil(h/stride), wo = ceil(w/stride): channels
 * [pad, pad + cin) take x[:, :, ::stride, ::stride], the pad = (cout - cin) / 2 channels before and the
 * rest after are zero. */
void shortcut_a_forward(float *y, const float *x, int cin, int cout, int n, int h, int w, int stride) {
    const int ho = sub_size(h, stride), wo = sub_size(w, stride), pad = (cout - cin) / 2;
    const size_t out_plane = (size_t)ho * wo, in_plane = (size_t)h * w, out_row = (size_t)n * out_plane;
    memset(y, 0, sizeof(float) * (size_t)pad * out_row);
    memset(y + (size_t)(pad + cin) * out_row, 0, sizeof(float) * (size_t)(cout - cin - pad) * out_row);
    #pragma omp parallel for collapse(2) schedule(static) if ((size_t)cin * out_row >= PAR_MIN_ELEMS)
    for (int ci = 0; ci < cin; ci++) {
        for (int i = 0; i < n; i++) {
            const float *src = x + ((size_t)ci * n + i) * in_plane;
            float *dst = y + ((size_t)(pad + ci) * n + i) * out_plane;
            if (stride == 1) {
                memcpy(dst, src, sizeof(float) * in_plane);
                continue;
            }
            for (int oy = 0; oy < ho; oy++) {
                const float *srow = src + (size_t)oy * stride * w;
                for (int ox = 0; ox < wo; ox++) dst[(size_t)oy * wo + ox] = srow[(size_t)ox * stride];
            }
        }
    }
}

/* dy [cout, n, ho, wo] -> dx [cin, n, h, w] (overwritten): the kept pixels take dy of channel pad + ci,
 * the skipped ones get zero. */
void shortcut_a_backward(float *dx, const float *dy, int cin, int cout, int n, int h, int w, int stride) {
    const int ho = sub_size(h, stride), wo = sub_size(w, stride), pad = (cout - cin) / 2;
    const size_t out_plane = (size_t)ho * wo, in_plane = (size_t)h * w;
    #pragma omp parallel for collapse(2) schedule(static) if ((size_t)cin * n * in_plane >= PAR_MIN_ELEMS)
    for (int ci = 0; ci < cin; ci++) {
        for (int i = 0; i < n; i++) {
            float *dst = dx + ((size_t)ci * n + i) * in_plane;
            const float *src = dy + ((size_t)(pad + ci) * n + i) * out_plane;
            if (stride == 1) {
                memcpy(dst, src, sizeof(float) * in_plane);
                continue;
            }
            memset(dst, 0, sizeof(float) * in_plane);
            for (int oy = 0; oy < ho; oy++) {
                float *drow = dst + (size_t)oy * stride * w;
                for (int ox = 0; ox < wo; ox++) drow[(size_t)ox * stride] = src[(size_t)oy * wo + ox];
            }
        }
    }
}
