/* libFuzzer harness: the CIFAR-10 parsers under cifar10_load, on arbitrary bytes. The input is read
 * both as batch records (as many as it would hold) and as a batches.meta.txt. */
#include <stdint.h>

#include "resnet/cifar10.h"
#include "fuzz.h"

#define CIFAR_RECORD 3073

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char names[IMAGESET_MAX_CLASSES][32];
    expect_clean_error(cifar10_parse_class_names("batches.meta.txt", (const char *)data, size, names),
                       "batches.meta.txt");
    /* a whole number of records parses; any other size must fail cleanly */
    const size_t records = size / CIFAR_RECORD + (size % CIFAR_RECORD != 0);
    uint8_t *labels = malloc(records + 1), *pixels = malloc(records * (CIFAR_RECORD - 1) + 1);
    if (labels && pixels)
        expect_clean_error(cifar10_parse_records("data_batch_1.bin", data, size, records, labels, pixels),
                           "data_batch_1.bin");
    free(labels);
    free(pixels);
    return 0;
}
