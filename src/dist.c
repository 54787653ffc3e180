/* Every MPI call of the program (CoMD's parallel.c habit): the world, node-local ranks, the reductions
 * the trainer and the BN layers need, and the abort that ends a whole job when one rank fails. */
#include "resnet/dist.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <mpi.h>

#include "resnet/util.h"

static int world_rank = 0, world_size = 1, node_rank = 0, node_size = 1;
static int initialised = 0;

int dist_init(int *argc, char ***argv) {
    int provided;
    /* OpenMP threads compute; only the main thread talks to MPI */
    if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
        return rn_error("MPI_Init failed");
    initialised = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &world_size);
    MPI_Comm node;
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, world_rank, MPI_INFO_NULL, &node);
    MPI_Comm_rank(node, &node_rank);
    MPI_Comm_size(node, &node_size);
    MPI_Comm_free(&node);
    /* Under Slurm, tasks started without an MPI launcher each see a world of one: refuse to train as
     * unrelated singletons that would all write the same checkpoints. Only a world of one is checked:
     * under mpirun in a multi-node allocation the ranks on other nodes inherit the SLURM_NTASKS of the
     * srun step that started their orted (one per node), so a larger world is the launcher's word, and
     * a check that failed on some ranks only would leave the others waiting. */
    const char *ntasks = getenv("SLURM_NTASKS");
    const char *ignore = getenv("RESNET_IGNORE_SLURM");
    if (world_size == 1 && ntasks && !(ignore && *ignore == '1')) {
        long expected = strtol(ntasks, NULL, 10);
        if (expected > 1)
            return rn_error("MPI world has %d rank(s) but SLURM_NTASKS=%ld: launch with srun --mpi=pmix or "
                            "mpirun -np %ld (set RESNET_IGNORE_SLURM=1 to run anyway)",
                            world_size, expected, expected);
    }
    return 0;
}

void dist_finalize(void) {
    if (initialised) MPI_Finalize();
    initialised = 0;
}

int dist_rank(void) { return world_rank; }
int dist_size(void) { return world_size; }
int dist_local_size(void) { return node_size; }
int dist_local_rank(void) { return node_rank; }

void dist_allreduce_sum_float(float *values, size_t count) {
    if (world_size == 1) return;
    /* MPI counts are int: large buffers go in slices */
    while (count > 0) {
        int n = count > (size_t)INT_MAX ? INT_MAX : (int)count;
        MPI_Allreduce(MPI_IN_PLACE, values, n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        values += n;
        count -= (size_t)n;
    }
}

void dist_allreduce_sum_double(double *values, int count) {
    if (world_size == 1) return;
    MPI_Allreduce(MPI_IN_PLACE, values, count, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
}

void dist_stat_sum(double *values, int count, void *ctx) {
    (void)ctx;
    dist_allreduce_sum_double(values, count);
}

double dist_max_double(double value) {
    if (world_size == 1) return value;
    MPI_Allreduce(MPI_IN_PLACE, &value, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    return value;
}

long dist_sum_long(long value) {
    if (world_size == 1) return value;
    MPI_Allreduce(MPI_IN_PLACE, &value, 1, MPI_LONG, MPI_SUM, MPI_COMM_WORLD);
    return value;
}

int dist_any(int flag) {
    if (world_size == 1) return flag != 0;
    int v = flag != 0;
    MPI_Allreduce(MPI_IN_PLACE, &v, 1, MPI_INT, MPI_LOR, MPI_COMM_WORLD);
    return v;
}

void dist_bcast(void *buffer, size_t bytes, int root) {
    if (world_size == 1) return;
    char *p = buffer;
    while (bytes > 0) {
        int n = bytes > (size_t)INT_MAX ? INT_MAX : (int)bytes;
        MPI_Bcast(p, n, MPI_BYTE, root, MPI_COMM_WORLD);
        p += n;
        bytes -= (size_t)n;
    }
}

void dist_barrier(void) {
    if (world_size > 1) MPI_Barrier(MPI_COMM_WORLD);
}

_Noreturn void dist_fail(int code, const char *message) {
    fprintf(stderr, "resnet_mpi: rank %d: %s\n", world_rank, message);
    fflush(stderr);
    if (initialised && world_size > 1) MPI_Abort(MPI_COMM_WORLD, code);
    exit(code);
}
