/* Every MPI call of the program lives behind this header (CoMD's parallel.c habit). Without mpirun the
 * program runs as a world of one. */
#ifndef RESNET_DIST_H
#define RESNET_DIST_H

#include <stddef.h>

int dist_init(int *argc, char ***argv);   /* 0, or -1 with rn_error */
void dist_finalize(void);
int dist_rank(void);
int dist_size(void);
int dist_local_size(void);                 /* ranks sharing this node (MPI_Comm_split_type) */
int dist_local_rank(void);
/* This rank's contiguous share of count items, [*lo, *lo + *n): shares differ by at most one and
 * follow rank order, so the ranks together cover every item once. */
void dist_slice(int count, int *lo, int *n);

void dist_allreduce_sum_float(float *values, size_t count);   /* in place, over all ranks */
/* The gradient allreduce overlapped with the backward: values[0..count) summed over all ranks in
 * buckets of bucket_floats (0: one), each started by dist_buckets_ready as soon as the part from
 * final_from to the end of the buffer is final, and all completed by dist_buckets_wait. Every rank makes
 * the same calls with the same final_from sequence (the same collectives in the same order). The sums
 * equal dist_allreduce_sum_float's up to the reduction order MPI picks for each message size. Returns
 * the number of buckets. */
int dist_buckets_init(float *values, size_t count, size_t bucket_floats);
void dist_buckets_ready(size_t final_from);
void dist_buckets_wait(void);
void dist_allreduce_sum_double(double *values, int count);
/* StatReducer-compatible form of dist_allreduce_sum_double */
void dist_stat_sum(double *values, int count, void *ctx);
double dist_max_double(double value);
/* Element by element over all ranks: the minimum, sum and maximum of values[0..count) (perf's
 * PerfReduce). */
void dist_min_sum_max(const double *values, double *min, double *sum, double *max, int count);
long dist_sum_long(long value);
int dist_any(int flag);                   /* logical OR over ranks */
void dist_bcast(void *buffer, size_t bytes, int root);
void dist_barrier(void);

/* The stall watchdog: with a timeout, every collective above that does not complete within `seconds`
 * ends the job with exit DIST_EXIT_STALLED after one line on stderr naming the ranks that have not
 * arrived. 0 (the start): blocking collectives without a deadline. Every rank should set it. */
#define DIST_EXIT_STALLED 3
void dist_set_timeout(double seconds);
double dist_timeout(void);
/* What the program is doing, for the stall message ("step 170", "checkpoint at step 170"). */
void dist_set_activity(const char *what);

/* Prints "resnet_mpi: rank R: <message>" on stderr and ends the whole job with `code` (an exit before
 * MPI_Finalize under Open MPI's mpirun, MPI_Abort elsewhere): no rank is left waiting in a collective. */
_Noreturn void dist_fail(int code, const char *message);

#endif
