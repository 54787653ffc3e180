/* The FP32 FMA peak of the cores a rank runs on, measured rather than looked up: a register-only loop
 * of independent FMA chains on each thread (the machine-independent yardstick for GFLOP/s). */
#ifndef RESNET_PEAK_H
#define RESNET_PEAK_H

/* GFLOP/s of `threads` OpenMP threads running the loop at once (the best of short rounds, as peak_settled
 * decides: ~0.1 s in all, at most 16 rounds), with the vectors of the convolution kernels in use: kernels
 * is their path ("avx512", "avx2": conv_direct_isa), so that RESNET_ISA=avx2 is measured against the AVX2
 * peak, which on cores with two 512-bit FMA ports (Intel Xeons) is half the AVX-512 one; NULL or another
 * name (no direct kernels): the widest vectors the CPU has, down to scalar FMA. */
double peak_fma_gflops(int threads, const char *kernels);
/* Two rounds within this share of each other's rate are the peak. */
#define PEAK_AGREE 0.02
/* Whether the rates of rounds [0, n) have settled, and their best in *best. Round 0 never counts: it
 * pays for starting the threads and for waking the cores' wide vector units, and measured 0.55-0.98 of
 * the peak on a 2-core Xeon VM. Settled: two rounds after it within PEAK_AGREE of the best, since a
 * round that shares its core with another process (a VM's neighbour, MPI's start-up) runs at a fraction
 * of the peak for a few rounds in a row (0.75 for five rounds seen), and a best of three rounds then
 * halved the peak and doubled the share of it that bench and the run's report print. */
int peak_settled(const double *rounds, int n, double *best);
/* "avx512", "avx2" or "scalar": the loop peak_fma_gflops runs for these kernels. */
const char *peak_isa(const char *kernels);
/* Floats per vector of that ISA's loop: 16, 8, or 1 (scalar). */
int peak_vector_lanes(const char *isa);

#endif
