/* Winograd F(2x2, 3x3) for 3x3 / stride 1 / pad 1 convolutions, internal to conv.c: the forward, the
 * input gradient (a 3x3 convolution of the output gradient with the kernels turned 180 degrees and the
 * channel roles swapped) and the weight gradient. src/conv_winograd.c is built once with the AVX-512 flags
 * and once with AVX2 + FMA (meson.build), as conv_direct.c; conv.c calls the one of the kernel path in use
 * (none on the generic path), for the shapes and passes its takes accepts, unless conv_use_winograd(0)
 * turned it off. Both do the same operations in the same order on every output, so they give the same
 * bits.
 *
 * Each 2x2 output tile is A^T [ (G g G^T) . (B^T d B) ] A over its 4x4 input patch d: 16 products per
 * input and output channel instead of 36, so the channel sums (a GEMM per transform point) do 2.25x fewer
 * multiply-adds than the direct kernels. The transforms add and subtract (G halves), which loses a few
 * units in the last place against the direct sums (measured below 1e-5 relative on the ResNet shapes);
 * every output is still summed by one thread in a fixed order, so results do not depend on the thread
 * count. */
#ifndef RESNET_CONV_WINOGRAD_H
#define RESNET_CONV_WINOGRAD_H

#include <stddef.h>

#include "resnet/conv_shape.h"

typedef enum { CONV_PASS_FORWARD, CONV_PASS_INPUT_GRADIENT, CONV_PASS_WEIGHT_GRADIENT } ConvPass;

typedef struct {
    /* 1 when this pass of shape s on n images of h x w runs here */
    int (*takes)(ConvShape s, int n, int h, int w, ConvPass pass);
    /* the scratch the passes need: the transformed kernels, then the weight gradient's partial sums */
    size_t (*scratch_floats)(ConvShape s);
    /* y [cout, n, h, w] = addend (or nothing when NULL) + conv(x) + bias (may be NULL); addend may be y */
    void (*forward)(float *y, const float *addend, const float *x, const float *weight, const float *bias, int n,
                    int h, int w, ConvShape s, float *scratch);
    /* dx [cin, n, h, w] = addend (or nothing when NULL; it must not overlap dx) + the input gradient of dy */
    void (*input_gradient)(float *dx, const float *addend, const float *dy, const float *weight, int n, int h,
                           int w, ConvShape s, float *scratch);
    /* dweight [cout, cin, 3, 3] += the weight gradient of dy [cout, n, h, w] over x [cin, n, h, w], and when
     * dx is not NULL the input gradient as input_gradient gives it, in one pass over dy */
    void (*backward)(float *dx, const float *addend, float *dweight, const float *dy, const float *x,
                     const float *weight, int n, int h, int w, ConvShape s, float *scratch);
} ConvWinogradKernels;

/* Only x86-64 builds have them (meson.build builds the objects there alone). */
extern const ConvWinogradKernels conv_winograd_avx512, conv_winograd_avx2;

#endif
