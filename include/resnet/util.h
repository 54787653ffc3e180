/* Errors, clocks, aligned allocation, number formatting: the few helpers every layer of the program
 * shares. */
#ifndef RESNET_UTIL_H
#define RESNET_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define RESNET_VERSION "0.1.0"

/* Errors travel as return codes (0 ok, -1 failed); the message of the last failure on this thread is
 * kept here so that main.c or dist.c can print it as one line and decide to exit. */
int rn_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
const char *rn_last_error(void);

/* Every line the program writes to stderr for the user (an error, a warning, a notice) starts with
 * RN_PREFIX; rn_message writes one: the prefix, the formatted text and a newline, in a single write so
 * that the lines of ranks sharing a terminal do not interleave. */
#define RN_PREFIX "resnet_mpi: "
void rn_message(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* 64-byte aligned, zero-filled; NULL (with rn_error set) when memory runs out. */
void *rn_alloc(size_t bytes);
void rn_free(void *p);

/* Opens an input file for reading, refusing anything but a regular file (a FIFO, a folder, a device)
 * without blocking on it. A descriptor, or -1 with a one-line rn_error naming the path (errno is the
 * open's, e.g. ENOENT, or EINVAL for the wrong kind of file). */
int rn_open_regular(const char *path);
/* The same as a stdio stream ("rb"); NULL with rn_error and errno as above. */
FILE *rn_fopen_regular(const char *path);

/* Index of the first Inf or NaN in x[0..n), or n when every value is finite. */
size_t rn_first_nonfinite(const float *x, size_t n);

double rn_now(void);          /* monotonic seconds */
long rn_peak_rss_kib(void);   /* peak resident set size of this process */

/* The shortest decimal that reads back as exactly x ("0.1", not "0.100000001"), for numbers a person
 * reads in a checkpoint, a log or a settings list. Writes buf and returns it. */
const char *rn_format_float(char *buf, size_t size, float x);
const char *rn_format_double(char *buf, size_t size, double x);

#endif
