/* Winograd F(2x2, 3x3) convolutions, built once with AVX-512 and once with AVX2 + FMA (see
 * conv_winograd.h; meson.build compiles this file twice, as conv_direct.c).
 *
 * Over C,N,H,W activations an image of channel c is h rows of w floats. Its outputs are cut into 2x2
 * tiles, tile (ti, tj) covering output rows 2ti, 2ti+1 and columns 2tj, 2tj+1 and reading the 4x4 input
 * patch at rows 2ti-1 .. 2ti+2, columns 2tj-1 .. 2tj+2 (zero outside the image). A "tile vector" is 16
 * consecutive tiles of one image in row-major order: one tile row when w = 32, two when w = 16, four when
 * w = 8. Its input rows are then 32 floats made of 32 / w segments of w floats each (segment s: image row
 * 2(ti0 + s) + r - 1 for patch row r). How the 16 tiles sit in the lanes is the ISA layer's (below): one
 * zmm in row-major order, or two ymm in an order two shuffles make.
 *
 * The forward and the input gradient go in blocks of tile vectors, all channels at once:
 *   1. input transform  V[xi][ci][tile] = (B^T d B)[xi] for each input channel
 *   2. GEMM per xi       M[xi][co][tile] = sum over ci of U[xi][ci][co] V[xi][ci][tile]  (U = G g G^T)
 *   3. output transform  y tile = A^T M A (+ bias, + addend)
 * A block is NVB tile vectors, V and M (16 x channels x 48 floats each) in L2, or, for layers of at most
 * SMALL_BLOCK_CHANNELS channels in and out, one tile vector with V and M in L1. The GEMM's register tiles
 * are the ISA layer's. The weight gradient is described above its code. */
#include "resnet/conv_winograd.h"

#include <immintrin.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "resnet/util.h"

#define ALWAYS_INLINE inline __attribute__((always_inline))

/* a row of zeros for rows outside the image, with room for loads one float either side (AVX2) */
static const float zero_rows[16 + 32 + 16] __attribute__((aligned(64)));

static ALWAYS_INLINE const float *row_or_zero(const float *img, int h, int w, int y) {
    return y >= 0 && y < h ? img + (size_t)y * w : zero_rows + 16;
}

/* ---- the ISA layer ----------------------------------------------------------------------------------------
 * vec is VW floats; the macros are the few operations the shared code below uses. Each ISA then gives:
 *   Lanes, lanes_init      what its gathers need, built once a call
 *   input_transform        V of one channel's tile vector
 *   output_transform       one channel's outputs of a tile vector from M
 *   lane_of_tile           the lane input_transform gives the tile vector's i-th tile (row-major)
 *   output_gradient_transform   the weight gradient's D of a tile vector, tiles in that lane order
 *   block_gemm, chunk_gemm_dw   the GEMMs with the register tiles that fit its registers
 * The flags checked here are the ones conv.c asks the CPU for before it calls the object. */
#if defined(CONV_WINOGRAD_AVX512)
#if !defined(__AVX512F__) || !defined(__AVX512DQ__) || !defined(__FMA__)
#error "the AVX-512 object needs -mavx512f -mavx512dq -mfma (meson.build)"
#endif
#define WINOGRAD_TABLE conv_winograd_avx512
#define VW 16
typedef __m512 vec;
#define VEC_ZERO() _mm512_setzero_ps()
#define VEC_SET1(f) _mm512_set1_ps(f)
#define VEC_ADD(a, b) _mm512_add_ps(a, b)
#define VEC_SUB(a, b) _mm512_sub_ps(a, b)
#define VEC_MUL(a, b) _mm512_mul_ps(a, b)
#define VEC_FMADD(a, b, c) _mm512_fmadd_ps(a, b, c)
#define VEC_LOAD(p) _mm512_load_ps(p)   /* aligned */
#define VEC_LOADU(p) _mm512_loadu_ps(p)
#define VEC_STORE(p, v) _mm512_store_ps(p, v)   /* aligned */
#define VEC_STOREU(p, v) _mm512_storeu_ps(p, v)
/* the lane of a tile vector's i-th tile in row-major order (see the AVX2 layer below) */
static ALWAYS_INLINE int lane_of_tile(int i) { return i; }
#elif defined(CONV_WINOGRAD_AVX2)
#if !defined(__AVX2__) || !defined(__FMA__) || defined(__AVX512F__)
#error "the AVX2 object needs -mavx2 -mfma -mno-avx512f (meson.build)"
#endif
#define WINOGRAD_TABLE conv_winograd_avx2
#define VW 8
typedef __m256 vec;
#define VEC_ZERO() _mm256_setzero_ps()
#define VEC_SET1(f) _mm256_set1_ps(f)
#define VEC_ADD(a, b) _mm256_add_ps(a, b)
#define VEC_SUB(a, b) _mm256_sub_ps(a, b)
#define VEC_MUL(a, b) _mm256_mul_ps(a, b)
#define VEC_FMADD(a, b, c) _mm256_fmadd_ps(a, b, c)
#define VEC_LOAD(p) _mm256_load_ps(p)
#define VEC_LOADU(p) _mm256_loadu_ps(p)
#define VEC_STORE(p, v) _mm256_store_ps(p, v)
#define VEC_STOREU(p, v) _mm256_storeu_ps(p, v)
/* The i-th tile in row-major order is tile i % 4 of segment i / 4 whatever w is (see the AVX2 layer). The
 * weight gradient sums a chunk's tiles in this order, so its sums are the AVX-512 kernels' bit for bit. */
static ALWAYS_INLINE int lane_of_tile(int i) {
    const int k = i / 4, t = i % 4;
    return 8 * (k / 2) + 2 * (k % 2) + (t & 1) + 4 * (t >> 1);
}
#else
#error "compile conv_winograd.c with -DCONV_WINOGRAD_AVX512 or -DCONV_WINOGRAD_AVX2 (meson.build)"
#endif

#define XI 16            /* transform points of F(2x2, 3x3): a 4x4 patch */
#define NVB 3            /* tile vectors of a block */
#define TB (NVB * 16)    /* tiles of a block */
#define MAX_CHANNELS 256 /* V and M of a block stay within about 1.5 MiB */
#define DW_GROUPS 16     /* weight gradient: partial sums summed in this fixed order, whatever the threads */
/* Layers with at most this many channels in and out go in blocks of one tile vector: 16 -> 16 forward
 * 1.68 -> 1.42 ms (AVX-512, 1 thread, batch 64); 32 -> 32 was slower so (1.40 against 1.26 ms). */
#define SMALL_BLOCK_CHANNELS 32

/* The transforms' arithmetic, whatever the lanes hold. B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1] along
 * a patch row d0..d3 ... */
static ALWAYS_INLINE void b_transform_row(vec t[4], vec d0, vec d1, vec d2, vec d3) {
    t[0] = VEC_SUB(d0, d2);
    t[1] = VEC_ADD(d1, d2);
    t[2] = VEC_SUB(d2, d1);
    t[3] = VEC_SUB(d1, d3);
}

/* ... then down the columns of the four rows t: v[xi * xi_stride] = (B^T d B)[xi] (v aligned). */
static ALWAYS_INLINE void store_b_transform_columns(float *v, size_t xi_stride, vec t[4][4]) {
    #pragma GCC unroll 4
    for (int j = 0; j < 4; j++) {
        VEC_STORE(v + (size_t)(0 + j) * xi_stride, VEC_SUB(t[0][j], t[2][j]));
        VEC_STORE(v + (size_t)(4 + j) * xi_stride, VEC_ADD(t[1][j], t[2][j]));
        VEC_STORE(v + (size_t)(8 + j) * xi_stride, VEC_SUB(t[2][j], t[1][j]));
        VEC_STORE(v + (size_t)(12 + j) * xi_stride, VEC_SUB(t[1][j], t[3][j]));
    }
}

/* A^T M A, A^T = [1 1 1 0; 0 1 -1 -1], of M at m[xi * xi_stride] (aligned): o[a][b] is output row a,
 * column b of every lane's tile. */
static ALWAYS_INLINE void a_transform(vec o[2][2], const float *m, size_t xi_stride) {
    vec s[4][2];
    #pragma GCC unroll 4
    for (int i = 0; i < 4; i++) {
        const vec m0 = VEC_LOAD(m + (size_t)(4 * i + 0) * xi_stride);
        const vec m1 = VEC_LOAD(m + (size_t)(4 * i + 1) * xi_stride);
        const vec m2 = VEC_LOAD(m + (size_t)(4 * i + 2) * xi_stride);
        const vec m3 = VEC_LOAD(m + (size_t)(4 * i + 3) * xi_stride);
        s[i][0] = VEC_ADD(VEC_ADD(m0, m1), m2);
        s[i][1] = VEC_SUB(VEC_SUB(m1, m2), m3);
    }
    for (int b = 0; b < 2; b++) {
        o[0][b] = VEC_ADD(VEC_ADD(s[0][b], s[1][b]), s[2][b]);
        o[1][b] = VEC_SUB(VEC_SUB(s[1][b], s[2][b]), s[3][b]);
    }
}

/* m [cout][tb] = u [cin][cout] x v [cin][tb] over the first cols tiles, for one transform point: kb
 * output channels (broadcast weights) x nvec vectors of tiles at a time. */
static ALWAYS_INLINE void point_gemm(float *m, const float *v, const float *u, int cin, int cout, int cols, int kb,
                                     int nvec, size_t tb) {
    for (int c0 = 0; c0 < cols; c0 += nvec * VW)
        for (int k0 = 0; k0 < cout; k0 += kb) {
            vec acc[16][3];
            for (int k = 0; k < kb; k++)
                for (int j = 0; j < nvec; j++) acc[k][j] = VEC_ZERO();
            for (int ci = 0; ci < cin; ci++) {
                vec xv[3];
                for (int j = 0; j < nvec; j++) xv[j] = VEC_LOAD(v + (size_t)ci * tb + c0 + VW * j);
                for (int k = 0; k < kb; k++) {
                    const vec uk = VEC_SET1(u[(size_t)ci * cout + k0 + k]);
                    for (int j = 0; j < nvec; j++) acc[k][j] = VEC_FMADD(uk, xv[j], acc[k][j]);
                }
            }
            for (int k = 0; k < kb; k++)
                for (int j = 0; j < nvec; j++) VEC_STORE(m + (size_t)(k0 + k) * tb + c0 + VW * j, acc[k][j]);
        }
}

#define CHUNK 16   /* tiles of a weight-gradient chunk: one tile vector */

/* partial [cin][cout] += v [cin][CHUNK] (broadcast) x d [CHUNK][cout] for one transform point of the
 * weight gradient: rb input channels x cv vectors of output channels at a time. */
static ALWAYS_INLINE void point_gemm_dw(float *partial, const float *v, const float *d, int cin, int cout, int rb,
                                        int cv) {
    for (int ci0 = 0; ci0 < cin; ci0 += rb)
        for (int co0 = 0; co0 < cout; co0 += VW * cv) {
            vec acc[16][2];
            for (int r = 0; r < rb; r++)
                for (int c = 0; c < cv; c++) acc[r][c] = VEC_LOADU(partial + (size_t)(ci0 + r) * cout + co0 + VW * c);
            const float *vr = v + (size_t)ci0 * CHUNK;
            #pragma GCC unroll 16   /* lane_of_tile then folds into the addresses */
            for (int i = 0; i < CHUNK; i++) {
                const int t = lane_of_tile(i);   /* the tiles in row-major order, whatever their lanes */
                vec dv[2];
                for (int c = 0; c < cv; c++) dv[c] = VEC_LOADU(d + (size_t)t * cout + co0 + VW * c);
                for (int r = 0; r < rb; r++) {
                    const vec b = VEC_SET1(vr[(size_t)r * CHUNK + t]);
                    for (int c = 0; c < cv; c++) acc[r][c] = VEC_FMADD(b, dv[c], acc[r][c]);
                }
            }
            for (int r = 0; r < rb; r++)
                for (int c = 0; c < cv; c++) VEC_STOREU(partial + (size_t)(ci0 + r) * cout + co0 + VW * c, acc[r][c]);
        }
}

/* The weight gradient's transformed output gradient: A dY A^T, A = [1 0; 1 1; 1 -1; 0 -1], of one tile's
 * 2x2 output gradient (y01: row 0, column 1; each a vector of output channels), stored at
 * out[xi * xi_stride]. */
static ALWAYS_INLINE void store_output_gradient_tile(float *out, size_t xi_stride, vec y00, vec y01, vec y10,
                                                     vec y11) {
    const vec zero = VEC_ZERO();
    const vec r[2][4] = {{y00, VEC_ADD(y00, y01), VEC_SUB(y00, y01), VEC_SUB(zero, y01)},
                         {y10, VEC_ADD(y10, y11), VEC_SUB(y10, y11), VEC_SUB(zero, y11)}};
    for (int j = 0; j < 4; j++) {
        VEC_STOREU(out + (size_t)(0 + j) * xi_stride, r[0][j]);
        VEC_STOREU(out + (size_t)(4 + j) * xi_stride, VEC_ADD(r[0][j], r[1][j]));
        VEC_STOREU(out + (size_t)(8 + j) * xi_stride, VEC_SUB(r[0][j], r[1][j]));
        VEC_STOREU(out + (size_t)(12 + j) * xi_stride, VEC_SUB(zero, r[1][j]));
    }
}

#if VW == 16
/* ---- AVX-512: a tile vector is one zmm, tiles in row-major order ---------------------------------------
 * In the 32 floats of a tile vector's input rows, patch column c of lane l sits at position 2l + c - 1
 * whatever w is; lanes whose column falls outside the image (c = 0 at tj = 0, c = 3 at the last tj) are
 * zeroed. So one vpermt2ps per patch element gathers it, and one per output row scatters it back. */

typedef struct {
    __m512i column[4];               /* patch column c of lane l: position 2l + c - 1 of the 32 floats */
    __mmask16 inside_first, inside_last;   /* lanes whose column 0 / column 3 lies inside the image */
    __m512i out_low, out_high;       /* output columns 0 and 1 interleaved: positions 0..15, 16..31 */
} Lanes;

static void lanes_init(Lanes *g, int w) {
    const int tw = w / 2;
    int column[4][16], low[16], high[16];
    unsigned first = 0, last = 0;
    for (int l = 0; l < 16; l++) {
        for (int c = 0; c < 4; c++) column[c][l] = (2 * l + c - 1) & 31;   /* masked-off lanes: any index */
        if (l % tw != 0) first |= 1u << l;
        if (l % tw != tw - 1) last |= 1u << l;
        low[l] = (l & 1) ? 16 + l / 2 : l / 2;
        high[l] = (l & 1) ? 24 + l / 2 : 8 + l / 2;
    }
    for (int c = 0; c < 4; c++) g->column[c] = _mm512_loadu_si512(column[c]);
    g->inside_first = (__mmask16)first;
    g->inside_last = (__mmask16)last;
    g->out_low = _mm512_loadu_si512(low);
    g->out_high = _mm512_loadu_si512(high);
}

/* tile l of a tile vector: offset of its first output from the vector's first output row */
static inline int tile_offset(int l, int w) { return 2 * (l / (w / 2)) * w + 2 * (l % (w / 2)); }

/* The 32 floats of a tile vector's rows, segment s being image row y0 + 2s (zero outside the image). */
static ALWAYS_INLINE void load_segments(__m512 *lo, __m512 *hi, const float *img, int h, int w, int y0) {
    if (w == 32) {
        const float *p = row_or_zero(img, h, w, y0);
        *lo = _mm512_loadu_ps(p);
        *hi = _mm512_loadu_ps(p + 16);
    } else if (w == 16) {
        *lo = _mm512_loadu_ps(row_or_zero(img, h, w, y0));
        *hi = _mm512_loadu_ps(row_or_zero(img, h, w, y0 + 2));
    } else {
        *lo = _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_loadu_ps(row_or_zero(img, h, w, y0))),
                                 _mm256_loadu_ps(row_or_zero(img, h, w, y0 + 2)), 1);
        *hi = _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_loadu_ps(row_or_zero(img, h, w, y0 + 4))),
                                 _mm256_loadu_ps(row_or_zero(img, h, w, y0 + 6)), 1);
    }
}

/* Output rows y0 + 2s, all inside the image. */
static ALWAYS_INLINE void store_segments(float *img, int w, int y0, __m512 lo, __m512 hi) {
    if (w == 32) {
        _mm512_storeu_ps(img + (size_t)y0 * w, lo);
        _mm512_storeu_ps(img + (size_t)y0 * w + 16, hi);
    } else if (w == 16) {
        _mm512_storeu_ps(img + (size_t)y0 * w, lo);
        _mm512_storeu_ps(img + (size_t)(y0 + 2) * w, hi);
    } else {
        _mm256_storeu_ps(img + (size_t)y0 * w, _mm512_castps512_ps256(lo));
        _mm256_storeu_ps(img + (size_t)(y0 + 2) * w, _mm512_extractf32x8_ps(lo, 1));
        _mm256_storeu_ps(img + (size_t)(y0 + 4) * w, _mm512_castps512_ps256(hi));
        _mm256_storeu_ps(img + (size_t)(y0 + 6) * w, _mm512_extractf32x8_ps(hi, 1));
    }
}

/* v[xi * xi_stride] = (B^T d B)[xi] for the tile vector whose first tile row is ti0, of one channel's
 * image img. */
static ALWAYS_INLINE void input_transform(float *v, size_t xi_stride, const float *img, int h, int w, int ti0,
                                          const Lanes *g) {
    __m512 t[4][4];
    #pragma GCC unroll 4
    for (int r = 0; r < 4; r++) {
        __m512 lo, hi;
        load_segments(&lo, &hi, img, h, w, 2 * ti0 + r - 1);
        const __m512 d0 = _mm512_maskz_permutex2var_ps(g->inside_first, lo, g->column[0], hi);
        const __m512 d1 = _mm512_permutex2var_ps(lo, g->column[1], hi);
        const __m512 d2 = _mm512_permutex2var_ps(lo, g->column[2], hi);
        const __m512 d3 = _mm512_maskz_permutex2var_ps(g->inside_last, lo, g->column[3], hi);
        b_transform_row(t[r], d0, d1, d2, d3);
    }
    store_b_transform_columns(v, xi_stride, t);
}

/* One channel's 2x2 tiles of a tile vector: A^T M A + bias (+ addend: the sum rounded as a separate add
 * after the convolution would round it); m[xi * xi_stride] holds M[xi]. */
static ALWAYS_INLINE void output_transform(float *img, const float *addend_img, const float *m, size_t xi_stride,
                                           int h, int w, int ti0, float bias, const Lanes *g) {
    __m512 o[2][2];
    a_transform(o, m, xi_stride);
    const __m512 bias_v = _mm512_set1_ps(bias);
    #pragma GCC unroll 2
    for (int a = 0; a < 2; a++) {
        __m512 lo = _mm512_add_ps(_mm512_permutex2var_ps(o[a][0], g->out_low, o[a][1]), bias_v);
        __m512 hi = _mm512_add_ps(_mm512_permutex2var_ps(o[a][0], g->out_high, o[a][1]), bias_v);
        if (addend_img) {
            __m512 add_lo, add_hi;
            load_segments(&add_lo, &add_hi, addend_img, h, w, 2 * ti0 + a);   /* rows inside the image */
            lo = _mm512_add_ps(lo, add_lo);
            hi = _mm512_add_ps(hi, add_hi);
        }
        store_segments(img, w, 2 * ti0 + a, lo, hi);
    }
}

/* m [XI][cout][tb] = u [XI][cin][cout] x v [XI][cin][tb]: 8 output channels x NVB vectors (24 of the 32
 * zmm), or for blocks of one vector 16 x 1 when the channels allow */
static void block_gemm(float *m, const float *v, const float *u, int cin, int cout, int nv, size_t tb) {
    for (int xi = 0; xi < XI; xi++) {
        float *mx = m + (size_t)xi * cout * tb;
        const float *vx = v + (size_t)xi * cin * tb, *ux = u + (size_t)xi * cin * cout;
        if (tb == 16 && cout % 16 == 0) point_gemm(mx, vx, ux, cin, cout, 16, 16, 1, 16);
        else if (tb == 16) point_gemm(mx, vx, ux, cin, cout, 16, 8, 1, 16);
        else if (nv == 3) point_gemm(mx, vx, ux, cin, cout, 48, 8, 3, TB);
        else if (nv == 2) point_gemm(mx, vx, ux, cin, cout, 32, 8, 2, TB);
        else point_gemm(mx, vx, ux, cin, cout, 16, 8, 1, TB);
    }
}

static void chunk_gemm_dw(float *partial, const float *v, const float *d, int cin, int cout) {
    for (int xi = 0; xi < XI; xi++) {
        float *px = partial + (size_t)xi * cin * cout;
        const float *vx = v + (size_t)xi * cin * CHUNK, *dxi = d + (size_t)xi * CHUNK * cout;
        if (cout % 32 == 0) point_gemm_dw(px, vx, dxi, cin, cout, 8, 2);
        else if (cin % 16 == 0) point_gemm_dw(px, vx, dxi, cin, cout, 16, 1);
        else point_gemm_dw(px, vx, dxi, cin, cout, 8, 1);
    }
}

/* D [XI][CHUNK][cout] for one tile vector: dy rows from the vector's first output row (dy_rows, channel
 * 0), 16 output channels a gather. */
static ALWAYS_INLINE void output_gradient_transform(float *d, const float *dy_rows, size_t plane, int cout, int w) {
    const __m512i channel_offsets = _mm512_mullo_epi32(
        _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0), _mm512_set1_epi32((int)plane));
    for (int co0 = 0; co0 < cout; co0 += 16) {
        const float *base = dy_rows + (size_t)co0 * plane;
        for (int l = 0; l < 16; l++) {
            const float *p = base + tile_offset(l, w);
            store_output_gradient_tile(d + (size_t)l * cout + co0, (size_t)CHUNK * cout,
                                       _mm512_i32gather_ps(channel_offsets, p, 4),
                                       _mm512_i32gather_ps(channel_offsets, p + 1, 4),
                                       _mm512_i32gather_ps(channel_offsets, p + w, 4),
                                       _mm512_i32gather_ps(channel_offsets, p + w + 1, 4));
        }
    }
}

#else
/* ---- AVX2: a tile vector is two ymm, 8 tiles each -----------------------------------------------------
 * AVX2 has no two-source permute, so the tiles take the order that unaligned loads and one in-lane shuffle
 * give. Cut a tile vector's 32 input floats into 4 segments of 8 (segment k: image row y0 + 2(8k / w),
 * columns 8k % w .. + 7); ymm half hf holds the 4 tiles of segment A = 2hf and the 4 of B = 2hf + 1, in
 * the lane order A0 A1 B0 B1 A2 A3 B2 B3. Then patch columns 0 and 1 (positions 2t - 1, 2t of a segment)
 * are vshufps 0x88 and 0xDD of the two segments loaded one float to the left, columns 2 and 3 the same of
 * them loaded one float to the right; at an image edge the load leaves the lane outside (column -1 or w)
 * zero. On the way back vunpcklps / vunpckhps of output columns 0 and 1 are segments A and B again. */

typedef struct {
    __m256i skip_first, skip_last;   /* vmaskmovps lanes: all but the first, all but the last */
} Lanes;

static void lanes_init(Lanes *g, int w) {
    (void)w;
    g->skip_first = _mm256_setr_epi32(0, -1, -1, -1, -1, -1, -1, -1);
    g->skip_last = _mm256_setr_epi32(-1, -1, -1, -1, -1, -1, -1, 0);
}

/* where segment k of the rows from y0 starts: rows below y0, and column */
static ALWAYS_INLINE int segment_row(int k, int w) { return 2 * (8 * k / w); }
static ALWAYS_INLINE int segment_column(int k, int w) { return 8 * k % w; }

/* segment k of the input rows from y0, shifted one float left (shift -1) or right (+1) */
static ALWAYS_INLINE __m256 load_shifted(const float *img, int h, int w, int y0, int k, int shift, const Lanes *g) {
    const int column = segment_column(k, w);
    const float *p = row_or_zero(img, h, w, y0 + segment_row(k, w)) + column + shift;
    if (shift < 0 && column == 0) return _mm256_maskload_ps(p, g->skip_first);   /* column -1 */
    if (shift > 0 && column + 8 == w) return _mm256_maskload_ps(p, g->skip_last);   /* column w */
    return _mm256_loadu_ps(p);
}

/* r[i] lane j -> r[j] lane i */
static ALWAYS_INLINE void transpose8(__m256 r[8]) {
    const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    const __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    const __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    const __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    const __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    r[0] = _mm256_permute2f128_ps(s0, s4, 0x20);
    r[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
    r[2] = _mm256_permute2f128_ps(s2, s6, 0x20);
    r[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
    r[4] = _mm256_permute2f128_ps(s0, s4, 0x31);
    r[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
    r[6] = _mm256_permute2f128_ps(s2, s6, 0x31);
    r[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}

/* D [XI][CHUNK][cout] for one tile vector: dy rows from the vector's first output row (dy_rows, channel
 * 0). Each segment's two output rows of 8 channels, loaded whole and transposed, give its 4 tiles with
 * the channels in the lanes. No vgatherdps: AMD's Zen 3 runs a ymm gather as about 39 micro-ops where
 * Intel's cores run 5 (public instruction tables); on this project's Xeon the two ways run the step at the
 * same speed (whole-process time 0.99x of the gathers', 10 alternating pairs). */
static ALWAYS_INLINE void output_gradient_transform(float *d, const float *dy_rows, size_t plane, int cout, int w) {
    for (int co0 = 0; co0 < cout; co0 += 8) {
        const float *base = dy_rows + (size_t)co0 * plane;
        #pragma GCC unroll 4
        for (int k = 0; k < 4; k++) {
            const float *segment = base + (size_t)segment_row(k, w) * w + segment_column(k, w);
            __m256 top[8], bottom[8];   /* then [column][channel] */
            for (int c = 0; c < 8; c++) {
                top[c] = _mm256_loadu_ps(segment + c * plane);
                bottom[c] = _mm256_loadu_ps(segment + c * plane + w);
            }
            transpose8(top);
            transpose8(bottom);
            for (int t = 0; t < 4; t++)
                store_output_gradient_tile(d + (size_t)lane_of_tile(4 * k + t) * cout + co0, (size_t)CHUNK * cout,
                                           top[2 * t], top[2 * t + 1], bottom[2 * t], bottom[2 * t + 1]);
        }
    }
}

/* As the AVX-512 input_transform: v[xi * xi_stride] = (B^T d B)[xi], half hf at v + 8 hf. */
static ALWAYS_INLINE void input_transform(float *v, size_t xi_stride, const float *img, int h, int w, int ti0,
                                          const Lanes *g) {
    #pragma GCC unroll 2
    for (int hf = 0; hf < 2; hf++) {
        __m256 t[4][4];
        #pragma GCC unroll 4
        for (int r = 0; r < 4; r++) {
            const int y0 = 2 * ti0 + r - 1;
            const __m256 a_left = load_shifted(img, h, w, y0, 2 * hf, -1, g);
            const __m256 b_left = load_shifted(img, h, w, y0, 2 * hf + 1, -1, g);
            const __m256 a_right = load_shifted(img, h, w, y0, 2 * hf, 1, g);
            const __m256 b_right = load_shifted(img, h, w, y0, 2 * hf + 1, 1, g);
            const __m256 d0 = _mm256_shuffle_ps(a_left, b_left, 0x88);
            const __m256 d1 = _mm256_shuffle_ps(a_left, b_left, 0xDD);
            const __m256 d2 = _mm256_shuffle_ps(a_right, b_right, 0x88);
            const __m256 d3 = _mm256_shuffle_ps(a_right, b_right, 0xDD);
            b_transform_row(t[r], d0, d1, d2, d3);
        }
        store_b_transform_columns(v + 8 * hf, xi_stride, t);
    }
}

/* As the AVX-512 output_transform. */
static ALWAYS_INLINE void output_transform(float *img, const float *addend_img, const float *m, size_t xi_stride,
                                           int h, int w, int ti0, float bias, const Lanes *g) {
    (void)h;
    (void)g;
    const __m256 bias_v = _mm256_set1_ps(bias);
    #pragma GCC unroll 2
    for (int hf = 0; hf < 2; hf++) {
        __m256 o[2][2];
        a_transform(o, m + 8 * hf, xi_stride);
        #pragma GCC unroll 2
        for (int a = 0; a < 2; a++) {
            __m256 seg[2] = {_mm256_add_ps(_mm256_unpacklo_ps(o[a][0], o[a][1]), bias_v),
                             _mm256_add_ps(_mm256_unpackhi_ps(o[a][0], o[a][1]), bias_v)};
            #pragma GCC unroll 2
            for (int e = 0; e < 2; e++) {
                const int k = 2 * hf + e;
                const size_t at = (size_t)(2 * ti0 + a + segment_row(k, w)) * w + segment_column(k, w);
                if (addend_img) seg[e] = _mm256_add_ps(seg[e], _mm256_loadu_ps(addend_img + at));
                _mm256_storeu_ps(img + at, seg[e]);
            }
        }
    }
}

/* The GEMMs' register tiles fill the 16 ymm: 4 output channels x 3 vectors (+ 3 tiles + 1 broadcast) where
 * a block has 3 tile vectors (6 ymm, two passes), 4 x 2 otherwise; the weight gradient 4 input channels x
 * 2 vectors of output channels. */
static void block_gemm(float *m, const float *v, const float *u, int cin, int cout, int nv, size_t tb) {
    for (int xi = 0; xi < XI; xi++) {
        float *mx = m + (size_t)xi * cout * tb;
        const float *vx = v + (size_t)xi * cin * tb, *ux = u + (size_t)xi * cin * cout;
        if (tb == 16) point_gemm(mx, vx, ux, cin, cout, 16, 4, 2, 16);
        else if (nv == 3) point_gemm(mx, vx, ux, cin, cout, 48, 4, 3, TB);
        else point_gemm(mx, vx, ux, cin, cout, 16 * nv, 4, 2, TB);
    }
}

static void chunk_gemm_dw(float *partial, const float *v, const float *d, int cin, int cout) {
    for (int xi = 0; xi < XI; xi++)
        point_gemm_dw(partial + (size_t)xi * cin * cout, v + (size_t)xi * cin * CHUNK, d + (size_t)xi * CHUNK * cout,
                      cin, cout, 4, 2);
}
#endif

/* ---- shapes and scratch ------------------------------------------------------------------------------------ */

static size_t round_up(size_t a, size_t b) { return (a + b - 1) / b * b; }

static int takes(ConvShape s, int n, int h, int w, ConvPass pass) {
    /* the AVX-512 weight gradient gathers 16 channels with 32-bit offsets of up to 15 planes of n * h * w
     * floats (the AVX2 one loads them; one bound serves both builds) */
    if (n < 1 || (long long)n * h * w * 16 > INT32_MAX) return 0;
    const int out_channels = pass == CONV_PASS_INPUT_GRADIENT ? s.cin : s.cout;
    const int in_channels = pass == CONV_PASS_INPUT_GRADIENT ? s.cout : s.cin;
    return s.k == 3 && s.stride == 1 && s.pad == 1 && out_channels % 8 == 0 && in_channels % 8 == 0 &&
           (pass != CONV_PASS_WEIGHT_GRADIENT || s.cout % 16 == 0) && out_channels <= MAX_CHANNELS &&
           in_channels <= MAX_CHANNELS && (w == 8 || w == 16 || w == 32) && h >= 2 && h % 2 == 0 &&
           (h * w / 4) % 16 == 0;
}

/* The transformed kernels (forward, input gradient), then the weight gradient's partial sums: one set
 * per group of chunks, at most DW_GROUPS. */
static size_t scratch_floats(ConvShape s) { return (size_t)XI * s.cin * s.cout * (1 + DW_GROUPS) + 16; }

/* ---- the transformed kernels ---------------------------------------------------------------------------- */

/* u [XI][cin][cout] = G g G^T, G = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1], for the 3x3 kernel g of
 * (ci, co): weight [co][ci] (forward), or weight [ci][co] turned 180 degrees (input gradient, where ci and
 * co are the gradient's: weight is [cin][cout][3][3] in its terms). VW output channels a vector. */
static void transform_kernels(float *u, const float *weight, int cin, int cout, int input_gradient) {
    const size_t stride_co = input_gradient ? 9 : (size_t)cin * 9, stride_ci = input_gradient ? (size_t)cout * 9 : 9;
    const vec half = VEC_SET1(0.5f);
    #pragma omp parallel for schedule(static)
    for (int ci = 0; ci < cin; ci++)
        for (int co0 = 0; co0 < cout; co0 += VW) {
            const int lanes = cout - co0 < VW ? cout - co0 : VW;
            float taps[9][VW] __attribute__((aligned(64)));
            for (int tap = 0; tap < 9; tap++)
                for (int l = 0; l < VW; l++)
                    taps[tap][l] = l < lanes ? weight[(size_t)(co0 + l) * stride_co + (size_t)ci * stride_ci +
                                                      (input_gradient ? 8 - tap : tap)]
                                             : 0.0f;
            vec g[3][3];
            for (int a = 0; a < 3; a++)
                for (int b = 0; b < 3; b++) g[a][b] = VEC_LOAD(taps[a * 3 + b]);
            vec gg[4][3];   /* G g */
            for (int b = 0; b < 3; b++) {
                gg[0][b] = g[0][b];
                gg[1][b] = VEC_MUL(half, VEC_ADD(VEC_ADD(g[0][b], g[1][b]), g[2][b]));
                gg[2][b] = VEC_MUL(half, VEC_ADD(VEC_SUB(g[0][b], g[1][b]), g[2][b]));
                gg[3][b] = g[2][b];
            }
            for (int a = 0; a < 4; a++) {
                const vec row[4] = {gg[a][0], VEC_MUL(half, VEC_ADD(VEC_ADD(gg[a][0], gg[a][1]), gg[a][2])),
                                    VEC_MUL(half, VEC_ADD(VEC_SUB(gg[a][0], gg[a][1]), gg[a][2])), gg[a][2]};
                for (int b = 0; b < 4; b++) {
                    float *dst = u + ((size_t)(a * 4 + b) * cin + ci) * cout + co0;
                    if (lanes == VW) {
                        VEC_STOREU(dst, row[b]);
                    } else {
                        float lane[VW] __attribute__((aligned(64)));
                        VEC_STORE(lane, row[b]);
                        memcpy(dst, lane, sizeof(float) * lanes);
                    }
                }
            }
        }
}

/* ---- blocks ------------------------------------------------------------------------------------------------ */

typedef struct {
    float *y;
    const float *addend, *x, *u, *bias;
    size_t plane;   /* floats of one channel over the batch: n * h * w */
    int cin, cout, h, w;
    int block_vectors;   /* tile vectors a block: NVB, or 1 when few channels (V and M then stay in L1) */
    Lanes lanes;
} Job;

/* Where a block's tile vectors lie: nv of them (0: none), at image offsets image_at[j], first tile rows
 * ti0[j]. */
typedef struct {
    int nv;
    size_t image_at[NVB];
    int ti0[NVB];
} Place;

/* Blocks ahead whose rows a block prefetches. Each channel plane is a stream of its own (16 to 64 in, as
 * many out, and the addend's), more than the hardware prefetchers follow: with rows fetched two blocks
 * ahead the 16 -> 16 backward ran about 8% faster on data from memory (2 threads, batch 128, 6 alternating
 * rounds; one or four blocks ahead gained less), the forward the same as without. */
#define AHEAD 2

static void place_of(Place *p, long first, long vectors, int per_block, int vectors_per_image, int h, int w) {
    p->nv = vectors - first < per_block ? (int)(vectors - first) : per_block;
    if (p->nv < 0) p->nv = 0;
    for (int j = 0; j < p->nv; j++) {
        const long vector = first + j, image = vector / vectors_per_image;
        p->image_at[j] = (size_t)image * h * w;
        p->ti0[j] = (int)(vector - image * vectors_per_image) * 16 / (w / 2);
    }
}

static ALWAYS_INLINE void prefetch_floats(const float *p, size_t floats) {   /* whole lines from p */
    for (size_t i = 0; i < floats; i += 16) _mm_prefetch((const char *)(p + i), _MM_HINT_T0);
}

/* The input rows the tile vectors of place p read in one channel (channel_base: its plane). */
static ALWAYS_INLINE void prefetch_inputs(const float *channel_base, const Place *p, int h, int w) {
    for (int j = 0; j < p->nv; j++) {
        const int first_row = 2 * p->ti0[j] > 0 ? 2 * p->ti0[j] - 1 : 0;
        int end_row = 2 * p->ti0[j] + 64 / w + 1;
        if (end_row > h) end_row = h;
        prefetch_floats(channel_base + p->image_at[j] + (size_t)first_row * w, (size_t)(end_row - first_row) * w);
    }
}

/* The 64 outputs of each tile vector of place p in one channel. */
static ALWAYS_INLINE void prefetch_outputs(const float *channel_base, const Place *p, int w) {
    for (int j = 0; j < p->nv; j++) prefetch_floats(channel_base + p->image_at[j] + (size_t)2 * p->ti0[j] * w, 64);
}

/* One block at place p, prefetching the rows of place ahead. w is a constant in each call of run_block, so
 * the gathers and stores compile for that width. */
static ALWAYS_INLINE void block_any(const Job *job, float *v, float *m, const Place *p, const Place *ahead, int w) {
    const int cin = job->cin, cout = job->cout, nv = p->nv;
    const size_t tb = (size_t)16 * job->block_vectors;
    for (int ci = 0; ci < cin; ci++) {
        const float *channel = job->x + ci * job->plane;
        for (int j = 0; j < nv; j++)
            input_transform(v + (size_t)ci * tb + 16 * j, (size_t)cin * tb, channel + p->image_at[j], job->h, w,
                            p->ti0[j], &job->lanes);
        prefetch_inputs(channel, ahead, job->h, w);
    }
    block_gemm(m, v, job->u, cin, cout, nv, tb);
    for (int co = 0; co < cout; co++) {
        for (int j = 0; j < nv; j++) {
            const size_t at = co * job->plane + p->image_at[j];
            output_transform(job->y + at, job->addend ? job->addend + at : NULL, m + (size_t)co * tb + 16 * j,
                             (size_t)cout * tb, job->h, w, p->ti0[j], job->bias ? job->bias[co] : 0.0f,
                             &job->lanes);
        }
        prefetch_outputs(job->y + co * job->plane, ahead, w);
        if (job->addend) prefetch_outputs(job->addend + co * job->plane, ahead, w);
    }
}

static void run_block(const Job *job, float *v, float *m, const Place *p, const Place *ahead) {
    switch (job->w) {
    case 32: block_any(job, v, m, p, ahead, 32); break;
    case 16: block_any(job, v, m, p, ahead, 16); break;
    default: block_any(job, v, m, p, ahead, 8); break;
    }
}

/* Each thread's V and M, kept for the next call: sized by the widest layer seen, never by the thread
 * count the scratch was sized for. */
static float *thread_buffer(size_t floats) {
    static _Thread_local float *buffer;
    static _Thread_local size_t capacity;
    if (floats > capacity) {
        free(buffer);
        buffer = aligned_alloc(64, round_up(floats * sizeof(float), 64));
        if (!buffer) {
            rn_message("conv_winograd: out of memory for %zu floats of thread scratch", floats);
            abort();
        }
        capacity = floats;
    }
    return buffer;
}

static void run(const Job *job, int n) {
    const int vectors_per_image = job->h * job->w / 4 / 16, bv = job->block_vectors;
    const long vectors = (long)n * vectors_per_image, blocks = (vectors + bv - 1) / bv;
    const size_t v_floats = (size_t)XI * job->cin * 16 * bv, m_floats = (size_t)XI * job->cout * 16 * bv;
    #pragma omp parallel
    {
        float *v = thread_buffer(v_floats + m_floats), *m = v + v_floats;
        /* dynamic: a block's outputs do not depend on the thread that runs it, and on a shared VM one core
         * often runs slower (static blocks left the other spinning: 7-9% of a step's samples, 5% now) */
        #pragma omp for schedule(dynamic, 8)
        for (long b = 0; b < blocks; b++) {
            Place p, ahead;
            place_of(&p, b * bv, vectors, bv, vectors_per_image, job->h, job->w);
            place_of(&ahead, (b + AHEAD) * bv, vectors, bv, vectors_per_image, job->h, job->w);
            run_block(job, v, m, &p, &ahead);
        }
    }
}

static int block_vectors(int cin, int cout) { return cin + cout <= SMALL_BLOCK_CHANNELS ? 1 : NVB; }

static void forward(float *y, const float *addend, const float *x, const float *weight, const float *bias, int n,
                    int h, int w, ConvShape s, float *scratch) {
    Job job = {.y = y, .addend = addend, .x = x, .u = scratch, .bias = bias, .plane = (size_t)n * h * w,
               .cin = s.cin, .cout = s.cout, .h = h, .w = w, .block_vectors = block_vectors(s.cin, s.cout)};
    transform_kernels(scratch, weight, s.cin, s.cout, 0);
    lanes_init(&job.lanes, w);
    run(&job, n);
}

static void input_gradient(float *dx, const float *addend, const float *dy, const float *weight, int n, int h,
                           int w, ConvShape s, float *scratch) {
    Job job = {.y = dx, .addend = addend, .x = dy, .u = scratch, .bias = NULL, .plane = (size_t)n * h * w,
               .cin = s.cout, .cout = s.cin, .h = h, .w = w, .block_vectors = block_vectors(s.cout, s.cin)};
    transform_kernels(scratch, weight, s.cout, s.cin, 1);
    lanes_init(&job.lanes, w);
    run(&job, n);
}

/* ---- the weight gradient ----------------------------------------------------------------------------------
 * dL/dU[xi] = sum over tiles of (A dY A^T)[xi] . V[xi] for every (ci, co), then dL/dg = G^T dU G: a GEMM per
 * transform point whose inner dimension is the tiles. The tiles go in chunks of one tile vector, whose
 * transformed input V [XI][cin][CHUNK] (tiles in lanes, as the forward makes it) and transformed output
 * gradient D [XI][CHUNK][cout] (output channels in lanes) stay in L1 (chunks of 256 tiles streamed from L2
 * measured 1.3x slower on 16 -> 16); the GEMM broadcasts V and runs D's vectors, so every partial sum
 * stays in its lane and none is reduced across lanes. The chunks form at most DW_GROUPS groups, each
 * summed by one thread in chunk order into its own partial dU, and the groups are added in group order:
 * the sums do not depend on the thread count. */

typedef struct {
    const float *dy, *x;
    size_t plane;   /* floats of one channel over the batch: n * h * w */
    int cin, cout, h, w;
    Lanes lanes;
} GradientJob;

/* Transforms the chunk (one tile vector) at image offset image_at, first tile row ti0, into v and d; w a
 * constant in each call. */
static ALWAYS_INLINE void chunk_transforms_any(const GradientJob *job, float *v, float *d, size_t image_at, int ti0,
                                               int w) {
    for (int ci = 0; ci < job->cin; ci++)
        input_transform(v + (size_t)ci * CHUNK, (size_t)job->cin * CHUNK, job->x + ci * job->plane + image_at,
                        job->h, w, ti0, &job->lanes);
    output_gradient_transform(d, job->dy + image_at + (size_t)2 * ti0 * w, job->plane, job->cout, w);
}

static void chunk_transforms(const GradientJob *job, float *v, float *d, size_t image_at, int ti0) {
    switch (job->w) {
    case 32: chunk_transforms_any(job, v, d, image_at, ti0, 32); break;
    case 16: chunk_transforms_any(job, v, d, image_at, ti0, 16); break;
    default: chunk_transforms_any(job, v, d, image_at, ti0, 8); break;
    }
}

/* dweight [cout][cin][3][3] += G^T (the groups' dU summed in order) G, VW output channels a vector. */
static void finish_weight_gradient(float *dweight, const float *partials, int groups, int cin, int cout) {
    const vec half = VEC_SET1(0.5f);
    #pragma omp parallel for schedule(static)
    for (int ci = 0; ci < cin; ci++)
        for (int co0 = 0; co0 < cout; co0 += VW) {
            vec du[4][4];
            for (int xi = 0; xi < XI; xi++) {
                vec sum = VEC_LOADU(partials + ((size_t)xi * cin + ci) * cout + co0);
                for (int g = 1; g < groups; g++)
                    sum = VEC_ADD(sum, VEC_LOADU(partials + (((size_t)g * XI + xi) * cin + ci) * cout + co0));
                du[xi / 4][xi % 4] = sum;
            }
            vec gt[3][4];   /* G^T dU, G^T = [1 1/2 1/2 0; 0 1/2 -1/2 0; 0 1/2 1/2 1] */
            for (int j = 0; j < 4; j++) {
                gt[0][j] = VEC_ADD(du[0][j], VEC_MUL(half, VEC_ADD(du[1][j], du[2][j])));
                gt[1][j] = VEC_MUL(half, VEC_SUB(du[1][j], du[2][j]));
                gt[2][j] = VEC_ADD(VEC_MUL(half, VEC_ADD(du[1][j], du[2][j])), du[3][j]);
            }
            float g9[9][VW];
            for (int a = 0; a < 3; a++) {
                VEC_STOREU(g9[a * 3 + 0], VEC_ADD(gt[a][0], VEC_MUL(half, VEC_ADD(gt[a][1], gt[a][2]))));
                VEC_STOREU(g9[a * 3 + 1], VEC_MUL(half, VEC_SUB(gt[a][1], gt[a][2])));
                VEC_STOREU(g9[a * 3 + 2], VEC_ADD(VEC_MUL(half, VEC_ADD(gt[a][1], gt[a][2])), gt[a][3]));
            }
            for (int l = 0; l < VW; l++) {
                float *dst = dweight + ((size_t)(co0 + l) * cin + ci) * 9;
                for (int tap = 0; tap < 9; tap++) dst[tap] += g9[tap][l];
            }
        }
}

/* The input gradient (dx not NULL; see input_gradient) and the weight gradient in one pass over the tile
 * vectors, each block's output gradient read from memory once for both: the input gradient's blocks,
 * each followed by the weight gradient's chunks (one tile vector each) of the same tiles. Blocks form the
 * weight gradient's groups, so dW has the same bits with or without dx. */
static void backward(float *dx, const float *addend, float *dweight, const float *dy, const float *x,
                     const float *weight, int n, int h, int w, ConvShape s, float *scratch) {
    const int bv = block_vectors(s.cout, s.cin);
    Job dx_job = {.y = dx, .addend = addend, .x = dy, .u = scratch, .bias = NULL, .plane = (size_t)n * h * w,
                  .cin = s.cout, .cout = s.cin, .h = h, .w = w, .block_vectors = bv};
    GradientJob dw_job = {.dy = dy, .x = x, .plane = (size_t)n * h * w, .cin = s.cin, .cout = s.cout, .h = h, .w = w};
    lanes_init(&dw_job.lanes, w);
    dx_job.lanes = dw_job.lanes;
    if (dx) transform_kernels(scratch, weight, s.cout, s.cin, 1);
    const int vectors_per_image = h * w / 64;
    const long vectors = (long)n * vectors_per_image, blocks = (vectors + bv - 1) / bv;
    const int groups = blocks < DW_GROUPS ? (int)blocks : DW_GROUPS;
    const size_t du_floats = (size_t)XI * s.cin * s.cout;
    float *partials = scratch + du_floats;   /* after the transformed kernels' place */
    const size_t dx_v = (size_t)XI * s.cout * 16 * bv, dx_m = (size_t)XI * s.cin * 16 * bv;
    const size_t dw_v = (size_t)XI * s.cin * CHUNK, dw_d = (size_t)XI * CHUNK * s.cout;
    #pragma omp parallel
    {
        float *v = thread_buffer((dx ? dx_v + dx_m : 0) + dw_v + dw_d);
        float *m = v + dx_v, *gv = dx ? m + dx_m : v, *gd = gv + dw_v;
        #pragma omp for schedule(dynamic, 1)   /* each group summed whole by one thread, whichever */
        for (int g = 0; g < groups; g++) {
            float *partial = partials + (size_t)g * du_floats;
            memset(partial, 0, du_floats * sizeof(float));
            for (long b = blocks * g / groups; b < blocks * (g + 1) / groups; b++) {
                Place p, ahead;
                place_of(&p, b * bv, vectors, bv, vectors_per_image, h, w);
                place_of(&ahead, (b + AHEAD) * bv, vectors, bv, vectors_per_image, h, w);
                if (dx) run_block(&dx_job, v, m, &p, &ahead);
                for (int j = 0; j < p.nv; j++) {
                    chunk_transforms(&dw_job, gv, gd, p.image_at[j], p.ti0[j]);
                    chunk_gemm_dw(partial, gv, gd, s.cin, s.cout);
                }
                for (int ci = 0; ci < s.cin; ci++) prefetch_inputs(x + ci * dw_job.plane, &ahead, h, w);
                if (!dx)
                    for (int co = 0; co < s.cout; co++) prefetch_outputs(dy + co * dw_job.plane, &ahead, w);
            }
        }
    }
    finish_weight_gradient(dweight, partials, groups, s.cin, s.cout);
}

const ConvWinogradKernels WINOGRAD_TABLE = {takes, scratch_floats, forward, input_gradient, backward};
