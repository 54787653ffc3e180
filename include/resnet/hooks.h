/* The tests' hooks into a run: fault injection and tracing, read from the environment once, at the start
 * of training (hooks_read), and the kernel path, read once at the start of every subcommand
 * (hooks_read_isa); nowhere else, and nothing inside a step looks at the environment.
 *
 *   RESNET_FAULT_STEP=N       rank RESNET_FAULT_RANK fails at step N as an error would: one line naming
 *                             the rank, and the job ends with exit 1 (tests/mpi_failure.sh, slurm_jobs.sh)
 *   RESNET_FAULT_HANG_STEP=N  rank RESNET_FAULT_RANK blocks for good in the first checkpoint write at or
 *                             after step N, as on a hung file system: the stall watchdog must end the job
 *                             (tests/watchdog.sh)
 *   RESNET_FAULT_SIGNAL_AT=WHAT  rank RESNET_FAULT_RANK sends itself SIGUSR1 as it begins WHAT, one of
 *                             the watchdog's activity names ("step 20", "validation at step 20",
 *                             "checkpoint at step 20", "end of training", "final test"): a preemption
 *                             at an exact moment, however fast the steps (tests/preempt_late.sh,
 *                             slurm_jobs.sh); a name that never comes never fires
 *   RESNET_FAULT_RANK=R       the rank the faults strike (default 0)
 *   RESNET_TRACE=1            per-step losses, per-rank parameter hashes and the step each rank stopped
 *                             at, as "trace: ..." lines on stderr (tests/mpi_consistency.sh,
 *                             mpi_failure.sh, watchdog.sh, multinode.sh)
 *   RESNET_ISA=PATH           the convolution kernels, one of avx512, avx2 (the direct kernels built for
 *                             that instruction set) or generic (im2col + BLIS for every shape); default:
 *                             the fastest this CPU runs. A path above what the CPU runs is refused (exit
 *                             2, one line), never tried: for running every path a machine has in the tests
 *                             (tests/test_layers.c switches in-process, e2e_cli.sh through the variable)
 *                             and for comparing paths on one node
 *   RESNET_WINOGRAD=0|1       on the avx512 and avx2 paths, the 3x3 stride-1 convolutions (forward, input and weight
 *                             gradient) through Winograd F(2x2, 3x3) (1, the default) or the direct kernels
 *                             (0: their plain sums, for comparing the two); anything else is refused (exit
 *                             2, one line)
 *
 * Unset or empty means off. A step that is not a whole number >= 0, or a rank outside the job, is
 * refused (a usage error): read as 0 it would inject a fault into a real run. */
#ifndef RESNET_HOOKS_H
#define RESNET_HOOKS_H

typedef struct {
    long fault_step;   /* RESNET_FAULT_STEP, -1: none */
    long hang_step;    /* RESNET_FAULT_HANG_STEP, -1: none */
    int fault_rank;    /* RESNET_FAULT_RANK */
    int trace;         /* RESNET_TRACE */
    char signal_at[64];   /* RESNET_FAULT_SIGNAL_AT, "": none */
    char isa[16];         /* RESNET_ISA, "": the fastest the CPU runs (checked by conv_select_isa) */
    int winograd;         /* RESNET_WINOGRAD, 1 unless "0" */
} Hooks;

/* Reads and checks the variables for a job of world_size ranks. 0, or -1 with rn_error naming the
 * variable (the hooks then stay off). */
int hooks_read(int world_size);

/* Reads RESNET_ISA (the name conv_select_isa checks) and RESNET_WINOGRAD. 0, or -1 with rn_error naming
 * the variable when RESNET_ISA is longer than any path's name or RESNET_WINOGRAD is not 0, 1 or empty. */
int hooks_read_isa(void);

/* What hooks_read and hooks_read_isa found; every hook off before them. */
const Hooks *hooks(void);

#endif
