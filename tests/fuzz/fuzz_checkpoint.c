/* libFuzzer harness: the checkpoint reader from a memory image (HDF5's core driver), as the program reads
 * every checkpoint: the whole-file verification, /config, and a full read into the small fuzzing model
 * and, when /config describes a small real model, into that one (with its optimizer, train state and
 * history, then the model alone, as eval reads it). */
#include <stdint.h>

#include "resnet/checkpoint.h"
#include "resnet/config.h"
#include "resnet/optim.h"
#include "fuzz.h"

#define NAME "fuzz.h5"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static OptimizerKind optimizer_of(const Settings *s) {
    const char *o = settings_get(s, "optimizer");
    return o && !strcmp(o, "sgd") ? OPT_SGD : o && !strcmp(o, "adamw") ? OPT_ADAMW : OPT_ADAM;
}

static void read_into(const uint8_t *data, size_t size, Model *m, OptimizerKind kind) {
    OptimConfig oc;
    optim_defaults(&oc, kind);
    Optimizer opt;
    if (optim_init(&opt, &oc, m->num_params) == 0) {
        TrainState ts;
        History h = {0};
        expect_clean_error(checkpoint_image_read(NAME, data, size, m, &opt, &ts, &h), NAME);
        history_free(&h);
        optim_free(&opt);
    }
    expect_clean_error(checkpoint_image_read(NAME, data, size, m, NULL, NULL, NULL), NAME);
}

/* A real model as /config describes it, when it is small (a fuzzed depth of 1202 would make every input
 * slow); kept between inputs, since building one costs more than reading it. */
static int small_real_model(const Settings *s, ModelConfig *mc) {
    static const char *const keys[] = {"depth", "in-channels", "image-size", "classes"};
    static const long lo[] = {8, 1, 4, 2}, hi[] = {14, 3, 32, 16};
    long v[4];
    for (int i = 0; i < 4; i++) {
        const char *x = settings_get(s, keys[i]);
        char *end;
        if (!x) return 0;
        v[i] = strtol(x, &end, 10);
        if (*end || v[i] < lo[i] || v[i] > hi[i]) return 0;
    }
    if ((v[0] - 2) % 6 != 0) return 0;
    const char *arch = settings_get(s, "arch");
    *mc = (ModelConfig){arch && !strcmp(arch, "paper") ? ARCH_PAPER : ARCH_SEED, (int)v[0], (int)v[1], (int)v[2],
                        (int)v[3]};
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static Model real;
    static ModelConfig real_cfg;
    static int have_real;
    long step;
    expect_clean_error(checkpoint_image_verify(NAME, data, size, &step), NAME);
    Settings s;
    const int rc = checkpoint_image_read_settings(NAME, data, size, &s);
    expect_clean_error(rc, NAME);
    if (rc != 0) return 0;

    float params[26], buffers[4];
    Model fake;
    fuzz_model(&fake, params, buffers);
    read_into(data, size, &fake, optimizer_of(&s));

    ModelConfig mc;
    if (!small_real_model(&s, &mc)) return 0;
    if (!have_real || memcmp(&mc, &real_cfg, sizeof mc) != 0) {
        if (have_real) model_free(&real);
        have_real = model_init(&real, &mc, 1) == 0;
        real_cfg = mc;
        if (!have_real) return 0;
    }
    read_into(data, size, &real, optimizer_of(&s));
    return 0;
}
