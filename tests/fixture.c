#include "fixture.h"
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

static int read_u32(FILE *f, uint32_t *v) { return fread(v, 4, 1, f) == 1 ? 0 : -1; }

int fixture_load(Fixture *fx, const char *name) {
    const char *dir = getenv("RESNET_TEST_DATA");
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir ? dir : "tests/data", name);
    memset(fx, 0, sizeof *fx);
    FILE *f = fopen(path, "rb");
    if (!f) { fprintf(stderr, "fixture %s: cannot open\n", path); return -1; }
    char magic[8];
    uint32_t count;
    if (fread(magic, 1, 8, f) != 8 || memcmp(magic, "RNFX0001", 8) != 0 || read_u32(f, &count)) {
        fprintf(stderr, "fixture %s: bad header\n", path);
        fclose(f);
        return -1;
    }
    fx->tensors = calloc(count, sizeof *fx->tensors);
    for (uint32_t i = 0; i < count; i++) {
        FixtureTensor *t = &fx->tensors[i];
        uint32_t len, dtype, ndim;
        if (read_u32(f, &len) || len >= sizeof t->name || fread(t->name, 1, len, f) != len ||
            read_u32(f, &dtype) || read_u32(f, &ndim) || ndim > 8 || dtype > 2)
            goto bad;
        t->dtype = (int)dtype;
        t->ndim = (int)ndim;
        t->numel = 1;
        for (uint32_t d = 0; d < ndim; d++) {
            uint32_t dim;
            if (read_u32(f, &dim)) goto bad;
            t->dims[d] = (int)dim;
            t->numel *= dim;
        }
        size_t elem = dtype == 2 ? 8 : 4;
        t->data = malloc(t->numel * elem + 1);
        if (fread(t->data, elem, t->numel, f) != t->numel) goto bad;
        fx->count = (int)i + 1;
    }
    fclose(f);
    return 0;
bad:
    fprintf(stderr, "fixture %s: truncated or malformed\n", path);
    fclose(f);
    fixture_free(fx);
    return -1;
}

const FixtureTensor *fixture_get(const Fixture *fx, const char *name) {
    for (int i = 0; i < fx->count; i++)
        if (strcmp(fx->tensors[i].name, name) == 0) return &fx->tensors[i];
    return NULL;
}

void fixture_free(Fixture *fx) {
    for (int i = 0; i < fx->count; i++) free(fx->tensors[i].data);
    free(fx->tensors);
    memset(fx, 0, sizeof *fx);
}

double rel_error(const float *a, const float *b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - (double)b[i];
        num += d * d;
        den += (double)b[i] * (double)b[i];
    }
    if (den == 0) return sqrt(num);
    return sqrt(num / den);
}
