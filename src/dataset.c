/* What the trainer sees of the data: a loaded set, the seeded split, the epoch order and filled batches.
 * Every random choice here is a pure function of seeds and indices (see SEMANTICS.md, Data), so ranks,
 * threads and restarts all see the same split, order and augmentation. */
#include "resnet/dataset.h"

#include <stdlib.h>
#include <string.h>

#include "resnet/cifar10.h"
#include "resnet/idx.h"
#include "resnet/rng.h"
#include "resnet/util.h"

/* Stream tags: the split and the epoch orders draw from different seeds' streams, but a tag per purpose
 * keeps them apart even when a user passes the same number to --seed and --split-seed. */
#define SPLIT_STREAM 0x73706c6974ULL        /* "split" */
#define EPOCH_STREAM 0x65706f6368ULL        /* "epoch" */
#define AUG_TAG 0x617567ULL                 /* "aug" */
#define AUG_PAD 4
#define AUG_OFFSETS (2 * AUG_PAD + 1)       /* crop offsets 0..8 in the padded image */

int dataset_load(const char *name, const char *dir, int train, ImageSet *out) {
    memset(out, 0, sizeof *out);
    if (strcmp(name, "cifar10") == 0) return cifar10_load(dir, train, out);
    if (strcmp(name, "fashion-mnist") == 0) return fashion_mnist_load(dir, train, out);
    return rn_error("unknown data set \"%s\" (expected cifar10 or fashion-mnist)", name);
}

int dataset_split(int total, int val_size, uint64_t split_seed, uint32_t **train_records, int *num_train,
                  uint32_t **val_records, int *num_val) {
    *train_records = *val_records = NULL;
    *num_train = *num_val = 0;
    if (total < 2 || val_size < 1 || val_size > total - 1)
        return rn_error("validation size %d out of range: a set of %d records allows 1..%d (--val-size)", val_size,
                        total, total - 1);
    uint32_t *perm = malloc(sizeof *perm * (size_t)total);
    uint32_t *val = malloc(sizeof *val * (size_t)val_size);
    if (!perm || !val) {
        free(perm);
        free(val);
        return rn_error("out of memory splitting %d records", total);
    }
    rng_permutation(perm, (uint32_t)total, split_seed, SPLIT_STREAM);
    const int n_train = total - val_size;
    memcpy(val, perm + n_train, sizeof *val * (size_t)val_size);
    /* the training list is the permutation's head: shrink in place instead of copying it */
    uint32_t *train = realloc(perm, sizeof *train * (size_t)n_train);
    *train_records = train ? train : perm;
    *val_records = val;
    *num_train = n_train;
    *num_val = val_size;
    return 0;
}

void dataset_epoch_order(uint32_t *order, int n, uint64_t seed, int epoch) {
    if (n <= 0) return;
    rng_permutation(order, (uint32_t)n, seed, EPOCH_STREAM << 24 ^ (uint32_t)epoch);
}

void dataset_augment_params(uint64_t seed, int epoch, uint32_t record, int *flip, int *dy, int *dx) {
    const uint64_t h = rng_hash(seed, (uint64_t)(int64_t)epoch, record, AUG_TAG);
    *flip = (int)(h & 1);
    /* (dy, dx) as one of 81 values drawn from the other 63 bits. Rejecting the top 2^63 mod 81 values
     * makes every pair exactly equally likely; a rejection (odds ~1e-17) rehashes instead of giving up. */
    const uint64_t range = (uint64_t)AUG_OFFSETS * AUG_OFFSETS;
    const uint64_t limit = ((uint64_t)1 << 63) - ((uint64_t)1 << 63) % range;
    uint64_t w = h >> 1;
    for (uint64_t k = 1; w >= limit; k++) w = rng_hash(h, k, record, AUG_TAG) >> 1;
    const int v = (int)(w % range);
    *dy = v / AUG_OFFSETS;
    *dx = v % AUG_OFFSETS;
}

/* One sample: horizontal flip, then the crop at (dy, dx) of the image zero-padded by AUG_PAD, i.e.
 * out[y][x] = flipped[y + dy - 4][x + dx - 4], or 0 where that falls in the padding. */
static void fill_augmented(const uint8_t *src, float *dst, int channels, int size, int flip, int dy, int dx,
                           const float *lut) {
    for (int c = 0; c < channels; c++) {
        const uint8_t *plane = src + (size_t)c * size * size;
        float *out = dst + (size_t)c * size * size;
        for (int y = 0; y < size; y++) {
            const int sy = y + dy - AUG_PAD;
            float *row = out + (size_t)y * size;
            if (sy < 0 || sy >= size) {
                memset(row, 0, sizeof *row * (size_t)size);
                continue;
            }
            const uint8_t *in = plane + (size_t)sy * size;
            for (int x = 0; x < size; x++) {
                const int sx = x + dx - AUG_PAD;
                row[x] = sx < 0 || sx >= size ? 0.0f : lut[in[flip ? size - 1 - sx : sx]];
            }
        }
    }
}

void dataset_fill_batch(const ImageSet *set, const uint32_t *records, int count, float *out, int *labels,
                        int augment, uint64_t seed, int epoch) {
    /* a table gives exactly the values of p / 255.0f, without a division per pixel */
    float lut[256];
    for (int p = 0; p < 256; p++) lut[p] = (float)p / 255.0f;
    const size_t pixels = (size_t)set->channels * set->size * set->size;
    /* each sample is written by one thread from its own record only: any thread count gives the same bytes */
#pragma omp parallel for schedule(static)
    for (int i = 0; i < count; i++) {
        const uint32_t rec = records[i];
        const uint8_t *src = set->pixels + (size_t)rec * pixels;
        float *dst = out + (size_t)i * pixels;
        labels[i] = set->labels[rec];
        if (augment) {
            int flip, dy, dx;
            dataset_augment_params(seed, epoch, rec, &flip, &dy, &dx);
            fill_augmented(src, dst, set->channels, set->size, flip, dy, dx, lut);
        } else {
            for (size_t j = 0; j < pixels; j++) dst[j] = lut[src[j]];
        }
    }
}
