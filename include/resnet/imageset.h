/* An image data set in memory: what the readers (cifar10.c, idx.c) fill and dataset.c splits, orders
 * and turns into batches. */
#ifndef RESNET_IMAGESET_H
#define RESNET_IMAGESET_H

#include <stdint.h>

#define IMAGESET_MAX_CLASSES 16

typedef struct {
    int count;            /* images */
    int channels;         /* 3 (CIFAR-10) or 1 (Fashion-MNIST) */
    int size;             /* square side: 32 or 28 */
    int classes;          /* 10 */
    uint8_t *pixels;      /* count * channels * size * size bytes, each image C,H,W */
    uint8_t *labels;      /* count */
    char class_names[IMAGESET_MAX_CLASSES][32];
} ImageSet;

/* Frees the pixels and labels (allocated with malloc or aligned_alloc) and zeroes the set; NULL is fine. */
void imageset_free(ImageSet *s);

#endif
