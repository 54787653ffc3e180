/* Evaluation of a model on a set of records: see evaluate.h. */
#include "resnet/evaluate.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "resnet/checkpoint.h"
#include "resnet/dist.h"
#include "resnet/util.h"

int evaluator_init(Evaluator *ev, Model *m, int max_set) {
    memset(ev, 0, sizeof *ev);
    const int P = dist_size();
    ev->capacity = (max_set + P - 1) / P;
    const size_t pixels = (size_t)m->cfg.in_channels * m->cfg.image_size * m->cfg.image_size;
    ev->images = rn_alloc(sizeof(float) * pixels * ev->capacity);
    ev->labels = rn_alloc(sizeof(int) * ev->capacity);
    ev->predictions = rn_alloc(sizeof(int) * ev->capacity);
    if (!ev->images || !ev->labels || !ev->predictions || model_reserve(m, ev->capacity, 0)) {
        evaluator_free(ev);
        return -1;
    }
    return 0;
}

void evaluator_free(Evaluator *ev) {
    rn_free(ev->images);
    rn_free(ev->labels);
    rn_free(ev->predictions);
    memset(ev, 0, sizeof *ev);
}

void evaluate_sync_running_stats(Model *m) {
    const int P = dist_size();
    if (P == 1 || m->num_buffer_floats == 0) return;
    dist_allreduce_sum_float(m->buffers, m->num_buffer_floats);
    for (size_t i = 0; i < m->num_buffer_floats; i++) m->buffers[i] /= (float)P;
}

/* images [count, C, S, S] mirrored left-right in place */
static void mirror_images(float *images, int count, int channels, int size) {
    const size_t rows = (size_t)count * channels * size;
#pragma omp parallel for schedule(static)
    for (size_t r = 0; r < rows; r++) {
        float *row = images + r * size;
        for (int x = 0; x < size / 2; x++) {
            const float t = row[x];
            row[x] = row[size - 1 - x];
            row[size - 1 - x] = t;
        }
    }
}

void evaluate_measure_reference(Evaluator *ev, Model *m, const ImageSet *set, const uint32_t *records, int n) {
    int lo, count;
    dist_slice(n, &lo, &count);
    if (count > ev->capacity) dist_fail(1, "the reference BN sample exceeds the evaluator (a program error)");
    dataset_fill_batch(set, records + lo, count, ev->images, ev->labels, 1, REFERENCE_AUG_SEED,
                       REFERENCE_AUG_EPOCH);
    model_measure_reference(m, ev->images, count);
}

double evaluate_records(Evaluator *ev, Model *m, const ImageSet *set, const uint32_t *records, int n,
                        BnMode mode, long *confusion) {
    return evaluate_records_as(ev, m, set, records, n, mode, (EvalProtocol){0, 0}, confusion);
}

double evaluate_records_as(Evaluator *ev, Model *m, const ImageSet *set, const uint32_t *records, int n,
                           BnMode mode, EvalProtocol protocol, long *confusion) {
    int lo, count;
    dist_slice(n, &lo, &count);
    if (mode == BN_EVAL_RUNNING) evaluate_sync_running_stats(m);
    dataset_fill_batch(set, records + lo, count, ev->images, ev->labels, protocol.augment, EVAL_AUG_SEED,
                       EVAL_AUG_EPOCH);
    model_forward(m, ev->images, count, mode);
    if (protocol.tta_flip) {
        /* every rank runs both passes (their BN reductions are collectives), even with an empty slice */
        const size_t values = (size_t)count * m->cfg.classes;
        float *first = malloc(sizeof(float) * (values ? values : 1));
        if (!first) dist_fail(1, "out of memory for the mirrored evaluation");
        memcpy(first, m->logits, sizeof(float) * values);
        mirror_images(ev->images, count, set->channels, set->size);
        model_forward(m, ev->images, count, mode);
        for (size_t i = 0; i < values; i++) m->logits[i] = 0.5f * (first[i] + m->logits[i]);
        free(first);
    }
    model_predict(m, count, ev->predictions);
    const int k = m->cfg.classes;
    double correct = 0;
    if (confusion) memset(confusion, 0, sizeof(long) * k * k);
    for (int i = 0; i < count; i++) {
        correct += ev->predictions[i] == ev->labels[i];
        if (confusion) confusion[ev->labels[i] * k + ev->predictions[i]]++;
    }
    dist_allreduce_sum_double(&correct, 1);
    if (confusion) {
        /* counts stay exact in double far beyond any data set size */
        double *c = malloc(sizeof(double) * k * k);
        if (!c) dist_fail(1, "out of memory reducing the confusion matrix");
        for (int i = 0; i < k * k; i++) c[i] = (double)confusion[i];
        dist_allreduce_sum_double(c, k * k);
        for (int i = 0; i < k * k; i++) confusion[i] = (long)c[i];
        free(c);
    }
    return correct / n;
}

double evaluate_records_with_weights(Evaluator *ev, Model *m, const float *weights, const ImageSet *set,
                                     const uint32_t *records, int n, BnMode mode, EvalProtocol protocol,
                                     long *confusion) {
    /* the forward reads the parameters through m->params alone, and an evaluation never writes them */
    float *own = m->params;
    m->params = (float *)weights;
    const double acc = evaluate_records_as(ev, m, set, records, n, mode, protocol, confusion);
    m->params = own;
    return acc;
}

void evaluate_report(FILE *out, const long *confusion, int classes, const char (*names)[32], int json,
                     const char *split) {
    evaluate_report_with(out, confusion, classes, names, json, split, NULL);
}

void evaluate_report_with(FILE *out, const long *confusion, int classes, const char (*names)[32], int json,
                          const char *split, const char *json_extra) {
    long total = 0, correct = 0;
    for (int t = 0; t < classes; t++)
        for (int p = 0; p < classes; p++) {
            total += confusion[t * classes + p];
            if (t == p) correct += confusion[t * classes + p];
        }
    const double acc = total ? (double)correct / total : 0.0;
    if (json) {
        fprintf(out, "{\"split\":\"%s\",\"images\":%ld,\"accuracy\":%.6f,\"per_class\":{", split, total, acc);
        for (int t = 0; t < classes; t++) {
            long row = 0;
            for (int p = 0; p < classes; p++) row += confusion[t * classes + p];
            fprintf(out, "%s\"%s\":%.6f", t ? "," : "", names[t],
                    row ? (double)confusion[t * classes + t] / row : 0.0);
        }
        fprintf(out, "},\"classes\":[");
        for (int t = 0; t < classes; t++) fprintf(out, "%s\"%s\"", t ? "," : "", names[t]);
        fprintf(out, "],\"confusion\":[");
        for (int t = 0; t < classes; t++) {
            fprintf(out, "%s[", t ? "," : "");
            for (int p = 0; p < classes; p++) fprintf(out, "%s%ld", p ? "," : "", confusion[t * classes + p]);
            fprintf(out, "]");
        }
        fprintf(out, "]%s%s}\n", json_extra ? "," : "", json_extra ? json_extra : "");
        return;
    }
    fprintf(out, "%s accuracy: %.4f (%ld of %ld)\n", split, acc, correct, total);
    fprintf(out, "per-class accuracy:\n");
    for (int t = 0; t < classes; t++) {
        long row = 0;
        for (int p = 0; p < classes; p++) row += confusion[t * classes + p];
        fprintf(out, "  %-12s %.4f\n", names[t], row ? (double)confusion[t * classes + t] / row : 0.0);
    }
    fprintf(out, "confusion matrix (rows: true class, columns: predicted):\n%12s", "");
    for (int p = 0; p < classes; p++) fprintf(out, " %6.6s", names[p]);
    fprintf(out, "\n");
    for (int t = 0; t < classes; t++) {
        fprintf(out, "%-12.12s", names[t]);
        for (int p = 0; p < classes; p++) fprintf(out, " %6ld", confusion[t * classes + p]);
        fprintf(out, "\n");
    }
}
