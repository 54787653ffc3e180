/* The eval subcommand: see eval.h. */
#include "resnet/eval.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "resnet/checkpoint.h"
#include "resnet/dataset.h"
#include "resnet/dist.h"
#include "resnet/evaluate.h"
#include "resnet/run.h"
#include "resnet/util.h"

/* --bn-eval reference on a checkpoint without the statistics of the weights evaluated (/reference for
 * the raw weights, /ema/reference for the moving average: a file written under another --bn-eval, or by
 * an earlier version): they are measured now, as training measures them, over the run's training sample
 * (its data set, split and --bn-sample). Collective: 0, or -1 when every rank failed to load the
 * training set. */
static int measure_missing_reference(const Config *cfg, Model *model, int use_ema) {
    ImageSet train = {0};
    uint32_t *train_records = NULL, *val_records = NULL;
    int num_train = 0, num_val = 0, failed = 0;
    Evaluator ev = {0};
    if (dataset_load(cfg->dataset, cfg->data_dir, 1, &train) ||
        dataset_split(train.count, cfg->val_size, cfg->split_seed, &train_records, &num_train, &val_records, &num_val))
        failed = 1;
    if (!failed && cfg->limit_train > 0 && cfg->limit_train < num_train) num_train = (int)cfg->limit_train;
    const int sample = cfg->bn_sample < num_train ? cfg->bn_sample : num_train;
    if (!failed && evaluator_init(&ev, model, sample)) failed = 1;
    if (!agree_failure(failed)) {
        evaluate_measure_reference(&ev, model, &train, train_records, sample);
        if (dist_rank() == 0 && !cfg->json)
            printf("reference BN statistics: %s, measured now over %d augmented training images\n",
                   use_ema ? "of the moving average not in the checkpoint (/ema/reference)"
                           : "not in the checkpoint (/reference)", sample);
    } else {
        failed = 1;
    }
    evaluator_free(&ev);
    imageset_free(&train);
    free(train_records);
    free(val_records);
    return failed ? -1 : 0;
}

/* --weights: the moving average by default when the checkpoint has one, which its /config's ema says (the
 * reader holds every file to it). 1: the average, 0: the raw weights, -1 with rn_error: an average asked
 * of a file without one. */
static int weights_choice(const Config *cfg) {
    if (!cfg->weights[0]) return cfg->ema > 0;
    if (strcmp(cfg->weights, "ema") != 0) return 0;
    if (cfg->ema > 0) return 1;
    return rn_error("--weights ema: %s has no moving average (/ema): it was trained without --ema", cfg->checkpoint);
}

/* The checkpoint's model with its raw weights or, when use_ema, their moving average in their place
 * (*n_averaged its updates) with the average's reference statistics (/ema/reference; none when the file
 * lacks them: /reference belongs to the raw weights), and the evaluator for n images. 0 or -1 with
 * rn_error. */
static int load_model(const Config *cfg, const ImageSet *set, int n, int use_ema, Model *model, Evaluator *ev,
                      long *n_averaged) {
    ModelConfig mc = config_model(cfg, set->channels, set->size, set->classes);
    *n_averaged = 0;
    if (model_init(model, &mc, cfg->seed) || (use_ema ? checkpoint_read_average(cfg->checkpoint, model, n_averaged)
                                                      : checkpoint_read(cfg->checkpoint, model, NULL, NULL, NULL)))
        return -1;
    return evaluator_init(ev, model, n);
}

int eval_main(Config *cfg) {
    const int rank0 = dist_rank() == 0;
    if (!cfg->checkpoint[0]) {
        if (rank0) rn_message("eval needs --checkpoint FILE");
        return EXIT_USAGE;
    }
    int code = agree_exit(config_merge_checkpoint(cfg, cfg->checkpoint, 0, 1));
    if (code) return code;
    if (agree_failure(config_validate(cfg) != 0)) return EXIT_USAGE;
    if ((code = choose_kernels())) return code;
    const int use_ema = weights_choice(cfg);
    if ((code = agree_exit(use_ema < 0 ? EXIT_USAGE : 0))) return code;
    choose_threads(cfg->threads, 1);
    ImageSet set = {0};
    uint32_t *records = NULL, *train_records = NULL;
    int n = 0, num_train = 0, failed = 0;
    const int test = strcmp(cfg->split, "test") == 0;
    if (dataset_load(cfg->dataset, cfg->data_dir, !test, &set)) {
        note_data_from_checkpoint(cfg, cfg->checkpoint);
        code = EXIT_FAILED;
    } else if (check_data_matches_checkpoint(cfg->checkpoint, &set, cfg->data_dir)) {
        code = EXIT_FAILED;
    } else if (test) {
        n = set.count;
        records = malloc(sizeof(uint32_t) * n);
        for (int i = 0; records && i < n; i++) records[i] = (uint32_t)i;
        if (!records) code = rn_error("out of memory") ? EXIT_FAILED : 0;
    } else if (dataset_split(set.count, cfg->val_size, cfg->split_seed, &train_records, &num_train, &records, &n)) {
        code = EXIT_USAGE;   /* --val-size does not fit the data */
    }
    if ((code = agree_exit(code))) {
        imageset_free(&set);
        free(records);
        free(train_records);
        return code;
    }
    Model model = {0};
    Evaluator ev = {0};
    long n_averaged = 0;
    failed = agree_failure(load_model(cfg, &set, n, use_ema, &model, &ev, &n_averaged) != 0);
    model.eval_reducer = (StatReducer){dist_stat_sum, NULL};
    if (!failed && cfg->bn_eval == BN_EVAL_REFERENCE && !model.reference_valid &&
        measure_missing_reference(cfg, &model, use_ema))
        failed = 1;
    if (!failed) {
        model.eval_reducer = (StatReducer){dist_stat_sum, NULL};
        const int k = set.classes;
        long *confusion = calloc((size_t)k * k, sizeof *confusion);
        if (!confusion) dist_fail(1, "out of memory");
        /* the protocol asked for, then the other one's accuracy beside it (clean vs the seed's augmented
         * images), each with the test-time augmentation asked for */
        const int seed_protocol = strcmp(cfg->eval_protocol, "seed") == 0, flip = strcmp(cfg->tta, "flip") == 0;
        evaluate_records_as(&ev, &model, &set, records, n, cfg->bn_eval, (EvalProtocol){seed_protocol, flip},
                            confusion);
        const double other = evaluate_records_as(&ev, &model, &set, records, n, cfg->bn_eval,
                                                 (EvalProtocol){!seed_protocol, flip}, NULL);
        const char *other_name = seed_protocol ? "clean" : "seed";
        if (rank0) {
            char extra[256];
            snprintf(extra, sizeof extra, "\"protocol\":\"%s\",\"tta\":\"%s\",\"other_protocol\":{\"protocol\":\"%s\","
                     "\"accuracy\":%.6f},\"weights\":\"%s\"", cfg->eval_protocol, cfg->tta, other_name, other,
                     use_ema ? "ema" : "raw");
            if (!cfg->json) {
                printf("checkpoint: %s\nprotocol: %s, test-time augmentation: %s\n", cfg->checkpoint,
                       seed_protocol ? "seed (each image flipped and cropped as in training, fixed evaluation draw)"
                                     : "clean images", cfg->tta);
                if (use_ema) printf("weights: ema (the moving average, --ema %g, %ld updates)\n", cfg->ema, n_averaged);
                else printf("weights: raw\n");
            }
            evaluate_report_with(stdout, confusion, k, (const char (*)[32])set.class_names, cfg->json, cfg->split,
                                 extra);
            if (!cfg->json) printf("%s protocol accuracy: %.4f\n", other_name, other);
            fflush(stdout);
        }
        free(confusion);
    }
    evaluator_free(&ev);
    if (model.plan) model_free(&model);
    imageset_free(&set);
    free(records);
    free(train_records);
    return failed ? EXIT_FAILED : EXIT_OK;
}
