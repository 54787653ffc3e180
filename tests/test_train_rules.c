/* The training loop's decision rules, alone: the seed's early-stopping counter and its alternatives
 * on scripted validation-accuracy sequences. */
#include <check.h>
#include <math.h>
#include <stdlib.h>

#include "check_main.h"
#include "resnet/config.h"
#include "resnet/train.h"

/* Feeds accuracies to the rule; returns the 1-based check at which it says stop, 0 if never. */
static int stops_at(int rule, int patience, const double *acc, int n, int *final_count) {
    double prev = -INFINITY, best = -1;
    int count = 0;
    for (int i = 0; i < n; i++) {
        if (early_stop_update(rule, patience, acc[i], &prev, &best, &count)) {
            *final_count = count;
            return i + 1;
        }
    }
    *final_count = count;
    return 0;
}

START_TEST(seed_rule_counts_non_increases_and_resets) {
    /* the seed: <= previous grows the counter, > previous resets it; stop when counter > 5 */
    const double acc[] = {0.30, 0.35, 0.35, 0.34, 0.36, 0.36, 0.35, 0.35, 0.34, 0.33, 0.32, 0.40};
    int count;
    /* 0.36 at check 5 resets; checks 6..11 are six non-increases: counter 6 > 5 at check 11 */
    ck_assert_int_eq(stops_at(EARLY_STOP_SEED, 5, acc, 12, &count), 11);
    ck_assert_int_eq(count, 6);
}
END_TEST

START_TEST(seed_rule_compares_with_previous_not_best) {
    /* a slow decline after a peak, with small upticks: each uptick over the previous value resets
     * the seed's counter although the best is never beaten */
    const double acc[] = {0.50, 0.40, 0.39, 0.41, 0.38, 0.37, 0.38, 0.36, 0.35, 0.37, 0.34, 0.33, 0.32};
    int count;
    ck_assert_int_eq(stops_at(EARLY_STOP_SEED, 5, acc, 13, &count), 0);
    /* against the best (0.50), every later check is a non-improvement: the 6th (check 7) stops */
    ck_assert_int_eq(stops_at(EARLY_STOP_BEST, 5, acc, 13, &count), 7);
    ck_assert_int_eq(count, 6);
}
END_TEST

START_TEST(equal_accuracy_counts_as_no_increase) {
    const double acc[] = {0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5};
    int count;
    ck_assert_int_eq(stops_at(EARLY_STOP_SEED, 5, acc, 7, &count), 7);
    ck_assert_int_eq(stops_at(EARLY_STOP_SEED, 6, acc, 7, &count), 0);
    ck_assert_int_eq(count, 6);
}
END_TEST

START_TEST(off_never_stops_but_tracks) {
    const double acc[] = {0.9, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1};
    double prev = -INFINITY, best = -1;
    int count = 0;
    for (int i = 0; i < 9; i++) ck_assert_int_eq(early_stop_update(EARLY_STOP_OFF, 5, acc[i], &prev, &best, &count), 0);
    ck_assert_double_eq(best, 0.9);
    ck_assert_double_eq(prev, 0.1);
    ck_assert_int_eq(count, 8);
}
END_TEST

START_TEST(first_check_always_improves) {
    /* prevValAccuracy starts at -inf in the seed: even 0.0 is an increase */
    double prev = -INFINITY, best = -1;
    int count = 3;
    ck_assert_int_eq(early_stop_update(EARLY_STOP_SEED, 5, 0.0, &prev, &best, &count), 0);
    ck_assert_int_eq(count, 0);
    ck_assert_double_eq(best, 0.0);
}
END_TEST

Suite *test_suite(void) {
    Suite *s = suite_create("train_rules");
    TCase *tc = tcase_create("early_stop");
    tcase_add_test(tc, seed_rule_counts_non_increases_and_resets);
    tcase_add_test(tc, seed_rule_compares_with_previous_not_best);
    tcase_add_test(tc, equal_accuracy_counts_as_no_increase);
    tcase_add_test(tc, off_never_stops_but_tracks);
    tcase_add_test(tc, first_check_always_improves);
    suite_add_tcase(s, tc);
    return s;
}
