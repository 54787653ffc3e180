/* The main of every Check suite: runs test_suite() and exits non-zero when any test failed. */
#include <stdlib.h>

#include "check_main.h"

int main(void) {
    SRunner *runner = srunner_create(test_suite());
    srunner_run_all(runner, CK_NORMAL);
    const int failed = srunner_ntests_failed(runner);
    srunner_free(runner);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
