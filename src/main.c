/* resnet_mpi: train ResNet on CIFAR-10 over MPI ranks; eval a checkpoint; bench the training step. */
#include <stdio.h>
#include <string.h>

#include "resnet/config.h"
#include "resnet/dist.h"
#include "resnet/stall.h"
#include "resnet/bench.h"
#include "resnet/eval.h"
#include "resnet/run.h"
#include "resnet/train.h"
#include "resnet/report.h"
#include "resnet/summary.h"
#include "resnet/util.h"

int main(int argc, char **argv) {
    if (dist_init(&argc, &argv)) {
        rn_message("%s", rn_last_error());
        dist_finalize();
        return EXIT_FAILED;
    }
    const int rank0 = dist_rank() == 0;
    /* one copy of help and usage errors under mpirun, not one per rank */
    if (!rank0 && !freopen("/dev/null", "w", stdout)) return EXIT_FAILED;
    if (argc > 1 && strcmp(argv[1], "summary") == 0) {
        const int code = summary_main(argc - 1, argv + 1);
        fflush(stdout);
        dist_finalize();
        return code;
    }
    report_set_command_line(argc, argv);
    Config cfg;
    config_defaults(&cfg);
    int rc = config_parse(&cfg, argc, argv);
    /* train and eval validate after a checkpoint has filled in the settings the user did not give */
    if (rc == 0 && strcmp(cfg.command, "bench") == 0 && config_validate(&cfg)) rc = -1;
    if (rc != 0) {
        if (rc < 0 && rank0) rn_message("%s", rn_last_error());
        dist_finalize();
        return rc > 0 ? EXIT_OK : EXIT_USAGE;
    }
    signals_install(strcmp(cfg.command, "train") == 0);
    /* the trainer moves an automatic deadline with the run's pace; until then, the floor */
    dist_set_timeout(cfg.timeout < 0 ? STALL_FLOOR_S : cfg.timeout);
    int code;
    if (strcmp(cfg.command, "eval") == 0) code = eval_main(&cfg);
    else if (strcmp(cfg.command, "bench") == 0) code = bench_main(&cfg);
    else code = train_main(&cfg);
    fflush(stdout);
    dist_finalize();
    return code;
}
