/* IDX files (MNIST's format) and the Fashion-MNIST release, read and checked. */
#ifndef RESNET_IDX_H
#define RESNET_IDX_H

#include <stddef.h>
#include <stdint.h>

#include "resnet/imageset.h"

/* An IDX pair (images idx3, labels idx1), each gzip-compressed or plain. 0 or -1 with rn_error (bad magic,
 * dimensions, truncated gzip, counts that disagree, label out of range). */
int idx_load(const char *images_path, const char *labels_path, ImageSet *out);
/* The same from bytes in memory (the names stand for the files in messages). */
int idx_parse(const char *images_name, const uint8_t *images, size_t images_size, const char *labels_name,
              const uint8_t *labels, size_t labels_size, ImageSet *out);
/* Fashion-MNIST in dir: train-images-idx3-ubyte[.gz] etc. (train=1) or t10k-* (train=0), with its
 * class names. */
int fashion_mnist_load(const char *dir, int train, ImageSet *out);

#endif
