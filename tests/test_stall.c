/* The stall watchdog's default deadline (--timeout auto): the floor until the run is slow, then 20
 * medians of the slowest kind of phase, unmoved by single outliers. */
#include <check.h>
#include <stdlib.h>

#include "check_main.h"
#include "resnet/stall.h"

START_TEST(floor_until_the_run_is_slow) {
    StallClock c = {0};
    ck_assert(stall_clock_timeout(&c) == STALL_FLOOR_S);
    for (int i = 0; i < 100; i++) stall_clock_add(&c, STALL_STEP, 0.15);
    stall_clock_add(&c, STALL_VALIDATION, 1.8);
    stall_clock_add(&c, STALL_CHECKPOINT, 0.05);
    ck_assert(stall_clock_timeout(&c) == STALL_FLOOR_S);
}
END_TEST

START_TEST(covers_the_slowest_phase) {
    StallClock c = {0};
    for (int i = 0; i < 10; i++) stall_clock_add(&c, STALL_STEP, 2.0);
    ck_assert_double_eq_tol(stall_clock_timeout(&c), STALL_FLOOR_S, 1e-9);   /* 20 x 2 s < 120 s */
    for (int i = 0; i < 10; i++) stall_clock_add(&c, STALL_STEP, 12.0);
    ck_assert_double_eq_tol(stall_clock_timeout(&c), 20 * 7.0, 1e-9);        /* median of 2s and 12s */
    /* a validation (with its checkpoint writes) far slower than a step sets the deadline */
    stall_clock_add(&c, STALL_VALIDATION, 30.0);
    ck_assert_double_eq_tol(stall_clock_timeout(&c), 600.0, 1e-9);
    stall_clock_add(&c, STALL_CHECKPOINT, 45.0);
    ck_assert_double_eq_tol(stall_clock_timeout(&c), 900.0, 1e-9);
}
END_TEST

START_TEST(outliers_and_old_samples) {
    StallClock c = {0};
    for (int i = 0; i < 40; i++) stall_clock_add(&c, STALL_STEP, 7.0);
    stall_clock_add(&c, STALL_STEP, 1000.0);   /* one stall-like hiccup does not move the median */
    ck_assert_double_eq_tol(stall_clock_timeout(&c), 140.0, 1e-9);
    /* the run speeds up: after STALL_SAMPLES fast steps the old pace is forgotten */
    for (int i = 0; i < STALL_SAMPLES; i++) stall_clock_add(&c, STALL_STEP, 0.1);
    ck_assert_double_eq_tol(stall_clock_timeout(&c), STALL_FLOOR_S, 1e-9);
    /* nonsense durations are ignored */
    stall_clock_add(&c, STALL_STEP, -1.0);
    stall_clock_add(&c, STALL_KINDS, 500.0);
    ck_assert_double_eq_tol(stall_clock_timeout(&c), STALL_FLOOR_S, 1e-9);
}
END_TEST

Suite *test_suite(void) {
    Suite *s = suite_create("stall");
    TCase *t = tcase_create("deadline");
    tcase_add_test(t, floor_until_the_run_is_slow);
    tcase_add_test(t, covers_the_slowest_phase);
    tcase_add_test(t, outliers_and_old_samples);
    suite_add_tcase(s, t);
    return s;
}
