/* The FP32 FMA peak of the cores a rank runs on, measured rather than looked up: a register-only loop
 * of independent FMA chains on each thread (the machine-independent yardstick for GFLOP/s). */
#ifndef RESNET_PEAK_H
#define RESNET_PEAK_H

/* GFLOP/s of `threads` OpenMP threads running the loop at once (best of a few short rounds, ~0.1 s in
 * all), with the widest vectors the CPU has: AVX-512, AVX2 + FMA, or scalar FMA. */
double peak_fma_gflops(int threads);
/* "avx512", "avx2" or "scalar": what peak_fma_gflops used. */
const char *peak_isa(void);

#endif
