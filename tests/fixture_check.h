/* fixture_need for Check tests: a tensor of the reference fixture the test cannot do without. Kept out of
 * fixture.c, which tools without Check (export_logits) link too. */
#ifndef RESNET_TEST_FIXTURE_CHECK_H
#define RESNET_TEST_FIXTURE_CHECK_H

#include <check.h>

#include "fixture.h"

/* The tensor name of fx, which must be there and of dtype (0 float32, 1 int32, 2 float64). */
static inline const FixtureTensor *fixture_need(const Fixture *fx, const char *name, int dtype) {
    const FixtureTensor *t = fixture_get(fx, name);
    ck_assert_msg(t != NULL, "fixture tensor %s missing", name);
    ck_assert_int_eq(t->dtype, dtype);
    return t;
}

#endif
