/* libFuzzer harness: the checkpoint reader from a memory image (HDF5's core driver), as the program reads
 * every checkpoint: the whole-file verification, /config, and a full read into the small fuzzing model of
 * fuzz.h with its optimizer, train state and history, and its moving average (/ema) when /config has
 * --ema, as a resume does. No real ResNet is built: its smallest checkpoint is
 * about 1 MB, too slow an input, and the reader's code is the same for any table of tensors. */
#include <stdint.h>

#include "resnet/checkpoint.h"
#include "resnet/config.h"
#include "resnet/ema.h"
#include "resnet/optim.h"
#include "fuzz.h"

#define NAME "fuzz.h5"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static OptimizerKind optimizer_of(const Settings *s) {
    const char *o = settings_get(s, "optimizer");
    return o && !strcmp(o, "sgd") ? OPT_SGD : o && !strcmp(o, "adamw") ? OPT_ADAMW : OPT_ADAM;
}

static int has_ema(const Settings *s) {
    const char *e = settings_get(s, "ema");
    return e && atof(e) > 0;
}

static void read_into(const uint8_t *data, size_t size, Model *m, OptimizerKind kind, int with_ema) {
    OptimConfig oc;
    optim_defaults(&oc, kind);
    Optimizer opt;
    Ema ema = {0};
    if (optim_init(&opt, &oc, m->num_params) == 0 &&
        (!with_ema || ema_init(&ema, 0.5, m->params, m->num_params) == 0)) {
        TrainState ts;
        History h = {0};
        expect_clean_error(checkpoint_image_read_ema(NAME, data, size, m, &opt, &ts, &h, with_ema ? &ema : NULL),
                           NAME);
        history_free(&h);
    }
    ema_free(&ema);
    optim_free(&opt);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    long step;
    expect_clean_error(checkpoint_image_verify(NAME, data, size, &step), NAME);
    Settings s;
    const int rc = checkpoint_image_read_settings(NAME, data, size, &s);
    expect_clean_error(rc, NAME);
    if (rc != 0) return 0;

    float params[26], buffers[4], reference[4];
    Model fake;
    fuzz_model(&fake, params, buffers, reference);
    read_into(data, size, &fake, optimizer_of(&s), has_ema(&s));

    return 0;
}
