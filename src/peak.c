/* The FMA peak: 12 independent accumulator chains per thread, enough to cover the FMA latency (4
 * cycles) times the FMA ports (2) of current x86 cores with room to spare, and nothing but FMAs in the
 * loop. Each ISA's loop is compiled for it with a target attribute and chosen at run time, so one
 * binary measures AVX-512 and AVX2 nodes alike. */
#include "resnet/peak.h"

#include <immintrin.h>
#include <omp.h>
#include <string.h>
#include <time.h>

#define CHAINS 12
#define MAX_ROUNDS 16

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Each returns a sum of its accumulators so that the compiler keeps the chains. */
__attribute__((target("avx512f"))) static float chains_avx512(long iterations) {
    __m512 acc[CHAINS];
    const __m512 mul = _mm512_set1_ps(0.999999f), add = _mm512_set1_ps(1e-6f);
    for (int c = 0; c < CHAINS; c++) acc[c] = _mm512_set1_ps((float)c);
    for (long i = 0; i < iterations; i++)
        for (int c = 0; c < CHAINS; c++) acc[c] = _mm512_fmadd_ps(acc[c], mul, add);
    __m512 sum = acc[0];
    for (int c = 1; c < CHAINS; c++) sum = _mm512_add_ps(sum, acc[c]);
    return _mm512_reduce_add_ps(sum);
}

__attribute__((target("avx2,fma"))) static float chains_avx2(long iterations) {
    __m256 acc[CHAINS];
    const __m256 mul = _mm256_set1_ps(0.999999f), add = _mm256_set1_ps(1e-6f);
    for (int c = 0; c < CHAINS; c++) acc[c] = _mm256_set1_ps((float)c);
    for (long i = 0; i < iterations; i++)
        for (int c = 0; c < CHAINS; c++) acc[c] = _mm256_fmadd_ps(acc[c], mul, add);
    float out[8], total = 0;
    __m256 sum = acc[0];
    for (int c = 1; c < CHAINS; c++) sum = _mm256_add_ps(sum, acc[c]);
    _mm256_storeu_ps(out, sum);
    for (int k = 0; k < 8; k++) total += out[k];
    return total;
}

static float chains_scalar(long iterations) {
    float acc[CHAINS];
    for (int c = 0; c < CHAINS; c++) acc[c] = (float)c;
    for (long i = 0; i < iterations; i++)
        for (int c = 0; c < CHAINS; c++) acc[c] = acc[c] * 0.999999f + 1e-6f;
    float total = 0;
    for (int c = 0; c < CHAINS; c++) total += acc[c];
    return total;
}

const char *peak_isa(const char *kernels) {
    if (kernels && (strcmp(kernels, "avx512") == 0 || strcmp(kernels, "avx2") == 0)) return kernels;
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return "avx512";
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "avx2";
    return "scalar";
}

int peak_vector_lanes(const char *isa) {
    return strcmp(isa, "avx512") == 0 ? 16 : strcmp(isa, "avx2") == 0 ? 8 : 1;
}

static volatile float sink;   /* the loops' results go here, so no loop is optimised away */

int peak_settled(const double *rounds, int n, double *best) {
    double top = 0;
    for (int i = 1; i < n; i++)
        if (rounds[i] > top) top = rounds[i];
    int near_top = 0;
    for (int i = 1; i < n; i++)
        if (rounds[i] >= top * (1.0 - PEAK_AGREE)) near_top++;
    *best = top;
    return near_top >= 2;
}

double peak_fma_gflops(int threads, const char *kernels) {
    const char *isa = peak_isa(kernels);
    const int lanes = peak_vector_lanes(isa);
    /* ~20-30 ms a round at 3-4 GHz with one vector FMA per cycle */
    const long iterations = lanes > 1 ? 8000000 : 2000000;
    if (threads < 1) threads = 1;
    double rounds[MAX_ROUNDS], best = 0;
    for (int n = 1; n <= MAX_ROUNDS; n++) {
        const double start = now_s();
#pragma omp parallel num_threads(threads)
        {
            float r = lanes == 16 ? chains_avx512(iterations) : lanes == 8 ? chains_avx2(iterations)
                                                                           : chains_scalar(iterations);
            if (r == 12345.0f) sink = r;
        }
        const double seconds = now_s() - start;
        rounds[n - 1] = 2.0 * CHAINS * lanes * (double)iterations * threads / seconds * 1e-9;
        if (peak_settled(rounds, n, &best)) break;
    }
    return best;
}
