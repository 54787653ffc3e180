/* The FP32 FMA peak of the cores a rank runs on, measured rather than looked up: a register-only loop
 * of independent FMA chains on each thread (the machine-independent yardstick for GFLOP/s). */
#ifndef RESNET_PEAK_H
#define RESNET_PEAK_H

/* GFLOP/s of `threads` OpenMP threads running the loop at once (best of a few short rounds, ~0.1 s in
 * all), with the vectors of the convolution kernels in use: kernels is their path ("avx512", "avx2":
 * conv_direct_isa), so that RESNET_ISA=avx2 is measured against the AVX2 peak, which on cores with two
 * 512-bit FMA ports (Intel Xeons) is half the AVX-512 one; NULL or another name (no direct kernels):
 * the widest vectors the CPU has, down to scalar FMA. */
double peak_fma_gflops(int threads, const char *kernels);
/* "avx512", "avx2" or "scalar": the loop peak_fma_gflops runs for these kernels. */
const char *peak_isa(const char *kernels);
/* Floats per vector of that ISA's loop: 16, 8, or 1 (scalar). */
int peak_vector_lanes(const char *isa);

#endif
