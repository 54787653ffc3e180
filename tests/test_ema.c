/* --ema against PyTorch 1.13 (tests/data/ref_ema.bin from scripts/make_reference.py):
 * torch.optim.swa_utils.AveragedModel with avg_fn D * avg + (1 - D) * p, updated after each of six Adam
 * steps of a 1000-vector, for D = DECAY 0.9, 0.999 and 0.5, and with --ema-warmup's D = min(DECAY,
 * (1 + n) / (10 + n)) for 0.999 and 0.3 (where the cap takes over at the third update). Fed PyTorch's own parameters the
 * average must be PyTorch's bit for bit (the same float operations); fed our Adam's, within rounding. */
#include <check.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check_main.h"
#include "fixture_check.h"
#include "resnet/ema.h"
#include "resnet/optim.h"

/* our Adam's parameters differ from PyTorch's by a few ulps per step; the average inherits that */
#define AVERAGE_TOL 1e-6

static const char *const cases[] = {"decay_0_9", "decay_0_999", "decay_0_5", "warmup_0_999", "warmup_0_3"};
#define NUM_CASES 5

static Fixture fx;

static void load_fixture(void) { ck_assert_int_eq(fixture_load(&fx, "ref_ema.bin"), 0); }
static void free_fixture(void) { fixture_free(&fx); }

static const FixtureTensor *need(const char *name, int dtype) { return fixture_need(&fx, name, dtype); }

static const FixtureTensor *need_step(const char *prefix, int step) {
    char key[160];
    snprintf(key, sizeof key, "%s/step%d", prefix, step);
    return need(key, 0);
}

static double case_decay(const char *name) {
    char key[160];
    snprintf(key, sizeof key, "%s/decay", name);
    return ((const double *)need(key, 2)->data)[0];
}

/* the case's average, fresh from params: its decay and --ema-warmup */
static void case_init(Ema *e, const char *name, const float *params, size_t n) {
    char key[160];
    snprintf(key, sizeof key, "%s/warmup", name);
    ck_assert_int_eq(ema_init(e, case_decay(name), params, n), 0);
    e->warmup = ((const int *)need(key, 1)->data)[0];
}

/* The first mismatching index of two float vectors compared bit for bit, or n. */
static size_t first_difference(const float *a, const float *b, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (memcmp(&a[i], &b[i], sizeof(float)) != 0) return i;
    return n;
}

START_TEST(average_of_torch_parameters_is_torch_bitwise) {
    const FixtureTensor *p0 = need("params0", 0);
    const size_t n = p0->numel;
    const int steps = need("grads", 0)->dims[0];
    for (int c = 0; c < NUM_CASES; c++) {
        char key[160];
        snprintf(key, sizeof key, "%s/init", cases[c]);
        Ema e;
        case_init(&e, cases[c], p0->data, n);
        ck_assert_int_eq(e.n_averaged, 0);
        ck_assert_uint_eq(first_difference(e.params, need(key, 0)->data, n), n);
        snprintf(key, sizeof key, "%s/n_averaged", cases[c]);
        const int *counts = need(key, 1)->data;
        for (int k = 1; k <= steps; k++) {
            ema_update(&e, need_step("params", k)->data);
            const float *want = need_step(cases[c], k)->data;
            const size_t bad = first_difference(e.params, want, n);
            ck_assert_msg(bad == n, "%s step %d: element %zu is %.9g, PyTorch's %.9g", cases[c], k, bad,
                          bad < n ? (double)e.params[bad] : 0.0, bad < n ? (double)want[bad] : 0.0);
            ck_assert_int_eq(e.n_averaged, counts[k - 1]);
        }
        ema_free(&e);
    }
}
END_TEST

/* The training loop's order: our Adam step, then the update, from the same start. */
START_TEST(average_along_our_adam_matches_torch) {
    const FixtureTensor *p0 = need("params0", 0), *grads = need("grads", 0);
    const double *adam = need("adam", 2)->data;
    const size_t n = p0->numel;
    const int steps = grads->dims[0];
    for (int c = 0; c < NUM_CASES; c++) {
        OptimConfig oc;
        optim_defaults(&oc, OPT_ADAM);
        oc.lr = (float)adam[0];
        oc.weight_decay = (float)adam[1];
        Optimizer opt;
        ck_assert_int_eq(optim_init(&opt, &oc, n), 0);
        float *p = malloc(n * sizeof *p);
        memcpy(p, p0->data, n * sizeof *p);
        Ema e;
        case_init(&e, cases[c], p, n);
        for (int k = 1; k <= steps; k++) {
            optim_step(&opt, p, (const float *)grads->data + (size_t)(k - 1) * n, oc.lr);
            ema_update(&e, p);
            const double err = rel_error(e.params, need_step(cases[c], k)->data, n);
            ck_assert_msg(err <= AVERAGE_TOL, "%s step %d: relative error %.3g > %.1g", cases[c], k, err, AVERAGE_TOL);
        }
        ema_free(&e);
        optim_free(&opt);
        free(p);
    }
}
END_TEST

/* Each element is its own sum: the thread count cannot change a bit. */
START_TEST(threads_do_not_change_the_average) {
    const FixtureTensor *p0 = need("params0", 0);
    const size_t n = p0->numel;
    Ema one, two;
    ck_assert_int_eq(ema_init(&one, 0.999, p0->data, n), 0);
    ck_assert_int_eq(ema_init(&two, 0.999, p0->data, n), 0);
    for (int k = 1; k <= 6; k++) {
        omp_set_num_threads(1);
        ema_update(&one, need_step("params", k)->data);
        omp_set_num_threads(2);
        ema_update(&two, need_step("params", k)->data);
    }
    ck_assert_uint_eq(first_difference(one.params, two.params, n), n);
    ema_free(&one);
    ema_free(&two);
}
END_TEST

/* A reset is a new AveragedModel: its next update copies the parameters instead of averaging. */
START_TEST(reset_then_first_update_copies) {
    const float a[3] = {1, 2, 3}, b[3] = {-4, 0.5f, 8};
    Ema e;
    ck_assert_int_eq(ema_init(&e, 0.9, a, 3), 0);
    ema_update(&e, b);   /* the first update copies: b, not 0.9 a + 0.1 b */
    ck_assert_uint_eq(first_difference(e.params, b, 3), 3);
    ema_update(&e, a);
    ck_assert_float_eq(e.params[0], 0.9f * -4.0f + (float)(1.0 - 0.9) * 1.0f);
    ck_assert_int_eq(e.n_averaged, 2);
    ema_reset(&e, a);
    ck_assert_int_eq(e.n_averaged, 0);
    ck_assert_uint_eq(first_difference(e.params, a, 3), 3);
    ema_update(&e, b);
    ck_assert_uint_eq(first_difference(e.params, b, 3), 3);
    ck_assert_int_eq(e.n_averaged, 1);
    ema_free(&e);
}
END_TEST

Suite *test_suite(void) {
    Suite *s = suite_create("ema");
    TCase *t = tcase_create("torch");
    tcase_add_checked_fixture(t, load_fixture, free_fixture);
    tcase_add_test(t, average_of_torch_parameters_is_torch_bitwise);
    tcase_add_test(t, average_along_our_adam_matches_torch);
    tcase_add_test(t, threads_do_not_change_the_average);
    suite_add_tcase(s, t);
    TCase *u = tcase_create("rules");
    tcase_add_test(u, reset_then_first_update_copies);
    suite_add_tcase(s, u);
    return s;
}
