/* Convolution as im2col + one BLIS GEMM per chunk of images, over C,N,H,W activations.
 *
 * With channel-major activations the im2col matrix of a chunk of nc images is col[K][nc*ho*wo]
 * (K = cin*k*k), and the output rows of the chunk sit at column offset n0*ho*wo of Y[cout][n*ho*wo]:
 * the GEMM writes them in place through BLIS's general strides, so no reshuffling follows. Chunks bound
 * the scratch (col, and dcol in backward) to a few MiB that stay in cache between im2col and GEMM. */
#include "resnet/conv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <omp.h>
#include <blis.h>

/* Floats of im2col per chunk: large enough for long GEMM rows, small enough to stay in L2/L3. */
#define COL_BUDGET_FLOATS (1u << 20)

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

int conv_out_size(int in, int k, int stride, int pad) { return (in + 2 * pad - k) / stride + 1; }

static int is_pointwise(ConvShape s) { return s.k == 1 && s.stride == 1 && s.pad == 0; }

/* Images per chunk for this shape: at least one. */
static int chunk_images(ConvShape s, int n, int ho, int wo) {
    size_t per_image = (size_t)s.cin * s.k * s.k * ho * wo;
    int nc = (int)(COL_BUDGET_FLOATS / (per_image ? per_image : 1));
    if (nc < 1) nc = 1;
    if (nc > n) nc = n;
    return nc;
}

size_t conv_scratch_floats(ConvShape s, int n, int h, int w) {
    if (is_pointwise(s)) return 0;
    int ho = conv_out_size(h, s.k, s.stride, s.pad), wo = conv_out_size(w, s.k, s.stride, s.pad);
    int nc = chunk_images(s, n, ho, wo);
    /* col for forward; col and dcol for backward */
    return 2 * (size_t)s.cin * s.k * s.k * nc * ho * wo;
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

void conv_forward(float *y, const float *x, const float *weight, const float *bias, int n, int h, int w,
                  ConvShape s, float *scratch) {
    const int ho = conv_out_size(h, s.k, s.stride, s.pad), wo = conv_out_size(w, s.k, s.stride, s.pad);
    const int K = s.cin * s.k * s.k;
    const size_t ohw = (size_t)ho * wo, cols = (size_t)n * ohw;
    if (is_pointwise(s)) {
        gemm(BLIS_NO_TRANSPOSE, BLIS_NO_TRANSPOSE, s.cout, (int)cols, K, 1.0f, weight, K, 1, x, cols, 1,
             0.0f, y, cols);
    } else {
        const int nc_max = chunk_images(s, n, ho, wo);
        for (int n0 = 0; n0 < n; n0 += nc_max) {
            const int nc = n - n0 < nc_max ? n - n0 : nc_max;
            const size_t ccols = (size_t)nc * ohw;
            im2col(scratch, x, n, h, w, n0, nc, s, ho, wo);
            gemm(BLIS_NO_TRANSPOSE, BLIS_NO_TRANSPOSE, s.cout, (int)ccols, K, 1.0f, weight, K, 1, scratch,
                 ccols, 1, 0.0f, y + n0 * ohw, cols);
        }
    }
    if (bias) {
        #pragma omp parallel for schedule(static)
        for (int co = 0; co < s.cout; co++) {
            float *row = y + co * cols;
            const float b = bias[co];
            for (size_t i = 0; i < cols; i++) row[i] += b;
        }
    }
}

void conv_backward(float *dx, float *dweight, float *dbias, const float *dy, const float *x,
                   const float *weight, int n, int h, int w, ConvShape s, float *scratch) {
    const int ho = conv_out_size(h, s.k, s.stride, s.pad), wo = conv_out_size(w, s.k, s.stride, s.pad);
    const int K = s.cin * s.k * s.k;
    const size_t ohw = (size_t)ho * wo, cols = (size_t)n * ohw;
    if (dbias) {
        #pragma omp parallel for schedule(static)
        for (int co = 0; co < s.cout; co++) {
            const float *row = dy + co * cols;
            double sum = 0.0;
            for (size_t i = 0; i < cols; i++) sum += row[i];
            dbias[co] += (float)sum;
        }
    }
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
