/* The CIFAR-10 binary release, read and checked. */
#ifndef RESNET_CIFAR10_H
#define RESNET_CIFAR10_H

#include "resnet/imageset.h"

/* CIFAR-10 binary release in dir: data_batch_1..5.bin (train=1) or test_batch.bin (train=0), and the
 * class names from batches.meta.txt (when missing, the standard names). Returns 0, or -1 with a one-line
 * rn_error naming the file and what is wrong (missing, wrong size, label out of range). */
int cifar10_load(const char *dir, int train, ImageSet *out);

#endif
