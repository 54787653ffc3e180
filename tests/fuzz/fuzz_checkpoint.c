/* libFuzzer harness: the checkpoint reader from a memory image (HDF5's core driver), as the program reads
 * every checkpoint: the whole-file verification, /config, and a full read into the small fuzzing model of
 * fuzz.h with its optimizer, train state and history. No real ResNet is built: its smallest checkpoint is
 * about 1 MB, too slow an input, and the reader's code is the same for any table of tensors. */
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
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
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

    return 0;
}
