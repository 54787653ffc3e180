/* The CIFAR-10 binary release, read and checked. */
#ifndef RESNET_CIFAR10_H
#define RESNET_CIFAR10_H

#include <stddef.h>
#include <stdint.h>

#include "resnet/imageset.h"

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

#endif
