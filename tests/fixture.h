/* Reader of the reference fixtures written by scripts/make_reference.py: a file of named tensors.
 * Format (little endian): "RNFX0001", u32 count, then per tensor: u32 name length, name bytes,
 * u32 dtype (0 float32, 1 int32, 2 float64), u32 ndim, u32 dims[ndim], the values. */
#ifndef RESNET_TEST_FIXTURE_H
#define RESNET_TEST_FIXTURE_H

#include <stddef.h>

typedef struct {
    char name[128];
    int dtype, ndim;
    int dims[8];
    size_t numel;
    void *data;
} FixtureTensor;

typedef struct { int count; FixtureTensor *tensors; } Fixture;

/* path relative to $RESNET_TEST_DATA (or tests/data); 0 or -1 with a message on stderr */
int fixture_load(Fixture *f, const char *name);
const FixtureTensor *fixture_get(const Fixture *f, const char *name);   /* NULL when absent */
void fixture_free(Fixture *f);

/* ||a - b|| / ||b|| in double */
double rel_error(const float *a, const float *b, size_t n);

#endif
