/* What the libFuzzer harnesses share: the contract every reader keeps on bad input (a failure is one
 * line that starts with the name of the file), and a model small enough to make a whole checkpoint
 * read succeed on a file of a few KB. */
#ifndef RESNET_FUZZ_H
#define RESNET_FUZZ_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "resnet/resnet.h"
#include "resnet/util.h"

/* A failed read must say which file, on one line: anything else is a bug in our code, reported as a
 * crash so that libFuzzer keeps the input. */
static inline void expect_clean_error(int rc, const char *name) {
    if (rc == 0) return;
    const char *msg = rn_last_error();
    if (strncmp(msg, name, strlen(name)) != 0 || strchr(msg, '\n')) {
        fprintf(stderr, "fuzz: the error does not name %s on one line: '%s'\n", name, msg);
        abort();
    }
}

/* Three parameter tensors and one BN's running statistics, named as in the paper model. */
static TensorInfo fuzz_param_info[] = {
    {"conv1.weight", 0, 18, 4, {2, 1, 3, 3}},
    {"fc.weight", 18, 6, 2, {2, 3}},
    {"fc.bias", 24, 2, 1, {2}},
};
static TensorInfo fuzz_buffer_info[] = {
    {"bn1.running_mean", 0, 2, 1, {2}},
    {"bn1.running_var", 2, 2, 1, {2}},
};

/* The reference BN statistics of that BN (--bn-eval reference): [1 application, mean/var, 2 channels]. */
static TensorInfo fuzz_reference_info[] = {
    {"bn1.reference", 0, 4, 3, {1, 2, 2}},
};

static inline void fuzz_model(Model *m, float *params, float *buffers, float *reference) {
    memset(m, 0, sizeof *m);
    m->cfg = (ModelConfig){.arch = ARCH_PAPER, .depth = 8, .in_channels = 1, .image_size = 4, .classes = 2};
    m->num_param_tensors = 3;
    m->param_info = fuzz_param_info;
    m->num_params = 26;
    m->params = params;
    m->num_buffer_tensors = 2;
    m->buffer_info = fuzz_buffer_info;
    m->num_buffer_floats = 4;
    m->buffers = buffers;
    m->num_reference_tensors = 1;
    m->reference_info = fuzz_reference_info;
    m->num_reference_floats = 4;
    m->reference = reference;
}

#endif
