/* Accuracy of a model on a set of records, spread over ranks with a result equal to a one-process
 * evaluation: with batch statistics the BN sums of every rank's slice are reduced, so the statistics
 * are the whole evaluated set's, as the seed's single 5,000-image batch. */
#ifndef RESNET_EVALUATE_H
#define RESNET_EVALUATE_H

#include <stdint.h>
#include <stdio.h>
#include "resnet/dataset.h"
#include "resnet/resnet.h"

typedef struct {
    int capacity;         /* images of this rank's slice */
    float *images;
    int *labels, *predictions;
} Evaluator;

/* Reserves the model's inference arena and image buffers for sets of up to max_set images. 0 or -1. */
int evaluator_init(Evaluator *ev, Model *m, int max_set);
void evaluator_free(Evaluator *ev);

/* Accuracy over records[0..n) of set (no augmentation). confusion [classes x classes] (true row,
 * predicted column), summed over ranks, when not NULL. Every rank must call it (collective). */
double evaluate_records(Evaluator *ev, Model *m, const ImageSet *set, const uint32_t *records, int n,
                        BnMode mode, long *confusion);

/* How the images are presented. augment: the seed's protocol, each image flipped and cropped exactly as
 * in training (dataset_fill_batch) from the fixed evaluation draw (EVAL_AUG_SEED, EVAL_AUG_EPOCH, its
 * record number): reproducible, and the same on any rank count. tta_flip: the logits of each image and
 * of its mirror averaged (each pass with its own batch statistics). */
typedef struct { int augment, tta_flip; } EvalProtocol;
#define EVAL_AUG_SEED 0x6576616cu   /* "eval" */
#define EVAL_AUG_EPOCH (-1)         /* no training epoch has it */

/* The fixed sample the reference BN statistics are measured over (--bn-eval reference): the first
 * sample_size records of the training list (the split's random order), each augmented as in training
 * from its own fixed draw (REFERENCE_AUG_SEED, REFERENCE_AUG_EPOCH, its record number). */
#define REFERENCE_AUG_SEED 0x626e7266u   /* "bnrf" */
#define REFERENCE_AUG_EPOCH (-2)

/* Measures the model's reference BN statistics over records[0..n) of set, augmented as above, spread over
 * ranks with the result of one pass over the whole sample (model_measure_reference). n must fit the
 * evaluator (evaluator_init's max_set). Collective. */
void evaluate_measure_reference(Evaluator *ev, Model *m, const ImageSet *set, const uint32_t *records, int n);

/* evaluate_records under a protocol. */
double evaluate_records_as(Evaluator *ev, Model *m, const ImageSet *set, const uint32_t *records, int n,
                           BnMode mode, EvalProtocol protocol, long *confusion);

/* evaluate_records_as with other parameters in place of the model's own: weights [m->num_params], laid
 * out as m->params (the moving average of ema.h). The model's own are back in place when it returns; BN
 * running statistics (BN_EVAL_RUNNING) stay the model's. Collective. */
double evaluate_records_with_weights(Evaluator *ev, Model *m, const float *weights, const ImageSet *set,
                                     const uint32_t *records, int n, BnMode mode, EvalProtocol protocol,
                                     long *confusion);

/* Averages the BN running statistics over ranks so every replica evaluates and saves the same ones. */
void evaluate_sync_running_stats(Model *m);

/* Accuracy, per-class accuracy and the confusion matrix with class names, as text or one JSON object. */
void evaluate_report(FILE *out, const long *confusion, int classes, const char (*names)[32], int json,
                     const char *split);
/* The same; json_extra ("\"key\":value,...") goes into the JSON object when not NULL. */
void evaluate_report_with(FILE *out, const long *confusion, int classes, const char (*names)[32], int json,
                          const char *split, const char *json_extra);

#endif
