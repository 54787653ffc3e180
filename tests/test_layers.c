/* Layer tests: (a) central finite differences of every backward pass, (b) every optimized kernel
 * against a plain reference loop written here, (c) bitwise-identical results for 1 and 2 threads where
 * the kernel promises it (BN, the small layers, the direct conv kernels), 1e-6 for conv through BLIS (it
 * may split its sums differently), (d) the choice of kernels. The conv tests run once on every kernel path
 * this CPU runs (avx512, avx2, generic: conv_select_isa), so one machine checks all it can.
 *
 * Finite differences: the loss is L = sum(r * y) in double with a fixed random r, so dL/dy = r is the
 * upstream gradient. Every kernel computes in float, so the step is 1e-2 for layers linear in the
 * perturbed value (no truncation error, only float rounding of y divided by the step) and 1e-3 for batch
 * normalization (curved: the step trades truncation against rounding). The step taken is the float
 * difference actually stored. Tolerance (FD_TOL = 1e-2): ||fd - analytic|| <= 1e-2 ||analytic|| over
 * the checked entries, and per entry |fd - analytic| <= 1e-2 (|analytic| + rms(analytic)).
 *
 * References: double-precision loops; tolerance REF_TOL = 1e-5 as ||kernel - ref|| / ||ref|| per
 * output tensor (float kernels accumulate ~1e-7 relative error per rounding; 1e-5 leaves room for long
 * sums yet catches any indexing slip, which shows as O(1)). */
#include <check.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check_main.h"
#include "resnet/batchnorm.h"
#include "resnet/conv.h"
#include "resnet/layers.h"
#include "resnet/peak.h"
#include "resnet/util.h"

#define FD_TOL 1e-2
#define REF_TOL 1e-5
#define CONV_THREAD_TOL 1e-6
#define FD_MAX_ENTRIES 80    /* entries per tensor checked by finite differences (all when fewer) */
#define CANARY 64            /* floats of guard band after every kernel-written buffer */
#define CANARY_VALUE -12345.678f

/* ---------------------------------------------------------------- helpers */

/* splitmix64: the tests need reproducible draws, not the project's counter-based generator. */
typedef struct { uint64_t s; } TRng;

static uint64_t trng_next(TRng *r) {
    uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static double trng_uniform(TRng *r, double lo, double hi) {
    return lo + (hi - lo) * ((double)(trng_next(r) >> 11) * 0x1.0p-53);
}

/* integer in [lo, hi] */
static int trng_int(TRng *r, int lo, int hi) { return lo + (int)(trng_next(r) % (uint64_t)(hi - lo + 1)); }

/* n floats followed by CANARY guard floats set to CANARY_VALUE */
static float *falloc(size_t n) {
    float *p = rn_alloc((n + CANARY) * sizeof(float));
    ck_assert_ptr_nonnull(p);
    for (size_t i = 0; i < CANARY; i++) p[n + i] = CANARY_VALUE;
    return p;
}

static void check_canary(const float *p, size_t n, const char *what) {
    for (size_t i = 0; i < CANARY; i++)
        ck_assert_msg(p[n + i] == CANARY_VALUE, "%s: wrote past its end (guard float %zu)", what, i);
}

static double *dalloc(size_t n) {
    double *p = rn_alloc((n ? n : 1) * sizeof(double));
    ck_assert_ptr_nonnull(p);
    return p;
}

static void fill(float *a, size_t n, double lo, double hi, TRng *r) {
    for (size_t i = 0; i < n; i++) a[i] = (float)trng_uniform(r, lo, hi);
}

static float *rand_array(size_t n, double lo, double hi, TRng *r) {
    float *a = falloc(n);
    fill(a, n, lo, hi, r);
    return a;
}

/* sum r[i] * y[i] in double: the finite-difference loss */
static double dotd(const float *r, const float *y, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += (double)r[i] * (double)y[i];
    return s;
}

/* ||a - ref|| / ||ref|| with a float, ref double; the absolute norm when ref is zero */
static double relerr(const float *a, const double *ref, size_t n) {
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < n; i++) {
        const double d = (double)a[i] - ref[i];
        num += d * d;
        den += ref[i] * ref[i];
    }
    return den > 0.0 ? sqrt(num / den) : sqrt(num);
}

static double relerr_ff(const float *a, const float *b, size_t n) {
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < n; i++) {
        const double d = (double)a[i] - (double)b[i];
        num += d * d;
        den += (double)b[i] * (double)b[i];
    }
    return den > 0.0 ? sqrt(num / den) : sqrt(num);
}

#define ASSERT_REL(a, ref, n, tol, ...)                                                          \
    do {                                                                                         \
        const double e_ = relerr((a), (ref), (n));                                               \
        if (!(e_ <= (tol))) {                                                                    \
            char m_[512];                                                                        \
            snprintf(m_, sizeof m_, __VA_ARGS__);                                                \
            ck_abort_msg("%s: relative error %.3e > %.1e", m_, e_, (double)(tol));               \
        }                                                                                        \
    } while (0)

/* Finite-difference check of the gradient of loss() with respect to p [n] against analytic [n].
 * loss(ctx) must run the forward pass with the current p and return sum(r * y). */
typedef double (*LossFn)(void *ctx);

static void fd_check(const char *what, LossFn loss, void *ctx, float *p, size_t n, const float *analytic,
                     float step, TRng *r) {
    const size_t nchk = n <= FD_MAX_ENTRIES ? n : FD_MAX_ENTRIES;
    double *fd = dalloc(nchk), *an = dalloc(nchk);
    size_t *idx = malloc((nchk ? nchk : 1) * sizeof(size_t));
    for (size_t j = 0; j < nchk; j++) {
        const size_t i = n <= FD_MAX_ENTRIES ? j : (size_t)(trng_next(r) % n);
        const float orig = p[i];
        p[i] = orig + step;
        const double up = p[i], lp = loss(ctx);
        p[i] = orig - step;
        const double dn = p[i], lm = loss(ctx);
        p[i] = orig;
        idx[j] = i;
        fd[j] = (lp - lm) / (up - dn);
        an[j] = analytic[i];
    }
    double num = 0.0, den = 0.0;
    for (size_t j = 0; j < nchk; j++) {
        num += (fd[j] - an[j]) * (fd[j] - an[j]);
        den += an[j] * an[j];
    }
    const double rms = nchk ? sqrt(den / (double)nchk) : 0.0;
    const double rel = den > 0.0 ? sqrt(num / den) : sqrt(num);
    ck_assert_msg(rel <= FD_TOL, "%s: finite-difference relative error %.3e > %.1e", what, rel, FD_TOL);
    for (size_t j = 0; j < nchk; j++)
        ck_assert_msg(fabs(fd[j] - an[j]) <= FD_TOL * (fabs(an[j]) + rms) + 1e-9,
                      "%s: entry %zu: finite difference %.6g, analytic %.6g (rms %.3g)", what, idx[j], fd[j],
                      an[j], rms);
    rn_free(fd);
    rn_free(an);
    free(idx);
}

static void setup_threads(void) { compute_set_threads(2); }

/* ---------------------------------------------------------------- kernel paths (conv_select_isa) */

/* Every path a build may have, fastest first; the tests run each one this CPU runs. */
static const char *const all_isas[] = {"avx512", "avx2", "generic"};
#define ALL_ISAS ((int)(sizeof all_isas / sizeof all_isas[0]))
static const char *isas[ALL_ISAS];   /* the ones this CPU runs, fastest first; "generic" last */
static int n_isas;

/* Asked of the CPU here, apart from conv.c, so that the dispatch is checked against it. */
static int cpu_runs(const char *isa) {
#if defined(__x86_64__)
    __builtin_cpu_init();
    const int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (strcmp(isa, "avx512") == 0)
        return avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
    if (strcmp(isa, "avx2") == 0) return avx2;
#endif
    return strcmp(isa, "generic") == 0;
}

/* Back to the fastest path after a test that switched: Check runs each test in its own process, but not
 * under CK_FORK=no. */
static void restore_isa(void) { ck_assert_int_eq(conv_select_isa(NULL), 0); }

/* Switches the convolutions to path isas[i]. */
static const char *use_isa(int i) {
    ck_assert_msg(conv_select_isa(isas[i]) == 0, "conv_select_isa(%s): %s", isas[i], rn_last_error());
    const char *direct = conv_direct_isa();
    ck_assert_str_eq(direct ? direct : "generic", isas[i]);
    return isas[i];
}

/* ---------------------------------------------------------------- reference implementations */

static double wt_at(const float *wt, ConvShape s, int co, int ci, int kh, int kw) {
    return wt[(((size_t)co * s.cin + ci) * s.k + kh) * s.k + kw];
}

/* direct convolution, double: x [cin, n, h, w] -> y [cout, n, ho, wo] */
static void ref_conv_forward(double *y, const float *x, const float *wt, const float *bias, int n, int h,
                             int w, ConvShape s) {
    const int ho = conv_out_size(h, s.k, s.stride, s.pad), wo = conv_out_size(w, s.k, s.stride, s.pad);
    for (int co = 0; co < s.cout; co++)
        for (int i = 0; i < n; i++)
            for (int oy = 0; oy < ho; oy++)
                for (int ox = 0; ox < wo; ox++) {
                    double acc = bias ? bias[co] : 0.0;
                    for (int ci = 0; ci < s.cin; ci++)
                        for (int kh = 0; kh < s.k; kh++)
                            for (int kw = 0; kw < s.k; kw++) {
                                const int iy = oy * s.stride - s.pad + kh, ix = ox * s.stride - s.pad + kw;
                                if (iy < 0 || iy >= h || ix < 0 || ix >= w) continue;
                                acc += wt_at(wt, s, co, ci, kh, kw) *
                                       x[(((size_t)ci * n + i) * h + iy) * w + ix];
                            }
                    y[(((size_t)co * n + i) * ho + oy) * wo + ox] = acc;
                }
}

/* direct backward, double: dx = (overwritten), dw, db += */
static void ref_conv_backward(double *dx, double *dw, double *db, const float *dy, const float *x,
                              const float *wt, int n, int h, int w, ConvShape s) {
    const int ho = conv_out_size(h, s.k, s.stride, s.pad), wo = conv_out_size(w, s.k, s.stride, s.pad);
    memset(dx, 0, sizeof(double) * (size_t)s.cin * n * h * w);
    for (int co = 0; co < s.cout; co++)
        for (int i = 0; i < n; i++)
            for (int oy = 0; oy < ho; oy++)
                for (int ox = 0; ox < wo; ox++) {
                    const double g = dy[(((size_t)co * n + i) * ho + oy) * wo + ox];
                    db[co] += g;
                    for (int ci = 0; ci < s.cin; ci++)
                        for (int kh = 0; kh < s.k; kh++)
                            for (int kw = 0; kw < s.k; kw++) {
                                const int iy = oy * s.stride - s.pad + kh, ix = ox * s.stride - s.pad + kw;
                                if (iy < 0 || iy >= h || ix < 0 || ix >= w) continue;
                                const size_t xi = (((size_t)ci * n + i) * h + iy) * w + ix;
                                dx[xi] += g * wt_at(wt, s, co, ci, kh, kw);
                                dw[(((size_t)co * s.cin + ci) * s.k + kh) * s.k + kw] += g * x[xi];
                            }
                }
}

/* naive BN training forward in double: per channel mean, biased var, y (ReLU when relu) */
static void ref_bn_forward(double *y, double *mean, double *var, const float *x, const float *gamma,
                           const float *beta, int c, long m, int relu) {
    for (int ch = 0; ch < c; ch++) {
        const float *xr = x + (size_t)ch * m;
        double mu = 0.0, v = 0.0;
        for (long i = 0; i < m; i++) mu += xr[i];
        mu /= (double)m;
        for (long i = 0; i < m; i++) v += (xr[i] - mu) * (xr[i] - mu);
        v /= (double)m;
        mean[ch] = mu;
        var[ch] = v;
        const double rs = 1.0 / sqrt(v + (double)BN_EPS);
        for (long i = 0; i < m; i++) {
            double z = gamma[ch] * (xr[i] - mu) * rs + beta[ch];
            if (relu && z < 0.0) z = 0.0;
            y[(size_t)ch * m + i] = z;
        }
    }
}

/* naive BN backward in double from the exact statistics; mask from the kernel's y when relu */
static void ref_bn_backward(double *dx, double *dgamma, double *dbeta, const float *dy, const float *x,
                            const float *y, const float *gamma, int c, long m, int relu) {
    for (int ch = 0; ch < c; ch++) {
        const size_t off = (size_t)ch * m;
        double mu = 0.0, v = 0.0;
        for (long i = 0; i < m; i++) mu += x[off + i];
        mu /= (double)m;
        for (long i = 0; i < m; i++) v += (x[off + i] - mu) * (x[off + i] - mu);
        v /= (double)m;
        const double rs = 1.0 / sqrt(v + (double)BN_EPS);
        double sg = 0.0, sgx = 0.0;
        for (long i = 0; i < m; i++) {
            const double g = (!relu || y[off + i] > 0.0f) ? dy[off + i] : 0.0;
            sg += g;
            sgx += g * (x[off + i] - mu) * rs;
        }
        dbeta[ch] += sg;
        dgamma[ch] += sgx;
        for (long i = 0; i < m; i++) {
            const double g = (!relu || y[off + i] > 0.0f) ? dy[off + i] : 0.0;
            const double xh = (x[off + i] - mu) * rs;
            dx[off + i] = gamma[ch] * rs * (g - sg / (double)m - xh * sgx / (double)m);
        }
    }
}

/* ---------------------------------------------------------------- (a) finite differences: conv */

typedef struct {
    float *x, *wt, *bias, *y, *r, *scratch;
    int n, h, w;
    ConvShape s;
    size_t ny;
} ConvCtx;

static double conv_loss(void *p) {
    ConvCtx *c = p;
    conv_forward(c->y, c->x, c->wt, c->bias, c->n, c->h, c->w, c->s, c->scratch);
    return dotd(c->r, c->y, c->ny);
}

static void conv_fd_case(int cin, int cout, int n, int h, int w, int k, int stride, int pad, int with_bias,
                         uint64_t seed) {
    TRng rng = {seed};
    ConvShape s = {cin, cout, k, stride, pad};
    const int ho = conv_out_size(h, k, stride, pad), wo = conv_out_size(w, k, stride, pad);
    const size_t nx = (size_t)cin * n * h * w, nw = (size_t)cout * cin * k * k, ny = (size_t)cout * n * ho * wo;
    ConvCtx c = {rand_array(nx, -1, 1, &rng), rand_array(nw, -0.5, 0.5, &rng),
                 with_bias ? rand_array(cout, -0.5, 0.5, &rng) : NULL, falloc(ny), rand_array(ny, -1, 1, &rng),
                 falloc(conv_scratch_floats(s, n, h, w)), n, h, w, s, ny};
    float *dx = falloc(nx), *dw = falloc(nw), *db = falloc(cout);
    conv_backward(dx, dw, with_bias ? db : NULL, c.r, c.x, c.wt, n, h, w, s, c.scratch);
    char what[160];
    snprintf(what, sizeof what, "conv cin=%d cout=%d n=%d %dx%d k=%d stride=%d pad=%d bias=%d", cin, cout, n, h,
             w, k, stride, pad, with_bias);
    char sub[200];
    snprintf(sub, sizeof sub, "%s dx", what);
    fd_check(sub, conv_loss, &c, c.x, nx, dx, 1e-2f, &rng);
    snprintf(sub, sizeof sub, "%s dweight", what);
    fd_check(sub, conv_loss, &c, c.wt, nw, dw, 1e-2f, &rng);
    if (with_bias) {
        snprintf(sub, sizeof sub, "%s dbias", what);
        fd_check(sub, conv_loss, &c, c.bias, cout, db, 1e-2f, &rng);
    }
    rn_free(c.x); rn_free(c.wt); rn_free(c.bias); rn_free(c.y); rn_free(c.r); rn_free(c.scratch);
    rn_free(dx); rn_free(dw); rn_free(db);
}

START_TEST(fd_conv) {
    /* cin, cout, n, h, w, k, stride, pad, bias */
    static const int cases[][9] = {
        {3, 4, 2, 5, 7, 3, 1, 1, 1}, {3, 4, 2, 5, 7, 3, 1, 1, 0},   /* 3x3 stride 1 pad 1 */
        {2, 5, 1, 7, 5, 3, 2, 1, 1}, {4, 3, 3, 5, 7, 3, 2, 1, 0},   /* 3x3 stride 2 pad 1, odd sizes */
        {3, 6, 2, 5, 7, 1, 2, 0, 0}, {3, 6, 1, 6, 4, 1, 2, 0, 1},   /* 1x1 stride 2 pad 0 */
        {3, 2, 2, 4, 3, 1, 1, 0, 1},                                /* 1x1 stride 1: pointwise GEMM */
        {2, 3, 1, 1, 1, 3, 1, 1, 1},                                /* a 1x1 image, batch 1 */
        {1, 1, 1, 3, 3, 3, 1, 0, 1},                                /* no padding */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const int *q = cases[i];
        conv_fd_case(q[0], q[1], q[2], q[3], q[4], q[5], q[6], q[7], q[8], 100 + i);
    }
}
END_TEST

/* ---------------------------------------------------------------- (a) finite differences: batchnorm */

typedef struct {
    float *x, *gamma, *beta, *y, *mean, *rstd, *r;
    int c, relu;
    long m;
} BnCtx;

static double bn_loss(void *p) {
    BnCtx *b = p;
    batchnorm_forward_train(b->y, b->mean, b->rstd, NULL, b->x, b->gamma, b->beta, b->c, b->m, b->relu, NULL);
    return dotd(b->r, b->y, (size_t)b->c * b->m);
}

static int cmp_float(const void *a, const void *b) {
    const float u = *(const float *)a, v = *(const float *)b;
    return (u > v) - (u < v);
}

/* Places each channel's ReLU kink in the middle of the widest gap between its sorted inputs, so that
 * no pre-activation crosses zero under a step (the statistics move too, but by ~step/m). Redraws a
 * channel whose widest gap is under min_gap. */
static void bn_place_kinks(float *x, const float *gamma, float *beta, int c, long m, double min_gap, TRng *r) {
    float *sorted = malloc(sizeof(float) * (size_t)m);
    for (int ch = 0; ch < c; ch++) {
        float *xr = x + (size_t)ch * m;
        if (m < 2) { beta[ch] = 0.3f; continue; }
        double best = 0.0, x0 = 0.0;
        for (int attempt = 0; attempt < 1000 && best < min_gap; attempt++) {
            if (attempt) fill(xr, (size_t)m, -1, 1, r);
            memcpy(sorted, xr, sizeof(float) * (size_t)m);
            qsort(sorted, (size_t)m, sizeof(float), cmp_float);
            best = 0.0;
            for (long i = 0; i + 1 < m; i++)
                if (sorted[i + 1] - sorted[i] > best) {
                    best = sorted[i + 1] - sorted[i];
                    x0 = 0.5 * ((double)sorted[i] + sorted[i + 1]);
                }
        }
        ck_assert_msg(best >= min_gap, "could not draw a BN channel with a gap of %g", min_gap);
        double mu = 0.0, v = 0.0;
        for (long i = 0; i < m; i++) mu += xr[i];
        mu /= (double)m;
        for (long i = 0; i < m; i++) v += (xr[i] - mu) * (xr[i] - mu);
        v /= (double)m;
        /* z = gamma * (x - mu) * rstd + beta vanishes at x0 */
        beta[ch] = (float)(-(double)gamma[ch] * (x0 - mu) / sqrt(v + (double)BN_EPS));
    }
    free(sorted);
}

static void bn_fd_case(int c, int n, int hw, int relu, uint64_t seed) {
    TRng rng = {seed};
    const long m = (long)n * hw;
    const size_t nx = (size_t)c * m;
    BnCtx b = {rand_array(nx, -1, 1, &rng), rand_array(c, 0.5, 1.5, &rng), rand_array(c, -0.5, 0.5, &rng),
               falloc(nx), falloc(c), falloc(c), rand_array(nx, -1, 1, &rng), c, relu, m};
    for (int ch = 0; ch < c; ch++) if (ch % 2) b.gamma[ch] = -b.gamma[ch];   /* both signs of gamma */
    const double step = 1e-3;
    if (relu) bn_place_kinks(b.x, b.gamma, b.beta, c, m, 20 * step, &rng);
    float *dx = falloc(nx), *dg = falloc(c), *dbt = falloc(c);
    const double count = batchnorm_forward_train(b.y, b.mean, b.rstd, NULL, b.x, b.gamma, b.beta, c, m, relu, NULL);
    ck_assert_msg(count == (double)m, "batchnorm_forward_train returned count %g, expected %ld", count, m);
    batchnorm_backward(dx, dg, dbt, b.r, b.x, b.mean, b.rstd, b.gamma, b.beta, c, m, relu, NULL);
    char what[160], sub[200];
    snprintf(what, sizeof what, "batchnorm train c=%d n=%d hw=%d relu=%d", c, n, hw, relu);
    snprintf(sub, sizeof sub, "%s dx", what);
    fd_check(sub, bn_loss, &b, b.x, nx, dx, (float)step, &rng);
    snprintf(sub, sizeof sub, "%s dgamma", what);
    fd_check(sub, bn_loss, &b, b.gamma, c, dg, (float)step, &rng);
    snprintf(sub, sizeof sub, "%s dbeta", what);
    fd_check(sub, bn_loss, &b, b.beta, c, dbt, (float)step, &rng);
    rn_free(b.x); rn_free(b.gamma); rn_free(b.beta); rn_free(b.y); rn_free(b.mean); rn_free(b.rstd);
    rn_free(b.r); rn_free(dx); rn_free(dg); rn_free(dbt);
}

START_TEST(fd_batchnorm) {
    /* c, n, hw: batch 1, odd spatial sizes (5x7), a 1x1 map */
    static const int cases[][3] = {{3, 1, 35}, {2, 4, 1}, {4, 3, 15}, {1, 2, 6}, {2, 5, 9}};
    for (int relu = 0; relu <= 1; relu++)
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
            bn_fd_case(cases[i][0], cases[i][1], cases[i][2], relu, 200 + 10 * relu + i);
}
END_TEST

/* ---------------------------------------------------------------- (a) finite differences: small layers */

typedef struct { float *x, *y, *r; size_t n; } ReluCtx;

static double relu_loss(void *p) {
    ReluCtx *c = p;
    relu_forward(c->y, c->x, c->n);
    return dotd(c->r, c->y, c->n);
}

START_TEST(fd_relu) {
    TRng rng = {301};
    const size_t sizes[] = {1, 7, 200};
    for (size_t t = 0; t < 3; t++) {
        const size_t n = sizes[t];
        ReluCtx c = {falloc(n), falloc(n), rand_array(n, -1, 1, &rng), n};
        /* |x| in [0.1, 1]: a 1e-2 step never crosses the kink */
        for (size_t i = 0; i < n; i++) {
            const float v = (float)trng_uniform(&rng, 0.1, 1.0);
            c.x[i] = (trng_next(&rng) & 1) ? v : -v;
        }
        float *dx = falloc(n);
        relu_forward(c.y, c.x, n);
        relu_backward(dx, c.r, c.y, n);
        fd_check("relu dx", relu_loss, &c, c.x, n, dx, 1e-2f, &rng);
        rn_free(c.x); rn_free(c.y); rn_free(c.r); rn_free(dx);
    }
}
END_TEST

typedef struct { float *a, *b, *y, *r; size_t n; int inplace; } AddCtx;

static double add_loss(void *p) {
    AddCtx *c = p;
    if (c->inplace) {
        memcpy(c->y, c->a, sizeof(float) * c->n);
        add_inplace(c->y, c->b, c->n);
    } else {
        add_forward(c->y, c->a, c->b, c->n);
    }
    return dotd(c->r, c->y, c->n);
}

START_TEST(fd_add) {
    TRng rng = {302};
    for (int inplace = 0; inplace <= 1; inplace++) {
        const size_t n = 37;
        AddCtx c = {rand_array(n, -1, 1, &rng), rand_array(n, -1, 1, &rng), falloc(n), rand_array(n, -1, 1, &rng),
                    n, inplace};
        /* the backward of a sum hands dy to both operands unchanged */
        fd_check(inplace ? "add_inplace d(y)" : "add da", add_loss, &c, c.a, n, c.r, 1e-2f, &rng);
        fd_check(inplace ? "add_inplace dx" : "add db", add_loss, &c, c.b, n, c.r, 1e-2f, &rng);
        rn_free(c.a); rn_free(c.b); rn_free(c.y); rn_free(c.r);
    }
}
END_TEST

typedef struct { float *x, *y, *r; int c, n, hw; } PoolCtx;

static double pool_loss(void *p) {
    PoolCtx *c = p;
    avgpool_forward(c->y, c->x, c->c, c->n, c->hw);
    return dotd(c->r, c->y, (size_t)c->n * c->c);
}

START_TEST(fd_avgpool) {
    TRng rng = {303};
    static const int cases[][3] = {{3, 1, 35}, {4, 2, 1}, {2, 3, 16}};
    for (size_t t = 0; t < 3; t++) {
        const int ch = cases[t][0], n = cases[t][1], hw = cases[t][2];
        const size_t nx = (size_t)ch * n * hw, ny = (size_t)n * ch;
        PoolCtx c = {rand_array(nx, -1, 1, &rng), falloc(ny), rand_array(ny, -1, 1, &rng), ch, n, hw};
        float *dx = falloc(nx);
        avgpool_backward(dx, c.r, ch, n, hw);
        fd_check("avgpool dx", pool_loss, &c, c.x, nx, dx, 1e-2f, &rng);
        rn_free(c.x); rn_free(c.y); rn_free(c.r); rn_free(dx);
    }
}
END_TEST

typedef struct { float *x, *wt, *bias, *y, *r; int n, in, out; } LinCtx;

static double lin_loss(void *p) {
    LinCtx *c = p;
    linear_forward(c->y, c->x, c->wt, c->bias, c->n, c->in, c->out);
    return dotd(c->r, c->y, (size_t)c->n * c->out);
}

START_TEST(fd_linear) {
    TRng rng = {304};
    static const int cases[][3] = {{1, 64, 10}, {3, 7, 5}, {5, 1, 1}};
    for (size_t t = 0; t < 3; t++) {
        const int n = cases[t][0], in = cases[t][1], out = cases[t][2];
        LinCtx c = {rand_array((size_t)n * in, -1, 1, &rng), rand_array((size_t)out * in, -0.5, 0.5, &rng),
                    rand_array(out, -0.5, 0.5, &rng), falloc((size_t)n * out),
                    rand_array((size_t)n * out, -1, 1, &rng), n, in, out};
        float *dx = falloc((size_t)n * in), *dw = falloc((size_t)out * in), *db = falloc(out);
        linear_backward(dx, dw, db, c.r, c.x, c.wt, n, in, out);
        fd_check("linear dx", lin_loss, &c, c.x, (size_t)n * in, dx, 1e-2f, &rng);
        fd_check("linear dweight", lin_loss, &c, c.wt, (size_t)out * in, dw, 1e-2f, &rng);
        fd_check("linear dbias", lin_loss, &c, c.bias, out, db, 1e-2f, &rng);
        rn_free(c.x); rn_free(c.wt); rn_free(c.bias); rn_free(c.y); rn_free(c.r);
        rn_free(dx); rn_free(dw); rn_free(db);
    }
}
END_TEST

typedef struct { float *logits; int *labels; int n, classes; double denom; } XentCtx;

static double xent_loss(void *p) {
    XentCtx *c = p;
    return softmax_xent(NULL, c->logits, c->labels, c->n, c->classes, c->denom) / c->denom;
}

START_TEST(fd_softmax_xent) {
    TRng rng = {305};
    static const int cases[][2] = {{1, 10}, {4, 10}, {3, 2}, {2, 1}};
    for (size_t t = 0; t < 4; t++) {
        const int n = cases[t][0], classes = cases[t][1];
        const size_t nl = (size_t)n * classes;
        XentCtx c = {rand_array(nl, -3, 3, &rng), malloc(sizeof(int) * n), n, classes, 2.0 * n + 1};
        for (int i = 0; i < n; i++) c.labels[i] = trng_int(&rng, 0, classes - 1);
        c.logits[0] += 80.0f;   /* a large logit: exp must not overflow */
        float *d = falloc(nl);
        softmax_xent(d, c.logits, c.labels, n, classes, c.denom);
        check_canary(d, nl, "softmax_xent dlogits");
        fd_check("softmax_xent dlogits", xent_loss, &c, c.logits, nl, d, 1e-2f, &rng);
        rn_free(c.logits); free(c.labels); rn_free(d);
    }
}
END_TEST

typedef struct { float *x, *y, *r; int cin, cout, n, h, w, stride; size_t ny; } ShortCtx;

static double short_loss(void *p) {
    ShortCtx *c = p;
    shortcut_a_forward(c->y, c->x, c->cin, c->cout, c->n, c->h, c->w, c->stride);
    return dotd(c->r, c->y, c->ny);
}

/* shortcut output extent: every stride-th pixel, ceil(h / stride) (matches the strided conv branch) */
static int sc_out(int h, int stride) { return (h - 1) / stride + 1; }

START_TEST(fd_shortcut_a) {
    TRng rng = {306};
    /* cin, cout, n, h, w, stride */
    static const int cases[][6] = {{3, 7, 2, 5, 7, 2}, {4, 8, 1, 6, 6, 2}, {3, 3, 2, 5, 3, 1}, {2, 6, 1, 1, 1, 2}};
    for (size_t t = 0; t < 4; t++) {
        const int *q = cases[t];
        const size_t nx = (size_t)q[0] * q[2] * q[3] * q[4];
        const size_t ny = (size_t)q[1] * q[2] * sc_out(q[3], q[5]) * sc_out(q[4], q[5]);
        ShortCtx c = {rand_array(nx, -1, 1, &rng), falloc(ny), rand_array(ny, -1, 1, &rng), q[0], q[1], q[2], q[3],
                      q[4], q[5], ny};
        float *dx = rand_array(nx, 5, 6, &rng);   /* garbage: must be overwritten */
        shortcut_a_backward(dx, c.r, q[0], q[1], q[2], q[3], q[4], q[5]);
        check_canary(dx, nx, "shortcut_a_backward dx");
        fd_check("shortcut_a dx", short_loss, &c, c.x, nx, dx, 1e-2f, &rng);
        rn_free(c.x); rn_free(c.y); rn_free(c.r); rn_free(dx);
    }
}
END_TEST

/* ---------------------------------------------------------------- (b) conv against the direct loops */

static void conv_ref_case(int idx, TRng *rng, const char *isa) {
    ConvShape s;
    int n, h, w;
    do {
        s.cin = trng_int(rng, 1, 20);
        s.cout = trng_int(rng, 1, 20);
        s.k = trng_int(rng, 0, 1) ? 3 : 1;
        s.stride = trng_int(rng, 1, 2);
        s.pad = trng_int(rng, 0, 1);
        n = trng_int(rng, 1, 5);
        h = trng_int(rng, 1, 13);
        w = trng_int(rng, 1, 13);
    } while (h + 2 * s.pad < s.k || w + 2 * s.pad < s.k);
    const int with_bias = trng_int(rng, 0, 1);
    const int ho = conv_out_size(h, s.k, s.stride, s.pad), wo = conv_out_size(w, s.k, s.stride, s.pad);
    const size_t nx = (size_t)s.cin * n * h * w, nw = (size_t)s.cout * s.cin * s.k * s.k;
    const size_t ny = (size_t)s.cout * n * ho * wo, nscr = conv_scratch_floats(s, n, h, w);
    float *x = rand_array(nx, -1, 1, rng), *wt = rand_array(nw, -1, 1, rng), *bias = rand_array(s.cout, -1, 1, rng);
    float *dy = rand_array(ny, -1, 1, rng), *y = rand_array(ny, 7, 8, rng), *scr = falloc(nscr);
    float *dx = rand_array(nx, 7, 8, rng);
    float *dw = rand_array(nw, -1, 1, rng), *db = rand_array(s.cout, -1, 1, rng);
    double *ry = dalloc(ny), *rdx = dalloc(nx), *rdw = dalloc(nw), *rdb = dalloc(s.cout);
    for (size_t i = 0; i < nw; i++) rdw[i] = dw[i];   /* accumulated into */
    for (int i = 0; i < s.cout; i++) rdb[i] = db[i];
    float *dw2 = falloc(nw);
    memcpy(dw2, dw, sizeof(float) * nw);
    char what[200];
    snprintf(what, sizeof what, "%s conv case %d: cin=%d cout=%d k=%d stride=%d pad=%d n=%d h=%d w=%d bias=%d", isa,
             idx, s.cin, s.cout, s.k, s.stride, s.pad, n, h, w, with_bias);

    conv_forward(y, x, wt, with_bias ? bias : NULL, n, h, w, s, scr);
    ref_conv_forward(ry, x, wt, with_bias ? bias : NULL, n, h, w, s);
    check_canary(y, ny, what);
    check_canary(scr, nscr, what);
    ASSERT_REL(y, ry, ny, REF_TOL, "%s forward y", what);

    conv_backward(dx, dw, with_bias ? db : NULL, dy, x, wt, n, h, w, s, scr);
    ref_conv_backward(rdx, rdw, rdb, dy, x, wt, n, h, w, s);
    check_canary(dx, nx, what);
    check_canary(dw, nw, what);
    check_canary(db, s.cout, what);
    check_canary(scr, nscr, what);
    ASSERT_REL(dx, rdx, nx, REF_TOL, "%s backward dx", what);
    ASSERT_REL(dw, rdw, nw, REF_TOL, "%s backward dweight (accumulated)", what);
    if (with_bias) ASSERT_REL(db, rdb, s.cout, REF_TOL, "%s backward dbias (accumulated)", what);

    /* dx == NULL skips the input gradient and must leave dweight the same */
    conv_backward(NULL, dw2, NULL, dy, x, wt, n, h, w, s, scr);
    check_canary(scr, nscr, what);
    ASSERT_REL(dw2, rdw, nw, REF_TOL, "%s backward dx=NULL dweight", what);

    rn_free(x); rn_free(wt); rn_free(bias); rn_free(dy); rn_free(y); rn_free(scr); rn_free(dx); rn_free(dw);
    rn_free(db); rn_free(dw2); rn_free(ry); rn_free(rdx); rn_free(rdw); rn_free(rdb);
}

/* _i: the kernel path (isas[_i]), as in every conv test below that loops */
START_TEST(ref_conv_random) {
    const char *isa = use_isa(_i);
    TRng rng = {400};
    for (int i = 0; i < 150; i++) conv_ref_case(i, &rng, isa);
}
END_TEST

/* The shapes ResNet-20 itself runs, at small batches. 16 -> 16 at 32x32 with 9 images needs more
 * im2col than one scratch chunk holds (147456 floats per image), so the images are split in chunks; with
 * 57 images the AVX2 kernels' bordered copy (18496 floats per image, 14 a chunk) splits them too, 56 + 1,
 * and 16 -> 32 at stride 2 with 9 (bordered planes and input-gradient planes, 37120 floats per image, 7 a
 * chunk). 15x15 at stride 2: odd extents and 8x8 outputs, whole AVX2 vectors, so the bordered split meets
 * the edge. */
START_TEST(ref_conv_resnet_shapes) {
    const char *isa = use_isa(_i);
    TRng rng = {401};
    /* cin, cout, k, stride, pad, h, n */
    static const int cases[][7] = {{3, 16, 3, 1, 1, 32, 3}, {16, 16, 3, 1, 1, 32, 9}, {16, 32, 3, 2, 1, 32, 3},
                                   {32, 64, 3, 2, 1, 16, 3}, {64, 64, 3, 1, 1, 8, 3}, {16, 32, 1, 2, 0, 32, 2},
                                   {16, 16, 3, 1, 1, 32, 57}, {16, 32, 3, 2, 1, 32, 9}, {5, 7, 3, 2, 1, 15, 2},
                                   {5, 7, 1, 2, 0, 15, 3}};
    for (size_t t = 0; t < sizeof cases / sizeof cases[0]; t++) {
        const int *q = cases[t];
        ConvShape s = {q[0], q[1], q[2], q[3], q[4]};
        const int n = q[6], h = q[5], w = q[5];
        const int ho = conv_out_size(h, s.k, s.stride, s.pad), wo = conv_out_size(w, s.k, s.stride, s.pad);
        const size_t nx = (size_t)s.cin * n * h * w, nw = (size_t)s.cout * s.cin * s.k * s.k;
        const size_t ny = (size_t)s.cout * n * ho * wo, nscr = conv_scratch_floats(s, n, h, w);
        float *x = rand_array(nx, -1, 1, &rng), *wt = rand_array(nw, -0.2, 0.2, &rng), *dy = rand_array(ny, -1, 1, &rng);
        float *y = falloc(ny), *dx = falloc(nx), *dw = falloc(nw), *scr = falloc(nscr);
        double *ry = dalloc(ny), *rdx = dalloc(nx), *rdw = dalloc(nw), *rdb = dalloc(s.cout);
        conv_forward(y, x, wt, NULL, n, h, w, s, scr);
        ref_conv_forward(ry, x, wt, NULL, n, h, w, s);
        ASSERT_REL(y, ry, ny, REF_TOL, "%s resnet conv %d forward", isa, (int)t);
        conv_backward(dx, dw, NULL, dy, x, wt, n, h, w, s, scr);
        ref_conv_backward(rdx, rdw, rdb, dy, x, wt, n, h, w, s);
        check_canary(scr, nscr, "resnet conv scratch");
        ASSERT_REL(dx, rdx, nx, REF_TOL, "%s resnet conv %d dx", isa, (int)t);
        ASSERT_REL(dw, rdw, nw, REF_TOL, "%s resnet conv %d dweight", isa, (int)t);
        rn_free(x); rn_free(wt); rn_free(dy); rn_free(y); rn_free(dx); rn_free(dw); rn_free(scr);
        rn_free(ry); rn_free(rdx); rn_free(rdw); rn_free(rdb);
    }
}
END_TEST

/* conv_forward_add into its addend (y = y0 + the convolution): against y0 + the double loop, and bit for
 * bit what conv_forward into another buffer followed by add_inplace gives (the inference arena relies on
 * it for logits equal to the training arena's). With y0 in a buffer of its own: the same bits, y0
 * untouched (the training arena's residual sums); conv_backward_add likewise for the input gradient
 * (the identity blocks' backward). Random shapes as above, then ResNet-20's, whose 16 -> 16 at 32x32
 * with 9 images runs im2col in chunks. */
static void conv_accumulate_case(const char *what, ConvShape s, int n, int h, int w, int with_bias, TRng *rng) {
    const int ho = conv_out_size(h, s.k, s.stride, s.pad), wo = conv_out_size(w, s.k, s.stride, s.pad);
    const size_t nx = (size_t)s.cin * n * h * w, nw = (size_t)s.cout * s.cin * s.k * s.k;
    const size_t ny = (size_t)s.cout * n * ho * wo, nscr = conv_scratch_floats(s, n, h, w);
    float *x = rand_array(nx, -1, 1, rng), *wt = rand_array(nw, -0.5, 0.5, rng), *bias = rand_array(s.cout, -1, 1, rng);
    float *y0 = rand_array(ny, -2, 2, rng), *acc = falloc(ny), *sep = falloc(ny), *scr = falloc(nscr);
    double *ry = dalloc(ny);
    const float *b = with_bias ? bias : NULL;
    memcpy(acc, y0, sizeof(float) * ny);
    conv_forward_add(acc, acc, x, wt, b, n, h, w, s, scr);
    check_canary(acc, ny, what);
    check_canary(scr, nscr, what);
    ref_conv_forward(ry, x, wt, b, n, h, w, s);
    for (size_t i = 0; i < ny; i++) ry[i] += y0[i];
    ASSERT_REL(acc, ry, ny, REF_TOL, "%s accumulate", what);
    conv_forward(sep, x, wt, b, n, h, w, s, scr);
    add_inplace(sep, y0, ny);
    for (size_t i = 0; i < ny; i++)
        ck_assert_msg(memcmp(&acc[i], &sep[i], sizeof(float)) == 0,
                      "%s: accumulate %.9g differs from conv + add %.9g at %zu", what, acc[i], sep[i], i);
    float *addend = falloc(ny), *sum = falloc(ny);
    memcpy(addend, y0, sizeof(float) * ny);
    conv_forward_add(sum, addend, x, wt, b, n, h, w, s, scr);
    check_canary(sum, ny, what);
    ck_assert_msg(memcmp(addend, y0, sizeof(float) * ny) == 0, "%s: conv_forward_add wrote its addend", what);
    for (size_t i = 0; i < ny; i++)
        ck_assert_msg(memcmp(&sum[i], &sep[i], sizeof(float)) == 0,
                      "%s: conv_forward_add %.9g differs from conv + add %.9g at %zu", what, sum[i], sep[i], i);
    rn_free(addend); rn_free(sum);
    /* conv_backward_add: the input gradient plus an addend of x's shape, bit for bit conv_backward followed
     * by add_inplace, the addend untouched, the same weight gradient */
    float *dy = rand_array(ny, -1, 1, rng), *a0 = rand_array(nx, -2, 2, rng), *a_in = falloc(nx);
    float *dx_sep = falloc(nx), *dx_add = falloc(nx), *dw_sep = falloc(nw), *dw_add = falloc(nw);
    memcpy(a_in, a0, sizeof(float) * nx);
    memset(dw_sep, 0, sizeof(float) * nw);
    memset(dw_add, 0, sizeof(float) * nw);
    conv_backward(dx_sep, dw_sep, NULL, dy, x, wt, n, h, w, s, scr);
    add_inplace(dx_sep, a0, nx);
    conv_backward_add(dx_add, a_in, dw_add, NULL, dy, x, wt, n, h, w, s, scr);
    check_canary(dx_add, nx, what);
    ck_assert_msg(memcmp(a_in, a0, sizeof(float) * nx) == 0, "%s: conv_backward_add wrote its addend", what);
    ck_assert_msg(memcmp(dw_add, dw_sep, sizeof(float) * nw) == 0, "%s: conv_backward_add changed dW", what);
    for (size_t i = 0; i < nx; i++)
        ck_assert_msg(memcmp(&dx_add[i], &dx_sep[i], sizeof(float)) == 0,
                      "%s: conv_backward_add %.9g differs from conv_backward + add %.9g at %zu", what, dx_add[i],
                      dx_sep[i], i);
    rn_free(dy); rn_free(a0); rn_free(a_in); rn_free(dx_sep); rn_free(dx_add); rn_free(dw_sep); rn_free(dw_add);
    rn_free(x); rn_free(wt); rn_free(bias); rn_free(y0); rn_free(acc); rn_free(sep); rn_free(scr); rn_free(ry);
}

START_TEST(ref_conv_accumulate) {
    const char *isa = use_isa(_i);
    TRng rng = {402};
    char what[200];
    for (int i = 0; i < 100; i++) {
        ConvShape s;
        int n, h, w;
        do {
            s = (ConvShape){trng_int(&rng, 1, 20), trng_int(&rng, 1, 20), trng_int(&rng, 0, 1) ? 3 : 1,
                            trng_int(&rng, 1, 2), trng_int(&rng, 0, 1)};
            n = trng_int(&rng, 1, 5);
            h = trng_int(&rng, 1, 13);
            w = trng_int(&rng, 1, 13);
        } while (h + 2 * s.pad < s.k || w + 2 * s.pad < s.k);
        const int with_bias = trng_int(&rng, 0, 1);
        snprintf(what, sizeof what, "%s accumulate case %d: cin=%d cout=%d k=%d stride=%d pad=%d n=%d h=%d w=%d bias=%d",
                 isa, i, s.cin, s.cout, s.k, s.stride, s.pad, n, h, w, with_bias);
        conv_accumulate_case(what, s, n, h, w, with_bias, &rng);
    }
    /* cin, cout, k, stride, pad, h, n */
    static const int cases[][7] = {{3, 16, 3, 1, 1, 32, 3}, {16, 16, 3, 1, 1, 32, 9}, {16, 32, 3, 2, 1, 32, 3},
                                   {32, 64, 3, 2, 1, 16, 3}, {64, 64, 3, 1, 1, 8, 5}, {16, 32, 1, 2, 0, 32, 2},
                                   {32, 32, 3, 1, 1, 16, 4}, {8, 24, 1, 1, 0, 9, 3}};
    for (size_t t = 0; t < sizeof cases / sizeof cases[0]; t++) {
        const int *q = cases[t];
        snprintf(what, sizeof what, "%s accumulate resnet shape %zu", isa, t);
        conv_accumulate_case(what, (ConvShape){q[0], q[1], q[2], q[3], q[4]}, q[6], q[5], q[5], 0, &rng);
    }
}
END_TEST

/* ---------------------------------------------------------------- (b) batchnorm against naive double */

static void bn_ref_case(int c, long m, double offset, double spread, int relu, double tol, TRng *rng) {
    const size_t nx = (size_t)c * m;
    float *x = rand_array(nx, offset - spread, offset + spread, rng);
    float *gamma = rand_array(c, -1.5, 1.5, rng), *beta = rand_array(c, -0.5, 0.5, rng);
    float *dy = rand_array(nx, -1, 1, rng), *y = falloc(nx), *mean = falloc(c), *rstd = falloc(c), *var = falloc(c);
    float *dx = falloc(nx), *dg = rand_array(c, -1, 1, rng), *dbt = rand_array(c, -1, 1, rng);
    double *ry = dalloc(nx), *rmean = dalloc(c), *rvar = dalloc(c), *rrstd = dalloc(c), *rdx = dalloc(nx);
    double *rdg = dalloc(c), *rdb = dalloc(c);
    for (int i = 0; i < c; i++) { rdg[i] = dg[i]; rdb[i] = dbt[i]; }
    char what[160];
    snprintf(what, sizeof what, "batchnorm c=%d m=%ld offset=%g spread=%g relu=%d", c, m, offset, spread, relu);

    const double count = batchnorm_forward_train(y, mean, rstd, var, x, gamma, beta, c, m, relu, NULL);
    ck_assert_msg(count == (double)m, "%s: count %g", what, count);
    ref_bn_forward(ry, rmean, rvar, x, gamma, beta, c, m, relu);
    for (int i = 0; i < c; i++) rrstd[i] = 1.0 / sqrt(rvar[i] + (double)BN_EPS);
    check_canary(y, nx, what);
    check_canary(mean, c, what);
    check_canary(rstd, c, what);
    check_canary(var, c, what);
    ASSERT_REL(y, ry, nx, tol, "%s forward y", what);
    ASSERT_REL(mean, rmean, c, tol, "%s mean", what);
    ASSERT_REL(rstd, rrstd, c, tol, "%s rstd", what);
    /* var relative to var + eps: a constant channel has var 0 and no relative scale of its own */
    for (int i = 0; i < c; i++)
        ck_assert_msg(fabs(var[i] - rvar[i]) <= tol * (rvar[i] + (double)BN_EPS), "%s var[%d] %g vs %g", what, i,
                      var[i], rvar[i]);

    batchnorm_backward(dx, dg, dbt, dy, x, mean, rstd, gamma, beta, c, m, relu, NULL);
    ref_bn_backward(rdx, rdg, rdb, dy, x, y, gamma, c, m, relu);
    check_canary(dx, nx, what);
    ASSERT_REL(dx, rdx, nx, tol, "%s backward dx", what);
    ASSERT_REL(dg, rdg, c, tol, "%s backward dgamma (accumulated)", what);
    ASSERT_REL(dbt, rdb, c, tol, "%s backward dbeta (accumulated)", what);

    /* in place: y over x in forward, dx over dy in backward */
    float *xy = falloc(nx), *g = falloc(nx), *dg2 = falloc(c), *db2 = falloc(c);
    memcpy(xy, x, sizeof(float) * nx);
    memcpy(g, dy, sizeof(float) * nx);
    batchnorm_forward_train(xy, mean, rstd, NULL, xy, gamma, beta, c, m, relu, NULL);
    ck_assert_msg(memcmp(xy, y, sizeof(float) * nx) == 0, "%s: in-place forward differs", what);
    float *dx_copy = falloc(nx);
    batchnorm_backward(dx_copy, dg2, db2, dy, x, mean, rstd, gamma, beta, c, m, relu, NULL);
    batchnorm_backward(g, dg2, db2, g, x, mean, rstd, gamma, beta, c, m, relu, NULL);
    ck_assert_msg(memcmp(g, dx_copy, sizeof(float) * nx) == 0, "%s: in-place backward differs", what);

    rn_free(x); rn_free(gamma); rn_free(beta); rn_free(dy); rn_free(y); rn_free(mean); rn_free(rstd);
    rn_free(var); rn_free(dx); rn_free(dg); rn_free(dbt); rn_free(ry); rn_free(rmean); rn_free(rvar);
    rn_free(rrstd); rn_free(rdx); rn_free(rdg); rn_free(rdb); rn_free(xy); rn_free(g); rn_free(dg2);
    rn_free(db2); rn_free(dx_copy);
}

START_TEST(ref_batchnorm) {
    TRng rng = {500};
    for (int t = 0; t < 40; t++) {
        const int c = trng_int(&rng, 1, 8), n = trng_int(&rng, 1, 5), hw = trng_int(&rng, 1, 50);
        bn_ref_case(c, (long)n * hw, trng_uniform(&rng, -0.5, 0.5), trng_uniform(&rng, 0.1, 3), t % 2, REF_TOL, &rng);
    }
    /* a long row (ResNet's first stage at batch 8) and m = 1 (variance 0) */
    bn_ref_case(3, 8L * 32 * 32, 0.2, 1.0, 1, REF_TOL, &rng);
    bn_ref_case(4, 1, 0.0, 1.0, 0, REF_TOL, &rng);
    /* a mean 100 standard deviations away: the statistics must not cancel. The API stores the mean in
     * float (as PyTorch's saved mean), which alone moves x - mean by up to 2^-24 * 100 / std ~ 6e-6. */
    bn_ref_case(3, 500, 100.0, 1.7, 0, 1e-4, &rng);
}
END_TEST

START_TEST(ref_batchnorm_fixed_and_running) {
    TRng rng = {501};
    const int c = 5;
    const long m = 37;
    const size_t nx = (size_t)c * m;
    float *x = rand_array(nx, -2, 2, &rng), *gamma = rand_array(c, -1.5, 1.5, &rng), *beta = rand_array(c, -1, 1, &rng);
    float *mean = rand_array(c, -1, 1, &rng), *var = rand_array(c, 0, 2, &rng), *y = falloc(nx);
    var[0] = 0.0f;   /* eps alone keeps it finite */
    double *ry = dalloc(nx);
    for (int relu = 0; relu <= 1; relu++) {
        batchnorm_forward_fixed(y, x, gamma, beta, mean, var, c, m, relu);
        for (int ch = 0; ch < c; ch++)
            for (long i = 0; i < m; i++) {
                double z = gamma[ch] * (x[ch * m + i] - (double)mean[ch]) / sqrt(var[ch] + (double)BN_EPS) + beta[ch];
                ry[ch * m + i] = relu && z < 0 ? 0.0 : z;
            }
        check_canary(y, nx, "batchnorm_forward_fixed");
        ASSERT_REL(y, ry, nx, REF_TOL, "batchnorm_forward_fixed relu=%d", relu);
    }
    /* PyTorch: running = 0.9 running + 0.1 batch, the variance unbiased by count / (count - 1) */
    float rm[5], rv[5];
    double erm[5], erv[5];
    const double count = 64.0;
    for (int ch = 0; ch < c; ch++) {
        rm[ch] = (float)trng_uniform(&rng, -1, 1);
        rv[ch] = (float)trng_uniform(&rng, 0.5, 2);
        erm[ch] = 0.9 * rm[ch] + 0.1 * mean[ch];
        erv[ch] = 0.9 * rv[ch] + 0.1 * var[ch] * count / (count - 1.0);
    }
    batchnorm_update_running(rm, rv, mean, var, c, count);
    ASSERT_REL(rm, erm, c, REF_TOL, "batchnorm_update_running mean");
    ASSERT_REL(rv, erv, c, REF_TOL, "batchnorm_update_running var");
    rn_free(x); rn_free(gamma); rn_free(beta); rn_free(mean); rn_free(var); rn_free(y); rn_free(ry);
}
END_TEST

/* ---------------------------------------------------------------- sync-BN: two simulated ranks */

/* Two threads play two ranks; the reducer exchanges their arrays through shared slots between
 * barriers, so every call sums the same two arrays in the same order on both, like an allreduce. */
typedef struct {
    pthread_barrier_t barrier;
    double *slot[2];
    int len[2];
    int calls[2];
} Exchange;

typedef struct { Exchange *ex; int rank; } RankCtx;

static void exchange_sum(double *values, int count, void *ctx) {
    RankCtx *rc = ctx;
    Exchange *ex = rc->ex;
    ex->slot[rc->rank] = values;
    ex->len[rc->rank] = count;
    ex->calls[rc->rank]++;
    pthread_barrier_wait(&ex->barrier);
    double *tmp = malloc(sizeof(double) * (count > 0 ? count : 1));
    const int same = ex->len[0] == ex->len[1];
    for (int i = 0; i < count; i++) tmp[i] = same ? ex->slot[0][i] + ex->slot[1][i] : NAN;
    pthread_barrier_wait(&ex->barrier);   /* both have read both slots before either is overwritten */
    memcpy(values, tmp, sizeof(double) * count);
    free(tmp);
}

typedef struct {
    RankCtx rc;
    const float *x, *dy, *gamma, *beta;
    float *y, *mean, *rstd, *var, *dx, *dgamma, *dbeta;
    int c, relu;
    long m;
    double count;
} RankJob;

static void *rank_main(void *p) {
    RankJob *j = p;
    StatReducer red = {exchange_sum, &j->rc};
    j->count = batchnorm_forward_train(j->y, j->mean, j->rstd, j->var, j->x, j->gamma, j->beta, j->c, j->m, j->relu,
                                       &red);
    batchnorm_backward(j->dx, j->dgamma, j->dbeta, j->dy, j->x, j->mean, j->rstd, j->gamma, j->beta, j->c, j->m,
                       j->relu, &red);
    return NULL;
}

/* Batch of n0 + n1 images split into two ranks: every output must equal the one-process result on the
 * whole batch; dgamma and dbeta are each rank's share (the gradient all-reduce adds them). */
static void syncbn_case(int c, int n0, int n1, int hw, int relu, TRng *rng) {
    const long m = (long)(n0 + n1) * hw, mr[2] = {(long)n0 * hw, (long)n1 * hw};
    const size_t nx = (size_t)c * m;
    float *x = rand_array(nx, -1, 2, rng), *dy = rand_array(nx, -1, 1, rng);
    float *gamma = rand_array(c, 0.5, 1.5, rng), *beta = rand_array(c, -0.5, 0.5, rng);
    float *y = falloc(nx), *mean = falloc(c), *rstd = falloc(c), *var = falloc(c), *dx = falloc(nx);
    float *dg = falloc(c), *db = falloc(c);
    const double count = batchnorm_forward_train(y, mean, rstd, var, x, gamma, beta, c, m, relu, NULL);
    batchnorm_backward(dx, dg, db, dy, x, mean, rstd, gamma, beta, c, m, relu, NULL);

    Exchange ex;
    memset(&ex, 0, sizeof ex);
    pthread_barrier_init(&ex.barrier, NULL, 2);
    RankJob job[2];
    long first[2] = {0, mr[0]};
    for (int r = 0; r < 2; r++) {
        const size_t nr = (size_t)c * mr[r];
        float *xr = falloc(nr), *dyr = falloc(nr);
        for (int ch = 0; ch < c; ch++) {
            memcpy(xr + ch * mr[r], x + ch * m + first[r], sizeof(float) * mr[r]);
            memcpy(dyr + ch * mr[r], dy + ch * m + first[r], sizeof(float) * mr[r]);
        }
        job[r] = (RankJob){{&ex, r}, xr, dyr, gamma, beta, falloc(nr), falloc(c), falloc(c), falloc(c),
                           falloc(nr), falloc(c), falloc(c), c, relu, mr[r], 0.0};
    }
    pthread_t th[2];
    for (int r = 0; r < 2; r++) ck_assert_int_eq(pthread_create(&th[r], NULL, rank_main, &job[r]), 0);
    for (int r = 0; r < 2; r++) pthread_join(th[r], NULL);
    pthread_barrier_destroy(&ex.barrier);

    char what[160];
    snprintf(what, sizeof what, "sync-BN c=%d n=%d+%d hw=%d relu=%d", c, n0, n1, hw, relu);
    ck_assert_msg(ex.calls[0] == ex.calls[1], "%s: ranks called the reducer %d and %d times", what, ex.calls[0],
                  ex.calls[1]);
    double *ref = dalloc(nx), *refc = dalloc(c);
    float *sum_dg = falloc(c), *sum_db = falloc(c);
    for (int r = 0; r < 2; r++) {
        ck_assert_msg(job[r].count == count, "%s: rank %d count %g, expected %g", what, r, job[r].count, count);
        const size_t nr = (size_t)c * mr[r];
        for (int ch = 0; ch < c; ch++)
            for (long i = 0; i < mr[r]; i++) ref[ch * mr[r] + i] = y[ch * m + first[r] + i];
        ASSERT_REL(job[r].y, ref, nr, REF_TOL, "%s rank %d y", what, r);
        for (int ch = 0; ch < c; ch++)
            for (long i = 0; i < mr[r]; i++) ref[ch * mr[r] + i] = dx[ch * m + first[r] + i];
        ASSERT_REL(job[r].dx, ref, nr, REF_TOL, "%s rank %d dx", what, r);
        for (int ch = 0; ch < c; ch++) refc[ch] = mean[ch];
        ASSERT_REL(job[r].mean, refc, c, REF_TOL, "%s rank %d mean", what, r);
        for (int ch = 0; ch < c; ch++) refc[ch] = rstd[ch];
        ASSERT_REL(job[r].rstd, refc, c, REF_TOL, "%s rank %d rstd", what, r);
        for (int ch = 0; ch < c; ch++) refc[ch] = var[ch];
        ASSERT_REL(job[r].var, refc, c, REF_TOL, "%s rank %d var", what, r);
        for (int ch = 0; ch < c; ch++) { sum_dg[ch] += job[r].dgamma[ch]; sum_db[ch] += job[r].dbeta[ch]; }
    }
    for (int ch = 0; ch < c; ch++) refc[ch] = dg[ch];
    ASSERT_REL(sum_dg, refc, c, REF_TOL, "%s dgamma summed over ranks", what);
    for (int ch = 0; ch < c; ch++) refc[ch] = db[ch];
    ASSERT_REL(sum_db, refc, c, REF_TOL, "%s dbeta summed over ranks", what);

    for (int r = 0; r < 2; r++) {
        rn_free((float *)job[r].x); rn_free((float *)job[r].dy); rn_free(job[r].y); rn_free(job[r].mean);
        rn_free(job[r].rstd); rn_free(job[r].var); rn_free(job[r].dx); rn_free(job[r].dgamma); rn_free(job[r].dbeta);
    }
    rn_free(x); rn_free(dy); rn_free(gamma); rn_free(beta); rn_free(y); rn_free(mean); rn_free(rstd); rn_free(var);
    rn_free(dx); rn_free(dg); rn_free(db); rn_free(ref); rn_free(refc); rn_free(sum_dg); rn_free(sum_db);
}

START_TEST(syncbn_two_ranks) {
    TRng rng = {600};
    syncbn_case(3, 2, 3, 15, 0, &rng);
    syncbn_case(3, 2, 3, 15, 1, &rng);
    syncbn_case(5, 1, 1, 1, 0, &rng);     /* one value per rank */
    syncbn_case(2, 4, 1, 35, 1, &rng);    /* unequal halves, odd map */
}
END_TEST

/* ---------------------------------------------------------------- (b) small layers against loops */

START_TEST(ref_small_layers) {
    TRng rng = {700};
    /* nchw_to_cnhw */
    {
        const int n = 3, c = 4, hw = 35;
        const size_t nt = (size_t)n * c * hw;
        float *img = rand_array(nt, -1, 1, &rng), *out = falloc(nt);
        nchw_to_cnhw(out, img, n, c, hw);
        check_canary(out, nt, "nchw_to_cnhw");
        for (int i = 0; i < n; i++)
            for (int ch = 0; ch < c; ch++)
                for (int j = 0; j < hw; j++)
                    ck_assert_msg(out[((size_t)ch * n + i) * hw + j] == img[((size_t)i * c + ch) * hw + j],
                                  "nchw_to_cnhw at n=%d c=%d j=%d", i, ch, j);
        rn_free(img); rn_free(out);
    }
    /* relu, add, add_inplace: exact */
    {
        const size_t n = 1001;
        float *a = rand_array(n, -1, 1, &rng), *b = rand_array(n, -1, 1, &rng), *y = falloc(n), *d = falloc(n);
        relu_forward(y, a, n);
        for (size_t i = 0; i < n; i++) ck_assert(y[i] == (a[i] > 0 ? a[i] : 0.0f));
        relu_backward(d, b, y, n);
        for (size_t i = 0; i < n; i++) ck_assert(d[i] == (y[i] > 0 ? b[i] : 0.0f));
        add_forward(y, a, b, n);
        for (size_t i = 0; i < n; i++) ck_assert(y[i] == a[i] + b[i]);
        memcpy(d, a, sizeof(float) * n);
        add_inplace(d, b, n);
        for (size_t i = 0; i < n; i++) ck_assert(d[i] == a[i] + b[i]);
        check_canary(y, n, "relu/add y");
        check_canary(d, n, "relu/add d");
        rn_free(a); rn_free(b); rn_free(y); rn_free(d);
    }
    /* avgpool */
    {
        const int c = 5, n = 3, hw = 49;
        const size_t nx = (size_t)c * n * hw;
        float *x = rand_array(nx, -1, 3, &rng), *y = falloc((size_t)n * c), *dy = rand_array((size_t)n * c, -1, 1, &rng);
        float *dx = rand_array(nx, 7, 8, &rng);
        double *ry = dalloc((size_t)n * c), *rdx = dalloc(nx);
        for (int ch = 0; ch < c; ch++)
            for (int i = 0; i < n; i++) {
                double s = 0;
                for (int j = 0; j < hw; j++) s += x[((size_t)ch * n + i) * hw + j];
                ry[i * c + ch] = s / hw;
                for (int j = 0; j < hw; j++) rdx[((size_t)ch * n + i) * hw + j] = dy[i * c + ch] / (double)hw;
            }
        avgpool_forward(y, x, c, n, hw);
        avgpool_backward(dx, dy, c, n, hw);
        check_canary(y, (size_t)n * c, "avgpool y");
        check_canary(dx, nx, "avgpool dx");
        ASSERT_REL(y, ry, (size_t)n * c, REF_TOL, "avgpool_forward");
        ASSERT_REL(dx, rdx, nx, REF_TOL, "avgpool_backward");
        rn_free(x); rn_free(y); rn_free(dy); rn_free(dx); rn_free(ry); rn_free(rdx);
    }
    /* linear, with and without bias */
    for (int with_bias = 0; with_bias <= 1; with_bias++) {
        const int n = 7, in = 64, out = 10;
        float *x = rand_array((size_t)n * in, -1, 1, &rng), *w = rand_array((size_t)out * in, -1, 1, &rng);
        float *b = rand_array(out, -1, 1, &rng), *y = falloc((size_t)n * out), *dy = rand_array((size_t)n * out, -1, 1, &rng);
        float *dx = rand_array((size_t)n * in, 7, 8, &rng), *dw = rand_array((size_t)out * in, -1, 1, &rng);
        float *db = rand_array(out, -1, 1, &rng);
        double *ry = dalloc((size_t)n * out), *rdx = dalloc((size_t)n * in), *rdw = dalloc((size_t)out * in);
        double *rdb = dalloc(out);
        for (int o = 0; o < out; o++) {
            rdb[o] = db[o];
            for (int k = 0; k < in; k++) rdw[o * in + k] = dw[o * in + k];
        }
        for (int i = 0; i < n; i++)
            for (int o = 0; o < out; o++) {
                double s = with_bias ? b[o] : 0.0;
                for (int k = 0; k < in; k++) s += (double)x[i * in + k] * w[o * in + k];
                ry[i * out + o] = s;
                rdb[o] += dy[i * out + o];
                for (int k = 0; k < in; k++) {
                    rdx[i * in + k] += (double)dy[i * out + o] * w[o * in + k];
                    rdw[o * in + k] += (double)dy[i * out + o] * x[i * in + k];
                }
            }
        linear_forward(y, x, w, with_bias ? b : NULL, n, in, out);
        linear_backward(dx, dw, with_bias ? db : NULL, dy, x, w, n, in, out);
        check_canary(y, (size_t)n * out, "linear y");
        check_canary(dx, (size_t)n * in, "linear dx");
        check_canary(dw, (size_t)out * in, "linear dw");
        ASSERT_REL(y, ry, (size_t)n * out, REF_TOL, "linear_forward bias=%d", with_bias);
        ASSERT_REL(dx, rdx, (size_t)n * in, REF_TOL, "linear_backward dx");
        ASSERT_REL(dw, rdw, (size_t)out * in, REF_TOL, "linear_backward dweight (accumulated)");
        if (with_bias) ASSERT_REL(db, rdb, out, REF_TOL, "linear_backward dbias (accumulated)");
        /* dx NULL is skipped */
        linear_backward(NULL, dw, NULL, dy, x, w, n, in, out);
        rn_free(x); rn_free(w); rn_free(b); rn_free(y); rn_free(dy); rn_free(dx); rn_free(dw); rn_free(db);
        rn_free(ry); rn_free(rdx); rn_free(rdw); rn_free(rdb);
    }
    /* softmax cross-entropy: loss sum and gradient, including logits that overflow a naive exp */
    {
        const int n = 6, k = 10;
        float *z = rand_array((size_t)n * k, -5, 5, &rng), *d = falloc((size_t)n * k);
        int labels[6];
        for (int i = 0; i < n; i++) labels[i] = trng_int(&rng, 0, k - 1);
        for (int j = 0; j < k; j++) z[5 * k + j] += 1000.0f;
        const double denom = 256.0;
        double rloss = 0.0, *rd = dalloc((size_t)n * k);
        for (int i = 0; i < n; i++) {
            double mx = -INFINITY, se = 0.0;
            for (int j = 0; j < k; j++) mx = fmax(mx, z[i * k + j]);
            for (int j = 0; j < k; j++) se += exp(z[i * k + j] - mx);
            rloss += mx + log(se) - z[i * k + labels[i]];
            for (int j = 0; j < k; j++)
                rd[i * k + j] = (exp(z[i * k + j] - mx) / se - (j == labels[i])) / denom;
        }
        const double loss = softmax_xent(d, z, labels, n, k, denom);
        ck_assert_msg(isfinite(loss) && fabs(loss - rloss) <= REF_TOL * fabs(rloss), "softmax_xent loss %.9g vs %.9g",
                      loss, rloss);
        ASSERT_REL(d, rd, (size_t)n * k, REF_TOL, "softmax_xent dlogits");
        ck_assert_double_eq(softmax_xent(NULL, z, labels, n, k, denom), loss);
        rn_free(z); rn_free(d); rn_free(rd);
    }
    /* shortcut_a forward and backward */
    {
        static const int cases[][6] = {{16, 32, 3, 8, 8, 2}, {3, 7, 2, 5, 7, 2}, {4, 4, 2, 3, 5, 1}, {1, 4, 1, 1, 2, 2}};
        for (int t = 0; t < 4; t++) {
            const int cin = cases[t][0], cout = cases[t][1], n = cases[t][2], h = cases[t][3], w = cases[t][4];
            const int st = cases[t][5], ho = sc_out(h, st), wo = sc_out(w, st), pad = (cout - cin) / 2;
            const size_t nx = (size_t)cin * n * h * w, ny = (size_t)cout * n * ho * wo;
            float *x = rand_array(nx, -1, 1, &rng), *y = rand_array(ny, 7, 8, &rng), *dy = rand_array(ny, -1, 1, &rng);
            float *dx = rand_array(nx, 7, 8, &rng);
            shortcut_a_forward(y, x, cin, cout, n, h, w, st);
            shortcut_a_backward(dx, dy, cin, cout, n, h, w, st);
            check_canary(y, ny, "shortcut_a y");
            check_canary(dx, nx, "shortcut_a dx");
            for (int co = 0; co < cout; co++)
                for (int i = 0; i < n; i++)
                    for (int oy = 0; oy < ho; oy++)
                        for (int ox = 0; ox < wo; ox++) {
                            const int ci = co - pad;
                            const float e = (ci >= 0 && ci < cin) ? x[(((size_t)ci * n + i) * h + oy * st) * w + ox * st] : 0.0f;
                            ck_assert_msg(y[(((size_t)co * n + i) * ho + oy) * wo + ox] == e,
                                          "shortcut_a_forward case %d at c=%d n=%d y=%d x=%d", t, co, i, oy, ox);
                        }
            for (int ci = 0; ci < cin; ci++)
                for (int i = 0; i < n; i++)
                    for (int iy = 0; iy < h; iy++)
                        for (int ix = 0; ix < w; ix++) {
                            const int kept = iy % st == 0 && ix % st == 0;
                            const float e = kept ? dy[(((size_t)(ci + pad) * n + i) * ho + iy / st) * wo + ix / st] : 0.0f;
                            ck_assert_msg(dx[(((size_t)ci * n + i) * h + iy) * w + ix] == e,
                                          "shortcut_a_backward case %d at c=%d n=%d y=%d x=%d", t, ci, i, iy, ix);
                        }
            rn_free(x); rn_free(y); rn_free(dy); rn_free(dx);
        }
    }
}
END_TEST

/* ---------------------------------------------------------------- (c) thread-count independence */

/* Runs every BN and small-layer kernel on sizes above the single-thread cutoffs; out receives all
 * outputs back to back. Returns the number of floats written. */
static size_t run_layer_kernels(float *out, int threads) {
    compute_set_threads(threads);
    TRng rng = {800};
    size_t pos = 0;
    const int c = 16;
    const long m = 8L * 32 * 32;
    const size_t nx = (size_t)c * m;
    float *x = rand_array(nx, -1, 2, &rng), *dy = rand_array(nx, -1, 1, &rng), *gamma = rand_array(c, 0.5, 1.5, &rng);
    float *beta = rand_array(c, -0.5, 0.5, &rng);
    for (int relu = 0; relu <= 1; relu++) {
        float *y = out + pos, *mean = y + nx, *rstd = mean + c, *var = rstd + c, *dx = var + c, *dg = dx + nx, *db = dg + c;
        memset(dg, 0, sizeof(float) * 2 * c);
        batchnorm_forward_train(y, mean, rstd, var, x, gamma, beta, c, m, relu, NULL);
        batchnorm_backward(dx, dg, db, dy, x, mean, rstd, gamma, beta, c, m, relu, NULL);
        batchnorm_forward_fixed(db + c, x, gamma, beta, mean, var, c, m, relu);
        pos += 2 * nx + 5 * (size_t)c + nx;
    }
    relu_forward(out + pos, x, nx); pos += nx;
    relu_backward(out + pos, dy, x, nx); pos += nx;
    add_forward(out + pos, x, dy, nx); pos += nx;
    memcpy(out + pos, x, sizeof(float) * nx);
    add_inplace(out + pos, dy, nx); pos += nx;
    nchw_to_cnhw(out + pos, x, 8, c, 32 * 32); pos += nx;
    avgpool_forward(out + pos, x, c, 8 * 4, 256); pos += 8 * 4 * c;
    avgpool_backward(out + pos, dy, c, 8 * 4, 256); pos += nx;
    shortcut_a_forward(out + pos, x, c, 2 * c, 8, 32, 32, 2); pos += nx / 2;
    shortcut_a_backward(out + pos, dy, c, 2 * c, 8, 32, 32, 2); pos += nx;
    rn_free(x); rn_free(dy); rn_free(gamma); rn_free(beta);
    return pos;
}

START_TEST(threads_layers_bitwise) {
    const size_t cap = 4u << 20;
    float *a = falloc(cap), *b = falloc(cap);
    const size_t na = run_layer_kernels(a, 1), nb = run_layer_kernels(b, 2);
    ck_assert(na == nb && na <= cap);
    for (size_t i = 0; i < na; i++)
        ck_assert_msg(memcmp(&a[i], &b[i], sizeof(float)) == 0, "1 vs 2 threads differ at output float %zu: %.9g vs %.9g",
                      i, a[i], b[i]);
    rn_free(a); rn_free(b);
}
END_TEST

START_TEST(threads_conv_close) {
    ck_assert_int_eq(conv_select_isa("generic"), 0);   /* im2col + GEMM for this direct-kernel shape too */
    TRng rng = {801};
    ConvShape s = {16, 32, 3, 2, 1};
    const int n = 6, h = 16, w = 16, ho = conv_out_size(h, 3, 2, 1), wo = ho;
    const size_t nx = (size_t)s.cin * n * h * w, nw = (size_t)s.cout * s.cin * 9, ny = (size_t)s.cout * n * ho * wo;
    float *x = rand_array(nx, -1, 1, &rng), *wt = rand_array(nw, -0.3, 0.3, &rng), *bias = rand_array(s.cout, -1, 1, &rng);
    float *dy = rand_array(ny, -1, 1, &rng), *scr = falloc(conv_scratch_floats(s, n, h, w));
    float *y[2], *dx[2], *dw[2], *db[2];
    for (int t = 0; t < 2; t++) {
        compute_set_threads(t + 1);
        y[t] = falloc(ny); dx[t] = falloc(nx); dw[t] = falloc(nw); db[t] = falloc(s.cout);
        conv_forward(y[t], x, wt, bias, n, h, w, s, scr);
        conv_backward(dx[t], dw[t], db[t], dy, x, wt, n, h, w, s, scr);
    }
    ck_assert_msg(relerr_ff(y[1], y[0], ny) <= CONV_THREAD_TOL, "conv y 1 vs 2 threads: %.3e", relerr_ff(y[1], y[0], ny));
    ck_assert_msg(relerr_ff(dx[1], dx[0], nx) <= CONV_THREAD_TOL, "conv dx 1 vs 2 threads");
    ck_assert_msg(relerr_ff(dw[1], dw[0], nw) <= CONV_THREAD_TOL, "conv dweight 1 vs 2 threads");
    ck_assert_msg(relerr_ff(db[1], db[0], s.cout) <= CONV_THREAD_TOL, "conv dbias 1 vs 2 threads");
    for (int t = 0; t < 2; t++) { rn_free(y[t]); rn_free(dx[t]); rn_free(dw[t]); rn_free(db[t]); }
    rn_free(x); rn_free(wt); rn_free(bias); rn_free(dy); rn_free(scr);
}
END_TEST

/* The direct kernels sum every output value on one thread in a fixed order, so on every direct path the
 * CPU runs (isas[_i], registered for those alone) the shapes they take give bitwise the same y, dx, dW and
 * accumulated y on 1 and 2 threads (3x3 at stride 1 and 2, 1x1 at stride 2, a batch whose pixel count is not a multiple
 * of the vector width, and channel counts that leave the register tiles partly empty); the im2col + GEMM
 * path is only close (threads_conv_close). */
START_TEST(threads_conv_direct_bitwise) {
    const char *isa = use_isa(_i);
    ck_assert_msg(conv_direct_isa() != NULL, "%s has no direct kernels: the test should not be registered", isa);
    static const int cases[][8] = {   /* cin, cout, k, stride, pad, n, h, w */
        {16, 16, 3, 1, 1, 5, 16, 16}, {7, 10, 3, 1, 1, 3, 9, 7}, {16, 32, 3, 2, 1, 4, 16, 16},
        {5, 11, 3, 2, 1, 3, 9, 11}, {16, 32, 1, 2, 0, 4, 16, 16}, {6, 9, 1, 2, 0, 3, 7, 9},
    };
    TRng rng = {802};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const int *q = cases[c];
        const ConvShape s = {q[0], q[1], q[2], q[3], q[4]};
        const int n = q[5], h = q[6], w = q[7], ho = conv_out_size(h, s.k, s.stride, s.pad),
                  wo = conv_out_size(w, s.k, s.stride, s.pad);
        const size_t nx = (size_t)s.cin * n * h * w, nw = (size_t)s.cout * s.cin * s.k * s.k,
                     ny = (size_t)s.cout * n * ho * wo;
        float *x = rand_array(nx, -1, 1, &rng), *wt = rand_array(nw, -0.3, 0.3, &rng);
        float *dy = rand_array(ny, -1, 1, &rng), *scr = falloc(conv_scratch_floats(s, n, h, w));
        float *out[2];
        for (int t = 0; t < 2; t++) {
            compute_set_threads(t + 1);
            out[t] = falloc(2 * ny + nx + nw);
            memset(out[t], 0, sizeof(float) * (ny + nx + nw));   /* dW accumulates */
            conv_forward(out[t], x, wt, NULL, n, h, w, s, scr);
            conv_backward(out[t] + ny, out[t] + ny + nx, NULL, dy, x, wt, n, h, w, s, scr);
            memcpy(out[t] + ny + nx + nw, dy, sizeof(float) * ny);
            conv_forward_add(out[t] + ny + nx + nw, out[t] + ny + nx + nw, x, wt, NULL, n, h, w, s, scr);
        }
        ck_assert_msg(memcmp(out[0], out[1], sizeof(float) * (2 * ny + nx + nw)) == 0,
                      "%s case %zu: direct conv differs on 1 and 2 threads", isa, c);
        for (int t = 0; t < 2; t++) rn_free(out[t]);
        rn_free(x); rn_free(wt); rn_free(dy); rn_free(scr);
    }
}
END_TEST

/* ---------------------------------------------------------------- (d) the choice of kernels */

/* conv_select_isa against the CPU as cpu_runs asks it: the default is the fastest path the CPU runs; a
 * path the CPU lacks, or a name that is no path, is refused with a message naming it and the path in use
 * stays; on the generic path a shape the direct kernels take sizes im2col's scratch. */
START_TEST(isa_dispatch) {
    ck_assert_int_eq(conv_select_isa(NULL), 0);
    const char *best = conv_direct_isa();
    ck_assert_str_eq(best ? best : "generic", isas[0]);
    for (int i = 0; i < ALL_ISAS; i++) {
        ck_assert_int_eq(conv_select_isa("generic"), 0);
        const int rc = conv_select_isa(all_isas[i]);
        const char *now = conv_direct_isa() ? conv_direct_isa() : "generic";
        if (cpu_runs(all_isas[i])) {
            ck_assert_msg(rc == 0, "%s refused on a CPU that runs it: %s", all_isas[i], rn_last_error());
            ck_assert_str_eq(now, all_isas[i]);
        } else {
            ck_assert_msg(rc == -1, "%s accepted on a CPU that lacks it", all_isas[i]);
            ck_assert_str_eq(now, "generic");
            ck_assert_msg(strstr(rn_last_error(), all_isas[i]), "refusal does not name %s: %s", all_isas[i],
                          rn_last_error());
        }
    }
    ck_assert_int_eq(conv_select_isa("sse2"), -1);
    ck_assert_msg(strstr(rn_last_error(), "'sse2' is not a kernel path") && strstr(rn_last_error(), "generic"),
                  "unknown path: %s", rn_last_error());
    ck_assert_int_eq(conv_select_isa(""), 0);
    ck_assert_str_eq(conv_direct_isa() ? conv_direct_isa() : "generic", isas[0]);
    ck_assert_int_eq(conv_select_isa("generic"), 0);
    const ConvShape s = {16, 16, 3, 1, 1};
    ck_assert_uint_eq(conv_scratch_floats(s, 2, 8, 8), 2u * 16 * 9 * 2 * 8 * 8);   /* col and dcol */
}
END_TEST

/* 1 when this CPU runs kernel path isa */
static int has_isa(const char *isa) {
    for (int i = 0; i < n_isas; i++)
        if (strcmp(isas[i], isa) == 0) return 1;
    return 0;
}

/* Winograd F(2x2, 3x3) on path isas[_i] (registered for the SIMD paths the CPU runs): the forward (bias or none)
 * and the input gradient against the double loops on every width it takes (32, 16 and 8: one, two and
 * four tile rows a vector), heights from 2, channel counts off a power of two, and batches that leave
 * the last block of tile vectors one or two short; the weight gradient too where the output channels
 * are a multiple of 16 (else the direct kernels', bit for bit), over one chunk of tiles or several. The same
 * calls with conv_use_winograd(0) must give other bits (the direct sums), or the Winograd path did not
 * run; the two agree within REF_TOL. */
START_TEST(ref_conv_winograd) {
    const char *isa = use_isa(_i);
    ck_assert_msg(conv_winograd_name() != NULL, "%s has no Winograd kernels", isa);
    TRng rng = {403};
    static const int cases[][5] = {   /* cin, cout, n, h, w */
        {8, 8, 1, 2, 32},    {16, 8, 2, 6, 32},   {8, 16, 3, 4, 16},  {24, 16, 5, 12, 16}, {16, 24, 1, 8, 8},
        {64, 64, 3, 8, 8},   {16, 16, 4, 32, 32}, {32, 32, 2, 16, 16}, {8, 8, 7, 16, 8},   {40, 8, 2, 4, 32},
        {64, 64, 70, 8, 8},  {32, 32, 40, 16, 16}, {24, 32, 3, 8, 8},   /* 70 and 160 dW chunks: 16 groups */
    };
    for (size_t t = 0; t < sizeof cases / sizeof cases[0]; t++) {
        const int *q = cases[t];
        const ConvShape s = {q[0], q[1], 3, 1, 1};
        const int n = q[2], h = q[3], w = q[4], with_bias = (int)(t % 2);
        const size_t nx = (size_t)s.cin * n * h * w, nw = (size_t)s.cout * s.cin * 9, ny = (size_t)s.cout * n * h * w;
        const size_t nscr = conv_scratch_floats(s, n, h, w);
        float *x = rand_array(nx, -1, 1, &rng), *wt = rand_array(nw, -0.5, 0.5, &rng);
        float *bias = rand_array(s.cout, -1, 1, &rng), *dy = rand_array(ny, -1, 1, &rng), *scr = falloc(nscr);
        float *y = rand_array(ny, 7, 8, &rng), *dx = rand_array(nx, 7, 8, &rng), *dw = falloc(nw);
        float *y_direct = falloc(ny), *dx_direct = falloc(nx), *dw_direct = falloc(nw);
        double *ry = dalloc(ny), *rdx = dalloc(nx), *rdw = dalloc(nw), *rdb = dalloc(s.cout);
        const float *b = with_bias ? bias : NULL;
        char what[160];
        snprintf(what, sizeof what, "%s winograd case %zu: cin=%d cout=%d n=%d h=%d w=%d bias=%d", isa, t, s.cin, s.cout,
                 n, h, w, with_bias);
        conv_forward(y, x, wt, b, n, h, w, s, scr);
        conv_backward(dx, dw, NULL, dy, x, wt, n, h, w, s, scr);
        check_canary(y, ny, what);
        check_canary(dx, nx, what);
        check_canary(scr, nscr, what);
        ref_conv_forward(ry, x, wt, b, n, h, w, s);
        ref_conv_backward(rdx, rdw, rdb, dy, x, wt, n, h, w, s);
        ASSERT_REL(y, ry, ny, REF_TOL, "%s forward", what);
        ASSERT_REL(dx, rdx, nx, REF_TOL, "%s input gradient", what);
        ASSERT_REL(dw, rdw, nw, REF_TOL, "%s weight gradient", what);
        /* dW alone (dx NULL): the bits of dW beside the input gradient */
        float *dw_alone = falloc(nw);
        conv_backward(NULL, dw_alone, NULL, dy, x, wt, n, h, w, s, scr);
        ck_assert_msg(memcmp(dw, dw_alone, sizeof(float) * nw) == 0, "%s: dW differs without dx", what);
        rn_free(dw_alone);

        ck_assert_int_eq(conv_use_winograd(0), 1);
        ck_assert_ptr_null(conv_winograd_name());
        conv_forward(y_direct, x, wt, b, n, h, w, s, scr);
        conv_backward(dx_direct, dw_direct, NULL, dy, x, wt, n, h, w, s, scr);
        ck_assert_int_eq(conv_use_winograd(1), 0);
        ck_assert_msg(memcmp(y, y_direct, sizeof(float) * ny) != 0, "%s: the forward did not take Winograd", what);
        ck_assert_msg(memcmp(dx, dx_direct, sizeof(float) * nx) != 0, "%s: the input gradient did not take Winograd",
                      what);
        /* dW through Winograd where the output channels fill whole vectors, else the direct kernels' bits */
        if (s.cout % 16 == 0)
            ck_assert_msg(memcmp(dw, dw_direct, sizeof(float) * nw) != 0, "%s: dW did not take Winograd", what);
        else
            ck_assert_msg(memcmp(dw, dw_direct, sizeof(float) * nw) == 0, "%s: dW is not the direct kernels'", what);
        ASSERT_REL(dw_direct, rdw, nw, REF_TOL, "%s direct weight gradient", what);
        ASSERT_REL(y_direct, ry, ny, REF_TOL, "%s direct forward", what);
        rn_free(x); rn_free(wt); rn_free(bias); rn_free(dy); rn_free(scr); rn_free(y); rn_free(dx); rn_free(dw);
        rn_free(y_direct); rn_free(dx_direct); rn_free(dw_direct); rn_free(ry); rn_free(rdx); rn_free(rdw);
        rn_free(rdb);
    }
    /* every SIMD path has it, the generic path not */
    for (int i = 0; i < n_isas; i++) {
        ck_assert_int_eq(conv_select_isa(isas[i]), 0);
        ck_assert_msg((conv_winograd_name() != NULL) == (strcmp(isas[i], "generic") != 0), "%s: Winograd %s",
                      isas[i], conv_winograd_name() ? "on" : "off");
    }
}
END_TEST

/* The AVX-512 and AVX2 Winograd kernels do the same operations in the same order on every output, input
 * and weight gradient (only the lanes the tiles sit in differ): bit for bit the same y, dx and dW. So a job
 * over nodes of both kinds gets the same Winograd sums. Registered where the CPU runs both. */
START_TEST(winograd_paths_agree) {
    TRng rng = {409};
    static const int cases[][5] = {{16, 16, 3, 32, 32}, {32, 32, 5, 16, 16}, {64, 64, 7, 8, 8}, {24, 40, 2, 6, 32}};
    for (size_t t = 0; t < sizeof cases / sizeof cases[0]; t++) {
        const int *q = cases[t];
        const ConvShape s = {q[0], q[1], 3, 1, 1};
        const int n = q[2], h = q[3], w = q[4];
        const size_t nx = (size_t)s.cin * n * h * w, nw = (size_t)s.cout * s.cin * 9, ny = (size_t)s.cout * n * h * w;
        float *x = rand_array(nx, -1, 1, &rng), *wt = rand_array(nw, -0.5, 0.5, &rng), *bias = rand_array(s.cout, -1, 1, &rng);
        float *dy = rand_array(ny, -1, 1, &rng);
        float *y[2], *dx[2], *dw[2];
        const char *paths[2] = {"avx512", "avx2"};
        for (int p = 0; p < 2; p++) {
            ck_assert_int_eq(conv_select_isa(paths[p]), 0);
            ck_assert_ptr_nonnull(conv_winograd_name());
            const size_t nscr = conv_scratch_floats(s, n, h, w);   /* the path's own: sized after choosing it */
            float *scr = falloc(nscr);
            y[p] = falloc(ny);
            dx[p] = falloc(nx);
            dw[p] = falloc(nw);
            conv_forward(y[p], x, wt, bias, n, h, w, s, scr);
            conv_backward(dx[p], dw[p], NULL, dy, x, wt, n, h, w, s, scr);
            check_canary(scr, nscr, paths[p]);
            rn_free(scr);
        }
        ck_assert_msg(memcmp(y[0], y[1], sizeof(float) * ny) == 0, "case %zu: the forwards differ", t);
        ck_assert_msg(memcmp(dx[0], dx[1], sizeof(float) * nx) == 0, "case %zu: the input gradients differ", t);
        if (s.cout % 16 == 0)   /* else the direct kernels take dW, and theirs differ by path */
            ck_assert_msg(memcmp(dw[0], dw[1], sizeof(float) * nw) == 0, "case %zu: the weight gradients differ", t);
        for (int p = 0; p < 2; p++) {
            rn_free(y[p]);
            rn_free(dx[p]);
            rn_free(dw[p]);
        }
        rn_free(x); rn_free(wt); rn_free(bias); rn_free(dy);
    }
}
END_TEST

/* The FMA peak is measured with the vectors of the kernels in use: an AVX-512 path against the 16-lane
 * loop (two 512-bit FMA ports on Intel Xeons make that peak twice the AVX2 one), RESNET_ISA=avx2 against
 * the 8-lane loop; the generic path against the widest the CPU has. */
START_TEST(peak_follows_kernels) {
    ck_assert_int_eq(peak_vector_lanes("avx512"), 16);
    ck_assert_int_eq(peak_vector_lanes("avx2"), 8);
    ck_assert_int_eq(peak_vector_lanes("scalar"), 1);
    for (int i = 0; i < n_isas; i++) {
        ck_assert_int_eq(conv_select_isa(isas[i]), 0);
        const char *kernels = conv_direct_isa();
        if (strcmp(isas[i], "generic") == 0)
            ck_assert_str_eq(peak_isa(kernels), strcmp(isas[0], "generic") == 0 ? "scalar" : isas[0]);
        else
            ck_assert_str_eq(peak_isa(kernels), isas[i]);
    }
    ck_assert_double_gt(peak_fma_gflops(1, conv_direct_isa()), 0.0);
}
END_TEST

/* The peak's rounds: the first never counts (it starts the threads and wakes the vector units), and the
 * best counts once a second round lies within PEAK_AGREE of it. */
START_TEST(peak_settles_on_two_rounds) {
    double best = -1;
    const double warm_up_fast[] = {500, 300, 296};        /* round 0 above the rest is not the peak */
    ck_assert_int_eq(peak_settled(warm_up_fast, 2, &best), 0);
    ck_assert_int_eq(peak_settled(warm_up_fast, 3, &best), 1);
    ck_assert_double_eq(best, 300);
    const double disturbed[] = {233, 329, 250, 301, 330};   /* 250 and 301: rounds another process slowed */
    for (int n = 1; n <= 4; n++) ck_assert_int_eq(peak_settled(disturbed, n, &best), 0);
    ck_assert_int_eq(peak_settled(disturbed, 5, &best), 1);
    ck_assert_double_eq(best, 330);
    const double apart[] = {200, 300, 293};                 /* 2.3% apart: not yet */
    ck_assert_int_eq(peak_settled(apart, 3, &best), 0);
    ck_assert_double_eq(best, 300);
}
END_TEST

/* ---------------------------------------------------------------- suite */

Suite *test_suite(void) {
    for (int i = 0; i < ALL_ISAS; i++)
        if (cpu_runs(all_isas[i])) isas[n_isas++] = all_isas[i];
    const int n_direct = n_isas - 1;   /* all but "generic", which every CPU runs */
    Suite *s = suite_create("layers");
    TCase *fd = tcase_create("finite_differences");
    tcase_add_checked_fixture(fd, setup_threads, NULL);
    tcase_set_timeout(fd, 120);
    tcase_add_test(fd, fd_conv);
    tcase_add_test(fd, fd_batchnorm);
    tcase_add_test(fd, fd_relu);
    tcase_add_test(fd, fd_add);
    tcase_add_test(fd, fd_avgpool);
    tcase_add_test(fd, fd_linear);
    tcase_add_test(fd, fd_softmax_xent);
    tcase_add_test(fd, fd_shortcut_a);
    suite_add_tcase(s, fd);

    TCase *ref = tcase_create("reference");
    tcase_add_checked_fixture(ref, setup_threads, restore_isa);
    tcase_set_timeout(ref, 120);
    tcase_add_loop_test(ref, ref_conv_random, 0, n_isas);
    tcase_add_loop_test(ref, ref_conv_resnet_shapes, 0, n_isas);
    tcase_add_loop_test(ref, ref_conv_accumulate, 0, n_isas);
    tcase_add_loop_test(ref, ref_conv_winograd, 0, n_direct);
    if (has_isa("avx512") && has_isa("avx2")) tcase_add_test(ref, winograd_paths_agree);
    tcase_add_test(ref, ref_batchnorm);
    tcase_add_test(ref, ref_batchnorm_fixed_and_running);
    tcase_add_test(ref, syncbn_two_ranks);
    tcase_add_test(ref, ref_small_layers);
    suite_add_tcase(s, ref);

    TCase *thr = tcase_create("threads");
    tcase_add_checked_fixture(thr, NULL, restore_isa);
    tcase_set_timeout(thr, 120);
    tcase_add_test(thr, threads_layers_bitwise);
    tcase_add_test(thr, threads_conv_close);
    if (n_direct > 0) tcase_add_loop_test(thr, threads_conv_direct_bitwise, 0, n_direct);
    suite_add_tcase(s, thr);

    TCase *isa = tcase_create("kernel_paths");
    tcase_add_checked_fixture(isa, NULL, restore_isa);
    tcase_add_test(isa, isa_dispatch);
    tcase_add_test(isa, peak_follows_kernels);
    tcase_add_test(isa, peak_settles_on_two_rounds);
    suite_add_tcase(s, isa);
    return s;
}
