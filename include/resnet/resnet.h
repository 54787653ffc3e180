/* The ResNet model: architecture (seed / paper, depth 6n+2), the named parameter table, one contiguous
 * buffer each for parameters, gradients and BN running statistics, an activation arena allocated once
 * per batch size, and forward / backward of the whole network. */
#ifndef RESNET_RESNET_H
#define RESNET_RESNET_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include "resnet/batchnorm.h"

typedef enum { ARCH_SEED = 0, ARCH_PAPER = 1 } Arch;

typedef struct {
    Arch arch;
    int depth;        /* 6n + 2: 20, 32, 44, 56, 110 */
    int in_channels;  /* 3 for CIFAR-10, 1 for Fashion-MNIST */
    int image_size;   /* square images: 32, 28 */
    int classes;
} ModelConfig;

/* One named tensor of a flat buffer, under its PyTorch state_dict name. */
typedef struct {
    char name[64];
    size_t offset;    /* in floats from the start of the buffer */
    size_t numel;
    int ndim;
    int shape[4];
} TensorInfo;

typedef enum {
    BN_TRAIN = 0,     /* batch statistics, activations kept for backward, running stats updated */
    BN_EVAL_BATCH,    /* statistics of the whole evaluated set (the seed's track_running_stats=False) */
    BN_EVAL_RUNNING,  /* running mean / variance (paper arch) */
    BN_EVAL_REFERENCE /* the reference statistics measured by model_measure_reference (either arch) */
} BnMode;

typedef struct ModelPlan ModelPlan;   /* the layer list and arena layout, private to resnet.c */

typedef struct {
    ModelConfig cfg;

    /* parameters, in PyTorch state_dict order */
    int num_param_tensors;
    TensorInfo *param_info;
    size_t num_params;
    float *params;    /* num_params floats */
    float *grads;     /* num_params floats */

    /* BN running statistics (paper arch only; seed BNs do not track them): running_mean and
     * running_var of each BN under their state_dict names, in one buffer. */
    int num_buffer_tensors;
    TensorInfo *buffer_info;
    size_t num_buffer_floats;
    float *buffers;
    int64_t bn_batches_tracked;   /* num_batches_tracked, the same for every BN */

    /* Reference BN statistics: the mean and biased variance every BN application saw over a fixed
     * sample of augmented training images (model_measure_reference), so that an evaluation normalizes
     * with the statistics of the images training normalized with, whatever else is in the batch. One
     * tensor per BN module, "<module>.reference" [applications, 2 (mean, var), channels]: the seed's
     * block BN is applied twice. reference_valid: measured (or read) for the current parameters. */
    int num_reference_tensors;
    TensorInfo *reference_info;
    size_t num_reference_floats;
    float *reference;
    int reference_valid;

    /* Sum BN statistics over ranks; sum == NULL: this process alone. train_reducer is sync-BN;
     * eval_reducer makes a batch-statistics evaluation spread over ranks equal one over the whole set. */
    StatReducer train_reducer;
    StatReducer eval_reducer;

    /* Called during model_backward each time the gradients from float offset `final_from` to the end
     * of grads are final (after the classifier, after each block, after the stem: 0), so that the
     * caller can start reducing them while the backward goes on. fn == NULL: not called. */
    void (*grads_final)(size_t final_from);

    /* outputs of the last forward pass */
    int batch;        /* images in the last forward */
    float *logits;    /* [batch, classes] */
    float *dlogits;   /* [batch, classes], written by model_loss */

    ModelPlan *plan;
} Model;

/* Builds the parameter table and buffers and initialises them as the seed does (Kaiming normal fan_out
 * for convolutions, BN weight 1 bias 0, PyTorch's uniform default for linear and the stem bias), drawn
 * from `seed`. Returns 0, or -1 with rn_error set (bad depth, no memory). */
int model_init(Model *m, const ModelConfig *cfg, uint64_t seed);
void model_free(Model *m);

/* Parameter count of an architecture without building it. */
size_t model_count_params(const ModelConfig *cfg);
const TensorInfo *model_find_param(const Model *m, const char *name);
const TensorInfo *model_find_buffer(const Model *m, const char *name);

/* Allocates the activation arena for batches of up to max_batch images: `training` keeps every
 * activation for backward; inference reuses a few buffers. Called once per batch size, never in a step.
 * Returns 0 or -1 (out of memory). */
int model_reserve(Model *m, int max_batch, int training);

/* images [n, in_channels, image_size, image_size], values in [0, 1]. Leaves logits [n, classes] in
 * m->logits. BN_TRAIN needs a training arena; the eval modes run on either. */
void model_forward(Model *m, const float *images, int n, BnMode mode);

/* A forward in BN_EVAL_BATCH mode over images [n, ...] (n may be a rank's slice of the sample: with the
 * eval_reducer the statistics are the whole sample's) that keeps each BN application's statistics as the
 * model's reference (m->reference, reference_valid = 1). Collective when eval_reducer is set. */
void model_measure_reference(Model *m, const float *images, int n);
const TensorInfo *model_find_reference(const Model *m, const char *name);

/* Cross-entropy of the last forward against labels: returns the sum of the n per-sample losses and
 * writes m->dlogits = (softmax - onehot) / denom. */
double model_loss(Model *m, const int *labels, int n, double denom);

void model_zero_grad(Model *m);
/* Backpropagates m->dlogits through the last BN_TRAIN forward, accumulating into m->grads. */
void model_backward(Model *m);

/* argmax of each row of m->logits */
void model_predict(const Model *m, int n, int *predictions);

/* Floating-point operations for one image: forward only, or a training step (forward + backward). */
double model_flops_per_image(const Model *m, int training);
/* Every layer call is timed by kind and convolution shape into perf's profile while
 * perf_profile_enabled() (bench --profile). */

/* One row of the model as PyTorch's torchsummary lists it: the modules in the order forward calls them
 * (the seed's BN, called twice per block, is listed twice), named by their PyTorch class, with the
 * state_dict prefix of their parameters. The parameters of a row are the table's tensors named
 * "<module>.<leaf>"; rows without parameters (ReLU, pooling, the block itself) have none. */
typedef struct {
    char type[16];        /* Conv2d, BatchNorm2d, ReLU, block (seed), BasicBlock (paper), AvgPool2d, Linear */
    char module[64];      /* "conv1", "module2.0.downsample.0", "module1.0.bn", "fc", ... */
    int channels, height, width;   /* output per image; height = width = 0 for Linear's [classes] */
} ModelLayer;

/* Writes up to capacity rows; returns how many the model has (call with capacity 0 to size a table). */
int model_layers(const Model *m, ModelLayer *rows, int capacity);

/* Bytes of the activation arena currently reserved. */
size_t model_arena_bytes(const Model *m);

#endif
