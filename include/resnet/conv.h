/* 2-D convolution over activations laid out C,N,H,W ("channel-major"): each channel's values for the
 * whole batch are one contiguous row, so a convolution is one GEMM  Y[cout, n*ho*wo] = W[cout, cin*k*k] x
 * col[cin*k*k, n*ho*wo]  with long rows that BLIS runs near its peak, and batch normalization reads one
 * contiguous row per channel. */
#ifndef RESNET_CONV_H
#define RESNET_CONV_H

#include <stddef.h>

typedef struct { int cin, cout, k, stride, pad; } ConvShape;

int conv_out_size(int in, int k, int stride, int pad);

/* Floats of scratch that conv_forward / conv_backward need for this shape and batch. */
size_t conv_scratch_floats(ConvShape s, int n, int h, int w);

/* x [cin, n, h, w], weight [cout, cin, k, k], bias [cout] or NULL  ->  y [cout, n, ho, wo] (overwritten). */
void conv_forward(float *y, const float *x, const float *weight, const float *bias,
                  int n, int h, int w, ConvShape s, float *scratch);

/* dy [cout, n, ho, wo]. dx [cin, n, h, w] is overwritten (skipped when NULL); dweight [cout, cin, k, k]
 * and dbias [cout] (may be NULL) are accumulated into, so a parameter used twice sums its gradients. */
void conv_backward(float *dx, float *dweight, float *dbias, const float *dy, const float *x,
                   const float *weight, int n, int h, int w, ConvShape s, float *scratch);

/* Compute threads for BLIS and OpenMP loops; the only place the program sets them. */
void compute_set_threads(int threads);
int compute_threads(void);
/* The BLIS kernel set in use ("skx", "zen3", "haswell", "generic"). */
const char *compute_kernel_name(void);
/* The instruction set of this build's direct convolution kernels ("avx512", "avx2"), or NULL where it has
 * none and every convolution takes im2col + GEMM. */
const char *conv_direct_isa(void);

#endif
