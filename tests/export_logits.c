/* Test helper for torch_export.sh: loads a checkpoint, runs a fixed batch through it and writes the
 * images and logits in the fixture format (tests/fixture.h) for the PyTorch side to compare.
 * usage: export_logits CHECKPOINT OUT.bin MODE [ema]   (MODE: batch | running | reference; ema: the
 * moving average with its own reference statistics, /ema and /ema/reference, as eval uses them) */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "resnet/checkpoint.h"
#include "resnet/rng.h"
#include "resnet/util.h"

static void put_u32(FILE *f, uint32_t v) { fwrite(&v, 4, 1, f); }

static void put_tensor(FILE *f, const char *name, const float *data, int ndim, const int *dims) {
    size_t count = 1;
    put_u32(f, (uint32_t)strlen(name));
    fwrite(name, 1, strlen(name), f);
    put_u32(f, 0);
    put_u32(f, (uint32_t)ndim);
    for (int i = 0; i < ndim; i++) {
        put_u32(f, (uint32_t)dims[i]);
        count *= (size_t)dims[i];
    }
    fwrite(data, sizeof(float), count, f);
}

static int setting_int(const Settings *s, const char *key) {
    const char *v = settings_get(s, key);
    if (!v) {
        fprintf(stderr, "export_logits: /config has no %s\n", key);
        exit(1);
    }
    return atoi(v);
}

int main(int argc, char **argv) {
    const int use_ema = argc == 5 && strcmp(argv[4], "ema") == 0;
    if (argc != 4 && !use_ema) {
        fprintf(stderr, "usage: export_logits CHECKPOINT OUT.bin batch|running|reference [ema]\n");
        return 2;
    }
    Settings s;
    if (checkpoint_read_settings(argv[1], &s)) {
        fprintf(stderr, "export_logits: %s\n", rn_last_error());
        return 1;
    }
    const char *arch = settings_get(&s, "arch");
    ModelConfig mc = {arch && strcmp(arch, "paper") == 0 ? ARCH_PAPER : ARCH_SEED, setting_int(&s, "depth"),
                      setting_int(&s, "in-channels"), setting_int(&s, "image-size"), setting_int(&s, "classes")};
    const int n = 8, pixels = mc.in_channels * mc.image_size * mc.image_size;
    Model m;
    if (model_init(&m, &mc, 0) ||
        (use_ema ? checkpoint_read_average(argv[1], &m, NULL) : checkpoint_read(argv[1], &m, NULL, NULL, NULL)) ||
        model_reserve(&m, n, 0)) {
        fprintf(stderr, "export_logits: %s\n", rn_last_error());
        return 1;
    }
    float *images = malloc(sizeof(float) * n * pixels);
    Rng rng;
    rng_init(&rng, 7, 7);
    for (int i = 0; i < n * pixels; i++) images[i] = (float)rng_uniform(&rng);
    const BnMode mode = strcmp(argv[3], "running") == 0     ? BN_EVAL_RUNNING
                        : strcmp(argv[3], "reference") == 0 ? BN_EVAL_REFERENCE
                                                            : BN_EVAL_BATCH;
    if (mode == BN_EVAL_REFERENCE && !m.reference_valid) {
        fprintf(stderr, "export_logits: %s has no %s\n", argv[1], use_ema ? "/ema/reference" : "/reference");
        return 1;
    }
    model_forward(&m, images, n, mode);
    FILE *f = fopen(argv[2], "wb");
    if (!f) {
        perror(argv[2]);
        return 1;
    }
    fwrite("RNFX0001", 1, 8, f);
    put_u32(f, 2);
    int idims[4] = {n, mc.in_channels, mc.image_size, mc.image_size}, ldims[2] = {n, mc.classes};
    put_tensor(f, "images", images, 4, idims);
    put_tensor(f, "logits", m.logits, 2, ldims);
    fclose(f);
    free(images);
    model_free(&m);
    return 0;
}
