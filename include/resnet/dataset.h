/* What training sees of the data: a set loaded by its reader, the seeded train/validation split, the
 * per-epoch order and the filling of batches with augmentation. */
#ifndef RESNET_DATASET_H
#define RESNET_DATASET_H

#include <stdint.h>
#include <stddef.h>

#include "resnet/imageset.h"

/* name "cifar10" or "fashion-mnist": the reader of that release (cifar10.h, idx.h) */
int dataset_load(const char *name, const char *dir, int train, ImageSet *out);

/* The seeded split: a permutation of 0..total-1 drawn from split_seed; its first total - val_size entries
 * are the training records, the last val_size the validation records (as torch's random_split). The
 * arrays are allocated (free with free()). 0 or -1 with rn_error (val_size out of range). */
int dataset_split(int total, int val_size, uint64_t split_seed, uint32_t **train_records,
                  int *num_train, uint32_t **val_records, int *num_val);

/* order[i] = position in the training list of the i-th sample of `epoch`: a permutation of 0..n-1
 * drawn from (seed, epoch), identical on every rank. */
void dataset_epoch_order(uint32_t *order, int n, uint64_t seed, int epoch);

/* Fills out [count, channels, size, size] floats in [0, 1] and labels [count] from the given record
 * numbers of set. With augment: per sample a horizontal flip with p = 0.5, then zero padding by 4 and a
 * random crop back to size x size, both drawn from rng_hash(seed, epoch, record) so that a sample's
 * augmentation does not depend on the rank that reads it. */
void dataset_fill_batch(const ImageSet *set, const uint32_t *records, int count, float *out, int *labels,
                        int augment, uint64_t seed, int epoch);

/* The augmentation drawn for one sample: flip (0/1) and the crop offsets dy, dx in [0, 8]. Exposed for
 * tests; dataset_fill_batch uses exactly this. */
void dataset_augment_params(uint64_t seed, int epoch, uint32_t record, int *flip, int *dy, int *dx);

#endif
