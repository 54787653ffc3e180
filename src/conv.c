/* Convolution over C,N,H,W activations: the choice of kernels, and the general path.
 *
 * The shapes ResNet-20 runs (3x3 / pad 1 at stride 1 or 2, 1x1 / stride 2) go through the direct SIMD
 * kernels of conv_direct.c, built once for AVX-512 and once for AVX2 + FMA in every x86-64 binary; which
 * of them runs is chosen once, at start-up, from what the CPU supports (conv_select_isa), so one build
 * serves every node type of a cluster. Everything else (and every shape on CPUs with neither) takes the
 * general path: im2col + one BLIS GEMM per chunk of images. With channel-major activations the im2col
 * matrix of a chunk of nc images is col[K][nc*ho*wo] (K = cin*k*k), and the output rows of the chunk sit
 * at column offset n0*ho*wo of Y[cout][n*ho*wo]: the GEMM writes them in place through BLIS's general
 * strides, so no reshuffling follows. Chunks bound the scratch (col, and dcol in backward) to a few MiB
 * that stay in cache between im2col and GEMM. */
#include "resnet/conv.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <omp.h>
#include <blis.h>

#include "resnet/conv_direct.h"
#include "resnet/conv_winograd.h"
#include "resnet/layers.h"
#include "resnet/util.h"

static int threads_in_use = 1;

/* Debian's BLIS 0.9 does not recognise newer CPUs (AMD Zen 4, say) and falls back to its generic C
 * kernels at a fifth of the speed. Pick a kernel set the CPU can run before BLIS initialises; a
 * BLIS_ARCH_TYPE the user set wins. The AVX2 sets (zen3 on AMD, haswell on Intel), not skx, even on
 * AVX-512 CPUs: measured on ResNet-20's skinny GEMMs (16-64 rows), skx's reference packing made a
 * training step twice as slow (99 vs 185 images/s on one Zen 4 core). */
static void select_blis_kernels(void) {
    if (getenv("BLIS_ARCH_TYPE")) return;
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) return;
    char id[16];
    snprintf(id, sizeof id, "%d", __builtin_cpu_is("amd") ? BLIS_ARCH_ZEN3 : BLIS_ARCH_HASWELL);
    setenv("BLIS_ARCH_TYPE", id, 0);
}

const char *compute_kernel_name(void) { return bli_arch_string(bli_arch_query_id()); }

/* ---- the kernel paths, fastest first -------------------------------------------------------------------
 * The CPU features each path's object was compiled for (meson.build), asked of the CPU before the object
 * runs: a binary built on one node never executes an instruction another node lacks (no SIGILL). */
#if defined(__x86_64__)
static int cpu_runs_avx512(void) {
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

static int cpu_runs_avx2(void) { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"); }
#endif

static int cpu_runs_anything(void) { return 1; }

typedef struct {
    const char *isa;                    /* the RESNET_ISA name */
    const ConvDirectKernels *kernels;   /* NULL: im2col + BLIS for every shape */
    const ConvWinogradKernels *winograd;   /* the 3x3 stride-1 passes it takes, or NULL */
    int (*cpu_runs)(void);
    const char *needs;                  /* the features, for the refusal */
} KernelPath;

static const KernelPath paths[] = {
#if defined(__x86_64__)
    {"avx512", &CONV_DIRECT_TABLE(avx512), &conv_winograd_avx512, cpu_runs_avx512, "AVX-512 F, BW, VL and DQ"},
    {"avx2", &CONV_DIRECT_TABLE(avx2), &conv_winograd_avx2, cpu_runs_avx2, "AVX2 and FMA"},
#endif
    {"generic", NULL, NULL, cpu_runs_anything, "nothing"},
};
#define NPATHS (sizeof paths / sizeof paths[0])

static const KernelPath *chosen;   /* NULL until conv_select_isa, or the first convolution, chooses */

/* the paths the CPU runs ("avx2, generic"), or all of this build's (every path != 0) */
static const char *path_names(int every_path) {
    static char names[64];
    names[0] = '\0';
    for (size_t i = 0; i < NPATHS; i++)
        if (every_path || paths[i].cpu_runs())
            snprintf(names + strlen(names), sizeof names - strlen(names), "%s%s", names[0] ? ", " : "",
                     paths[i].isa);
    return names;
}

int conv_select_isa(const char *isa) {
#if defined(__x86_64__)
    __builtin_cpu_init();
#endif
    const KernelPath *path = NULL;
    for (size_t i = 0; i < NPATHS && !path; i++)
        if (isa && *isa ? strcmp(paths[i].isa, isa) == 0 : paths[i].cpu_runs()) path = &paths[i];
    if (!path) return rn_error("'%s' is not a kernel path of this build (%s)", isa, path_names(1));
    if (!path->cpu_runs())
        return rn_error("this CPU lacks %s, which the %s kernels need (it runs %s)", path->needs, path->isa,
                        path_names(0));
    chosen = path;
    return 0;
}

static const ConvDirectKernels *direct_kernels(void) {
    if (!chosen) conv_select_isa(NULL);   /* the fastest the CPU runs: cannot fail */
    return chosen->kernels;
}

const char *conv_direct_isa(void) {
    const ConvDirectKernels *k = direct_kernels();
    return k ? k->isa : NULL;
}

/* the direct kernels for this shape, or NULL for im2col + BLIS */
static const ConvDirectKernels *direct_for(ConvShape s) { return conv_direct_takes(s) ? direct_kernels() : NULL; }

static int winograd_wanted = 1;

int conv_use_winograd(int on) {
    const int was = winograd_wanted;
    winograd_wanted = on != 0;
    return was;
}

const char *conv_winograd_name(void) {
    (void)direct_kernels();   /* the path chosen */
    return winograd_wanted && chosen->winograd ? "F(2x2,3x3)" : NULL;
}

/* The Winograd kernels for this pass, or NULL. */
static const ConvWinogradKernels *winograd_for(ConvShape s, int n, int h, int w, ConvPass pass) {
    (void)direct_kernels();
    const ConvWinogradKernels *k = chosen->winograd;
    return winograd_wanted && k && k->takes(s, n, h, w, pass) ? k : NULL;
}

void compute_set_threads(int threads) {
    static int kernels_chosen = 0;
    if (!kernels_chosen) {
        select_blis_kernels();
        kernels_chosen = 1;
    }
    if (threads < 1) threads = 1;
    threads_in_use = threads;
    omp_set_num_threads(threads);
    bli_thread_set_num_threads(threads);
}

int compute_threads(void) { return threads_in_use; }

static int is_pointwise(ConvShape s) { return s.k == 1 && s.stride == 1 && s.pad == 0; }

/* Images per chunk for this shape: at least one. */
static int chunk_images(ConvShape s, int n, int ho, int wo) {
    size_t per_image = (size_t)s.cin * s.k * s.k * ho * wo;
    int nc = (int)(CONV_CHUNK_FLOATS / (per_image ? per_image : 1));
    if (nc < 1) nc = 1;
    if (nc > n) nc = n;
    return nc;
}

size_t conv_scratch_floats(ConvShape s, int n, int h, int w) {
    const ConvDirectKernels *direct = direct_for(s);
    if (direct) {
        /* whether or not Winograd is wanted now (conv_use_winograd may change after the scratch is sized), and
         * for any batch (its size does not depend on n, but whether it runs does: ask for one image) */
        const ConvWinogradKernels *wk = chosen->winograd;
        const size_t direct_floats = direct->scratch_floats(s, n, h, w);
        if (wk && (wk->takes(s, 1, h, w, CONV_PASS_FORWARD) || wk->takes(s, 1, h, w, CONV_PASS_INPUT_GRADIENT) ||
                   wk->takes(s, 1, h, w, CONV_PASS_WEIGHT_GRADIENT))) {
            const size_t winograd_floats = wk->scratch_floats(s);
            return winograd_floats > direct_floats ? winograd_floats : direct_floats;
        }
        return direct_floats;
    }
    const int ho = conv_out_size(h, s.k, s.stride, s.pad), wo = conv_out_size(w, s.k, s.stride, s.pad);
    const size_t chunk_pixels = (size_t)chunk_images(s, n, ho, wo) * ho * wo, K = (size_t)s.cin * s.k * s.k;
    /* pointwise: the accumulating forward's product of a chunk; else col, and then dcol (backward) or the
     * accumulating forward's product */
    if (is_pointwise(s)) return s.cout * chunk_pixels;
    return (K + (K > (size_t)s.cout ? K : (size_t)s.cout)) * chunk_pixels;
}

/* col[K][nc*ho*wo] from images n0..n0+nc of x [cin, n, h, w]. */
static void im2col(float *col, const float *x, int n, int h, int w, int n0, int nc, ConvShape s,
                   int ho, int wo) {
    const int kk = s.k * s.k, rows = s.cin * kk;
    const size_t hw = (size_t)h * w, ohw = (size_t)ho * wo;
    #pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++) {
        const int ci = r / kk, kh = (r % kk) / s.k, kw = r % s.k;
        float *dst = col + (size_t)r * nc * ohw;
        for (int img = 0; img < nc; img++) {
            const float *src = x + ((size_t)ci * n + n0 + img) * hw;
            for (int oy = 0; oy < ho; oy++, dst += wo) {
                const int iy = oy * s.stride - s.pad + kh;
                if (iy < 0 || iy >= h) { memset(dst, 0, sizeof(float) * wo); continue; }
                const float *srow = src + (size_t)iy * w;
                if (s.stride == 1) {
                    /* ix = ox - pad + kw: a shifted copy with zeros at the edges */
                    const int shift = kw - s.pad;
                    int lo = shift < 0 ? -shift : 0, hi = w - shift < wo ? w - shift : wo;
                    if (hi < lo) hi = lo;
                    for (int ox = 0; ox < lo; ox++) dst[ox] = 0.0f;
                    memcpy(dst + lo, srow + lo + shift, sizeof(float) * (hi - lo));
                    for (int ox = hi; ox < wo; ox++) dst[ox] = 0.0f;
                } else {
                    for (int ox = 0; ox < wo; ox++) {
                        const int ix = ox * s.stride - s.pad + kw;
                        dst[ox] = (ix >= 0 && ix < w) ? srow[ix] : 0.0f;
                    }
                }
            }
        }
    }
}

/* dx[ci, n0..n0+nc) += the scatter of dcol[K][nc*ho*wo]; channels are independent, so one thread
 * owns each channel's k*k rows and no two threads write the same dx value. */
static void col2im(float *dx, const float *dcol, int n, int h, int w, int n0, int nc, ConvShape s,
                   int ho, int wo) {
    const int kk = s.k * s.k;
    const size_t hw = (size_t)h * w, ohw = (size_t)ho * wo;
    #pragma omp parallel for schedule(static)
    for (int ci = 0; ci < s.cin; ci++) {
        for (int q = 0; q < kk; q++) {
            const int kh = q / s.k, kw = q % s.k;
            const float *src = dcol + ((size_t)ci * kk + q) * nc * ohw;
            for (int img = 0; img < nc; img++) {
                float *dst = dx + ((size_t)ci * n + n0 + img) * hw;
                for (int oy = 0; oy < ho; oy++, src += wo) {
                    const int iy = oy * s.stride - s.pad + kh;
                    if (iy < 0 || iy >= h) continue;
                    float *drow = dst + (size_t)iy * w;
                    for (int ox = 0; ox < wo; ox++) {
                        const int ix = ox * s.stride - s.pad + kw;
                        if (ix >= 0 && ix < w) drow[ix] += src[ox];
                    }
                }
            }
        }
    }
}

/* C[m][nn] (row stride ldc) = alpha * op(A) op(B) + beta * C, row-major operands given by strides. */
static void gemm(trans_t ta, trans_t tb, int m, int nn, int k, float alpha, const float *a, inc_t rsa,
                 inc_t csa, const float *b, inc_t rsb, inc_t csb, float beta, float *c, inc_t rsc) {
    bli_sgemm(ta, tb, m, nn, k, &alpha, (float *)a, rsa, csa, (float *)b, rsb, csb, &beta, c, rsc, 1);
}

static void add_bias(float *y, const float *bias, int cout, size_t cols) {
    #pragma omp parallel for schedule(static)
    for (int co = 0; co < cout; co++) {
        float *row = y + co * cols;
        const float b = bias[co];
        for (size_t i = 0; i < cols; i++) row[i] += b;
    }
}

/* y[co][i] = addend[co][i] + (product[co][i] (+ bias[co])) over the cols columns of a chunk, the rows of y
 * and addend (which may be y) ldy apart: the rounding of conv_forward followed by add_inplace */
static void add_product(float *y, const float *addend, size_t ldy, const float *product, const float *bias,
                        int cout, size_t cols) {
    #pragma omp parallel for schedule(static)
    for (int co = 0; co < cout; co++) {
        float *row = y + co * ldy;
        const float *arow = addend + co * ldy, *prow = product + co * cols;
        if (bias) {
            const float b = bias[co];
            for (size_t i = 0; i < cols; i++) row[i] = arow[i] + (prow[i] + b);
        } else {
            for (size_t i = 0; i < cols; i++) row[i] = arow[i] + prow[i];
        }
    }
}

/* The general path. With an addend, each chunk's GEMM goes to scratch and is then added to it: BLIS's
 * beta = 1 would add y into the sum at the first of K's cache blocks, a different rounding from
 * conv_forward's. */
static void im2col_forward(float *y, const float *x, const float *weight, const float *bias, int n, int h,
                           int w, ConvShape s, float *scratch, const float *addend) {
    const int ho = conv_out_size(h, s.k, s.stride, s.pad), wo = conv_out_size(w, s.k, s.stride, s.pad);
    const int K = s.cin * s.k * s.k, pointwise = is_pointwise(s);
    const size_t ohw = (size_t)ho * wo, cols = (size_t)n * ohw;
    if (pointwise && !addend) {
        gemm(BLIS_NO_TRANSPOSE, BLIS_NO_TRANSPOSE, s.cout, (int)cols, K, 1.0f, weight, K, 1, x, cols, 1,
             0.0f, y, cols);
    } else {
        const int nc_max = chunk_images(s, n, ho, wo);
        float *product = pointwise ? scratch : scratch + (size_t)K * nc_max * ohw;
        for (int n0 = 0; n0 < n; n0 += nc_max) {
            const int nc = n - n0 < nc_max ? n - n0 : nc_max;
            const size_t ccols = (size_t)nc * ohw;
            const float *col = pointwise ? x + n0 * ohw : scratch;
            const inc_t ldcol = pointwise ? (inc_t)cols : (inc_t)ccols;
            if (!pointwise) im2col(scratch, x, n, h, w, n0, nc, s, ho, wo);
            if (addend) {
                gemm(BLIS_NO_TRANSPOSE, BLIS_NO_TRANSPOSE, s.cout, (int)ccols, K, 1.0f, weight, K, 1, col, ldcol,
                     1, 0.0f, product, ccols);
                add_product(y + n0 * ohw, addend + n0 * ohw, cols, product, bias, s.cout, ccols);
            } else {
                gemm(BLIS_NO_TRANSPOSE, BLIS_NO_TRANSPOSE, s.cout, (int)ccols, K, 1.0f, weight, K, 1, col, ldcol,
                     1, 0.0f, y + n0 * ohw, cols);
            }
        }
    }
    if (bias && !addend) add_bias(y, bias, s.cout, cols);
}

static void forward_any(float *y, const float *x, const float *weight, const float *bias, int n, int h, int w,
                        ConvShape s, float *scratch, const float *addend) {
    const ConvWinogradKernels *winograd = winograd_for(s, n, h, w, CONV_PASS_FORWARD);
    const ConvDirectKernels *direct = direct_for(s);
    if (winograd) winograd->forward(y, addend, x, weight, bias, n, h, w, s, scratch);
    else if (direct) direct->forward(y, x, weight, bias, n, h, w, s, scratch, addend);
    else im2col_forward(y, x, weight, bias, n, h, w, s, scratch, addend);
}

void conv_forward(float *y, const float *x, const float *weight, const float *bias, int n, int h, int w,
                  ConvShape s, float *scratch) {
    forward_any(y, x, weight, bias, n, h, w, s, scratch, NULL);
}

void conv_forward_add(float *y, const float *addend, const float *x, const float *weight, const float *bias, int n,
                      int h, int w, ConvShape s, float *scratch) {
    forward_any(y, x, weight, bias, n, h, w, s, scratch, addend);
}

/* The general path's weight gradient, and its input gradient overwriting dx when dx is not NULL. */
static void im2col_backward(float *dx, float *dweight, const float *dy, const float *x, const float *weight, int n,
                            int h, int w, ConvShape s, float *scratch) {
    const int ho = conv_out_size(h, s.k, s.stride, s.pad), wo = conv_out_size(w, s.k, s.stride, s.pad);
    const int K = s.cin * s.k * s.k;
    const size_t ohw = (size_t)ho * wo, cols = (size_t)n * ohw;
    if (is_pointwise(s)) {
        /* dW[cout][cin] += dY[cout][cols] x^T ; dx[cin][cols] = W^T dY */
        gemm(BLIS_NO_TRANSPOSE, BLIS_TRANSPOSE, s.cout, K, (int)cols, 1.0f, dy, cols, 1, x, cols, 1, 1.0f,
             dweight, K);
        if (dx)
            gemm(BLIS_TRANSPOSE, BLIS_NO_TRANSPOSE, K, (int)cols, s.cout, 1.0f, weight, K, 1, dy, cols, 1,
                 0.0f, dx, cols);
        return;
    }
    const int nc_max = chunk_images(s, n, ho, wo);
    float *col = scratch, *dcol = scratch + (size_t)K * nc_max * ohw;
    if (dx) memset(dx, 0, sizeof(float) * (size_t)s.cin * n * h * w);
    for (int n0 = 0; n0 < n; n0 += nc_max) {
        const int nc = n - n0 < nc_max ? n - n0 : nc_max;
        const size_t ccols = (size_t)nc * ohw;
        const float *dyc = dy + n0 * ohw;
        im2col(col, x, n, h, w, n0, nc, s, ho, wo);
        /* dW[cout][K] += dY_chunk[cout][ccols] col^T */
        gemm(BLIS_NO_TRANSPOSE, BLIS_TRANSPOSE, s.cout, K, (int)ccols, 1.0f, dyc, cols, 1, col, ccols, 1,
             1.0f, dweight, K);
        if (dx) {
            /* dcol[K][ccols] = W^T dY_chunk */
            gemm(BLIS_TRANSPOSE, BLIS_NO_TRANSPOSE, K, (int)ccols, s.cout, 1.0f, weight, K, 1, dyc, cols, 1,
                 0.0f, dcol, ccols);
            col2im(dx, dcol, n, h, w, n0, nc, s, ho, wo);
        }
    }
}

void conv_backward(float *dx, float *dweight, float *dbias, const float *dy, const float *x,
                   const float *weight, int n, int h, int w, ConvShape s, float *scratch) {
    conv_backward_add(dx, NULL, dweight, dbias, dy, x, weight, n, h, w, s, scratch);
}

void conv_backward_add(float *dx, const float *addend, float *dweight, float *dbias, const float *dy, const float *x,
                       const float *weight, int n, int h, int w, ConvShape s, float *scratch) {
    const int ho = conv_out_size(h, s.k, s.stride, s.pad), wo = conv_out_size(w, s.k, s.stride, s.pad);
    const size_t cols = (size_t)n * ho * wo;
    if (dbias) {
        #pragma omp parallel for schedule(static)
        for (int co = 0; co < s.cout; co++) {
            const float *row = dy + co * cols;
            double sum = 0.0;
            /* vector lanes of double sums: the plain loop is one add chain, 4 cycles a value (about 1 ms a
             * step for the stem's 16 x 65,536 at batch 64); the lane order is fixed, not thread-dependent */
            #pragma omp simd reduction(+:sum)
            for (size_t i = 0; i < cols; i++) sum += row[i];
            dbias[co] += (float)sum;
        }
    }
    const ConvDirectKernels *direct = direct_for(s);
    /* the weight gradient through Winograd only beside a Winograd input gradient, or none: the direct kernels
     * always produce dW, so they cannot take the input gradient alone */
    const ConvWinogradKernels *winograd_dx = dx ? winograd_for(s, n, h, w, CONV_PASS_INPUT_GRADIENT) : NULL;
    const ConvWinogradKernels *winograd_dw =
        !dx || winograd_dx ? winograd_for(s, n, h, w, CONV_PASS_WEIGHT_GRADIENT) : NULL;
    if (winograd_dw) {
        winograd_dw->backward(dx, addend, dweight, dy, x, weight, n, h, w, s, scratch);
        return;
    }
    if (winograd_dx) {
        winograd_dx->input_gradient(dx, addend, dy, weight, n, h, w, s, scratch);
        direct->backward(NULL, NULL, dweight, dy, x, weight, n, h, w, s, scratch);
        return;
    }
    if (direct) {
        direct->backward(dx, addend, dweight, dy, x, weight, n, h, w, s, scratch);
        return;
    }
    im2col_backward(dx, dweight, dy, x, weight, n, h, w, s, scratch);
    /* the general path's col2im sums into dx, so the addend comes last: the rounding of a separate add */
    if (dx && addend) add_inplace(dx, addend, (size_t)s.cin * n * h * w);
}
