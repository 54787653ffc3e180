/* Convolution as im2col + one BLIS GEMM per chunk of images, over C,N,H,W activations.
 *
 * With channel-major activations the im2col matrix of a chunk of nc images is col[K][nc*ho*wo]
 * (K = cin*k*k), and the output rows of the chunk sit at column offset n0*ho*wo of Y[cout][n*ho*wo]:
 * the GEMM writes them in place through BLIS's general strides, so no reshuffling follows. Chunks bound
 * the scratch (col, and dcol in backward) to a few MiB that stay in cache between im2col and GEMM. */
#include "resnet/conv.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <omp.h>
#include <blis.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#define HAVE_DIRECT3X3 1
#else
#define HAVE_DIRECT3X3 0
#endif

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

/* ---- direct 3x3 stride-1 pad-1 convolution (AVX-512) -------------------------------------------------
 *
 * For 3x3 / stride 1 / pad 1 the output has the input's extent, so over C,N,H,W activations every
 * channel is one contiguous row of P = n*h*w pixels, and output pixel p of any channel reads input pixel
 * p + (kh-1)*w + (kw-1) of every input channel, provided that pixel lies in the same image inside the
 * frame. The kernel therefore runs along the flattened pixel row in 16-float vectors and handles the
 * padding (and image boundaries inside the batch) with one lane mask per vector and tap: a masked-off
 * lane reads zero, and AVX-512 masked loads do not fault on masked-off lanes, so vectors at the row ends
 * may point before or after the array. No im2col, no col2im.
 *
 * The masks depend only on the pixel position modulo h*w, so a table of period = lcm(h*w, 16) / 16
 * vectors (one when h*w is a multiple of 16: 32x32, 16x16, 8x8, 28x28) covers every vector.
 *
 * Register tile: DC_COB output channels x DC_PV pixel vectors of accumulators (8 x 3 = 24 zmm). Per input
 * channel and tap it loads DC_PV input vectors and broadcasts DC_COB weights for DC_COB * DC_PV FMAs,
 * so the loop is FMA-bound. Weights are repacked as [cout block][cin][tap][DC_COB] so the broadcasts
 * walk memory sequentially. Each output value is summed by one thread in a fixed order (input channel,
 * then tap), so results do not depend on the thread count.
 *
 * The input gradient of the same convolution is the same kernel run on dY with the weights transposed
 * (cin <-> cout) and flipped (tap t -> 8 - t): dx[ci][p] = sum_co sum_t W[co][ci][t] dY[co][p - off(t)]. */

#define DC_COB 8
#define DC_PV 3
#define DC_TILES_PER_TASK 8   /* pixel tiles per OpenMP work item: 384 pixels */

/* 3x3 / stride 1 / pad 1 with a direct kernel available? */
static int use_direct3x3(ConvShape s) {
    return HAVE_DIRECT3X3 && s.k == 3 && s.stride == 1 && s.pad == 1;
}

static int gcd_int(int a, int b) {
    while (b) { int t = a % b; a = b; b = t; }
    return a;
}

/* vectors in one period of the lane-mask table */
static int mask_period(int h, int w) { return h * w / gcd_int(h * w, 16); }

static int round_up(int a, int b) { return (a + b - 1) / b * b; }

/* Floats of scratch for the direct kernel: packed weights for the wider of the two directions and the
 * mask table (uint16 per vector and tap). */
static size_t direct_scratch_floats(ConvShape s, int h, int w) {
    const int cmax = s.cin > s.cout ? s.cin : s.cout;
    const size_t packed = (size_t)round_up(cmax, DC_COB) * cmax * 9;
    const size_t masks = ((size_t)mask_period(h, w) * 9 + 1) / 2;
    return packed + masks + 16;
}

/* Floats of scratch for direct3x3_dw: the double accumulators (its masks come first). */
static size_t direct_dw_scratch_floats(ConvShape s) { return 2 * (size_t)s.cout * s.cin * 9 + 16; }

#if HAVE_DIRECT3X3
typedef struct {
    const float *src;        /* [cin][P] */
    float *dst;              /* [cout][P] */
    const float *wp;         /* [cout / DC_COB][cin][9][DC_COB] */
    const float *bias;       /* [cout] or NULL */
    const uint16_t *masks;   /* [period][9] */
    size_t P, nv;            /* pixels per channel, vectors per channel (last one maybe partial) */
    int cin, cout, w, period;
    __mmask16 tail;          /* valid lanes of vector nv - 1 */
} Direct;

/* masks[u][t]: lanes l of pixel vector u (mod period) whose pixel has tap t = (dy+1)*3 + (dx+1) inside
 * the frame of its own image */
static void build_masks(uint16_t *masks, int h, int w, int period) {
    const int hw = h * w;
    for (int u = 0; u < period; u++)
        for (int t = 0; t < 9; t++) {
            const int dy = t / 3 - 1, dx = t % 3 - 1;
            unsigned mk = 0;
            for (int l = 0; l < 16; l++) {
                const int r = (u * 16 + l) % hw, y = r / w + dy, x = r % w + dx;
                if (y >= 0 && y < h && x >= 0 && x < w) mk |= 1u << l;
            }
            masks[u * 9 + t] = (uint16_t)mk;
        }
}

/* One register tile: output channels cb*DC_COB .. +DC_COB, pixel vectors v0 .. v0+pv. pv is a
 * compile-time constant at every call site (DC_PV or 1), so acc[][] lives in registers. */
static inline __attribute__((always_inline)) void direct_tile(const Direct *d, int cb, size_t v0, int pv) {
    const int w = d->w;
    const ptrdiff_t off[9] = {-w - 1, -w, -w + 1, -1, 0, 1, w - 1, w, w + 1};
    __mmask16 m[DC_PV][9];
    size_t u = v0 % (size_t)d->period;
    for (int j = 0; j < pv; j++) {
        const __mmask16 tail = v0 + j == d->nv - 1 ? d->tail : (__mmask16)0xFFFF;
        for (int t = 0; t < 9; t++) m[j][t] = d->masks[u * 9 + t] & tail;
        if (++u == (size_t)d->period) u = 0;
    }
    __m512 acc[DC_COB][DC_PV];
    #pragma GCC unroll 8
    for (int c = 0; c < DC_COB; c++)
        #pragma GCC unroll 3
        for (int j = 0; j < pv; j++) acc[c][j] = _mm512_setzero_ps();
    const float *wc = d->wp + (size_t)cb * d->cin * 9 * DC_COB;
    const float *xs = d->src + v0 * 16;
    for (int ci = 0; ci < d->cin; ci++, xs += d->P, wc += 9 * DC_COB) {
        #pragma GCC unroll 9
        for (int t = 0; t < 9; t++) {
            __m512 in[DC_PV];
            #pragma GCC unroll 3
            for (int j = 0; j < pv; j++) in[j] = _mm512_maskz_loadu_ps(m[j][t], xs + 16 * j + off[t]);
            #pragma GCC unroll 8
            for (int c = 0; c < DC_COB; c++) {
                const __m512 wv = _mm512_set1_ps(wc[t * DC_COB + c]);
                #pragma GCC unroll 3
                for (int j = 0; j < pv; j++) acc[c][j] = _mm512_fmadd_ps(wv, in[j], acc[c][j]);
            }
        }
    }
    const int nco = d->cout - cb * DC_COB < DC_COB ? d->cout - cb * DC_COB : DC_COB;
    #pragma GCC unroll 8
    for (int c = 0; c < DC_COB; c++) {
        if (c >= nco) break;
        const int co = cb * DC_COB + c;
        float *out = d->dst + (size_t)co * d->P + v0 * 16;
        const __m512 b = _mm512_set1_ps(d->bias ? d->bias[co] : 0.0f);
        #pragma GCC unroll 3
        for (int j = 0; j < pv; j++) {
            const __m512 r = d->bias ? _mm512_add_ps(acc[c][j], b) : acc[c][j];
            _mm512_mask_storeu_ps(out + 16 * j, v0 + j == d->nv - 1 ? d->tail : (__mmask16)0xFFFF, r);
        }
    }
}

/* dst[co][p] (= bias[co] +) sum_ci sum_t wpack(co, ci, t) src[ci][p + off(t)] over the whole batch;
 * wpack(co, ci, t) is what pack_weight returns. */
static void direct3x3(float *dst, const float *src, int cin, int cout, const float *weight, int transpose,
                      const float *bias, int n, int h, int w, float *scratch) {
    const int cpad = round_up(cout, DC_COB), ncb = cpad / DC_COB, period = mask_period(h, w);
    float *wp = scratch;
    uint16_t *masks = (uint16_t *)(scratch + (size_t)cpad * cin * 9);
    /* packed weights: forward W[co][ci][t]; transposed (input gradient) W[ci][co][8 - t] */
    for (int cb = 0; cb < ncb; cb++)
        for (int ci = 0; ci < cin; ci++)
            for (int t = 0; t < 9; t++)
                for (int c = 0; c < DC_COB; c++) {
                    const int co = cb * DC_COB + c;
                    float v = 0.0f;
                    if (co < cout)
                        v = transpose ? weight[((size_t)ci * cout + co) * 9 + 8 - t]
                                      : weight[((size_t)co * cin + ci) * 9 + t];
                    wp[(((size_t)cb * cin + ci) * 9 + t) * DC_COB + c] = v;
                }
    const int hw = h * w;
    build_masks(masks, h, w, period);
    const size_t P = (size_t)n * hw, nv = (P + 15) / 16;
    const unsigned rem = (unsigned)(P % 16);
    const Direct d = {src, dst, wp, bias, masks, P, nv, cin, cout, w, period,
                      (__mmask16)(rem ? (1u << rem) - 1 : 0xFFFFu)};
    const size_t task_vecs = (size_t)DC_PV * DC_TILES_PER_TASK, ntasks = (nv + task_vecs - 1) / task_vecs;
    #pragma omp parallel for schedule(static)
    for (size_t task = 0; task < ntasks; task++) {
        const size_t va = task * task_vecs, vb = va + task_vecs < nv ? va + task_vecs : nv;
        for (int cb = 0; cb < ncb; cb++) {
            size_t v = va;
            for (; v + DC_PV <= vb; v += DC_PV) direct_tile(&d, cb, v, DC_PV);
            for (; v < vb; v++) direct_tile(&d, cb, v, 1);
        }
    }
}

/* Weight gradient of the 3x3 / stride-1 / pad-1 convolution, direct:
 *   dW[co][ci][t] += sum_p dY[co][p] * X[ci][p + off(t)]   (masked as in the forward kernel).
 * A reduction over all P pixels, so the register tile is DW_COB output channels x the 3 taps of one
 * kernel row (24 zmm accumulators, one per (co, tap), each summing 16 pixel lanes): per pixel vector it
 * loads DW_COB dY vectors and 3 shifted X vectors for 24 FMAs. The pixels run in chunks small enough
 * that the chunk's rows of every channel of X and dY stay in L2 while all (co block, ci, row) tasks
 * sweep them; each task folds its accumulators into a double buffer after each chunk. Chunks go in
 * order and a task's sum never depends on which thread ran it, so the result is thread-count
 * independent. */
#define DW_COB 8

typedef struct {
    const float *dy, *x;     /* [cout][P], [cin][P] */
    const uint16_t *masks;   /* [period][9] */
    double *acc;             /* [cout][cin][9] */
    size_t P, nv;
    int cin, cout, w, period;
    __mmask16 tail;
} DirectDw;

static void direct_dw_task(const DirectDw *d, int cb, int ci, int kh, size_t va, size_t vb) {
    const int w = d->w;
    const ptrdiff_t row = (ptrdiff_t)(kh - 1) * w;
    const float *xr = d->x + (size_t)ci * d->P + row;
    const float *dyr[DW_COB];
    const int nco = d->cout - cb * DW_COB < DW_COB ? d->cout - cb * DW_COB : DW_COB;
    for (int c = 0; c < DW_COB; c++) dyr[c] = d->dy + (size_t)(cb * DW_COB + (c < nco ? c : 0)) * d->P;
    __m512 acc[DW_COB][3];
    #pragma GCC unroll 8
    for (int c = 0; c < DW_COB; c++)
        #pragma GCC unroll 3
        for (int k = 0; k < 3; k++) acc[c][k] = _mm512_setzero_ps();
    size_t u = va % (size_t)d->period;
    for (size_t v = va; v < vb; v++) {
        const uint16_t *m = d->masks + u * 9 + kh * 3;
        const __mmask16 tail = v == d->nv - 1 ? d->tail : (__mmask16)0xFFFF;
        const size_t p = v * 16;
        const __m512 x0 = _mm512_maskz_loadu_ps(m[0] & tail, xr + p - 1);
        const __m512 x1 = _mm512_maskz_loadu_ps(m[1] & tail, xr + p);
        const __m512 x2 = _mm512_maskz_loadu_ps(m[2] & tail, xr + p + 1);
        #pragma GCC unroll 8
        for (int c = 0; c < DW_COB; c++) {
            const __m512 g = _mm512_maskz_loadu_ps(tail, dyr[c] + p);
            acc[c][0] = _mm512_fmadd_ps(g, x0, acc[c][0]);
            acc[c][1] = _mm512_fmadd_ps(g, x1, acc[c][1]);
            acc[c][2] = _mm512_fmadd_ps(g, x2, acc[c][2]);
        }
        if (++u == (size_t)d->period) u = 0;
    }
    /* fully unrolled with constant indices, so acc[][] never needs a home in memory */
    float red[DW_COB][3];
    #pragma GCC unroll 8
    for (int c = 0; c < DW_COB; c++)
        #pragma GCC unroll 3
        for (int k = 0; k < 3; k++) red[c][k] = _mm512_reduce_add_ps(acc[c][k]);
    for (int c = 0; c < nco; c++) {
        double *out = d->acc + ((size_t)(cb * DW_COB + c) * d->cin + ci) * 9 + kh * 3;
        for (int k = 0; k < 3; k++) out[k] += red[c][k];
    }
}


static void direct3x3_dw(float *dweight, const float *dy, const float *x, int cin, int cout, int n, int h,
                         int w, float *scratch) {
    const int period = mask_period(h, w), hw = h * w;
    uint16_t *masks = (uint16_t *)scratch;
    double *acc = (double *)(scratch + round_up(period * 9 + 1, 32) / 2);  /* 64-byte aligned if scratch is */
    build_masks(masks, h, w, period);
    const size_t nw = (size_t)cout * cin * 9;
    memset(acc, 0, sizeof(double) * nw);
    const size_t P = (size_t)n * hw, nv = (P + 15) / 16;
    const unsigned rem = (unsigned)(P % 16);
    const DirectDw d = {dy, x, masks, acc, P, nv, cin, cout, w, period,
                        (__mmask16)(rem ? (1u << rem) - 1 : 0xFFFFu)};
    /* chunk: the rows of all cin + cout channels fit in ~512 KiB */
    size_t chunk_vecs = (size_t)(128 * 1024) / (size_t)(cin + cout) / 16;
    if (chunk_vecs < 16) chunk_vecs = 16;
    const int ncb = (cout + DW_COB - 1) / DW_COB, ntasks = ncb * cin * 3;
    #pragma omp parallel
    for (size_t va = 0; va < nv; va += chunk_vecs) {
        const size_t vb = va + chunk_vecs < nv ? va + chunk_vecs : nv;
        #pragma omp for schedule(static)
        for (int task = 0; task < ntasks; task++) {
            const int kh = task % 3, ci = (task / 3) % cin, cb = task / 3 / cin;
            direct_dw_task(&d, cb, ci, kh, va, vb);
        }
    }
    for (size_t i = 0; i < nw; i++) dweight[i] += (float)acc[i];
}
#endif

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
    /* col for forward; col and dcol for backward; the direct kernel's packed weights and masks */
    const size_t gemm_need = 2 * (size_t)s.cin * s.k * s.k * nc * ho * wo;
    if (use_direct3x3(s)) {
        const size_t a = direct_scratch_floats(s, h, w), b = round_up(mask_period(h, w) * 9 + 1, 32) / 2 +
                                                              direct_dw_scratch_floats(s);
        return a > b ? a : b;
    }
    return gemm_need;
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
#if HAVE_DIRECT3X3
    if (use_direct3x3(s)) {
        direct3x3(y, x, s.cin, s.cout, weight, 0, bias, n, h, w, scratch);
        return;
    }
#endif
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
#if HAVE_DIRECT3X3
    if (use_direct3x3(s)) {
        direct3x3_dw(dweight, dy, x, s.cin, s.cout, n, h, w, scratch);
        if (dx) direct3x3(dx, dy, s.cout, s.cin, weight, 1, NULL, n, h, w, scratch);
        return;
    }
#endif
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
