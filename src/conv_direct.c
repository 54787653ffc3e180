/* Direct convolution for 3x3 / pad 1 (stride 1 or 2) and 1x1 / stride 2, written once over a small ISA
 * layer and compiled once per instruction set (see conv_direct.h): AVX-512 (16 floats a vector) with
 * -DCONV_DIRECT_AVX512, AVX2 + FMA (8 floats) with -DCONV_DIRECT_AVX2. Forward, input gradient and weight
 * gradient each read the activations in place, with no im2col matrix and no GEMM.
 *
 * Stride 1: for 3x3 / stride 1 / pad 1 the output has the input's extent, so over C,N,H,W activations
 * every channel is one contiguous row of P = n*h*w pixels, and output pixel p reads input pixel
 * p + (kh-1)*w + (kw-1) of every input channel, provided that pixel lies in the same image inside the
 * frame. The kernels run along the flattened pixel row in VW-float vectors and handle the padding (and
 * the image boundaries inside the batch) with one lane mask per vector and tap: a masked-off lane reads
 * zero, and masked loads (AVX-512's, and AVX2's vmaskmovps) do not fault on masked-off lanes, so
 * vectors at the row ends may point before or after the array. No im2col, no col2im. On AVX2, where each
 * masked load also loads its mask vector, 3x3 with whole-vector output rows takes the halo path instead
 * (see halo_fill, and halo_split for stride 2): a zero-bordered copy of the input and plain loads.
 *
 * Stride 2: the input is first split into "planes" on the output grid (ho x wo): plane (rp, cp) holds
 * x[2a + rp][2b + cp] at (a, b) (zero past the edge). Input row 2*oy + ky with ky = kh - pad is then row
 * oy + dy of plane row parity rp = ky & 1, dy = (ky - rp) / 2, so every tap becomes a stride-1 tap with
 * shift (dy, dx) in {-1, 0}^2 on one plane and the same kernels apply. 3x3 / pad 1 uses all 4 planes,
 * 1x1 / pad 0 only the even/even one. The split costs one pass over x, far less than im2col's 9.
 *
 * The masks depend only on the pixel position modulo ho*wo, so a table of period = lcm(ho*wo, VW) / VW
 * vectors (one image's ho*wo / VW when ho*wo is a multiple of VW: 32x32, 16x16, 8x8, 28x28) holds all of
 * them, for the 9 shifts (dy, dx) in {-1, 0, 1}^2 (plus DW_SPAN rows repeating the first ones, so that the
 * weight-gradient kernel reads DW_SPAN consecutive rows without wrapping).
 *
 * Every output value (y, dx, dW) is summed by one thread in a fixed order, so the results do not depend
 * on the thread count. */
#include "resnet/conv_direct.h"

#include <immintrin.h>
#include <omp.h>
#include <stdint.h>
#include <string.h>

/* The ISA layer: everything below that names an instruction set goes through these few types, macros and
 * helpers, so the kernels are written once for any vector width VW.
 *   vec         VW floats                 vmask       the lanes a masked load or store touches
 *   mask_entry  one entry of the mask table (build_masks); VMASK_AT reads it as a vmask
 * AVX-512: lane masks are __mmask16 bit masks and masked loads/stores take them directly. AVX2 has no
 * mask registers: a lane mask is an integer vector (all ones in the lanes to touch) for vmaskmovps,
 * which does not fault on masked-off lanes either; the table stores masks expanded, ready to load.
 * The flags checked here are the ones conv.c's dispatch asks the CPU for before it calls the object: an
 * object built with more (say AVX-512 in the AVX2 one) could fault on a CPU that passed the check. */
#if defined(CONV_DIRECT_AVX512)
#if !defined(__AVX512F__) || !defined(__AVX512BW__) || !defined(__AVX512VL__) || !defined(__AVX512DQ__) || \
    !defined(__FMA__)
#error "the AVX-512 object needs -mavx512f -mavx512bw -mavx512vl -mavx512dq -mfma (meson.build)"
#endif
#define ISA avx512
#define VW 16
typedef __m512 vec;
typedef __mmask16 vmask;
typedef uint16_t mask_entry;
#define MASK_TABLE_FLOATS(entries) ((size_t)round_up((entries), 32) / 2)
#define VMASK_BITS_ALL 0xFFFFu
#define VMASK_ALL ((__mmask16)0xFFFF)
#define VMASK_AT(entry) (*(entry))
#define VMASK_AND(a, b) ((a) & (b))
#define VEC_ZERO() _mm512_setzero_ps()
#define VEC_SET1(f) _mm512_set1_ps(f)
#define VEC_ADD(a, b) _mm512_add_ps(a, b)
#define VEC_FMADD(a, b, c) _mm512_fmadd_ps(a, b, c)
#define VEC_LOAD(p) _mm512_load_ps(p)                  /* aligned */
#define VEC_LOADU(p) _mm512_loadu_ps(p)
#define VEC_STORE(p, v) _mm512_store_ps(p, v)          /* aligned */
#define VEC_MASKZ_LOADU(m, p) _mm512_maskz_loadu_ps(m, p)
#define VEC_STORE_LANES(p, last, tail, v) _mm512_mask_storeu_ps(p, (last) ? (tail) : VMASK_ALL, v)
#define VEC_LOAD_LANES(p, last, tail) _mm512_maskz_loadu_ps((last) ? (tail) : VMASK_ALL, p)
#define VEC_REDUCE_ADD(v) _mm512_reduce_add_ps(v)
static inline vmask vmask_from_bits(unsigned bits) { return (__mmask16)bits; }
static inline void mask_entry_put(mask_entry *e, vmask m) { *e = m; }
#elif defined(CONV_DIRECT_AVX2)
#if !defined(__AVX2__) || !defined(__FMA__) || defined(__AVX512F__)
#error "the AVX2 object needs -mavx2 -mfma -mno-avx512f (meson.build)"
#endif
#define ISA avx2
#define VW 8
typedef __m256 vec;
typedef __m256i vmask;
typedef __m256i mask_entry;
#define MASK_TABLE_FLOATS(entries) ((size_t)(entries) * 8)
#define VMASK_BITS_ALL 0xFFu
#define VMASK_ALL _mm256_set1_epi32(-1)
#define VMASK_AT(entry) _mm256_loadu_si256(entry)
#define VMASK_AND(a, b) _mm256_and_si256(a, b)
#define VEC_ZERO() _mm256_setzero_ps()
#define VEC_SET1(f) _mm256_set1_ps(f)
#define VEC_ADD(a, b) _mm256_add_ps(a, b)
#define VEC_FMADD(a, b, c) _mm256_fmadd_ps(a, b, c)
#define VEC_LOAD(p) _mm256_load_ps(p)
#define VEC_LOADU(p) _mm256_loadu_ps(p)
#define VEC_STORE(p, v) _mm256_store_ps(p, v)
#define VEC_MASKZ_LOADU(m, p) _mm256_maskload_ps(p, m)
/* a plain store where all lanes are valid: masked stores are slow on AMD (microcoded before Zen 4) */
#define VEC_STORE_LANES(p, last, tail, v) \
    do { if (last) _mm256_maskstore_ps(p, tail, v); else _mm256_storeu_ps(p, v); } while (0)
#define VEC_LOAD_LANES(p, last, tail) ((last) ? _mm256_maskload_ps(p, tail) : _mm256_loadu_ps(p))
#define VEC_REDUCE_ADD(v) vec_reduce_add(v)
static inline vmask vmask_from_bits(unsigned bits) {
    const __m256i lane_bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    return _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32((int)bits), lane_bit), lane_bit);
}
static inline void mask_entry_put(mask_entry *e, vmask m) { _mm256_storeu_si256(e, m); }
/* a fixed tree: halves, then pairs, then the last two lanes */
static inline float vec_reduce_add(__m256 v) {
    __m128 r = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    r = _mm_add_ps(r, _mm_movehl_ps(r, r));
    r = _mm_add_ss(r, _mm_movehdup_ps(r));
    return _mm_cvtss_f32(r);
}
#else
#error "compile conv_direct.c with -DCONV_DIRECT_AVX512 or -DCONV_DIRECT_AVX2 (meson.build)"
#endif

/* register tiles and blocking (see direct_tile, direct_dw_task); may be set with -D when tuning. The
 * tiles fill the register file. AVX-512 (32 zmm): 8 x 3 accumulators for both kernels. AVX2 (16 ymm): the
 * dW kernel takes 4 x 3 (+ 3 X vectors + 1 dY vector = 16), the forward / input-gradient kernel 6 x 2
 * (+ 2 inputs + 1 broadcast weight, one register left for the lane masks, which vmaskmovps takes from a
 * register): measured on Zen 3 it beat 4 x 3 by about 15% (4 x 3 loads 3 masks and 3 masked inputs per
 * 12 FMAs, 6 x 2 only 2 and 2) and matched 8 x 1, which needs more loads per FMA on Intel's 2 load ports.
 * The halo path's tile (HC_COB x HC_PV, direct_tile_halo) has no masks to hold, and there AVX2 takes 4 x 3
 * (+ 3 inputs + 1 broadcast = 16): 7 loads per 12 FMAs instead of 6 x 2's 8. Measured on an Intel Xeon
 * (1 thread, batch 64, the seed's 3x3 layers) it took the forward from 18.5 to 16.4 ms and the backward from
 * 40.0 to 36.7; the tiling does not change any sum, so the results are bit for bit 6 x 2's. */
#if VW == 16
#define DIRECT_HALO_DEFAULT 0   /* see halo_fill for why AVX-512 keeps the masks */
#define DC_COB_DEFAULT 8
#define DC_PV_DEFAULT 3
#define HC_COB_DEFAULT 8
#define HC_PV_DEFAULT 3
#define DW_COB_DEFAULT 8
#else
#define DIRECT_HALO_DEFAULT 1
#define DC_COB_DEFAULT 6
#define DC_PV_DEFAULT 2
#define HC_COB_DEFAULT 4
#define HC_PV_DEFAULT 3
#define DW_COB_DEFAULT 4
#endif
#ifndef DIRECT_HALO
#define DIRECT_HALO DIRECT_HALO_DEFAULT
#endif
#ifndef DC_COB
#define DC_COB DC_COB_DEFAULT
#endif
#ifndef DC_PV
#define DC_PV DC_PV_DEFAULT
#endif
#ifndef HC_COB
#define HC_COB HC_COB_DEFAULT
#endif
#ifndef HC_PV
#define HC_PV HC_PV_DEFAULT
#endif
#define DC_TILES_PER_TASK 8   /* pixel tiles per OpenMP work item: 384 pixels with AVX-512; with AVX2 128, 192 on
                                 * the halo path */
#ifndef DW_COB
#define DW_COB DW_COB_DEFAULT
#endif
#ifndef DW_SPAN
#define DW_SPAN 512           /* pixel vectors per dW chunk (see direct_dw_task): 256 KiB of packed dY */
#endif
#ifndef DW_GROUP
#define DW_GROUP 64           /* column triples per dW work item, each packing its chunk of dY once */
#endif
#ifndef HALO_CHUNK_FLOATS
/* halo buffer per chunk of images: with AVX2 1 MiB (measured faster than 4 MiB on Zen 3); with AVX-512, when
 * DIRECT_HALO=1 asks for the halo path, 4 MiB (on Zen 4 with 2 threads the 32->32 layers and the stride-2
 * weight gradient ran 8-15% faster; equal on 1) */
#define HALO_CHUNK_FLOATS (VW == 16 ? (1u << 20) : (1u << 18))
#endif

static int gcd_int(int a, int b) {
    while (b) { int t = a % b; a = b; b = t; }
    return a;
}

static int round_up(int a, int b) { return (a + b - 1) / b * b; }

/* planes per input channel: 1 for stride 1 (x itself) and 1x1 / stride 2 (even/even), else 4 */
static int direct_planes(ConvShape s) { return s.stride == 2 && s.k == 3 ? 4 : 1; }

/* The halo path (see halo_fill): 3x3 / pad 1 with output rows of whole vectors (wo a multiple of VW), where
 * DIRECT_HALO asks for it (AVX2); stride 2 borders the planes (see halo_split). Not 1x1 / stride 2: with
 * no shift it gains nothing from the border, and its input gradient would pay a bordered copy of dY
 * (measured 1.09-1.16x slower backward). */
static int uses_halo(ConvShape s, int wo) { return DIRECT_HALO && s.k == 3 && wo % VW == 0; }

/* Bordered channels of the halo buffer: X's planes (the forward pass, the weight gradient), then dY's
 * channels (the input gradient). */
static size_t halo_chunk_channels(ConvShape s) {
    const size_t xc = (size_t)s.cin * direct_planes(s);
    return xc > (size_t)s.cout ? xc : (size_t)s.cout;
}

/* Images per chunk of the stride-2 plane buffer or the halo buffer, bounded like im2col's chunks. */
static int direct_chunk_images(ConvShape s, int n, int ho, int wo) {
    if (s.stride == 1 && !uses_halo(s, wo)) return n;
    const size_t per_image = uses_halo(s, wo) ? halo_chunk_channels(s) * (ho + 2) * (wo + 2) +
                                                    (s.stride == 2 ? (size_t)s.cin * direct_planes(s) * ho * wo : 0)
                                              : (size_t)s.cin * direct_planes(s) * ho * wo;
    int nc = (int)((uses_halo(s, wo) ? HALO_CHUNK_FLOATS : CONV_CHUNK_FLOATS) / per_image);
    return nc < 1 ? 1 : nc > n ? n : nc;
}

/* Scratch layout of the direct path, in floats (each part 64-byte aligned when scratch is):
 * masks [period + DW_SPAN][9] mask_entry | dW accumulators [cout][cin][k*k] double | dW chunk sums
 * [chunk][cout][cin][k*k] | packed weights | planes (stride 2) or halo buffer and its vector offsets. */
typedef struct { size_t masks, acc, part, packed, planes, dxplanes, hoff, total; } DirectLayout;

static DirectLayout direct_layout(ConvShape s, int n, int h, int w) {
    const int ho = conv_out_size(h, s.k, s.stride, s.pad), wo = conv_out_size(w, s.k, s.stride, s.pad);
    const int period = ho * wo / gcd_int(ho * wo, VW), cmax = s.cin > s.cout ? s.cin : s.cout;
    const int nc = direct_chunk_images(s, n, ho, wo);
    DirectLayout l;
    l.masks = 0;
    l.acc = l.masks + MASK_TABLE_FLOATS((period + DW_SPAN) * 9);
    l.part = l.acc + 2 * (size_t)round_up(s.cout * s.cin * s.k * s.k, 8);
    const size_t nv = ((size_t)nc * ho * wo + VW - 1) / VW;
    l.packed = l.part + round_up((int)((nv + DW_SPAN - 1) / DW_SPAN * s.cout * s.cin * s.k * s.k), 16);
    l.planes = l.packed + (size_t)round_up(cmax, DC_COB > HC_COB ? DC_COB : HC_COB) * cmax * s.k * s.k;
    l.dxplanes = l.hoff = l.total = l.planes;
    if (s.stride == 2)
        l.total += (size_t)s.cin * direct_planes(s) * nc * ho * wo;
    if (uses_halo(s, wo)) {   /* the bordered buffer, then (stride 2) the input gradient's planes */
        l.dxplanes = l.planes + round_up((int)(halo_chunk_channels(s) * nc * (ho + 2) * (wo + 2)), 16);
        l.hoff = l.dxplanes + (s.stride == 2 ? round_up(s.cin * direct_planes(s) * nc * ho * wo, 16) : 0);
        l.total = l.hoff + nv;   /* one int32 per pixel vector */
    }
    return l;
}

/* One tap: plane g of the input channel, shift (dy, dx) on the plane grid, weight index kh*k + kw. */
typedef struct { int g, dy, dx, widx; } Tap;

typedef struct {
    int G, ntap;     /* planes per input channel, taps (sorted by plane) */
    int ho, wo, period;
    Tap tap[9];
} Geometry;

static Geometry make_geometry(ConvShape s, int h, int w) {
    Geometry geo;
    geo.ho = conv_out_size(h, s.k, s.stride, s.pad);
    geo.wo = conv_out_size(w, s.k, s.stride, s.pad);
    geo.period = geo.ho * geo.wo / gcd_int(geo.ho * geo.wo, VW);
    geo.G = direct_planes(s);
    geo.ntap = 0;
    for (int g = 0; g < geo.G; g++)
        for (int kh = 0; kh < s.k; kh++)
            for (int kw = 0; kw < s.k; kw++) {
                const int ky = kh - s.pad, kx = kw - s.pad;
                Tap t = {0, ky, kx, kh * s.k + kw};
                if (s.stride == 2) {
                    const int rp = ky & 1, cp = kx & 1;
                    if (rp * 2 + cp != g) continue;
                    t = (Tap){g, (ky - rp) / 2, (kx - cp) / 2, kh * s.k + kw};
                }
                geo.tap[geo.ntap++] = t;
            }
    return geo;
}

/* masks[u][(dy+1)*3 + (dx+1)]: lanes l of pixel vector u (mod period) whose pixel, shifted by (dy, dx),
 * stays inside the ho x wo frame of its own image. The table holds period + DW_SPAN rows, so DW_SPAN
 * consecutive vectors from any start below period read their rows without wrapping. */
static void build_masks(mask_entry *masks, int ho, int wo, int period) {
    const int hw = ho * wo;
    for (int u = 0; u < period; u++)
        for (int t = 0; t < 9; t++) {
            const int dy = t / 3 - 1, dx = t % 3 - 1;
            unsigned mk = 0;
            for (int l = 0; l < VW; l++) {
                const int r = (u * VW + l) % hw, y = r / wo + dy, x = r % wo + dx;
                if (y >= 0 && y < ho && x >= 0 && x < wo) mk |= 1u << l;
            }
            mask_entry_put(&masks[u * 9 + t], vmask_from_bits(mk));
        }
    /* the rows past the period repeat the first ones: copied a period at a time (working each lane out
     * again cost about as much as a batch-4 layer's convolution) */
    for (int u = period; u < period + DW_SPAN; u += period) {
        const int rows = period + DW_SPAN - u < period ? period + DW_SPAN - u : period;
        memcpy(masks + (size_t)u * 9, masks, sizeof(mask_entry) * 9 * (size_t)rows);
    }
}

/* planes[ci][g][i][a][b] = x[ci][n0 + i][2a + rp][2b + cp] (g = 2 rp + cp), zero past the edge. */
static void split_planes(float *planes, const float *x, int cin, int G, int n, int h, int w, int n0, int nc,
                         int ho, int wo) {
    const size_t hw = (size_t)h * w, ohw = (size_t)ho * wo;
    #pragma omp parallel for collapse(2) schedule(static)
    for (int ci = 0; ci < cin; ci++)
        for (int i = 0; i < nc; i++) {
            const float *src = x + ((size_t)ci * n + n0 + i) * hw;
            float *pl = planes + ((size_t)ci * G * nc + i) * ohw;
            const size_t pcs = (size_t)nc * ohw;   /* plane stride */
            if (h % 2 == 0 && w % 2 == 0) {
                /* even extents, no edge: a plain deinterleave that the compiler vectorises */
                for (int a = 0; a < ho; a++)
                    for (int rp = 0; rp < (G == 4 ? 2 : 1); rp++) {
                        const float *row = src + (size_t)(2 * a + rp) * w;
                        float *e = pl + (size_t)(rp * 2) * pcs + (size_t)a * wo, *o = e + pcs;
                        if (G == 4)
                            for (int b = 0; b < wo; b++) {
                                e[b] = row[2 * b];
                                o[b] = row[2 * b + 1];
                            }
                        else
                            for (int b = 0; b < wo; b++) e[b] = row[2 * b];
                    }
                continue;
            }
            for (int g = 0; g < G; g++) {
                const int rp = g >> 1, cp = g & 1;
                float *dst = planes + ((size_t)(ci * G + g) * nc + i) * ohw;
                for (int a = 0; a < ho; a++) {
                    const int iy = 2 * a + rp;
                    for (int b = 0; b < wo; b++) {
                        const int ix = 2 * b + cp;
                        dst[a * wo + b] = iy < h && ix < w ? src[(size_t)iy * w + ix] : 0.0f;
                    }
                }
            }
        }
}

/* The inverse for gradients: dx[ci][n0 + i][iy][ix] = plane (iy & 1, ix & 1) at (iy / 2, ix / 2), zero for
 * the pixels no tap reads (1x1 / stride 2 reads only even/even); with an addend (dx's layout) added to each,
 * one rounding. */
static inline float plus_addend(const float *add, size_t at, float v) { return add ? add[at] + v : v; }

static void merge_planes(float *dx, const float *addend, const float *planes, int cin, int G, int n, int h, int w,
                         int n0, int nc, int ho, int wo) {
    const size_t hw = (size_t)h * w, ohw = (size_t)ho * wo;
    #pragma omp parallel for collapse(2) schedule(static)
    for (int ci = 0; ci < cin; ci++)
        for (int i = 0; i < nc; i++) {
            float *dst = dx + ((size_t)ci * n + n0 + i) * hw;
            const float *add = addend ? addend + ((size_t)ci * n + n0 + i) * hw : NULL;
            const float *pl = planes + ((size_t)ci * G * nc + i) * ohw;
            const size_t pcs = (size_t)nc * ohw;   /* plane stride */
            if (h % 2 == 0 && w % 2 == 0) {
                /* even extents: a plain interleave that the compiler vectorises */
                for (int a = 0; a < ho; a++)
                    for (int rp = 0; rp < 2; rp++) {
                        const size_t r0 = (size_t)(2 * a + rp) * w;
                        float *row = dst + r0;
                        const float *arow = add ? add + r0 : NULL;
                        const float *e = pl + (size_t)(rp * 2) * pcs + (size_t)a * wo, *o = e + pcs;
                        if (G == 4)
                            for (int b = 0; b < wo; b++) {
                                row[2 * b] = plus_addend(arow, 2 * b, e[b]);
                                row[2 * b + 1] = plus_addend(arow, 2 * b + 1, o[b]);
                            }
                        else if (rp == 0)
                            for (int b = 0; b < wo; b++) {
                                row[2 * b] = plus_addend(arow, 2 * b, e[b]);
                                row[2 * b + 1] = plus_addend(arow, 2 * b + 1, 0.0f);
                            }
                        else
                            for (int b = 0; b < w; b++) row[b] = plus_addend(arow, b, 0.0f);
                    }
                continue;
            }
            for (int iy = 0; iy < h; iy++)
                for (int ix = 0; ix < w; ix++) {
                    const int g = (iy & 1) * 2 + (ix & 1);
                    const size_t at = (size_t)iy * w + ix;
                    dst[at] = plus_addend(add, at, g < G ? pl[(size_t)g * pcs + (size_t)(iy >> 1) * wo + (ix >> 1)]
                                                         : 0.0f);
                }
        }
}

/* The halo path. With AVX2 a masked load takes its lane mask from a register, so every masked input
 * vector costs a second load (the mask) and the loads, not the FMAs, bound the kernels. AVX-512 takes its
 * masks in mask registers and keeps the masked path: on Zen 4 the halo path trained 1.4-3.5% faster with
 * one thread a rank, but with 2 threads a rank some runs (the same binary, run after run) took 1.2x as long
 * a step, against 1.1x for the masked path's slow runs. For 3x3 / stride 1
 * / pad 1 with rows of whole vectors (w a multiple of VW) the chunk's images are first copied with a
 * one-pixel zero border, [c][i][h + 2][w + 2], so every tap reads a plain unaligned vector and no mask at
 * all: halo[c][i][y + 1][x + 1] = src[c][n0 + i][y][x]. The copy costs one pass over the tensor; the
 * kernels read it 9 times per output block. */
static size_t halo_image(int h, int w) { return (size_t)(h + 2) * (w + 2); }

/* Both fills run image-major: the static split gives each thread the images whose output pixels
 * direct_run's static split gives it too, so a thread reads the bordered copy from its own core's caches
 * (channel-major, each thread read half its input from the other core: on Zen 4 with 2 threads the 3x3
 * layers ran at 55-65% of their 1-thread speed per core, image-major at 85-95%). */
static void halo_fill(float *halo, const float *src, int c, int n, int h, int w, int n0, int nc) {
    const size_t hw = (size_t)h * w, img = halo_image(h, w);
    const int wp = w + 2;
    #pragma omp parallel for collapse(2) schedule(static)
    for (int i = 0; i < nc; i++)
        for (int ci = 0; ci < c; ci++) {
            const float *s = src + ((size_t)ci * n + n0 + i) * hw;
            float *d = halo + ((size_t)ci * nc + i) * img;
            memset(d, 0, sizeof(float) * (size_t)(wp + 1));
            for (int y = 0; y < h; y++) {
                memcpy(d + (size_t)(y + 1) * wp + 1, s + (size_t)y * w, sizeof(float) * (size_t)w);
                d[(size_t)(y + 1) * wp + w + 1] = 0.0f;
                d[(size_t)(y + 2) * wp] = 0.0f;
            }
            memset(d + (size_t)(h + 1) * wp + 1, 0, sizeof(float) * (size_t)(wp - 1));
        }
}

/* The halo path at stride 2: split_planes into bordered planes, [ci][g][i][ho + 2][wo + 2] with plane (rp, cp)
 * at (a + 1, b + 1) holding x[2a + rp][2b + cp] (zero past the edge), so the split and the border cost
 * the one pass the masked path's split costs. */
static void halo_split(float *halo, const float *x, int cin, int G, int n, int h, int w, int n0, int nc, int ho,
                       int wo) {
    const size_t hw = (size_t)h * w, img = halo_image(ho, wo), pcs = (size_t)nc * img;   /* plane stride */
    const int wp = wo + 2, even = 2 * wo <= w;
    #pragma omp parallel for collapse(2) schedule(static)
    for (int i = 0; i < nc; i++)
        for (int ci = 0; ci < cin; ci++) {
            const float *src = x + ((size_t)ci * n + n0 + i) * hw;
            float *pl = halo + ((size_t)ci * G * nc + i) * img;
            for (int g = 0; g < G; g++) {
                float *d = pl + (size_t)g * pcs;
                memset(d, 0, sizeof(float) * (size_t)(wp + 1));
                memset(d + (size_t)(ho + 1) * wp, 0, sizeof(float) * (size_t)wp);
            }
            for (int rp = 0; rp < (G == 4 ? 2 : 1); rp++)
                for (int a = 0; a < ho; a++) {
                    const int iy = 2 * a + rp;
                    float *e = pl + (size_t)(rp * 2) * pcs + (size_t)(a + 1) * wp + 1, *o = e + pcs;
                    const float *row = src + (size_t)iy * w;
                    if (iy < h && even && G == 4) {   /* a plain deinterleave that the compiler vectorises */
                        for (int b = 0; b < wo; b++) {
                            e[b] = row[2 * b];
                            o[b] = row[2 * b + 1];
                        }
                    } else {
                        for (int b = 0; b < wo; b++) e[b] = iy < h && 2 * b < w ? row[2 * b] : 0.0f;
                        if (G == 4)
                            for (int b = 0; b < wo; b++) o[b] = iy < h && 2 * b + 1 < w ? row[2 * b + 1] : 0.0f;
                    }
                    e[wo] = e[wo + 1] = 0.0f;
                    if (G == 4) o[wo] = o[wo + 1] = 0.0f;
                }
        }
}

/* hoff[v]: where pixel vector v of the chunk (VW pixels of one image row) starts in a halo channel */
static void halo_offsets(int32_t *hoff, int h, int w, int nc) {
    const int per_row = w / VW;
    const size_t nv = (size_t)nc * h * per_row;
    for (size_t v = 0; v < nv; v++) {
        const size_t row = v / per_row, i = row / h, y = row % h, x = (v % per_row) * VW;
        hoff[v] = (int32_t)(i * halo_image(h, w) + (y + 1) * (size_t)(w + 2) + x + 1);
    }
}

/* dst[co][p] (= bias[co] +) sum_ci sum_t wp(co, ci, t) * src_ci[p + off[t]], lanes masked by mask mk[t];
 * with an addend (a tensor of dst's layout, or dst itself), dst[co][p] = addend[co][p] + that value, one
 * rounding, as a separate add would give.
 *
 * Register tile: DC_COB output channels x DC_PV pixel vectors of accumulators (8 x 3 = 24 zmm with AVX-512,
 * 6 x 2 = 12 ymm with AVX2; on the halo path HC_COB x HC_PV, 4 x 3 with AVX2). Per input channel and tap
 * it loads DC_PV input vectors and broadcasts DC_COB weights for DC_COB * DC_PV FMAs, so the loop is
 * FMA-bound (on AVX2 about 55-65% of the FMA peak on Zen 3, limited by the masked loads and the mask vectors
 * they take from memory; direct_tile_halo has neither). Weights are packed as [cout block][cin][tap][cob]
 * so the broadcasts walk memory sequentially. Used for the forward pass and, with the weights transposed
 * and the shifts negated, for the input gradient (dx[ci][p] = sum_co sum_t W[co][ci][t] dY[co][p - off(t)]). */
typedef struct {
    const float *src;        /* input channel ci starts at src + ci * src_cs */
    float *dst;              /* output channel co starts at dst + co * dst_cs */
    const float *wp;         /* [ceil(cout / cob)][cin][ntap][cob], cob = DC_COB (HC_COB on the halo path) */
    const float *bias;       /* [cout] or NULL */
    const mask_entry *masks; /* [period][9] */
    const int32_t *hoff;     /* halo path: pixel vector v reads src + hoff[v] + off[t]; NULL otherwise */
    size_t src_cs, dst_cs, nv;
    int cin, cout, period, ntap;
    const float *addend;     /* NULL, or added to the result: channel co at addend + co * dst_cs (may be dst) */
    vmask tail;              /* valid lanes of vector nv - 1 */
    ptrdiff_t off[9];
    int mk[9];
} Direct;

/* The tile's results into dst (bias added; with an addend, added to it, one rounding).
 * masked: the last vector of the run may be partial (the masked path); 0: every vector is whole (halo). */
static inline __attribute__((always_inline)) void tile_store(const Direct *d, const vec *acc, int cob, int pvmax,
                                                             int cb, size_t v0, int pv, int masked) {
    const int nco = d->cout - cb * cob < cob ? d->cout - cb * cob : cob;
    #pragma GCC unroll 16
    for (int c = 0; c < cob; c++) {
        if (c >= nco) break;
        const int co = cb * cob + c;
        float *out = d->dst + (size_t)co * d->dst_cs + v0 * VW;
        const float *add = d->addend ? d->addend + (size_t)co * d->dst_cs + v0 * VW : NULL;
        const vec b = VEC_SET1(d->bias ? d->bias[co] : 0.0f);
        #pragma GCC unroll 16
        for (int j = 0; j < pv; j++) {
            const int last = masked && v0 + j == d->nv - 1;
            vec r = d->bias ? VEC_ADD(acc[c * pvmax + j], b) : acc[c * pvmax + j];
            if (add) r = VEC_ADD(VEC_LOAD_LANES(add + VW * j, last, d->tail), r);
            VEC_STORE_LANES(out + VW * j, last, d->tail, r);
        }
    }
}

/* One register tile: output channels cb*DC_COB .. +DC_COB, pixel vectors v0 .. v0+pv. pv (DC_PV or 1) and,
 * for stride 1, ntap (9) are compile-time constants at the call sites, so acc[][] lives in registers and
 * the tap loop unrolls. */
static inline __attribute__((always_inline)) void direct_tile(const Direct *d, int cb, size_t v0, int pv,
                                                              int ntap) {
    vmask m[DC_PV][9];
    size_t u = v0 % (size_t)d->period;
    for (int j = 0; j < pv; j++) {
        const vmask tail = v0 + j == d->nv - 1 ? d->tail : VMASK_ALL;
        for (int t = 0; t < ntap; t++) m[j][t] = VMASK_AND(VMASK_AT(d->masks + (u * 9 + d->mk[t])), tail);
        if (++u == (size_t)d->period) u = 0;
    }
    vec acc[DC_COB][DC_PV];
    #pragma GCC unroll 16
    for (int c = 0; c < DC_COB; c++)
        #pragma GCC unroll 16
        for (int j = 0; j < pv; j++) acc[c][j] = VEC_ZERO();
    const float *wc = d->wp + (size_t)cb * d->cin * ntap * DC_COB;
    const float *xs = d->src + v0 * VW;
    for (int ci = 0; ci < d->cin; ci++, xs += d->src_cs, wc += ntap * DC_COB) {
        #pragma GCC unroll 9
        for (int t = 0; t < ntap; t++) {
            vec in[DC_PV];
            #pragma GCC unroll 16
            for (int j = 0; j < pv; j++) in[j] = VEC_MASKZ_LOADU(m[j][t], xs + VW * j + d->off[t]);
            #pragma GCC unroll 16
            for (int c = 0; c < DC_COB; c++) {
                const vec wv = VEC_SET1(wc[t * DC_COB + c]);
                #pragma GCC unroll 16
                for (int j = 0; j < pv; j++) acc[c][j] = VEC_FMADD(wv, in[j], acc[c][j]);
            }
        }
    }
    tile_store(d, &acc[0][0], DC_COB, DC_PV, cb, v0, pv, 1);
}

/* direct_tile on the halo path: every tap a plain load from the bordered copy, all lanes valid; ntap (9, or a
 * stride-2 plane's 4, 2, 1) a compile-time constant at the call sites. */
static inline __attribute__((always_inline)) void direct_tile_halo(const Direct *d, int cb, size_t v0, int pv,
                                                                   int ntap) {
    const float *xs[HC_PV];
    for (int j = 0; j < pv; j++) xs[j] = d->src + d->hoff[v0 + j];
    vec acc[HC_COB][HC_PV];
    #pragma GCC unroll 16
    for (int c = 0; c < HC_COB; c++)
        #pragma GCC unroll 16
        for (int j = 0; j < pv; j++) acc[c][j] = VEC_ZERO();
    const float *wc = d->wp + (size_t)cb * d->cin * ntap * HC_COB;
    for (int ci = 0; ci < d->cin; ci++, wc += ntap * HC_COB) {
        #pragma GCC unroll 9
        for (int t = 0; t < ntap; t++) {
            vec in[HC_PV];
            #pragma GCC unroll 16
            for (int j = 0; j < pv; j++) {
                in[j] = VEC_LOADU(xs[j] + d->off[t]);
                /* keep the input in a register: GCC otherwise folds the load into each of the HC_COB FMAs
                 * below as a memory operand (as in dw_span), and the loads, not the FMAs, bound the tile */
                __asm__("" : "+v"(in[j]));
            }
            #pragma GCC unroll 16
            for (int c = 0; c < HC_COB; c++) {
                const vec wv = VEC_SET1(wc[t * HC_COB + c]);
                #pragma GCC unroll 16
                for (int j = 0; j < pv; j++) acc[c][j] = VEC_FMADD(wv, in[j], acc[c][j]);
            }
        }
        #pragma GCC unroll 16
        for (int j = 0; j < pv; j++) xs[j] += d->src_cs;
    }
    tile_store(d, &acc[0][0], HC_COB, HC_PV, cb, v0, pv, 0);
}

/* the halo tiles of pixel vectors va .. vb, with the tap count a constant for the kernels' counts */
static void direct_halo_tiles(const Direct *d, int cb, size_t va, size_t vb) {
#define HALO_TILES(ntap)                                                                   \
    do {                                                                                   \
        size_t v = va;                                                                     \
        for (; v + HC_PV <= vb; v += HC_PV) direct_tile_halo(d, cb, v, HC_PV, ntap);       \
        for (; v < vb; v++) direct_tile_halo(d, cb, v, 1, ntap);                           \
    } while (0)
    switch (d->ntap) {
    case 9: HALO_TILES(9); break;
    case 4: HALO_TILES(4); break;
    case 2: HALO_TILES(2); break;
    case 1: HALO_TILES(1); break;
    default: HALO_TILES(d->ntap); break;
    }
#undef HALO_TILES
}

static void direct_run(const Direct *d) {
    const int cob = d->hoff ? HC_COB : DC_COB, pvt = d->hoff ? HC_PV : DC_PV;
    const int ncb = (d->cout + cob - 1) / cob;
    /* work items of DC_TILES_PER_TASK tiles, fewer for small batches so each thread gets several (the
     * threads compute_set_threads set, through omp_set_num_threads); the grouping does not change any
     * sum, so results stay thread-count independent */
    size_t task_vecs = (size_t)pvt * DC_TILES_PER_TASK;
    while (task_vecs > (size_t)pvt && (d->nv + task_vecs - 1) / task_vecs < 4 * (size_t)omp_get_max_threads())
        task_vecs -= pvt;
    const size_t ntasks = (d->nv + task_vecs - 1) / task_vecs;
    #pragma omp parallel for schedule(static)
    for (size_t task = 0; task < ntasks; task++) {
        const size_t va = task * task_vecs, vb = va + task_vecs < d->nv ? va + task_vecs : d->nv;
        for (int cb = 0; cb < ncb; cb++) {
            size_t v = va;
            if (d->hoff) {
                direct_halo_tiles(d, cb, va, vb);
                continue;
            }
            if (d->ntap == 9) {
                for (; v + DC_PV <= vb; v += DC_PV) direct_tile(d, cb, v, DC_PV, 9);
                for (; v < vb; v++) direct_tile(d, cb, v, 1, 9);
            } else if (d->ntap == 1) {   /* 1x1 / stride 2 */
                for (; v + DC_PV <= vb; v += DC_PV) direct_tile(d, cb, v, DC_PV, 1);
                for (; v < vb; v++) direct_tile(d, cb, v, 1, 1);
            } else {
                for (; v + DC_PV <= vb; v += DC_PV) direct_tile(d, cb, v, DC_PV, d->ntap);
                for (; v < vb; v++) direct_tile(d, cb, v, 1, d->ntap);
            }
        }
    }
}

static vmask tail_mask(size_t P) {
    const unsigned rem = (unsigned)(P % VW);
    return vmask_from_bits(rem ? (1u << rem) - 1 : VMASK_BITS_ALL);
}

/* Weight gradient, direct:  dW[co][ci][t] += sum_p dY[co][p] * X_ci[p + off(t)]  (masked as above). A
 * reduction over all pixels; the register tile is DW_COB output channels x 3 (ci, tap) columns (24 zmm or 12
 * ymm accumulators, each summing VW pixel lanes): per pixel vector it loads DW_COB dY vectors and 3 shifted
 * X vectors for 3 * DW_COB FMAs. For 3x3 / stride 1 the 3 columns are one kernel row of one input channel.
 *
 * Blocking. The pixels run in chunks of DW_SPAN vectors; a work item is one chunk x one co block x a group
 * of up to DW_GROUP column triples. Streaming the DW_COB dY rows, one plane apart, for every triple would
 * put 8 of the 11 loads per 24 FMAs on rows that alias in the caches, so the item first packs its chunk of
 * the DW_COB dY rows vector-interleaved into one buffer (256 KiB with AVX-512, 64 with AVX2: it streams from
 * L2; one pointer for all rows, which keeps the kernel loop free of register spills) and then runs each
 * triple over the whole chunk with its accumulators in registers. Measured on Zen 4 this beat sub-blocks
 * of 32 vectors that stayed in L1 with the accumulators parked in memory between them (3-8% on the 32- and
 * 64-channel layers, where the parking, the per-span set-up and re-packing dY per group cost more than
 * L2 bandwidth). Every lane sums its pixels of the chunk in ascending order; at the end of the chunk the
 * lanes are reduced (fixed tree) into the chunk's partial sums, which are folded into a double buffer in
 * chunk order. No sum depends on which thread runs which item. */
typedef struct {
    const float *dy, *x;     /* dY channel co at dy + co * dy_cs; X channel ci at x + ci * x_cs */
    const mask_entry *masks; /* [period][9] */
    const int32_t *hoff;     /* halo path: pixel vector v of X reads x + hoff[v] + off[t]; NULL otherwise */
    double *acc;             /* [cout][cin][kk] */
    float *part;             /* [chunk][cout][cin][kk]: each chunk's sums */
    size_t dy_cs, x_cs, nv;
    int cin, cout, kk, period, ntap;
    vmask tail;
    ptrdiff_t off[9];
    int mk[9], widx[9];
} DirectDw;

/* acc[c][k] += dY vector c of the packed block * X column k, for the DW_COB channels of one pixel vector. */
static inline __attribute__((always_inline)) void dw_fma(vec acc[DW_COB][3], const float *blk, vec x0, vec x1,
                                                         vec x2) {
    #pragma GCC unroll 16
    for (int c = 0; c < DW_COB; c++) {
        vec g = VEC_LOAD(blk + c * VW);
        /* keep g in a register: GCC would otherwise fold this load into each of the 3 FMAs below as a
         * memory operand, 27 loads per 24 FMAs instead of 11 */
        __asm__("" : "+v"(g));
        acc[c][0] = VEC_FMADD(g, x0, acc[c][0]);
        acc[c][1] = VEC_FMADD(g, x1, acc[c][1]);
        acc[c][2] = VEC_FMADD(g, x2, acc[c][2]);
    }
}

/* part[c][k] += sum over nv pixel vectors of dY * X, lane by lane: dY from the packed sub-block blk
 * ([vector][DW_COB][VW]), X from rows xr[k] with lane masks read from mr[k] (one row of 9 per vector, the
 * rows running on without wrapping, see build_masks). The kernel's inner loop: one pointer for all DW_COB
 * dY rows, so the 3 * DW_COB accumulators, 3 X vectors and the dY vector stay in registers (the batch's
 * tail is ANDed into the masks by the caller: on AVX2 a tail vector would take a 17th ymm register). Kept
 * out of line so the register allocator sees it alone. */
static __attribute__((noinline)) void dw_span(vec part[DW_COB][3], const float *blk, const float *xr0,
                                              const float *xr1, const float *xr2, const mask_entry *mr0,
                                              const mask_entry *mr1, const mask_entry *mr2, size_t nv) {
    vec acc[DW_COB][3];
    #pragma GCC unroll 16
    for (int c = 0; c < DW_COB; c++)
        #pragma GCC unroll 16
        for (int k = 0; k < 3; k++) acc[c][k] = part[c][k];
    for (size_t p = 0, u = 0; p < nv * VW; p += VW, u += 9, blk += DW_COB * VW) {
        const vec x0 = VEC_MASKZ_LOADU(VMASK_AT(mr0 + u), xr0 + p);
        const vec x1 = VEC_MASKZ_LOADU(VMASK_AT(mr1 + u), xr1 + p);
        const vec x2 = VEC_MASKZ_LOADU(VMASK_AT(mr2 + u), xr2 + p);
        dw_fma(acc, blk, x0, x1, x2);
    }
    #pragma GCC unroll 16
    for (int c = 0; c < DW_COB; c++)
        #pragma GCC unroll 16
        for (int k = 0; k < 3; k++) part[c][k] = acc[c][k];
}

/* dw_span on the halo path: X vector v of column k at xrk + hoff[v], a plain load, all lanes valid. */
static __attribute__((noinline)) void dw_span_halo(vec part[DW_COB][3], const float *blk, const float *xr0,
                                                   const float *xr1, const float *xr2, const int32_t *hoff,
                                                   size_t nv) {
    vec acc[DW_COB][3];
    #pragma GCC unroll 16
    for (int c = 0; c < DW_COB; c++)
        #pragma GCC unroll 16
        for (int k = 0; k < 3; k++) acc[c][k] = part[c][k];
    for (size_t v = 0; v < nv; v++, blk += DW_COB * VW) {
        const ptrdiff_t o = hoff[v];
        const vec x0 = VEC_LOADU(xr0 + o), x1 = VEC_LOADU(xr1 + o), x2 = VEC_LOADU(xr2 + o);
        dw_fma(acc, blk, x0, x1, x2);
    }
    #pragma GCC unroll 16
    for (int c = 0; c < DW_COB; c++)
        #pragma GCC unroll 16
        for (int k = 0; k < 3; k++) part[c][k] = acc[c][k];
}

/* part[c][k] += sum over pixel vectors va .. vb (at most DW_SPAN) of dY (packed in blk) * (column col0 + k
 * of X), lane by lane; u = va % period, the mask table row of vector va. A column past the last one
 * repeats the last (its sums are stored nowhere). */
static void direct_dw_tile(const DirectDw *d, const float *blk, int col0, vec part[DW_COB][3], size_t va,
                           size_t vb, size_t u) {
    const float *xr[3];
    const mask_entry *mr[3];
    for (int k = 0; k < 3; k++) {
        const int col = col0 + k < d->cin * d->ntap ? col0 + k : d->cin * d->ntap - 1;
        const int ci = col / d->ntap, t = col % d->ntap;
        xr[k] = d->x + (size_t)ci * d->x_cs + d->off[t] + (d->hoff ? 0 : va * VW);
        mr[k] = d->masks + u * 9 + d->mk[t];
    }
    if (d->hoff) {
        dw_span_halo(part, blk, xr[0], xr[1], xr[2], d->hoff + va, vb - va);
        return;
    }
    const size_t vfull = vb < d->nv - 1 ? vb : d->nv - 1;   /* vectors before vfull have all VW lanes */
    if (va < vfull) dw_span(part, blk, xr[0], xr[1], xr[2], mr[0], mr[1], mr[2], vfull - va);
    if (vb == d->nv) {   /* the batch's last vector, lanes past P masked off */
        const size_t o = vb - 1 - va;
        mask_entry last[3];
        for (int k = 0; k < 3; k++) mask_entry_put(&last[k], VMASK_AND(VMASK_AT(mr[k] + o * 9), d->tail));
        dw_span(part, blk + o * DW_COB * VW, xr[0] + o * VW, xr[1] + o * VW, xr[2] + o * VW, &last[0],
                &last[1], &last[2], 1);
    }
}

/* One work item: co block cb, column triples tr0 .. tr1, the chunk's pixel vectors va .. vb (at most
 * DW_SPAN). The item packs its DW_COB dY rows of the chunk vector-interleaved (lanes past P zero) into blk,
 * then runs each triple over the whole chunk with its accumulators in registers. */
static void direct_dw_task(const DirectDw *d, int cb, int tr0, int tr1, size_t chunk) {
    const size_t va = chunk * DW_SPAN, vb = va + DW_SPAN < d->nv ? va + DW_SPAN : d->nv;
    const float *dyr[DW_COB];
    const int nco = d->cout - cb * DW_COB < DW_COB ? d->cout - cb * DW_COB : DW_COB;
    for (int c = 0; c < DW_COB; c++) dyr[c] = d->dy + (size_t)(cb * DW_COB + c) * d->dy_cs;
    _Alignas(64) float blk[DW_SPAN][DW_COB][VW];
    for (int c = 0; c < DW_COB; c++)
        for (size_t v = va; v < vb; v++) {
            const vmask lanes = v == d->nv - 1 ? d->tail : VMASK_ALL;
            VEC_STORE(blk[v - va][c], c < nco ? VEC_MASKZ_LOADU(lanes, dyr[c] + v * VW) : VEC_ZERO());
        }
    const size_t u = va % (size_t)d->period;
    float *out = d->part + chunk * (size_t)d->cout * d->cin * d->kk;
    for (int tr = tr0; tr < tr1; tr++) {
        vec part[DW_COB][3];
        for (int c = 0; c < DW_COB; c++)
            for (int k = 0; k < 3; k++) part[c][k] = VEC_ZERO();
        direct_dw_tile(d, &blk[0][0][0], tr * 3, part, va, vb, u);
        for (int k = 0; k < 3; k++) {
            const int col = tr * 3 + k;
            if (col >= d->cin * d->ntap) break;
            const int ci = col / d->ntap, t = col % d->ntap;
            for (int c = 0; c < nco; c++)
                out[((size_t)(cb * DW_COB + c) * d->cin + ci) * d->kk + d->widx[t]] = VEC_REDUCE_ADD(part[c][k]);
        }
    }
}

/* Work items are (chunk, co block, group of column triples), each writing its own partial sums, so they
 * run in any order on any thread (dynamic schedule: no barrier per chunk, and a thread the machine slows
 * down does not hold the other back); then the chunks' partial sums are folded into the double buffer in
 * chunk order. */
static void direct_dw_run(const DirectDw *d) {
    const int ncb = (d->cout + DW_COB - 1) / DW_COB, ntriples = (d->cin * d->ntap + 2) / 3,
              ngroups = (ntriples + DW_GROUP - 1) / DW_GROUP, nitems = ncb * ngroups;
    const int nchunks = (int)((d->nv + DW_SPAN - 1) / DW_SPAN);
    const size_t nw = (size_t)d->cout * d->cin * d->kk;
    #pragma omp parallel
    {
        #pragma omp for schedule(dynamic)
        for (int w = 0; w < nchunks * nitems; w++) {
            const int item = w % nitems, grp = item % ngroups;
            direct_dw_task(d, item / ngroups, grp * ntriples / ngroups, (grp + 1) * ntriples / ngroups,
                           (size_t)(w / nitems));
        }
        #pragma omp for schedule(static)
        for (size_t i = 0; i < nw; i++) {
            double sum = d->acc[i];
            for (int c = 0; c < nchunks; c++) sum += d->part[(size_t)c * nw + i];
            d->acc[i] = sum;
        }
    }
}

/* X of images n0 .. n0 + nc bordered for the halo path (stride 1: halo_fill, stride 2: halo_split), and
 * the offsets of its pixel vectors */
static void halo_input(float *halo, int32_t *hoff, const float *x, ConvShape s, const Geometry *geo, int n, int h,
                       int w, int n0, int nc) {
    if (s.stride == 1)
        halo_fill(halo, x, s.cin, n, h, w, n0, nc);
    else
        halo_split(halo, x, s.cin, geo->G, n, h, w, n0, nc, geo->ho, geo->wo);
    halo_offsets(hoff, geo->ho, geo->wo, nc);
}

/* Where tap tp reads X relative to the output pixel: in the bordered planes of the halo path, or in the
 * planes of P = nc * ho * wo pixels (the stride-1 input itself) of the masked path. */
static ptrdiff_t tap_offset(Tap tp, const Geometry *geo, int nc, int halo) {
    const size_t plane = (size_t)nc * (halo ? halo_image(geo->ho, geo->wo) : (size_t)geo->ho * geo->wo);
    return (ptrdiff_t)tp.g * (ptrdiff_t)plane + tp.dy * (geo->wo + (halo ? 2 : 0)) + tp.dx;
}

static void direct_forward(float *y, const float *x, const float *weight, const float *bias, int n, int h,
                           int w, ConvShape s, float *scratch, const float *addend) {
    const Geometry geo = make_geometry(s, h, w);
    const DirectLayout lay = direct_layout(s, n, h, w);
    mask_entry *masks = (mask_entry *)(scratch + lay.masks);
    float *wp = scratch + lay.packed, *planes = scratch + lay.planes;
    int32_t *hoff = (int32_t *)(scratch + lay.hoff);
    const int halo = uses_halo(s, geo.wo);
    const int kk = s.k * s.k, cob = halo ? HC_COB : DC_COB, ncb = (s.cout + cob - 1) / cob;
    build_masks(masks, geo.ho, geo.wo, geo.period);
    for (int cb = 0; cb < ncb; cb++)
        for (int ci = 0; ci < s.cin; ci++)
            for (int t = 0; t < geo.ntap; t++)
                for (int c = 0; c < cob; c++) {
                    const int co = cb * cob + c;
                    wp[(((size_t)cb * s.cin + ci) * geo.ntap + t) * cob + c] =
                        co < s.cout ? weight[((size_t)co * s.cin + ci) * kk + geo.tap[t].widx] : 0.0f;
                }
    const size_t ohw = (size_t)geo.ho * geo.wo, hw = (size_t)h * w;
    const int nc_max = direct_chunk_images(s, n, geo.ho, geo.wo);
    for (int n0 = 0; n0 < n; n0 += nc_max) {
        const int nc = n - n0 < nc_max ? n - n0 : nc_max;
        const size_t P = (size_t)nc * ohw;
        Direct d = {0};
        if (halo) {
            halo_input(planes, hoff, x, s, &geo, n, h, w, n0, nc);
            d.src = planes;
            d.src_cs = (size_t)geo.G * nc * halo_image(geo.ho, geo.wo);
            d.hoff = hoff;
        } else if (s.stride == 1) {
            d.src = x + n0 * hw;
            d.src_cs = (size_t)n * hw;
        } else {
            split_planes(planes, x, s.cin, geo.G, n, h, w, n0, nc, geo.ho, geo.wo);
            d.src = planes;
            d.src_cs = (size_t)geo.G * P;
        }
        d.dst = y + n0 * ohw;
        d.dst_cs = (size_t)n * ohw;
        d.wp = wp;
        d.bias = bias;
        d.addend = addend ? addend + n0 * ohw : NULL;
        d.masks = masks;
        d.nv = (P + VW - 1) / VW;
        d.cin = s.cin;
        d.cout = s.cout;
        d.period = geo.period;
        d.ntap = geo.ntap;
        d.tail = tail_mask(P);
        for (int t = 0; t < geo.ntap; t++) {
            const Tap tp = geo.tap[t];
            d.off[t] = tap_offset(tp, &geo, nc, halo);
            d.mk[t] = (tp.dy + 1) * 3 + tp.dx + 1;
        }
        direct_run(&d);
    }
}

/* The input gradient's weights, one block per plane g: [g][ci block][co][taps of plane g][cob]. The
 * taps run in reverse, so that the negated shifts (read offsets) ascend as in the forward pass: measured,
 * descending offsets made the 16->16 32x32 input gradient nearly twice as slow as the forward pass.
 * plane_wp[g]: where plane g's block starts in wp; plane_t0[g] .. plane_t0[g + 1]: its taps. */
static void pack_input_grad_weights(float *wp, const float *weight, ConvShape s, const Geometry *geo, int cob,
                                    size_t plane_wp[4], int plane_t0[5]) {
    const int kk = s.k * s.k, ncb = (s.cin + cob - 1) / cob;
    size_t at = 0;
    for (int g = 0; g < geo->G; g++) {
        int t0 = plane_t0[g], t1 = t0;
        while (t1 < geo->ntap && geo->tap[t1].g == g) t1++;
        plane_t0[g + 1] = t1;
        plane_wp[g] = at;
        const int nt = t1 - t0;
        for (int cb = 0; cb < ncb; cb++)
            for (int co = 0; co < s.cout; co++)
                for (int t = 0; t < nt; t++)
                    for (int c = 0; c < cob; c++) {
                        const int ci = cb * cob + c;
                        wp[at + (((size_t)cb * s.cout + co) * nt + t) * cob + c] =
                            ci < s.cin ? weight[((size_t)co * s.cin + ci) * kk + geo->tap[t1 - 1 - t].widx] : 0.0f;
                    }
        at += (size_t)ncb * s.cout * nt * cob;
    }
}

/* The weight gradient of images n0 .. n0 + nc, accumulated into the double buffer (see direct_dw_run). */
static void direct_dw_chunk(const float *dy, const float *x, float *scratch, const DirectLayout *lay,
                            const Geometry *geo, ConvShape s, int n, int h, int w, int n0, int nc) {
    const size_t ohw = (size_t)geo->ho * geo->wo, hw = (size_t)h * w, P = (size_t)nc * ohw;
    const int halo = uses_halo(s, geo->wo);
    float *planes = scratch + lay->planes;
    int32_t *hoff = (int32_t *)(scratch + lay->hoff);
    DirectDw dw = {0};
    dw.dy = dy + n0 * ohw;
    dw.dy_cs = (size_t)n * ohw;
    if (halo) {
        halo_input(planes, hoff, x, s, geo, n, h, w, n0, nc);
        dw.x = planes;
        dw.x_cs = (size_t)geo->G * nc * halo_image(geo->ho, geo->wo);
        dw.hoff = hoff;
    } else if (s.stride == 1) {
        dw.x = x + n0 * hw;
        dw.x_cs = (size_t)n * hw;
    } else {
        split_planes(planes, x, s.cin, geo->G, n, h, w, n0, nc, geo->ho, geo->wo);
        dw.x = planes;
        dw.x_cs = (size_t)geo->G * P;
    }
    dw.masks = (const mask_entry *)(scratch + lay->masks);
    dw.acc = (double *)(scratch + lay->acc);
    dw.part = scratch + lay->part;
    dw.nv = (P + VW - 1) / VW;
    dw.cin = s.cin;
    dw.cout = s.cout;
    dw.kk = s.k * s.k;
    dw.period = geo->period;
    dw.ntap = geo->ntap;
    dw.tail = tail_mask(P);
    for (int t = 0; t < geo->ntap; t++) {
        const Tap tp = geo->tap[t];
        dw.off[t] = tap_offset(tp, geo, nc, halo);
        dw.mk[t] = (tp.dy + 1) * 3 + tp.dx + 1;
        dw.widx[t] = tp.widx;
    }
    direct_dw_run(&dw);
}

/* One pass over chunks of images: each chunk's weight gradient, then its input gradient, through the same
 * scratch planes (stride 2) or halo buffer (X for the weight gradient, then dY for the input gradient). */
static void direct_backward(float *dx, const float *addend, float *dweight, const float *dy, const float *x,
                            const float *weight, int n, int h, int w, ConvShape s, float *scratch) {
    const Geometry geo = make_geometry(s, h, w);
    const DirectLayout lay = direct_layout(s, n, h, w);
    mask_entry *masks = (mask_entry *)(scratch + lay.masks);
    double *acc = (double *)(scratch + lay.acc);
    float *wp = scratch + lay.packed, *planes = scratch + lay.planes, *dxplanes = scratch + lay.dxplanes;
    int32_t *hoff = (int32_t *)(scratch + lay.hoff);
    const int halo = uses_halo(s, geo.wo), kk = s.k * s.k;
    build_masks(masks, geo.ho, geo.wo, geo.period);
    const size_t nw = (size_t)s.cout * s.cin * kk;
    memset(acc, 0, sizeof(double) * nw);
    size_t plane_wp[4] = {0};
    int plane_t0[5] = {0};
    if (dx) pack_input_grad_weights(wp, weight, s, &geo, halo ? HC_COB : DC_COB, plane_wp, plane_t0);
    const size_t ohw = (size_t)geo.ho * geo.wo, hw = (size_t)h * w;
    const int nc_max = direct_chunk_images(s, n, geo.ho, geo.wo);
    for (int n0 = 0; n0 < n; n0 += nc_max) {
        const int nc = n - n0 < nc_max ? n - n0 : nc_max;
        const size_t P = (size_t)nc * ohw;
        direct_dw_chunk(dy, x, scratch, &lay, &geo, s, n, h, w, n0, nc);
        if (!dx) continue;
        /* dY into the halo buffer, which the weight gradient has finished with (the offsets stay: same grid) */
        if (halo) halo_fill(planes, dy, s.cout, n, geo.ho, geo.wo, n0, nc);
        /* input gradient plane by plane: the taps of plane g in reverse, shifts negated, over dY's cout channels */
        for (int g = 0; g < geo.G; g++) {
            Direct d = {0};
            d.src = dy + n0 * ohw;
            d.src_cs = (size_t)n * ohw;
            if (halo) {
                d.src = planes;
                d.src_cs = (size_t)nc * halo_image(geo.ho, geo.wo);
                d.hoff = hoff;
            }
            if (s.stride == 1) {
                d.dst = dx + n0 * hw;
                d.dst_cs = (size_t)n * hw;
                d.addend = addend ? addend + n0 * hw : NULL;
            } else {
                d.dst = dxplanes + (size_t)g * P;
                d.dst_cs = (size_t)geo.G * P;
            }
            d.wp = wp + plane_wp[g];
            d.masks = masks;
            d.nv = (P + VW - 1) / VW;
            d.cin = s.cout;
            d.cout = s.cin;
            d.period = geo.period;
            d.ntap = plane_t0[g + 1] - plane_t0[g];
            d.tail = tail_mask(P);
            for (int t = 0; t < d.ntap; t++) {
                const Tap tp = geo.tap[plane_t0[g + 1] - 1 - t];
                d.off[t] = -(ptrdiff_t)(tp.dy * (geo.wo + (halo ? 2 : 0)) + tp.dx);
                d.mk[t] = (1 - tp.dy) * 3 + 1 - tp.dx;
            }
            direct_run(&d);
        }
        if (s.stride == 2)
            merge_planes(dx, addend, dxplanes, s.cin, geo.G, n, h, w, n0, nc, geo.ho, geo.wo);
    }
    for (size_t i = 0; i < nw; i++) dweight[i] += (float)acc[i];
}

static size_t direct_scratch_floats(ConvShape s, int n, int h, int w) { return direct_layout(s, n, h, w).total; }

#define ISA_NAME_STRING(isa) #isa
#define ISA_NAME(isa) ISA_NAME_STRING(isa)

const ConvDirectKernels CONV_DIRECT_TABLE(ISA) = {ISA_NAME(ISA), direct_scratch_floats, direct_forward, direct_backward};
