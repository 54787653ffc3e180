/* libFuzzer harness: the IDX reader (plain or gzip) under idx_load, on an arbitrary pair of files. The
 * input is [2 bytes: length L of the images file, little endian][L bytes: images][the rest: labels]. */
#include <stdint.h>

#include "resnet/idx.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2) return 0;
    size_t split = (size_t)data[0] | (size_t)data[1] << 8;
    data += 2;
    size -= 2;
    if (split > size) split = size;
    ImageSet set;
    const int rc = idx_parse("images.idx3", data, split, "labels.idx1", data + split, size - split, &set);
    if (rc == 0) {
        imageset_free(&set);
        return 0;
    }
    /* either file may be the one named */
    const char *msg = rn_last_error();
    expect_clean_error(rc, strncmp(msg, "labels", 6) == 0 ? "labels.idx1" : "images.idx3");
    return 0;
}
