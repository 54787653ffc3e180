/* The FP32 FMA peak of the cores a rank runs on, measured rather than looked up: a register-only loop
 * of independent FMA chains on each thread (the machine-independent yardstick for GFLOP/s). */
#ifndef RESNET_PEAK_H
#define RESNET_PEAK_H

/* GFLOP/s of `threads` OpenMP threads running the loop at once (best of a few short rounds, ~0.1 s in
 * all), with the vectors of the convolution kernels' path (conv_direct_isa: AVX-512 or AVX2 + FMA), or
 * without direct kernels the widest the CPU has (down to scalar FMA). */
double peak_fma_gflops(int threads);
/* "avx512", "avx2" or "scalar": what peak_fma_gflops uses. */
const char *peak_isa(void);
/* Floats per vector of that ISA's loop: 16, 8, or 1 (scalar). */
int peak_vector_lanes(const char *isa);

#endif
