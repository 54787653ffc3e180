/* Counter-based random numbers: every draw is a pure function of (seed, stream, counter), so a value
 * does not depend on which rank draws it nor on a restart. */
#ifndef RESNET_RNG_H
#define RESNET_RNG_H

#include <stdint.h>
#include <stddef.h>

/* A 64-bit mix of the key words (splitmix64 finaliser chained over the words). */
uint64_t rng_hash(uint64_t seed, uint64_t a, uint64_t b, uint64_t c);

/* A sequential stream for initialisation and shuffling, seeded from (seed, stream). */
typedef struct { uint64_t key; uint64_t counter; } Rng;
void rng_init(Rng *r, uint64_t seed, uint64_t stream);
uint64_t rng_next(Rng *r);
double rng_uniform(Rng *r);             /* [0, 1) with 53 random bits */
double rng_normal(Rng *r);              /* standard normal (Box-Muller) */
uint32_t rng_below(Rng *r, uint32_t n); /* uniform in [0, n), unbiased */
/* Fisher-Yates permutation of 0..n-1 drawn from (seed, stream). */
void rng_permutation(uint32_t *perm, uint32_t n, uint64_t seed, uint64_t stream);

#endif
