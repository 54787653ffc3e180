/* Test helper for plot_report.sh: the training images dataset_fill_batch makes of given records with
 * augmentation on, for comparison with scripts/plot.py's reproduction of the augmentation.
 * usage: augment_dump DATASET DIR SEED OUT.bin EPOCH RECORD [EPOCH RECORD ...]
 * Prints "epoch record flip dy dx" per pair and writes each image (floats, C,H,W) to OUT.bin in order. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "resnet/dataset.h"
#include "resnet/util.h"

int main(int argc, char **argv) {
    if (argc < 7 || (argc - 5) % 2) {
        fprintf(stderr, "usage: augment_dump DATASET DIR SEED OUT.bin EPOCH RECORD [EPOCH RECORD ...]\n");
        return 2;
    }
    ImageSet set;
    if (dataset_load(argv[1], argv[2], 1, &set)) {
        fprintf(stderr, "augment_dump: %s\n", rn_last_error());
        return 1;
    }
    const uint64_t seed = strtoull(argv[3], NULL, 10);
    FILE *out = fopen(argv[4], "wb");
    const size_t pixels = (size_t)set.channels * set.size * set.size;
    float *image = malloc(sizeof(float) * pixels);
    if (!out || !image) {
        fprintf(stderr, "augment_dump: cannot write %s\n", argv[4]);
        return 1;
    }
    for (int i = 5; i + 1 < argc; i += 2) {
        const int epoch = atoi(argv[i]);
        const uint32_t record = (uint32_t)strtoul(argv[i + 1], NULL, 10);
        if (record >= (uint32_t)set.count) {
            fprintf(stderr, "augment_dump: record %u of %d\n", record, set.count);
            return 1;
        }
        int flip, dy, dx, label;
        dataset_augment_params(seed, epoch, record, &flip, &dy, &dx);
        dataset_fill_batch(&set, &record, 1, image, &label, 1, seed, epoch);
        printf("%d %u %d %d %d\n", epoch, record, flip, dy, dx);
        fwrite(image, sizeof(float), pixels, out);
    }
    free(image);
    imageset_free(&set);
    return fclose(out) == 0 ? 0 : 1;
}
