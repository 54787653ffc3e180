/* Image data sets in memory, the readers that validate what they read, the seeded train/validation
 * split, the per-epoch order and the filling of batches with augmentation. */
#ifndef RESNET_DATASET_H
#define RESNET_DATASET_H

#include <stdint.h>
#include <stddef.h>

#define DATASET_MAX_CLASSES 16

typedef struct {
    int count;            /* images */
    int channels;         /* 3 (CIFAR-10) or 1 (Fashion-MNIST) */
    int size;             /* square side: 32 or 28 */
    int classes;          /* 10 */
    uint8_t *pixels;      /* count * channels * size * size bytes, each image C,H,W */
    uint8_t *labels;      /* count */
    char class_names[DATASET_MAX_CLASSES][32];
} ImageSet;

/* CIFAR-10 binary release in dir: data_batch_1..5.bin (train=1) or test_batch.bin (train=0), and the
 * class names from batches.meta.txt (when missing, the standard names). Returns 0, or -1 with a one-line
 * rn_error naming the file and what is wrong (missing, wrong size, label out of range). */
int cifar10_load(const char *dir, int train, ImageSet *out);
/* The parsers under cifar10_load, over bytes in memory (name stands for the file in messages): `records`
 * CIFAR-10 records (size must be exactly records x 3073) into labels[records] and pixels[records x 3072];
 * a batches.meta.txt into ten names. 0 or -1 with rn_error. */
int cifar10_parse_records(const char *name, const uint8_t *buf, size_t size, size_t records, uint8_t *labels,
                          uint8_t *pixels);
int cifar10_parse_class_names(const char *name, const char *text, size_t size, char names[][32]);

/* An IDX pair (images idx3, labels idx1), each gzip-compressed or plain. 0 or -1 with rn_error (bad magic,
 * dimensions, truncated gzip, counts that disagree, label out of range). */
int idx_load(const char *images_path, const char *labels_path, ImageSet *out);
/* The same from bytes in memory (the names stand for the files in messages). */
int idx_parse(const char *images_name, const uint8_t *images, size_t images_size, const char *labels_name,
              const uint8_t *labels, size_t labels_size, ImageSet *out);
/* Fashion-MNIST in dir: train-images-idx3-ubyte[.gz] etc. (train=1) or t10k-* (train=0), with its
 * class names. */
int fashion_mnist_load(const char *dir, int train, ImageSet *out);

/* name "cifar10" or "fashion-mnist" */
int dataset_load(const char *name, const char *dir, int train, ImageSet *out);
void imageset_free(ImageSet *s);

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
