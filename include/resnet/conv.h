/* 2-D convolution over activations laid out C,N,H,W ("channel-major"): each channel's values for the
 * whole batch are one contiguous row, so a convolution is one GEMM  Y[cout, n*ho*wo] = W[cout, cin*k*k] x
 * col[cin*k*k, n*ho*wo]  with long rows that BLIS runs near its peak, and batch normalization reads one
 * contiguous row per channel. */
#ifndef RESNET_CONV_H
#define RESNET_CONV_H

#include <stddef.h>

#include "resnet/conv_shape.h"

/* Floats of scratch that conv_forward / conv_backward need for this shape and batch. */
size_t conv_scratch_floats(ConvShape s, int n, int h, int w);

/* x [cin, n, h, w], weight [cout, cin, k, k], bias [cout] or NULL  ->  y [cout, n, ho, wo] (overwritten). */
void conv_forward(float *y, const float *x, const float *weight, const float *bias,
                  int n, int h, int w, ConvShape s, float *scratch);

/* y [cout, n, ho, wo] = addend + the convolution conv_forward computes, one rounding: bit for bit what
 * conv_forward into y followed by add_inplace(y, addend) gives. A residual sum formed in the convolution's
 * store: the output is written once instead of written, read back and written again by a separate add.
 * addend has y's shape and is a buffer of its own or y itself (the sum formed in the buffer that holds the
 * shortcut); x must not overlap y. */
void conv_forward_add(float *y, const float *addend, const float *x, const float *weight, const float *bias,
                      int n, int h, int w, ConvShape s, float *scratch);

/* dy [cout, n, ho, wo]. dx [cin, n, h, w] is overwritten (skipped when NULL); dweight [cout, cin, k, k]
 * and dbias [cout] (may be NULL) are accumulated into, so a parameter used twice sums its gradients. */
void conv_backward(float *dx, float *dweight, float *dbias, const float *dy, const float *x,
                   const float *weight, int n, int h, int w, ConvShape s, float *scratch);
/* conv_backward with dx = addend + the input gradient, one rounding, bit for bit what conv_backward followed
 * by add_inplace(dx, addend) gives: a residual block's two gradient branches summed in the convolution's
 * store. addend [cin, n, h, w] must not overlap dx; dx must not be NULL. */
void conv_backward_add(float *dx, const float *addend, float *dweight, float *dbias, const float *dy, const float *x,
                       const float *weight, int n, int h, int w, ConvShape s, float *scratch);

/* Compute threads for BLIS and OpenMP loops; the only place the program sets them. */
void compute_set_threads(int threads);
int compute_threads(void);
/* The BLIS kernel set in use ("skx", "zen3", "haswell", "generic"). */
const char *compute_kernel_name(void);
/* The kernel path: "avx512" or "avx2" (the direct kernels of conv_direct.c for the shapes they take, im2col +
 * BLIS for the others), or "generic" (im2col + BLIS for every shape); NULL or "": the fastest the CPU runs.
 * Called once at start-up, before any scratch is sized (conv_scratch_floats depends on the path); without
 * it the first convolution takes the fastest. 0, or -1 with rn_error when this build has no such path or
 * the CPU lacks the instructions it needs (the path stays as it was). */
int conv_select_isa(const char *isa);
/* Winograd F(2x2, 3x3) for the 3x3 stride-1 forward, input and weight gradient on the avx512 and avx2 paths
 * (conv_winograd.h), on (1, the default) or off (0: the direct kernels there too, whose sums are the plain
 * ones); returns the setting it replaces. The scratch conv_scratch_floats sizes serves either. */
int conv_use_winograd(int on);
/* "F(2x2,3x3)" when the path in use runs Winograd convolutions, else NULL. */
const char *conv_winograd_name(void);
/* The instruction set of the direct kernels in use ("avx512", "avx2"), or NULL on the generic path, where
 * every convolution takes im2col + GEMM. */
const char *conv_direct_isa(void);

#endif
