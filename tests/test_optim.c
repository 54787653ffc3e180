/* Optimizers and schedules against PyTorch 1.13 (tests/data/ref_optim.bin from
 * scripts/make_reference.py): five updates of a 1000-vector per optimizer, with the learning rate
 * changing between steps (LAMB, which torch.optim lacks, against its formula in torch's float32 ops, over
 * layers one of which starts at zero), and the lr sequences of MultiStepLR and CosineAnnealingLR. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check_main.h"
#include "fixture_check.h"
#include "resnet/optim.h"

/* float32 updates of the same formulas: a few ulps per step, far below this */
#define UPDATE_TOL 1e-6

static Fixture fx;

static void load_fixture(void) { ck_assert_int_eq(fixture_load(&fx, "ref_optim.bin"), 0); }
static void free_fixture(void) { fixture_free(&fx); }

static const FixtureTensor *need(const char *name, int dtype) { return fixture_need(&fx, name, dtype); }

/* config: kind, lr, weight decay, beta1, beta2, eps, momentum, nesterov (see make_reference.py) */
static OptimConfig case_config(const char *name) {
    char key[160];
    snprintf(key, sizeof key, "%s/config", name);
    const double *c = need(key, 2)->data;
    OptimConfig cfg;
    optim_defaults(&cfg, (OptimizerKind)(int)c[0]);
    cfg.lr = (float)c[1];
    cfg.weight_decay = (float)c[2];
    cfg.beta1 = (float)c[3];
    cfg.beta2 = (float)c[4];
    cfg.eps = (float)c[5];
    cfg.momentum = (float)c[6];
    cfg.nesterov = (int)c[7];
    return cfg;
}

static void check_case(const char *name) {
    char key[160];
    snprintf(key, sizeof key, "%s/params0", name);   /* a case's own start, else the shared one */
    const FixtureTensor *p0 = fixture_get(&fx, key) ? need(key, 0) : need("params0", 0), *grads = need("grads", 0);
    const size_t n = p0->numel;
    const int steps = grads->dims[0];
    ck_assert_uint_eq(grads->numel, (size_t)steps * n);
    snprintf(key, sizeof key, "%s/lr", name);
    const FixtureTensor *lrs = need(key, 2);
    ck_assert_int_eq((int)lrs->numel, steps);

    OptimConfig cfg = case_config(name);
    Optimizer opt;
    ck_assert_int_eq(optim_init(&opt, &cfg, n), 0);
    snprintf(key, sizeof key, "%s/layers", name);
    if (fixture_get(&fx, key)) {
        const FixtureTensor *layers = need(key, 2);
        size_t ends[16];
        ck_assert_uint_le(layers->numel, 16);
        for (size_t i = 0; i < layers->numel; i++) ends[i] = (size_t)((const double *)layers->data)[i];
        ck_assert_int_eq(optim_set_layers(&opt, ends, (int)layers->numel), 0);
    }
    float *p = malloc(n * sizeof *p);
    memcpy(p, p0->data, n * sizeof *p);
    for (int k = 0; k < steps; k++) {
        optim_step(&opt, p, (const float *)grads->data + (size_t)k * n, (float)((double *)lrs->data)[k]);
        snprintf(key, sizeof key, "%s/step%d", name, k + 1);
        const FixtureTensor *ref = need(key, 0);
        double err = rel_error(p, ref->data, n);
        ck_assert_msg(err <= UPDATE_TOL, "%s step %d: relative error %.3g > %.1g", name, k + 1, err,
                      UPDATE_TOL);
    }
    ck_assert_int_eq(opt.step, steps);
    free(p);
    optim_free(&opt);
}

START_TEST(adam_matches_torch) { check_case("adam"); }
END_TEST
START_TEST(adam_other_betas_eps_matches_torch) { check_case("adam_betas"); }
END_TEST
START_TEST(adamw_matches_torch) { check_case("adamw"); }
END_TEST
START_TEST(sgd_momentum_matches_torch) { check_case("sgd"); }
END_TEST
START_TEST(sgd_nesterov_matches_torch) { check_case("sgd_nesterov"); }
END_TEST
START_TEST(sgd_without_momentum_matches_torch) { check_case("sgd_plain"); }
END_TEST
START_TEST(lamb_matches_torch_formula) { check_case("lamb"); }
END_TEST
START_TEST(lamb_other_betas_eps_without_decay_matches_torch_formula) { check_case("lamb_nodecay"); }
END_TEST

/* LAMB's layers: every layer moves by lr x its norm (the trust ratio), so a layer's scale does not set its
 * step; one layer unless set; and layer lists that do not tile the parameters are refused. */
START_TEST(lamb_layers) {
    OptimConfig c;
    optim_defaults(&c, OPT_LAMB);
    c.weight_decay = 0;
    Optimizer o;
    ck_assert_int_eq(optim_init(&o, &c, 6), 0);
    ck_assert_uint_eq(optim_state_floats(&o), 12);
    ck_assert_int_eq(optim_set_layers(&o, (size_t[]){2, 6}, 2), 0);
    float p[6] = {3, 4, 1, 1, 1, 1}, g[6] = {1e-3f, -2e-3f, 50, 50, 50, 50};
    optim_step(&o, p, g, 0.1f);
    /* first step: u = g / (|g| + eps) = sign(g), so layer 1 (norm 5, ||u|| sqrt 2) moves by 0.1 x 5 / sqrt 2
     * per element and layer 2 (norm 2, ||u|| 2) by 0.1 */
    ck_assert_float_eq_tol(p[0], 3 - 0.5f / sqrtf(2), 1e-5f);
    ck_assert_float_eq_tol(p[1], 4 + 0.5f / sqrtf(2), 1e-5f);
    for (int i = 2; i < 6; i++) ck_assert_float_eq_tol(p[i], 0.9f, 1e-5f);
    ck_assert_int_eq(optim_set_layers(&o, (size_t[]){2, 5}, 2), -1);      /* does not reach n */
    ck_assert_int_eq(optim_set_layers(&o, (size_t[]){3, 3, 6}, 3), -1);   /* an empty layer */
    ck_assert_int_eq(optim_set_layers(&o, (size_t[]){7}, 1), -1);         /* past n */
    optim_free(&o);
}
END_TEST

START_TEST(defaults_are_torch_defaults) {
    OptimConfig c;
    optim_defaults(&c, OPT_ADAM);
    ck_assert_float_eq(c.lr, 1e-3f);
    ck_assert_float_eq(c.beta1, 0.9f);
    ck_assert_float_eq(c.beta2, 0.999f);
    ck_assert_float_eq(c.eps, 1e-8f);
    ck_assert_float_eq(c.weight_decay, 0.0f);
    optim_defaults(&c, OPT_SGD);
    ck_assert_float_eq(c.lr, 0.1f);
    ck_assert_float_eq(c.momentum, 0.9f);
    ck_assert_int_eq(c.nesterov, 0);
}
END_TEST

START_TEST(state_layout) {
    OptimConfig c;
    Optimizer o;
    optim_defaults(&c, OPT_ADAM);
    ck_assert_int_eq(optim_init(&o, &c, 100), 0);
    ck_assert_uint_eq(optim_state_floats(&o), 200);
    ck_assert_ptr_eq(o.exp_avg, o.state);
    ck_assert_ptr_eq(o.exp_avg_sq, o.state + 100);
    ck_assert_ptr_null(o.momentum_buffer);
    ck_assert_int_eq(o.step, 0);
    optim_free(&o);

    optim_defaults(&c, OPT_SGD);
    ck_assert_int_eq(optim_init(&o, &c, 100), 0);
    ck_assert_uint_eq(optim_state_floats(&o), 100);
    ck_assert_ptr_eq(o.momentum_buffer, o.state);
    ck_assert_ptr_null(o.exp_avg);
    optim_free(&o);

    c.momentum = 0;
    ck_assert_int_eq(optim_init(&o, &c, 100), 0);
    ck_assert_uint_eq(optim_state_floats(&o), 0);
    ck_assert_ptr_null(o.momentum_buffer);
    optim_free(&o);
}
END_TEST

/* A restored optimizer (state and step copied, as from a checkpoint) continues exactly. */
START_TEST(resume_continues_bitwise) {
    const FixtureTensor *p0 = need("params0", 0), *grads = need("grads", 0);
    const size_t n = p0->numel;
    OptimConfig c = case_config("adam");
    Optimizer a, b;
    ck_assert_int_eq(optim_init(&a, &c, n), 0);
    ck_assert_int_eq(optim_init(&b, &c, n), 0);
    float *pa = malloc(n * sizeof *pa), *pb = malloc(n * sizeof *pb);
    memcpy(pa, p0->data, n * sizeof *pa);
    const float *g = grads->data;
    for (int k = 0; k < 2; k++) optim_step(&a, pa, g + (size_t)k * n, c.lr);
    memcpy(pb, pa, n * sizeof *pb);
    memcpy(b.state, a.state, optim_state_floats(&a) * sizeof(float));
    b.step = a.step;
    for (int k = 2; k < 5; k++) {
        optim_step(&a, pa, g + (size_t)k * n, c.lr);
        optim_step(&b, pb, g + (size_t)k * n, c.lr);
    }
    ck_assert_int_eq(memcmp(pa, pb, n * sizeof *pa), 0);
    free(pa);
    free(pb);
    optim_free(&a);
    optim_free(&b);
}
END_TEST

START_TEST(bad_kind_is_an_error) {
    OptimConfig c;
    Optimizer o;
    optim_defaults(&c, OPT_ADAM);
    c.kind = (OptimizerKind)7;
    ck_assert_int_eq(optim_init(&o, &c, 10), -1);
}
END_TEST

/* ---- schedules ---------------------------------------------------------------------------------- */

#define LR_TOL 1e-7

START_TEST(constant_schedule) {
    Schedule s = {.kind = SCHED_CONSTANT, .base_lr = 0.01f, .total_steps = 100};
    ck_assert_float_eq(schedule_lr(&s, 0), 0.01f);
    ck_assert_float_eq(schedule_lr(&s, 99), 0.01f);
    ck_assert_float_eq(schedule_lr(&s, 100000), 0.01f);
}
END_TEST

START_TEST(step_schedule_at_milestones) {
    /* the paper's recipe: 0.1, divided by 10 at 32,000 and 48,000 completed updates */
    Schedule s = {.kind = SCHED_STEP, .base_lr = 0.1f, .num_milestones = 2, .milestones = {32000, 48000},
                  .gamma = 0.1f};
    ck_assert_double_eq_tol(schedule_lr(&s, 0), 0.1, LR_TOL);
    ck_assert_double_eq_tol(schedule_lr(&s, 31999), 0.1, LR_TOL);
    ck_assert_double_eq_tol(schedule_lr(&s, 32000), 0.01, LR_TOL);
    ck_assert_double_eq_tol(schedule_lr(&s, 47999), 0.01, LR_TOL);
    ck_assert_double_eq_tol(schedule_lr(&s, 48000), 0.001, LR_TOL);
    ck_assert_double_eq_tol(schedule_lr(&s, 63999), 0.001, LR_TOL);
}
END_TEST

START_TEST(cosine_endpoints_and_midpoint) {
    Schedule s = {.kind = SCHED_COSINE, .base_lr = 0.1f, .total_steps = 1000};
    ck_assert_double_eq_tol(schedule_lr(&s, 0), 0.1, LR_TOL);
    ck_assert_double_eq_tol(schedule_lr(&s, 500), 0.05, LR_TOL);
    ck_assert_double_eq_tol(schedule_lr(&s, 250), 0.05 * (1 + sqrt(0.5)), LR_TOL);
    ck_assert_double_eq_tol(schedule_lr(&s, 1000), 0.0, LR_TOL);
    ck_assert_double_eq_tol(schedule_lr(&s, 1500), 0.0, LR_TOL);   /* stays at the end */
}
END_TEST

static void check_sequence(const Schedule *s, const char *name) {
    const FixtureTensor *ref = need(name, 2);
    const double *lr = ref->data;
    for (size_t k = 0; k < ref->numel; k++)
        ck_assert_msg(fabs(schedule_lr(s, (long)k) - lr[k]) <= LR_TOL * s->base_lr,
                      "%s step %zu: %.9g, torch %.9g", name, k, (double)schedule_lr(s, (long)k), lr[k]);
}

START_TEST(step_schedule_matches_torch) {
    Schedule s = {.kind = SCHED_STEP, .base_lr = 0.1f, .num_milestones = 2, .milestones = {4, 8},
                  .gamma = 0.1f};
    check_sequence(&s, "sched_step");
}
END_TEST

START_TEST(cosine_schedule_matches_torch) {
    Schedule s = {.kind = SCHED_COSINE, .base_lr = 0.1f, .total_steps = 10};
    check_sequence(&s, "sched_cosine");
}
END_TEST

START_TEST(warmup_matches_torch_linear_lr) {
    Schedule s = {.kind = SCHED_CONSTANT, .base_lr = 0.1f, .warmup_steps = 4};
    check_sequence(&s, "sched_warmup");
}
END_TEST

START_TEST(warmup_with_cosine_matches_torch) {
    Schedule s = {.kind = SCHED_COSINE, .base_lr = 0.1f, .total_steps = 12, .warmup_steps = 4};
    check_sequence(&s, "sched_warmup_cosine");
}
END_TEST

Suite *test_suite(void) {
    Suite *s = suite_create("optim");
    TCase *t = tcase_create("torch");
    tcase_add_checked_fixture(t, load_fixture, free_fixture);
    tcase_add_test(t, adam_matches_torch);
    tcase_add_test(t, adam_other_betas_eps_matches_torch);
    tcase_add_test(t, adamw_matches_torch);
    tcase_add_test(t, sgd_momentum_matches_torch);
    tcase_add_test(t, sgd_nesterov_matches_torch);
    tcase_add_test(t, sgd_without_momentum_matches_torch);
    tcase_add_test(t, lamb_matches_torch_formula);
    tcase_add_test(t, lamb_other_betas_eps_without_decay_matches_torch_formula);
    tcase_add_test(t, resume_continues_bitwise);
    tcase_add_test(t, step_schedule_matches_torch);
    tcase_add_test(t, cosine_schedule_matches_torch);
    tcase_add_test(t, warmup_matches_torch_linear_lr);
    tcase_add_test(t, warmup_with_cosine_matches_torch);
    suite_add_tcase(s, t);

    TCase *u = tcase_create("rules");
    tcase_add_test(u, defaults_are_torch_defaults);
    tcase_add_test(u, state_layout);
    tcase_add_test(u, lamb_layers);
    tcase_add_test(u, bad_kind_is_an_error);
    tcase_add_test(u, constant_schedule);
    tcase_add_test(u, step_schedule_at_milestones);
    tcase_add_test(u, cosine_endpoints_and_midpoint);
    suite_add_tcase(s, u);
    return s;
}
