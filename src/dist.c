/* Every MPI call of the program (CoMD's parallel.c habit): the world, node-local ranks, the reductions
 * the trainer and the BN layers need, the abort that ends a whole job when one rank fails, and the stall
 * watchdog that ends it when a rank stops arriving.
 *
 * The watchdog. With a timeout set, every collective is started non-blocking and completed by polling
 * MPI_Test against a deadline. A rank whose deadline passes asks every other rank, on a communicator of
 * its own, how many collectives it has entered; ranks that are waiting answer from their polling loops.
 * Whoever did not answer (stopped, hung in I/O, lost) or answered from an earlier collective has not
 * arrived: one line names them, and MPI_Abort ends the job. A watchdog thread could time out too, but it
 * could only name the missing ranks by talking MPI beside the main thread (MPI_THREAD_MULTIPLE); here
 * all MPI stays on the main thread (MPI_THREAD_FUNNELED), and a stopped rank is told apart from a busy
 * one by the one thing a stopped rank cannot do: answer. */
#include "resnet/dist.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <mpi.h>

#include "resnet/util.h"

static int world_rank = 0, world_size = 1, node_rank = 0, node_size = 1;
static int initialised = 0;

enum { TAG_QUERY = 1, TAG_ANSWER = 2 };
/* how long a reporting rank waits for the answers, and how much longer a rank that knows of a lower
 * reporting rank waits for that one's abort before it reports itself */
#define ANSWER_GRACE_S 2.0
#define DEFER_S 10.0

static MPI_Comm watch_comm = MPI_COMM_NULL;
static double timeout_s = 0;            /* 0: plain blocking collectives, no deadline */
static long long arrivals = 0;          /* collectives this rank has entered */
static int reporter = -1;               /* the lowest rank that asked us: it is reporting the stall */
static char activity[96] = "start-up";

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
    /* the watchdog's questions and answers never meet the program's own messages */
    MPI_Comm_dup(MPI_COMM_WORLD, &watch_comm);
    MPI_Comm_set_errhandler(watch_comm, MPI_ERRORS_RETURN);
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

/* ---- the watchdog ----------------------------------------------------------------------------------- */

void dist_set_timeout(double seconds) { timeout_s = seconds > 0 ? seconds : 0; }

double dist_timeout(void) { return timeout_s; }

void dist_set_activity(const char *what) { snprintf(activity, sizeof activity, "%s", what); }

/* Answers every rank that asked how far we are; a lower rank asking is reporting the stall itself. */
static void answer_queries(void) {
    for (;;) {
        int pending = 0;
        MPI_Status st;
        if (MPI_Iprobe(MPI_ANY_SOURCE, TAG_QUERY, watch_comm, &pending, &st) != MPI_SUCCESS || !pending) return;
        long long theirs, mine = arrivals;
        MPI_Recv(&theirs, 1, MPI_LONG_LONG, st.MPI_SOURCE, TAG_QUERY, watch_comm, MPI_STATUS_IGNORE);
        /* eight bytes to a rank that posted its receive first: the send completes at once */
        MPI_Send(&mine, 1, MPI_LONG_LONG, st.MPI_SOURCE, TAG_ANSWER, watch_comm);
        if (reporter < 0 || st.MPI_SOURCE < reporter) reporter = st.MPI_SOURCE;
    }
}

/* Waiting costs a core only briefly: after a millisecond the poll sleeps between tests, so a rank that
 * waits for a checkpoint write does not steal the cores of the ranks still computing. */
static void nap(double waited_s) {
    if (waited_s < 1e-3) return;
    const struct timespec ts = {0, waited_s < 0.1 ? 20000 : 500000};
    nanosleep(&ts, NULL);
}

/* "2", "2, 5-7": the ranks whose flag is set, as ranges; "..." ends a list too long for out. */
static void rank_list(const char *flag, char *out, size_t size) {
    size_t used = 0;
    out[0] = '\0';
    for (int r = 0; r < world_size; r++) {
        if (!flag[r]) continue;
        int last = r;
        while (last + 1 < world_size && flag[last + 1]) last++;
        char item[32];
        if (last > r) snprintf(item, sizeof item, "%s%d-%d", used ? ", " : "", r, last);
        else snprintf(item, sizeof item, "%s%d", used ? ", " : "", r);
        if (used + strlen(item) + 6 > size) {
            memcpy(out + used, ", ...", 6);
            return;
        }
        memcpy(out + used, item, strlen(item) + 1);
        used += strlen(item);
        r = last;
    }
}

/* Ends the whole job with `code`. Under Open MPI's mpirun a rank that exits before MPI_Finalize with a
 * non-zero code makes mpirun end the job with that code; MPI_Abort would do the same, but its message
 * races with the abort inside mpirun 4.1 when a peer is stopped (measured: "ORTE_ERROR_LOG: Data unpack
 * had inadequate space" in 10 of 30 aborts, now and then mpirun's segfault and exit 139 instead of 3).
 * Any other launcher (srun, another MPI) gets MPI_Abort, the one call every launcher turns into the end
 * of the job. */
_Noreturn static void end_job(int code) {
    fflush(stdout);
    fflush(stderr);
    if (initialised && world_size > 1) {
        if (getenv("OMPI_MCA_orte_hnp_uri")) _exit(code);
        MPI_Abort(MPI_COMM_WORLD, code);
    }
    exit(code);
}

/* The deadline of collective `what` passed: ask every rank where it is, name those that have not
 * arrived, end the job. */
_Noreturn static void report_stall(const char *what, double waited_s) {
    const long long mine = arrivals;
    reporter = -1;   /* from here on: who else is reporting now */
    long long *answer = malloc(sizeof *answer * (size_t)world_size);
    MPI_Request *req = malloc(sizeof *req * 2 * (size_t)world_size);
    char *silent = calloc((size_t)world_size, 1), *behind = calloc((size_t)world_size, 1);
    int expected = 0;
    for (int r = 0; answer && req && r < world_size; r++) {
        answer[r] = -1;
        req[2 * r] = req[2 * r + 1] = MPI_REQUEST_NULL;
        if (r == world_rank) continue;
        MPI_Irecv(&answer[r], 1, MPI_LONG_LONG, r, TAG_ANSWER, watch_comm, &req[2 * r]);
        MPI_Isend(&mine, 1, MPI_LONG_LONG, r, TAG_QUERY, watch_comm, &req[2 * r + 1]);
        expected++;
    }
    const double until = MPI_Wtime() + ANSWER_GRACE_S;
    int answered = 0;
    while (answer && req && answered < expected && MPI_Wtime() < until) {
        answered = 0;
        for (int r = 0; r < world_size; r++) {
            int done = r == world_rank;
            if (!done) MPI_Test(&req[2 * r], &done, MPI_STATUS_IGNORE);
            if (done && r != world_rank) answered++;
        }
        answer_queries();
        nap(1.0);
    }
    /* Only one rank may call MPI_Abort: two at once corrupt mpirun's message buffers (Open MPI 4.1:
     * "Data unpack had inadequate space", now and then a segfault and exit 139 instead of 3). A lower
     * rank reporting at the same time ends the job; this one reports only if that abort never comes. */
    if (reporter >= 0 && reporter < world_rank) {
        for (const double deadline = MPI_Wtime() + DEFER_S; MPI_Wtime() < deadline;) {
            answer_queries();
            nap(1.0);
        }
    }
    char missing[400] = "", late[400] = "";
    for (int r = 0; answer && silent && behind && r < world_size; r++) {
        if (r == world_rank) continue;
        silent[r] = answer[r] < 0;
        behind[r] = answer[r] >= 0 && answer[r] < mine;
    }
    if (silent) rank_list(silent, missing, sizeof missing);
    if (behind) rank_list(behind, late, sizeof late);
    char line[1100];
    snprintf(line, sizeof line, "stalled: %s #%lld (%s) did not complete in %.0f s (--timeout); %s%s%s%s%s%s; ending the job",
             what, mine, activity, waited_s,
             missing[0] ? (strpbrk(missing, ",-") ? "not arrived: ranks " : "not arrived: rank ") : "", missing,
             missing[0] ? " (no answer: stopped, hung or lost)" : "", missing[0] && late[0] ? "; " : "",
             late[0] ? (strpbrk(late, ",-") ? "still in an earlier collective: ranks " : "still in an earlier collective: rank ")
                     : "", late);
    if (!missing[0] && !late[0])
        snprintf(line, sizeof line, "stalled: %s #%lld (%s) did not complete in %.0f s (--timeout) although every "
                 "rank has arrived (the network is not delivering); ending the job", what, mine, activity, waited_s);
    rn_message("rank %d: %s", world_rank, line);
    end_job(DIST_EXIT_STALLED);
}

/* Completes a started collective, or reports the stall when the deadline passes. */
static void finish(MPI_Request *req, const char *what) {
    const double start = MPI_Wtime();
    for (;;) {
        int done = 0;
        MPI_Test(req, &done, MPI_STATUS_IGNORE);
        if (done) return;
        const double waited = MPI_Wtime() - start;
        if (waited > 1e-3) answer_queries();
        /* another rank is already naming the missing ranks: give its abort time to arrive, so that
         * one rank aborts, not two */
        if (waited > timeout_s + (reporter >= 0 ? ANSWER_GRACE_S + DEFER_S : 0)) report_stall(what, waited);
        nap(waited);
    }
}

/* ---- collectives ------------------------------------------------------------------------------------ */

static void allreduce(void *values, int count, MPI_Datatype type, MPI_Op op) {
    arrivals++;
    if (timeout_s <= 0) {
        MPI_Allreduce(MPI_IN_PLACE, values, count, type, op, MPI_COMM_WORLD);
        return;
    }
    MPI_Request req;
    MPI_Iallreduce(MPI_IN_PLACE, values, count, type, op, MPI_COMM_WORLD, &req);
    finish(&req, "allreduce");
}

void dist_finalize(void) {
    if (!initialised) return;
    /* MPI_Finalize waits for every rank without a deadline: meet under the watchdog first, so that a
     * rank that stopped after its last collective is still caught */
    if (world_size > 1 && timeout_s > 0) dist_barrier();
    if (watch_comm != MPI_COMM_NULL) MPI_Comm_free(&watch_comm);
    MPI_Finalize();
    initialised = 0;
}

int dist_rank(void) { return world_rank; }
int dist_size(void) { return world_size; }
int dist_local_size(void) { return node_size; }
int dist_local_rank(void) { return node_rank; }

void dist_slice(int count, int *lo, int *n) {
    /* in long: count * rank overflows int for large sets on many ranks */
    *lo = (int)((long)count * world_rank / world_size);
    *n = (int)((long)count * (world_rank + 1) / world_size) - *lo;
}

void dist_allreduce_sum_float(float *values, size_t count) {
    if (world_size == 1) return;
    /* MPI counts are int: large buffers go in slices */
    while (count > 0) {
        int n = count > (size_t)INT_MAX ? INT_MAX : (int)count;
        allreduce(values, n, MPI_FLOAT, MPI_SUM);
        values += n;
        count -= (size_t)n;
    }
}

/* ---- gradient buckets: the allreduce overlapped with the backward ---------------------------------- */

/* Bucket k (started k-th) is the k-th slice of bucket_floats from the END of the buffer: the backward
 * finishes gradients from the end down, so buckets start in order, each as soon as it is final. */
#define BUCKETS_MAX 1024
static struct {
    float *values;
    size_t count, size;             /* floats in all, per bucket */
    int num, started, done;
    MPI_Request req[BUCKETS_MAX];
} buckets;

static size_t bucket_lo(int k) {
    const size_t end_offset = (size_t)(k + 1) * buckets.size;
    return end_offset >= buckets.count ? 0 : buckets.count - end_offset;
}

int dist_buckets_init(float *values, size_t count, size_t bucket_floats) {
    size_t size = bucket_floats > 0 ? bucket_floats : count;
    if (size > (size_t)INT_MAX) size = (size_t)INT_MAX;
    if (size < (count + BUCKETS_MAX - 1) / BUCKETS_MAX) size = (count + BUCKETS_MAX - 1) / BUCKETS_MAX;
    buckets.values = values;
    buckets.count = count;
    buckets.size = size ? size : 1;
    buckets.num = count ? (int)((count + buckets.size - 1) / buckets.size) : 0;
    buckets.started = buckets.done = 0;
    return buckets.num;
}

void dist_buckets_ready(size_t final_from) {
    if (world_size == 1) return;
    while (buckets.started < buckets.num && bucket_lo(buckets.started) >= final_from) {
        const int k = buckets.started++;
        const size_t lo = bucket_lo(k), hi = k == 0 ? buckets.count : bucket_lo(k - 1);
        arrivals++;
        MPI_Iallreduce(MPI_IN_PLACE, buckets.values + lo, (int)(hi - lo), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD,
                       &buckets.req[k]);
    }
    /* progress: Open MPI moves a non-blocking collective on only inside MPI calls */
    while (buckets.done < buckets.started) {
        int complete = 0;
        MPI_Test(&buckets.req[buckets.done], &complete, MPI_STATUS_IGNORE);
        if (!complete) break;
        buckets.done++;
    }
}

void dist_buckets_wait(void) {
    if (world_size == 1) return;
    dist_buckets_ready(0);
    for (; buckets.done < buckets.started; buckets.done++) {
        if (timeout_s > 0) finish(&buckets.req[buckets.done], "allreduce");
        else MPI_Wait(&buckets.req[buckets.done], MPI_STATUS_IGNORE);
    }
    buckets.started = buckets.done = 0;
}

void dist_allreduce_sum_double(double *values, int count) {
    if (world_size == 1) return;
    allreduce(values, count, MPI_DOUBLE, MPI_SUM);
}

void dist_stat_sum(double *values, int count, void *ctx) {
    (void)ctx;
    dist_allreduce_sum_double(values, count);
}

double dist_max_double(double value) {
    if (world_size == 1) return value;
    allreduce(&value, 1, MPI_DOUBLE, MPI_MAX);
    return value;
}

void dist_min_sum_max(const double *values, double *min, double *sum, double *max, int count) {
    if (world_size == 1) {
        memcpy(min, values, sizeof(double) * (size_t)count);
        memcpy(sum, values, sizeof(double) * (size_t)count);
        memcpy(max, values, sizeof(double) * (size_t)count);
        return;
    }
    MPI_Allreduce(values, min, count, MPI_DOUBLE, MPI_MIN, MPI_COMM_WORLD);
    MPI_Allreduce(values, sum, count, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    MPI_Allreduce(values, max, count, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
}

long dist_sum_long(long value) {
    if (world_size == 1) return value;
    allreduce(&value, 1, MPI_LONG, MPI_SUM);
    return value;
}

int dist_any(int flag) {
    if (world_size == 1) return flag != 0;
    int v = flag != 0;
    allreduce(&v, 1, MPI_INT, MPI_LOR);
    return v;
}

void dist_bcast(void *buffer, size_t bytes, int root) {
    if (world_size == 1) return;
    char *p = buffer;
    while (bytes > 0) {
        int n = bytes > (size_t)INT_MAX ? INT_MAX : (int)bytes;
        arrivals++;
        if (timeout_s <= 0) {
            MPI_Bcast(p, n, MPI_BYTE, root, MPI_COMM_WORLD);
        } else {
            MPI_Request req;
            MPI_Ibcast(p, n, MPI_BYTE, root, MPI_COMM_WORLD, &req);
            finish(&req, "broadcast");
        }
        p += n;
        bytes -= (size_t)n;
    }
}

void dist_barrier(void) {
    if (world_size == 1) return;
    arrivals++;
    if (timeout_s <= 0) {
        MPI_Barrier(MPI_COMM_WORLD);
        return;
    }
    MPI_Request req;
    MPI_Ibarrier(MPI_COMM_WORLD, &req);
    finish(&req, "barrier");
}

_Noreturn void dist_fail(int code, const char *message) {
    rn_message("rank %d: %s", world_rank, message);
    end_job(code);
}
