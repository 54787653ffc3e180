/* Test helper: the relative difference ||a - b|| / ||b|| of the /model parameters of two checkpoints
 * of the same configuration. usage: compare_models A.h5 B.h5  (prints the number; exit 1 on error) */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "resnet/checkpoint.h"
#include "resnet/util.h"

static int load(const char *path, Model *m) {
    Settings s;
    if (checkpoint_read_settings(path, &s)) return -1;
    const char *arch = settings_get(&s, "arch");
    const char *keys[4] = {"depth", "in-channels", "image-size", "classes"};
    int v[4];
    for (int i = 0; i < 4; i++) {
        const char *x = settings_get(&s, keys[i]);
        if (!x) return rn_error("%s: /config has no %s", path, keys[i]);
        v[i] = atoi(x);
    }
    ModelConfig mc = {arch && strcmp(arch, "paper") == 0 ? ARCH_PAPER : ARCH_SEED, v[0], v[1], v[2], v[3]};
    if (model_init(m, &mc, 0)) return -1;
    return checkpoint_read(path, m, NULL, NULL, NULL);
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: compare_models A.h5 B.h5\n");
        return 2;
    }
    Model a, b;
    if (load(argv[1], &a) || load(argv[2], &b)) {
        fprintf(stderr, "compare_models: %s\n", rn_last_error());
        return 1;
    }
    if (a.num_params != b.num_params) {
        fprintf(stderr, "compare_models: different models\n");
        return 1;
    }
    double num = 0, den = 0;
    for (size_t i = 0; i < a.num_params; i++) {
        const double d = (double)a.params[i] - b.params[i];
        num += d * d;
        den += (double)b.params[i] * b.params[i];
    }
    printf("%.3g\n", sqrt(num / den));
    model_free(&a);
    model_free(&b);
    return 0;
}
