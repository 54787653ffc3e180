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
 * ends the job with MPI_Abort(DIST_EXIT_STALLED) after one line on stderr naming the ranks that have
 * not arrived. 0 (the start): blocking collectives without a deadline. Every rank should set it. */
#define DIST_EXIT_STALLED 3
void dist_set_timeout(double seconds);
double dist_timeout(void);
/* What the program is doing, for the stall message ("step 170", "checkpoint at step 170"). */
void dist_set_activity(const char *what);

/* Prints "resnet_mpi: rank R: <message>" on stderr and ends the whole job with MPI_Abort(code):
 * no rank is left waiting in a collective. */
_Noreturn void dist_fail(int code, const char *message);

#endif
