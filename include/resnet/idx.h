/* IDX files (MNIST's format) and the Fashion-MNIST release, read and checked. */
#ifndef RESNET_IDX_H
#define RESNET_IDX_H

#include "resnet/imageset.h"

/* An IDX pair (images idx3, labels idx1), each gzip-compressed or plain. 0 or -1 with rn_error (bad magic,
 * dimensions, truncated gzip, counts that disagree, label out of range). */
int idx_load(const char *images_path, const char *labels_path, ImageSet *out);
/* Fashion-MNIST in dir: train-images-idx3-ubyte[.gz] etc. (train=1) or t10k-* (train=0), with its
 * class names. */
int fashion_mnist_load(const char *dir, int train, ImageSet *out);

#endif
