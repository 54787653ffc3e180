/* The one runner of the Check suites (check_main.c): each test_*.c defines test_suite() and no main. */
#ifndef RESNET_TEST_CHECK_MAIN_H
#define RESNET_TEST_CHECK_MAIN_H

#include <check.h>

/* The suite to run. Called once in the runner's process before any test forks, so process-wide
 * settings made here (HDF5's error printing, say) hold in every test. */
Suite *test_suite(void);

#endif
