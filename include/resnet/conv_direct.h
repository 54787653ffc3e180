/* The direct convolution kernels, internal to conv.c. src/conv_direct.c is compiled once per instruction
 * set, each time into its own object with that set's compiler flags (meson.build), and each object
 * exports one table of entry points whose name carries the set: conv_direct_avx512, conv_direct_avx2.
 * conv.c picks one table at start-up from what the CPU runs (conv_select_isa), so one binary serves
 * AVX-512 and AVX2 nodes alike; nothing else calls them. */
#ifndef RESNET_CONV_DIRECT_H
#define RESNET_CONV_DIRECT_H

#include <stddef.h>

#include "resnet/conv_shape.h"

/* One instruction set's kernels, for the shapes conv_direct_takes (conv_shape.h). They run on as many
 * OpenMP threads as compute_set_threads (conv.h) set. */
typedef struct {
    const char *isa;   /* "avx512", "avx2": the name RESNET_ISA and conv_direct_isa use */
    /* the scratch forward and backward need */
    size_t (*scratch_floats)(ConvShape s, int n, int h, int w);
    /* conv_forward (conv.h), or conv_forward_add when addend != NULL */
    void (*forward)(float *y, const float *x, const float *weight, const float *bias, int n, int h, int w,
                    ConvShape s, float *scratch, const float *addend);
    /* conv_backward_add (conv.h; addend NULL: conv_backward) without the bias gradient, which conv.c sums
     * for every path */
    void (*backward)(float *dx, const float *addend, float *dweight, const float *dy, const float *x,
                     const float *weight, int n, int h, int w, ConvShape s, float *scratch);
} ConvDirectKernels;

/* CONV_DIRECT_TABLE(avx2) is conv_direct_avx2; the indirection lets the argument be a macro itself. */
#define CONV_DIRECT_PASTE(isa) conv_direct_##isa
#define CONV_DIRECT_TABLE(isa) CONV_DIRECT_PASTE(isa)

/* Only x86-64 builds have them (meson.build builds the objects there alone). */
extern const ConvDirectKernels CONV_DIRECT_TABLE(avx512), CONV_DIRECT_TABLE(avx2);

#endif
