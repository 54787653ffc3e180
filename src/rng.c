/* Counter-based random numbers. A draw is a hash of (key, counter) rather than the next state of a
 * generator, so any draw can be recomputed from its coordinates alone: a rank, a restarted run or a
 * thread that handles sample 17 gets the same value without replaying the draws before it. */
#include "resnet/rng.h"

#include <math.h>

/* splitmix64's finaliser (Steele, Lea, Flood 2014): a bijection on 64 bits with full avalanche. */
static uint64_t mix64(uint64_t z) {
    z += 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Each word is folded in after the previous ones were fully mixed, so the position of a word matters:
 * (s, a, b, c) and (s, b, a, c) hash differently. mix64 is a bijection, hence for fixed other words
 * distinct values of any one word never collide. */
uint64_t rng_hash(uint64_t seed, uint64_t a, uint64_t b, uint64_t c) {
    uint64_t h = mix64(seed);
    h = mix64(h ^ a);
    h = mix64(h ^ b);
    return mix64(h ^ c);
}

/* The stream tag keeps a stream's key away from the keys rng_hash gives other users of (seed, stream). */
#define STREAM_TAG 0x73747265616dULL /* "stream" */

void rng_init(Rng *r, uint64_t seed, uint64_t stream) {
    r->key = rng_hash(seed, stream, STREAM_TAG, 0);
    r->counter = 0;
}

uint64_t rng_next(Rng *r) {
    /* two rounds are enough: the key is already a full-entropy hash */
    return mix64(r->key ^ mix64(r->counter++));
}

double rng_uniform(Rng *r) {
    /* the top 53 bits fill a double's mantissa exactly: every value k / 2^53 equally likely, never 1 */
    return (double)(rng_next(r) >> 11) * 0x1.0p-53;
}

double rng_normal(Rng *r) {
    /* One Box-Muller value per call; the second of the pair is dropped because a saved spare would make
     * a draw depend on whether the previous call produced it. 1 - u lies in (0, 1], so log never sees 0. */
    const double u1 = 1.0 - rng_uniform(r);
    const double u2 = rng_uniform(r);
    return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

uint32_t rng_below(Rng *r, uint32_t n) {
    if (n <= 1) return 0;
    /* Lemire's multiply-shift with rejection (2019): the product's high half is the result, and the
     * low-half test throws away exactly the 2^32 mod n values that would make some results more likely. */
    uint64_t m = (uint64_t)(uint32_t)(rng_next(r) >> 32) * n;
    uint32_t low = (uint32_t)m;
    if (low < n) {
        const uint32_t threshold = (uint32_t)(-n) % n;   /* 2^32 mod n */
        while (low < threshold) {
            m = (uint64_t)(uint32_t)(rng_next(r) >> 32) * n;
            low = (uint32_t)m;
        }
    }
    return (uint32_t)(m >> 32);
}

void rng_permutation(uint32_t *perm, uint32_t n, uint64_t seed, uint64_t stream) {
    for (uint32_t i = 0; i < n; i++) perm[i] = i;
    Rng r;
    rng_init(&r, seed, stream);
    /* Fisher-Yates from the top: position i takes a uniform pick among the i + 1 not yet placed */
    for (uint32_t i = n; i > 1; i--) {
        const uint32_t j = rng_below(&r, i);
        const uint32_t t = perm[i - 1];
        perm[i - 1] = perm[j];
        perm[j] = t;
    }
}
