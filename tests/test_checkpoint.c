/* Checkpoints: bitwise round trips of everything a resume needs, atomic replacement, one-line errors
 * naming the file for every kind of bad file, the layout h5dump shows; and the metrics log.
 *
 * RESNET_TEST_KEEP_CHECKPOINTS=DIR leaves seed.h5 and paper.h5 (trained-looking state, Adam / SGD) in
 * DIR for checking scripts/torch_export.py by hand. */
#include <check.h>

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <hdf5.h>

#include "check_main.h"
#include "resnet/checkpoint.h"
#include "resnet/config.h"
#include "resnet/rng.h"
#include "resnet/util.h"

/* ---- fixtures --------------------------------------------------------------------------------------- */

static char tmpdir[256];

static void make_tmpdir(void) {
    const char *base = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/test_checkpoint.XXXXXX", base && *base ? base : "/tmp");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

static void remove_tmpdir(void) {
    DIR *d = opendir(tmpdir);
    if (!d) return;
    struct dirent *e;
    char p[512];
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        snprintf(p, sizeof p, "%s/%s", tmpdir, e->d_name);
        chmod(p, 0700);
        if (unlink(p) != 0) {
            /* one level of sub-folders is all the tests make */
            DIR *s = opendir(p);
            struct dirent *f;
            char q[768];
            while (s && (f = readdir(s)))
                if (strcmp(f->d_name, ".") && strcmp(f->d_name, "..")) {
                    snprintf(q, sizeof q, "%s/%s", p, f->d_name);
                    unlink(q);
                }
            if (s) closedir(s);
            rmdir(p);
        }
    }
    closedir(d);
    rmdir(tmpdir);
}

static void in_tmp(char *out, size_t size, const char *name) { snprintf(out, size, "%s/%s", tmpdir, name); }

static void fill_random(float *x, size_t n, uint64_t seed) {
    Rng r;
    rng_init(&r, seed, 99);
    for (size_t i = 0; i < n; i++) x[i] = (float)rng_normal(&r);
}

typedef struct {
    Model model;
    Optimizer opt;
    TrainState ts;
    History hist;
    Settings settings;
} State;

static ModelConfig model_config(Arch arch, int classes) {
    return (ModelConfig){.arch = arch, .depth = 20, .in_channels = 3, .image_size = 32, .classes = classes};
}

/* A state that looks mid-training: nothing is at its initial value, so a field that is not saved shows. */
static void make_state(State *s, Arch arch, OptimizerKind kind, int classes, int history_entries) {
    memset(s, 0, sizeof *s);
    ModelConfig mc = model_config(arch, classes);
    ck_assert_int_eq(model_init(&s->model, &mc, 1234), 0);
    fill_random(s->model.params, s->model.num_params, 1);
    if (s->model.num_buffer_floats) fill_random(s->model.buffers, s->model.num_buffer_floats, 2);
    /* a variance is never negative, and a reader refuses a file that says otherwise */
    for (int i = 0; i < s->model.num_buffer_tensors; i++) {
        const TensorInfo *ti = &s->model.buffer_info[i];
        if (strstr(ti->name, ".running_var"))
            for (size_t j = ti->offset; j < ti->offset + ti->numel; j++) s->model.buffers[j] = fabsf(s->model.buffers[j]);
    }
    s->model.bn_batches_tracked = 4321;

    OptimConfig oc;
    optim_defaults(&oc, kind);
    oc.lr = 0.1f;
    oc.weight_decay = 1e-4f;
    oc.momentum = 0.9f;
    ck_assert_int_eq(optim_init(&s->opt, &oc, s->model.num_params), 0);
    fill_random(s->opt.state, optim_state_floats(&s->opt), 3);
    if (kind != OPT_SGD)   /* exp_avg_sq, the second slice */
        for (size_t j = s->opt.n; j < 2 * s->opt.n; j++) s->opt.state[j] = fabsf(s->opt.state[j]);
    s->opt.step = 777;

    s->ts = (TrainState){.epoch = 3, .step = 777, .batch_in_epoch = 73, .best_val_acc = 0.6125, .best_step = 700,
                         .prev_val_acc = -INFINITY, .non_increase_count = 2, .running_loss_sum = 12.345678901234567,
                         .running_loss_count = 23, .elapsed_s = 81.25};
    snprintf(s->ts.stop_reason, sizeof s->ts.stop_reason, "signal SIGTERM");
    for (int i = 0; i < history_entries; i++)
        ck_assert_int_eq(history_append(&s->hist, 50L * (i + 1), 1 + i / 7, 2.0 / (i + 1), 0.1 + 0.01 * i, 3.5 * i), 0);

    Config c;
    config_defaults(&c);
    c.arch = arch;   /* /config describes the model in the file, as the trainer's does */
    c.ema = 0;       /* and says it has no moving average (/ema) */
    c.optimizer = kind;
    c.split_seed = UINT64_MAX;   /* above INT64_MAX: must come back digit for digit */
    config_to_settings(&c, &s->settings);
    settings_put(&s->settings, "in-channels", "3");
    settings_put(&s->settings, "image-size", "32");
    char buf[16];
    snprintf(buf, sizeof buf, "%d", classes);
    settings_put(&s->settings, "classes", buf);
    settings_put(&s->settings, "class_names",
                 classes == 10 ? "airplane,automobile,bird,cat,deer,dog,frog,horse,ship,truck"
                               : "a,b,c,d,e,f,g,h,i,j,k,l");
    settings_put(&s->settings, "world-size", "4");
}

static void free_state(State *s) {
    model_free(&s->model);
    optim_free(&s->opt);
    history_free(&s->hist);
}

static long file_size(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

static unsigned char *slurp(const char *path, long *size) {
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    *size = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = malloc((size_t)*size + 1);
    ck_assert_int_eq(fread(buf, 1, (size_t)*size, f), (size_t)*size);
    fclose(f);
    return buf;
}

/* Hidden files in tmpdir: a leftover temporary file would be one. */
static int hidden_files(void) {
    DIR *d = opendir(tmpdir);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] == '.' && strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    closedir(d);
    return n;
}

/* Every failure must say which file and be one line. */
static void assert_error_names(const char *path, const char *needle) {
    const char *msg = rn_last_error();
    ck_assert_msg(strncmp(msg, path, strlen(path)) == 0, "message does not start with the file: %s", msg);
    ck_assert_msg(strstr(msg, needle) != NULL, "message '%s' lacks '%s'", msg, needle);
    ck_assert_msg(strchr(msg, '\n') == NULL, "message is not one line: %s", msg);
}

/* 0, or -1 with the reason in rn_last_error(). */
static int try_write_state(const char *path, const State *s) {
    return checkpoint_write(path, &s->model, &s->opt, &s->ts, &s->hist, &s->settings);
}

static void write_state(const char *path, const State *s) {
    ck_assert_msg(try_write_state(path, s) == 0, "write failed: %s", rn_last_error());
}

/* What most tests start from: a temporary folder, a state that looks mid-training (10 classes) and a path
 * in the folder for its checkpoint; and, once keep_bytes has read them, the bytes of that checkpoint. */
typedef struct {
    State s;
    char path[512];
    unsigned char *bytes;
    long size;
} Fixture;

static void start_with_state(Fixture *fx, Arch arch, OptimizerKind kind, int history_entries) {
    memset(fx, 0, sizeof *fx);
    make_tmpdir();
    make_state(&fx->s, arch, kind, 10, history_entries);
    in_tmp(fx->path, sizeof fx->path, "last.h5");
}

static void start_with_checkpoint(Fixture *fx, Arch arch, OptimizerKind kind, int history_entries) {
    start_with_state(fx, arch, kind, history_entries);
    write_state(fx->path, &fx->s);
}

/* The checkpoint most bad-file tests spoil: paper, Adam, three history entries. */
static void start_with_good_checkpoint(Fixture *fx) { start_with_checkpoint(fx, ARCH_PAPER, OPT_ADAM, 3); }

static void finish(Fixture *fx) {
    free(fx->bytes);
    free_state(&fx->s);
    remove_tmpdir();
}

/* The file at path holds exactly these size bytes. */
static void assert_file_holds(const char *path, const unsigned char *bytes, long size) {
    long n;
    unsigned char *now = slurp(path, &n);
    ck_assert_int_eq(n, size);
    ck_assert_msg(memcmp(now, bytes, (size_t)size) == 0, "%s: not the bytes expected", path);
    free(now);
}

/* Remembers the checkpoint's bytes, for assert_file_unchanged after a write that must not replace it. */
static void keep_bytes(Fixture *fx) { fx->bytes = slurp(fx->path, &fx->size); }

static void assert_file_unchanged(const Fixture *fx) { assert_file_holds(fx->path, fx->bytes, fx->size); }

/* An empty state to read into: a model of (arch, classes) with other initial weights (seed), an optimizer
 * of oc. */
static void blank_state(State *t, Arch arch, int classes, const OptimConfig *oc, uint64_t seed) {
    memset(t, 0, sizeof *t);
    ModelConfig mc = model_config(arch, classes);
    ck_assert_int_eq(model_init(&t->model, &mc, seed), 0);
    ck_assert_int_eq(optim_init(&t->opt, oc, t->model.num_params), 0);
}

/* ---- round trips ------------------------------------------------------------------------------------ */

static void assert_same_state(const State *a, const State *b) {
    ck_assert_int_eq(a->model.num_params, b->model.num_params);
    ck_assert(memcmp(a->model.params, b->model.params, sizeof(float) * a->model.num_params) == 0);
    ck_assert_int_eq(a->model.num_buffer_floats, b->model.num_buffer_floats);
    if (a->model.num_buffer_floats)
        ck_assert(memcmp(a->model.buffers, b->model.buffers, sizeof(float) * a->model.num_buffer_floats) == 0);
    ck_assert_int_eq(a->opt.step, b->opt.step);
    ck_assert(memcmp(a->opt.state, b->opt.state, sizeof(float) * optim_state_floats(&a->opt)) == 0);

    const TrainState *x = &a->ts, *y = &b->ts;
    ck_assert_int_eq(x->epoch, y->epoch);
    ck_assert_int_eq(x->step, y->step);
    ck_assert_int_eq(x->batch_in_epoch, y->batch_in_epoch);
    ck_assert(memcmp(&x->best_val_acc, &y->best_val_acc, sizeof(double)) == 0);
    ck_assert_int_eq(x->best_step, y->best_step);
    ck_assert(memcmp(&x->prev_val_acc, &y->prev_val_acc, sizeof(double)) == 0);
    ck_assert_int_eq(x->non_increase_count, y->non_increase_count);
    ck_assert(memcmp(&x->running_loss_sum, &y->running_loss_sum, sizeof(double)) == 0);
    ck_assert_int_eq(x->running_loss_count, y->running_loss_count);
    ck_assert(memcmp(&x->elapsed_s, &y->elapsed_s, sizeof(double)) == 0);
    ck_assert_str_eq(x->stop_reason, y->stop_reason);

    const History *g = &a->hist, *h = &b->hist;
    ck_assert_int_eq(g->count, h->count);
    if (g->count) {
        ck_assert(memcmp(g->step, h->step, sizeof(long) * g->count) == 0);
        ck_assert(memcmp(g->epoch, h->epoch, sizeof(long) * g->count) == 0);
        ck_assert(memcmp(g->train_loss, h->train_loss, sizeof(double) * g->count) == 0);
        ck_assert(memcmp(g->val_acc, h->val_acc, sizeof(double) * g->count) == 0);
        ck_assert(memcmp(g->time_s, h->time_s, sizeof(double) * g->count) == 0);
    }
}

/* Writes s, reads it into a freshly built model (other initial weights) and compares everything. */
static void round_trip(Arch arch, OptimizerKind kind, int history_entries) {
    Fixture fx;
    start_with_checkpoint(&fx, arch, kind, history_entries);
    ck_assert_int_eq(hidden_files(), 0);

    State t;
    blank_state(&t, arch, 10, &fx.s.opt.cfg, 99);
    history_append(&t.hist, 1, 1, 1, 1, 1);   /* replaced, not appended to */
    ck_assert_msg(checkpoint_read(fx.path, &t.model, &t.opt, &t.ts, &t.hist) == 0, "%s", rn_last_error());
    ck_assert_int_eq(t.model.bn_batches_tracked, arch == ARCH_PAPER ? 4321 : 0);
    ck_assert(isinf(t.ts.prev_val_acc) && t.ts.prev_val_acc < 0);
    assert_same_state(&fx.s, &t);

    /* a read with no optimizer, train state or history (what eval does) */
    Model m;
    ModelConfig mc = model_config(arch, 10);
    ck_assert_int_eq(model_init(&m, &mc, 5), 0);
    ck_assert_int_eq(checkpoint_read(fx.path, &m, NULL, NULL, NULL), 0);
    ck_assert(memcmp(m.params, fx.s.model.params, sizeof(float) * m.num_params) == 0);
    model_free(&m);

    free_state(&t);
    finish(&fx);
}

START_TEST(round_trip_paper_sgd) { round_trip(ARCH_PAPER, OPT_SGD, 9); }
END_TEST

START_TEST(round_trip_seed_adam) { round_trip(ARCH_SEED, OPT_ADAM, 130); }
END_TEST

START_TEST(round_trip_adamw_empty_history) { round_trip(ARCH_SEED, OPT_ADAMW, 0); }
END_TEST

START_TEST(round_trip_lamb) { round_trip(ARCH_SEED, OPT_LAMB, 7); }
END_TEST

START_TEST(settings_round_trip) {
    Fixture fx;
    start_with_state(&fx, ARCH_SEED, OPT_ADAM, 1);
    /* the awkward spellings: each either keeps its text or comes back as the same number */
    settings_put(&fx.s.settings, "zero-pad", "007");
    settings_put(&fx.s.settings, "exp", "1e-3");
    settings_put(&fx.s.settings, "negative", "-5");
    settings_put(&fx.s.settings, "empty", "");
    settings_put(&fx.s.settings, "not-a-number", "inf");
    settings_put(&fx.s.settings, "hex", "0x10");
    settings_put(&fx.s.settings, "huge", "123456789012345678901234567890");
    settings_put(&fx.s.settings, "list", "32000,48000");
    write_state(fx.path, &fx.s);

    Settings back;
    ck_assert_msg(checkpoint_read_settings(fx.path, &back) == 0, "%s", rn_last_error());
    ck_assert_int_eq(back.count, fx.s.settings.count);
    static const struct { const char *key, *value; } changed[] = {
        {"zero-pad", "7"}, {"exp", "0.001"}, {NULL, NULL}};
    for (int i = 0; i < fx.s.settings.count; i++) {
        const char *key = fx.s.settings.items[i].key, *want = fx.s.settings.items[i].value;
        for (int k = 0; changed[k].key; k++)
            if (!strcmp(changed[k].key, key)) want = changed[k].value;
        /* written in order, read back in order */
        ck_assert_str_eq(back.items[i].key, key);
        ck_assert_msg(strcmp(back.items[i].value, want) == 0, "%s: '%s' came back as '%s'", key, want,
                      back.items[i].value);
    }
    ck_assert_str_eq(settings_get(&back, "split-seed"), "18446744073709551615");

    /* every flag setting is one the command line accepts again */
    static const char *const info[] = {"world-size", "in-channels", "image-size", "classes", "class_names",
                                       "zero-pad", "exp", "negative", "empty", "not-a-number", "hex", "huge",
                                       "list", NULL};
    Config c;
    config_defaults(&c);
    for (int i = 0; i < back.count; i++) {
        int skip = 0;
        for (int k = 0; info[k]; k++) skip |= !strcmp(info[k], back.items[i].key);
        if (skip) continue;
        ck_assert_msg(config_set(&c, back.items[i].key, back.items[i].value) == 0, "--%s %s: %s", back.items[i].key,
                      back.items[i].value, rn_last_error());
    }
    ck_assert(c.split_seed == UINT64_MAX);

    /* the types a reader of the file sees */
    hid_t f = H5Fopen(fx.path, H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t g = H5Gopen2(f, "config", H5P_DEFAULT);
    struct { const char *key; H5T_class_t cls; } types[] = {
        {"depth", H5T_INTEGER}, {"lr", H5T_FLOAT}, {"arch", H5T_STRING}, {"class_names", H5T_STRING},
        {"split-seed", H5T_INTEGER}, {"huge", H5T_STRING}, {"exp", H5T_FLOAT}, {NULL, H5T_NO_CLASS}};
    for (int k = 0; types[k].key; k++) {
        hid_t a = H5Aopen(g, types[k].key, H5P_DEFAULT), t = H5Aget_type(a);
        ck_assert_msg(H5Tget_class(t) == types[k].cls, "/config %s has the wrong type class", types[k].key);
        H5Tclose(t);
        H5Aclose(a);
    }
    hid_t a = H5Aopen(g, "class_names", H5P_DEFAULT), sp = H5Aget_space(a);
    ck_assert_int_eq(H5Sget_simple_extent_ndims(sp), 1);
    ck_assert_int_eq(H5Sget_simple_extent_npoints(sp), 10);
    H5Sclose(sp);
    H5Aclose(a);
    H5Gclose(g);
    H5Fclose(f);
    finish(&fx);
}
END_TEST

START_TEST(history_grows) {
    History h = {0};
    for (int i = 0; i < 1000; i++) ck_assert_int_eq(history_append(&h, i, i / 10, i * 0.5, i * 0.25, i * 2.0), 0);
    ck_assert_int_eq(h.count, 1000);
    for (int i = 0; i < 1000; i++) {
        ck_assert_int_eq(h.step[i], i);
        ck_assert_int_eq(h.epoch[i], i / 10);
        ck_assert(h.val_acc[i] == i * 0.25);
    }
    history_free(&h);
    ck_assert_int_eq(h.count, 0);
    ck_assert_ptr_null(h.step);
}
END_TEST

/* Same state, same bytes (given a pinned creation time): no object modification times in the file. */
START_TEST(deterministic_bytes) {
    setenv("SOURCE_DATE_EPOCH", "1700000000", 1);
    Fixture fx;
    start_with_checkpoint(&fx, ARCH_PAPER, OPT_SGD, 5);
    keep_bytes(&fx);
    sleep(1);
    char again[512];
    in_tmp(again, sizeof again, "again.h5");
    write_state(again, &fx.s);
    assert_file_holds(again, fx.bytes, fx.size);
    finish(&fx);
}
END_TEST

/* ---- atomicity -------------------------------------------------------------------------------------- */

START_TEST(write_into_missing_or_bad_folder) {
    Fixture fx;
    start_with_state(&fx, ARCH_SEED, OPT_ADAM, 2);
    in_tmp(fx.path, sizeof fx.path, "no-such-folder/last.h5");
    ck_assert_int_eq(try_write_state(fx.path, &fx.s), -1);
    assert_error_names(fx.path, "cannot create: No such file or directory");

    /* a "folder" that is a file: refused for root too */
    char file[512];
    in_tmp(file, sizeof file, "plain");
    FILE *f = fopen(file, "w");
    fputs("x", f);
    fclose(f);
    in_tmp(fx.path, sizeof fx.path, "plain/last.h5");
    ck_assert_int_eq(try_write_state(fx.path, &fx.s), -1);
    assert_error_names(fx.path, "cannot create: Not a directory");
    finish(&fx);
}
END_TEST

START_TEST(unwritable_folder_keeps_old_file) {
    Fixture fx;
    start_with_state(&fx, ARCH_SEED, OPT_ADAM, 2);
    char sub[512];
    in_tmp(sub, sizeof sub, "ro");
    ck_assert_int_eq(mkdir(sub, 0755), 0);
    in_tmp(fx.path, sizeof fx.path, "ro/last.h5");
    write_state(fx.path, &fx.s);
    keep_bytes(&fx);
    chmod(sub, 0555);
    if (access(sub, W_OK) == 0) {
        /* root ignores the mode bits: nothing to test here */
        chmod(sub, 0755);
        finish(&fx);
        return;
    }
    fx.s.model.params[0] += 1.0f;
    ck_assert_int_eq(try_write_state(fx.path, &fx.s), -1);
    assert_error_names(fx.path, "cannot create: Permission denied");
    chmod(sub, 0755);
    assert_file_unchanged(&fx);
    finish(&fx);
}
END_TEST

/* A write that fails part way (the file-size limit stands in for a full disk): the old checkpoint is
 * byte-identical and the temporary file is gone. */
START_TEST(failed_write_keeps_old_file) {
    Fixture fx;
    start_with_checkpoint(&fx, ARCH_PAPER, OPT_ADAM, 4);
    keep_bytes(&fx);

    signal(SIGXFSZ, SIG_IGN);
    struct rlimit old, lim;
    getrlimit(RLIMIT_FSIZE, &old);
    lim = old;
    lim.rlim_cur = 200 * 1024;   /* the checkpoint is about 3 MB */
    ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &lim), 0);
    fx.s.model.params[0] += 1.0f;
    const int rc = try_write_state(fx.path, &fx.s);
    setrlimit(RLIMIT_FSIZE, &old);
    ck_assert_int_eq(rc, -1);
    assert_error_names(fx.path, "cannot write: File too large");
    ck_assert_int_eq(hidden_files(), 0);
    assert_file_unchanged(&fx);
    finish(&fx);
}
END_TEST

START_TEST(relative_path_in_current_folder) {
    Fixture fx;
    start_with_state(&fx, ARCH_SEED, OPT_SGD, 1);
    char cwd[512];
    ck_assert_ptr_nonnull(getcwd(cwd, sizeof cwd));
    ck_assert_int_eq(chdir(tmpdir), 0);
    write_state("here.h5", &fx.s);
    write_state("here.h5", &fx.s);   /* over an existing file */
    ck_assert_int_eq(hidden_files(), 0);
    Settings back;
    ck_assert_int_eq(checkpoint_read_settings("here.h5", &back), 0);
    ck_assert_int_eq(chdir(cwd), 0);
    finish(&fx);
}
END_TEST

/* ---- bad files -------------------------------------------------------------------------------------- */

/* A fresh model/optimizer of (arch, kind, classes), with the optimizer's defaults, ready to read into. */
static void fresh_state(State *t, Arch arch, OptimizerKind kind, int classes) {
    OptimConfig oc;
    optim_defaults(&oc, kind);
    blank_state(t, arch, classes, &oc, 5);
}

static int read_into_fresh(const char *path, Arch arch, OptimizerKind kind, int classes, State *out) {
    fresh_state(out, arch, kind, classes);
    float *before = malloc(sizeof(float) * out->model.num_params);
    memcpy(before, out->model.params, sizeof(float) * out->model.num_params);
    int rc = checkpoint_read(path, &out->model, &out->opt, &out->ts, &out->hist);
    if (rc != 0)   /* a failed read leaves the model as it was */
        ck_assert(memcmp(before, out->model.params, sizeof(float) * out->model.num_params) == 0);
    free(before);
    return rc;
}

/* Reading path into a fresh model of (arch, kind, classes) must fail with a message that starts with
 * the file and holds needle. */
static void assert_read_refused(const char *path, Arch arch, OptimizerKind kind, int classes, const char *needle) {
    State t;
    ck_assert_int_eq(read_into_fresh(path, arch, kind, classes, &t), -1);
    assert_error_names(path, needle);
    free_state(&t);
}

/* A spoilt start_with_good_checkpoint file is refused by the full read and by the read of /config alone
 * (what resume and eval read first), both naming the file and needle. */
static void assert_good_file_reads_refused(const char *path, const char *needle) {
    assert_read_refused(path, ARCH_PAPER, OPT_ADAM, 10, needle);
    Settings back;
    ck_assert_int_eq(checkpoint_read_settings(path, &back), -1);
    assert_error_names(path, needle);
}

START_TEST(truncated_file) {
    Fixture fx;
    start_with_good_checkpoint(&fx);
    ck_assert_int_eq(truncate(fx.path, file_size(fx.path) / 2), 0);
    assert_good_file_reads_refused(fx.path, "not an HDF5 file or truncated");
    finish(&fx);
}
END_TEST

START_TEST(not_hdf5_and_missing) {
    make_tmpdir();
    char path[512];
    in_tmp(path, sizeof path, "notes.txt");
    FILE *f = fopen(path, "w");
    fputs("this is not a checkpoint\n", f);
    fclose(f);
    assert_read_refused(path, ARCH_SEED, OPT_ADAM, 10, "not an HDF5 file or truncated");

    in_tmp(path, sizeof path, "absent.h5");
    assert_read_refused(path, ARCH_SEED, OPT_ADAM, 10, "cannot open: No such file or directory");

    /* an HDF5 file that is not ours */
    in_tmp(path, sizeof path, "other.h5");
    hid_t h = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    H5Fclose(h);
    assert_read_refused(path, ARCH_SEED, OPT_ADAM, 10, "not a resnet-mpi checkpoint");
    remove_tmpdir();
}
END_TEST

START_TEST(missing_dataset) {
    Fixture fx;
    start_with_good_checkpoint(&fx);
    hid_t f = H5Fopen(fx.path, H5F_ACC_RDWR, H5P_DEFAULT);
    ck_assert_int_ge(H5Ldelete(f, "/model/fc.weight", H5P_DEFAULT), 0);
    H5Fclose(f);
    assert_read_refused(fx.path, ARCH_PAPER, OPT_ADAM, 10, "missing dataset /model/fc.weight");
    finish(&fx);
}
END_TEST

START_TEST(wrong_shape) {
    Fixture fx;
    start_with_good_checkpoint(&fx);
    assert_read_refused(fx.path, ARCH_PAPER, OPT_ADAM, 12, "/model/fc.weight has shape [10,64], expected [12,64]");
    finish(&fx);
}
END_TEST

START_TEST(other_architecture) {
    Fixture fx;
    start_with_good_checkpoint(&fx);   /* paper */
    /* the seed's stem has a bias, the paper's none */
    assert_read_refused(fx.path, ARCH_SEED, OPT_ADAM, 10, "missing dataset /model/conv1.bias");
    free_state(&fx.s);

    /* and the other way: a seed file into a paper model has no running statistics */
    make_state(&fx.s, ARCH_SEED, OPT_ADAM, 10, 1);
    write_state(fx.path, &fx.s);
    assert_read_refused(fx.path, ARCH_PAPER, OPT_ADAM, 10, "/model/");
    finish(&fx);
}
END_TEST

START_TEST(extra_dataset) {
    Fixture fx;
    start_with_good_checkpoint(&fx);
    hid_t f = H5Fopen(fx.path, H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t d = H5Dcreate2(f, "/model/stowaway.weight", H5T_IEEE_F32LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dclose(d);
    H5Sclose(sp);
    H5Fclose(f);
    assert_read_refused(fx.path, ARCH_PAPER, OPT_ADAM, 10, "/model/stowaway.weight is not a tensor of this model");
    finish(&fx);
}
END_TEST

START_TEST(wrong_format_version) {
    Fixture fx;
    start_with_good_checkpoint(&fx);
    hid_t f = H5Fopen(fx.path, H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t a = H5Aopen(f, "format_version", H5P_DEFAULT);
    const int64_t three = 3;
    ck_assert_int_ge(H5Awrite(a, H5T_NATIVE_INT64, &three), 0);
    H5Aclose(a);
    H5Fclose(f);
    assert_good_file_reads_refused(fx.path, "format_version 3, this program reads 1 to 2");
    finish(&fx);
}
END_TEST

START_TEST(optimizer_mismatch) {
    Fixture fx;
    start_with_good_checkpoint(&fx);   /* adam */
    assert_read_refused(fx.path, ARCH_PAPER, OPT_SGD, 10, "optimizer state is for adam, this run uses sgd");
    assert_read_refused(fx.path, ARCH_PAPER, OPT_ADAMW, 10, "optimizer state is for adam, this run uses adamw");
    finish(&fx);
}
END_TEST

/* Counters a run could never have written are refused by name (issue 13: a negative batch_in_epoch
 * indexed the epoch order, a negative step ran extra steps, an epoch of 10^12 trained nothing). */
static void spoil_train_state(int which, TrainState *ts, long *opt_step) {
    switch (which) {
    case 0: ts->step = -5; break;
    case 1: ts->epoch = 1000000000000L; break;
    case 2: ts->batch_in_epoch = -1; break;
    case 3: ts->batch_in_epoch = ts->step; break;        /* more than step - epoch */
    case 4: ts->best_val_acc = 2; break;
    case 5: ts->prev_val_acc = NAN; break;
    case 6: ts->best_step = ts->step + 1; break;
    case 7: ts->non_increase_count = -1; break;
    case 8: ts->running_loss_sum = INFINITY; break;
    case 9: ts->running_loss_count = -3; break;
    case 10: ts->elapsed_s = -1; break;
    case 11: *opt_step = ts->step + 1; break;
    default: snprintf(ts->stop_reason, sizeof ts->stop_reason, "a\nb"); break;
    }
}
static const char *const bad_train_needles[] = {
    "attribute step of /train is -5", "attribute epoch of /train is 1000000000000",
    "attribute batch_in_epoch of /train is -1", "attribute batch_in_epoch of /train is 777, expected 0..774",
    "attribute best_val_acc of /train is 2", "attribute prev_val_acc of /train is nan",
    "attribute best_step of /train is 778", "attribute non_increase_count of /train is -1",
    "attribute running_loss_sum of /train is inf", "attribute running_loss_count of /train is -3",
    "attribute elapsed_s of /train is -1", "attribute step of /optimizer is 778, but /train says 777",
    "attribute stop_reason of /train holds control characters",
};
#define BAD_TRAIN_STATES ((int)(sizeof bad_train_needles / sizeof bad_train_needles[0]))

START_TEST(train_state_out_of_range) {
    Fixture fx;
    start_with_state(&fx, ARCH_PAPER, OPT_ADAM, 3);
    spoil_train_state(_i, &fx.s.ts, &fx.s.opt.step);
    write_state(fx.path, &fx.s);
    assert_read_refused(fx.path, ARCH_PAPER, OPT_ADAM, 10, bad_train_needles[_i]);
    finish(&fx);
}
END_TEST

/* A NaN or Inf in a tensor of the file is refused naming the dataset (eval scored such a model, a resume
 * trained on from it); checkpoint_write cannot make one, so the test writes it with HDF5 itself. */
START_TEST(nonfinite_tensor_refused) {
    static const char *const datasets[] = {"/model/conv1.weight", "/optimizer/exp_avg/fc.bias",
                                           "/optimizer/exp_avg_sq/module1.0.conv1.weight"};
    const float values[] = {NAN, INFINITY, -1.0f};
    static const char *const needles[] = {"/model/conv1.weight holds a non-finite value (nan at index 0)",
                                          "/optimizer/exp_avg/fc.bias holds a non-finite value (inf at index 0)",
                                          "/optimizer/exp_avg_sq/module1.0.conv1.weight holds a negative value"};
    Fixture fx;
    start_with_good_checkpoint(&fx);
    hid_t f = H5Fopen(fx.path, H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t d = H5Dopen2(f, datasets[_i], H5P_DEFAULT), space = H5Dget_space(d);
    hid_t one = H5Screate_simple(1, (hsize_t[]){1}, NULL);
    hsize_t first[4] = {0, 0, 0, 0};
    ck_assert_int_ge(H5Sselect_elements(space, H5S_SELECT_SET, 1, first), 0);
    ck_assert_int_ge(H5Dwrite(d, H5T_NATIVE_FLOAT, one, space, H5P_DEFAULT, &values[_i]), 0);
    H5Sclose(one);
    H5Sclose(space);
    H5Dclose(d);
    H5Fclose(f);
    assert_read_refused(fx.path, ARCH_PAPER, OPT_ADAM, 10, needles[_i]);
    finish(&fx);
}
END_TEST

/* A diverged model is never written over a good checkpoint: the write is refused and the file stays. */
START_TEST(nonfinite_state_not_written) {
    Fixture fx;
    start_with_good_checkpoint(&fx);
    keep_bytes(&fx);
    fx.s.model.params[fx.s.model.param_info[1].offset] = NAN;
    ck_assert_int_eq(try_write_state(fx.path, &fx.s), -1);
    assert_error_names(fx.path, "not written: /model/");
    ck_assert_ptr_nonnull(strstr(rn_last_error(), fx.s.model.param_info[1].name));
    fx.s.model.params[fx.s.model.param_info[1].offset] = 0;
    fx.s.opt.state[fx.s.opt.n + 3] = INFINITY;
    ck_assert_int_eq(try_write_state(fx.path, &fx.s), -1);
    assert_error_names(fx.path, "not written: optimizer state of");
    assert_file_unchanged(&fx);
    ck_assert_int_eq(hidden_files(), 0);
    finish(&fx);
}
END_TEST

/* ---- layout ----------------------------------------------------------------------------------------- */

/* Output of a shell command, or NULL when the tool is not installed. */
static char *command_output(const char *cmd, int *status) {
    FILE *p = popen(cmd, "r");
    if (!p) return NULL;
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    size_t got;
    while ((got = fread(buf + n, 1, cap - n - 1, p)) > 0) {
        n += got;
        if (cap - n < 4096) buf = realloc(buf, cap *= 2);
    }
    buf[n] = '\0';
    *status = pclose(p);
    return buf;
}

START_TEST(h5dump_layout) {
    if (system("command -v h5dump >/dev/null 2>&1") != 0) {
        fprintf(stderr, "h5dump_layout: h5dump not installed, skipped\n");
        return;
    }
    Fixture fx;
    start_with_good_checkpoint(&fx);
    char cmd[1400];
    snprintf(cmd, sizeof cmd, "h5dump -H '%s' 2>&1", fx.path);
    int status;
    char *out = command_output(cmd, &status);
    ck_assert_ptr_nonnull(out);
    ck_assert_msg(status == 0, "h5dump failed: %s", out);
    static const char *const expect[] = {
        "ATTRIBUTE \"format\"", "ATTRIBUTE \"format_version\"", "ATTRIBUTE \"program_version\"",
        "ATTRIBUTE \"created\"", "GROUP \"config\"", "ATTRIBUTE \"class_names\"", "GROUP \"model\"",
        "DATASET \"conv1.weight\"", "DATASET \"module1.0.conv1.weight\"", "DATASET \"bn1.running_mean\"",
        "DATASET \"bn1.num_batches_tracked\"", "DATASET \"fc.weight\"", "( 10, 64 )", "( 16, 3, 3, 3 )",
        "GROUP \"optimizer\"", "GROUP \"exp_avg\"", "GROUP \"exp_avg_sq\"", "ATTRIBUTE \"type\"",
        "GROUP \"train\"", "ATTRIBUTE \"prev_val_acc\"", "GROUP \"history\"", "DATASET \"val_acc\"",
        "H5T_IEEE_F32LE", NULL};
    for (int i = 0; expect[i]; i++) ck_assert_msg(strstr(out, expect[i]) != NULL, "h5dump -H lacks %s", expect[i]);
    free(out);

    /* a file without history entries is still one h5dump reads whole */
    history_free(&fx.s.hist);
    write_state(fx.path, &fx.s);
    snprintf(cmd, sizeof cmd, "h5dump -g /history -A 0 '%s' 2>&1 && h5dump -a /train/prev_val_acc '%s' 2>&1", fx.path,
             fx.path);
    out = command_output(cmd, &status);
    ck_assert_msg(status == 0, "h5dump failed: %s", out);
    ck_assert_msg(strstr(out, "-inf") || strstr(out, "-Inf") || strstr(out, "-INF"), "prev_val_acc: %s", out);
    free(out);
    finish(&fx);
}
END_TEST

/* Checkpoints for a hand check of scripts/torch_export.py. */
START_TEST(keep_checkpoints) {
    const char *dir = getenv("RESNET_TEST_KEEP_CHECKPOINTS");
    if (!dir || !*dir) return;
    char path[1024];
    State s;
    make_state(&s, ARCH_SEED, OPT_ADAM, 10, 3);
    snprintf(path, sizeof path, "%s/seed.h5", dir);
    write_state(path, &s);
    free_state(&s);
    make_state(&s, ARCH_PAPER, OPT_SGD, 10, 3);
    snprintf(path, sizeof path, "%s/paper.h5", dir);
    write_state(path, &s);
    free_state(&s);
}
END_TEST

/* ---- checksums -------------------------------------------------------------------------------------- */

typedef struct {
    haddr_t start[64];
    hsize_t size[64];
    int count;
} ChunkRanges;

/* Where the raw data of the file lies: the chunks of every dataset, found through HDF5. */
static void collect_chunks(hid_t loc, ChunkRanges *out) {
    H5G_info_t info;
    ck_assert_int_ge(H5Gget_info(loc, &info), 0);
    for (hsize_t i = 0; i < info.nlinks; i++) {
        char name[256];
        ck_assert_int_gt(H5Lget_name_by_idx(loc, ".", H5_INDEX_NAME, H5_ITER_INC, i, name, sizeof name, H5P_DEFAULT), 0);
        hid_t obj = H5Oopen(loc, name, H5P_DEFAULT);
        ck_assert_int_ge(obj, 0);
        if (H5Iget_type(obj) == H5I_GROUP) {
            collect_chunks(obj, out);
        } else {
            hsize_t chunks = 0;
            hid_t space = H5Dget_space(obj);
            H5Dget_num_chunks(obj, space, &chunks);   /* 0 for a compact dataset */
            for (hsize_t c = 0; c < chunks && out->count < 64; c++) {
                haddr_t addr;
                hsize_t size;
                ck_assert_int_ge(H5Dget_chunk_info(obj, space, c, NULL, NULL, &addr, &size), 0);
                out->start[out->count] = addr;
                out->size[out->count++] = size;
            }
            H5Sclose(space);
            /* more chunks than the table holds: the rest count as metadata, which only shifts the mix */
        }
        H5Oclose(obj);
    }
}

static int in_chunks(const ChunkRanges *r, size_t pos) {
    for (int i = 0; i < r->count; i++)
        if (pos >= r->start[i] && pos < r->start[i] + r->size[i]) return 1;
    return 0;
}

static void assert_same_settings(const Settings *a, const Settings *b) {
    ck_assert_int_eq(a->count, b->count);
    for (int i = 0; i < a->count; i++) {
        ck_assert_str_eq(a->items[i].key, b->items[i].key);
        ck_assert_str_eq(a->items[i].value, b->items[i].value);
    }
}

/* A random byte of a checkpoint changed, 100 times, half of them in raw data and half elsewhere
 * (metadata, padding): every read either fails with one line naming the file, or gives back exactly
 * what was written; and checkpoint_verify never passes a file that reads differently. */
START_TEST(flipped_bytes_never_load_silently) {
    Fixture fx;
    start_with_good_checkpoint(&fx);
    char flipped[512];
    in_tmp(flipped, sizeof flipped, "flipped.h5");
    Settings want;
    ck_assert_int_eq(checkpoint_read_settings(fx.path, &want), 0);
    long size;
    unsigned char *original = slurp(fx.path, &size), *copy = malloc((size_t)size);
    ChunkRanges chunks = {.count = 0};
    hid_t f = H5Fopen(fx.path, H5F_ACC_RDONLY, H5P_DEFAULT);
    collect_chunks(f, &chunks);
    H5Fclose(f);
    ck_assert_int_gt(chunks.count, 40);

    const char *seed_text = getenv("RESNET_FLIP_SEED");
    const unsigned seed = seed_text ? (unsigned)strtoul(seed_text, NULL, 10) : (unsigned)time(NULL);
    srand(seed);
    fprintf(stderr, "flipped bytes: seed %u (RESNET_FLIP_SEED=%u repeats this run)\n", seed, seed);
    int detected = 0, other_errors = 0, identical = 0;
    for (int i = 0; i < 100; i++) {
        size_t pos;
        do pos = ((size_t)rand() << 16 ^ (size_t)rand()) % (size_t)size;
        while (in_chunks(&chunks, pos) != (i % 2));
        memcpy(copy, original, (size_t)size);
        copy[pos] ^= (unsigned char)(1 + rand() % 255);
        FILE *out = fopen(flipped, "wb");
        ck_assert_int_eq(fwrite(copy, 1, (size_t)size, out), (size_t)size);
        fclose(out);

        if (getenv("RESNET_FLIP_DEBUG")) fprintf(stderr, "flip %d: byte %zu\n", i, pos);
        const int verified = checkpoint_verify(flipped, NULL) == 0;
        char verify_msg[1024];
        snprintf(verify_msg, sizeof verify_msg, "%s", rn_last_error());
        /* what the program loads: /config first (resume, eval), then the state */
        State t;
        Settings back;
        int rc = checkpoint_read_settings(flipped, &back);
        if (rc == 0) rc = read_into_fresh(flipped, ARCH_PAPER, OPT_ADAM, 10, &t);
        else memset(&t, 0, sizeof t);
        if (rc == 0) {
            assert_same_state(&fx.s, &t);
            assert_same_settings(&want, &back);
            identical++;
        } else {
            /* "FILE: ..." on one line */
            assert_error_names(flipped, ":");
            if (strstr(rn_last_error(), "checksum mismatch")) detected++;
            else other_errors++;
            ck_assert_msg(!verified, "seed %u, byte %zu: verified, but the load failed: %s", seed, pos,
                          rn_last_error());
        }
        if (!verified) {
            ck_assert_msg(strncmp(verify_msg, flipped, strlen(flipped)) == 0 && !strchr(verify_msg, '\n'),
                          "verify: %s", verify_msg);
        }
        free_state(&t);
    }
    printf("flipped bytes (seed %u): %d caught by a checksum, %d other errors, %d loads identical\n", seed,
           detected, other_errors, identical);
    ck_assert_int_ge(detected, 50);   /* every data flip at least */
    free(original);
    free(copy);
    finish(&fx);
}
END_TEST

START_TEST(verify_names_the_damaged_dataset) {
    Fixture fx;
    start_with_good_checkpoint(&fx);
    long step = 0;
    ck_assert_msg(checkpoint_verify(fx.path, &step) == 0, "%s", rn_last_error());
    ck_assert_int_eq(step, fx.s.ts.step);
    /* one value of fc.weight changed in place, behind HDF5's back */
    hid_t f = H5Fopen(fx.path, H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t d = H5Dopen2(f, "/model/fc.weight", H5P_DEFAULT);
    haddr_t addr;
    hid_t space = H5Dget_space(d);
    ck_assert_int_ge(H5Dget_chunk_info(d, space, 0, NULL, NULL, &addr, NULL), 0);
    H5Sclose(space);
    H5Dclose(d);
    H5Fclose(f);
    long size;
    unsigned char *bytes = slurp(fx.path, &size);
    bytes[addr + 100] ^= 0x40;
    FILE *out = fopen(fx.path, "wb");
    fwrite(bytes, 1, (size_t)size, out);
    fclose(out);
    free(bytes);
    ck_assert_int_eq(checkpoint_verify(fx.path, &step), -1);
    assert_error_names(fx.path, "/model/fc.weight: checksum mismatch (the file is corrupt)");
    assert_read_refused(fx.path, ARCH_PAPER, OPT_ADAM, 10, "/model/fc.weight: checksum mismatch (the file is corrupt)");
    finish(&fx);
}
END_TEST

/* Format-1 files found by fuzzing whose damaged global heap (object sizes) sends libhdf5 1.10.8 into an
 * endless loop or a wild copy: refused with one line before the library walks the heap. */
START_TEST(damaged_global_heap_refused) {
    const char *data = getenv("RESNET_TEST_DATA");
    ck_assert_ptr_nonnull(data);
    static const char *const inputs[] = {"h5hg-endless-loop-v1.h5", "h5hg-wild-memcpy-v1.h5", "h5hg-read-segv-v1.h5",
                                         "h5hg-damaged-heap-v1.h5"};
    for (size_t i = 0; i < sizeof inputs / sizeof inputs[0]; i++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/../fuzz/hdf5-crashes/%s", data, inputs[i]);
        Settings back;
        ck_assert_int_eq(checkpoint_read_settings(path, &back), -1);
        assert_error_names(path, "damaged global heap (variable-length strings) at byte 2048");
        ck_assert_int_eq(checkpoint_verify(path, NULL), -1);
        assert_error_names(path, "damaged global heap");
    }
}
END_TEST

/* ---- format_version 1: what earlier versions wrote ---- */

/* A string attribute as variable-length UTF-8, as format_version 1 stored every string. */
static void copy_string_attr(hid_t a, hid_t dst, const char *name) {
    hid_t ft = H5Aget_type(a), sp = H5Aget_space(a);
    const hssize_t n = H5Sget_simple_extent_npoints(sp);
    const size_t width = H5Tget_size(ft) + 1;
    hid_t fixed = H5Tcopy(H5T_C_S1), vlen = H5Tcopy(H5T_C_S1);
    H5Tset_size(fixed, width);
    H5Tset_strpad(fixed, H5T_STR_NULLTERM);
    H5Tset_cset(fixed, H5Tget_cset(ft));   /* HDF5 converts no character sets */
    H5Tset_size(vlen, H5T_VARIABLE);
    H5Tset_cset(vlen, H5T_CSET_UTF8);
    char *text = calloc((size_t)n, width);
    const char **items = calloc((size_t)n, sizeof *items);
    ck_assert_int_ge(H5Aread(a, fixed, text), 0);
    for (hssize_t i = 0; i < n; i++) items[i] = text + (size_t)i * width;
    hid_t b = H5Acreate2(dst, name, vlen, sp, H5P_DEFAULT, H5P_DEFAULT);
    ck_assert_int_ge(H5Awrite(b, vlen, items), 0);
    H5Aclose(b);
    free(items);
    free(text);
    H5Tclose(fixed);
    H5Tclose(vlen);
    H5Tclose(ft);
    H5Sclose(sp);
}

static herr_t copy_attr(hid_t src, const char *name, const H5A_info_t *info, void *data) {
    (void)info;
    hid_t dst = *(hid_t *)data, a = H5Aopen(src, name, H5P_DEFAULT), ft = H5Aget_type(a);
    if (!strcmp(name, "format_version")) {
        hid_t sp = H5Screate(H5S_SCALAR), b = H5Acreate2(dst, name, H5T_STD_I64LE, sp, H5P_DEFAULT, H5P_DEFAULT);
        const int64_t one = 1;
        H5Awrite(b, H5T_NATIVE_INT64, &one);
        H5Aclose(b);
        H5Sclose(sp);
    } else if (H5Tget_class(ft) == H5T_STRING) {
        copy_string_attr(a, dst, name);
    } else {
        hid_t sp = H5Aget_space(a), b = H5Acreate2(dst, name, ft, sp, H5P_DEFAULT, H5P_DEFAULT);
        char buf[64];
        ck_assert_int_ge(H5Aread(a, ft, buf), 0);
        ck_assert_int_ge(H5Awrite(b, ft, buf), 0);
        H5Aclose(b);
        H5Sclose(sp);
    }
    H5Tclose(ft);
    H5Aclose(a);
    return 0;
}

static void copy_attrs(hid_t src, hid_t dst) {
    hid_t cpl = H5Iget_type(src) == H5I_GROUP ? H5Gget_create_plist(src) : H5Dget_create_plist(src);
    unsigned flags = 0;
    H5Pget_attr_creation_order(cpl, &flags);
    H5Pclose(cpl);
    hsize_t idx = 0;
    H5Aiterate2(src, flags & H5P_CRT_ORDER_INDEXED ? H5_INDEX_CRT_ORDER : H5_INDEX_NAME, H5_ITER_INC, &idx, copy_attr,
                &dst);
}

/* Datasets contiguous and unchecked (history chunked, as it was), no filters. */
static void copy_dataset(hid_t src, hid_t dst, const char *name) {
    hid_t ft = H5Dget_type(src), sp = H5Dget_space(src), dcpl = H5Pcreate(H5P_DATASET_CREATE);
    hsize_t dims[H5S_MAX_RANK], maxdims[H5S_MAX_RANK];
    const int ndim = H5Sget_simple_extent_dims(sp, dims, maxdims);
    if (ndim == 1 && maxdims[0] == H5S_UNLIMITED) {
        const hsize_t chunk = 256;
        H5Pset_chunk(dcpl, 1, &chunk);
    }
    const size_t bytes = (size_t)H5Sget_simple_extent_npoints(sp) * H5Tget_size(ft);
    void *buf = malloc(bytes ? bytes : 1);
    if (bytes) ck_assert_int_ge(H5Dread(src, ft, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf), 0);
    hid_t d = H5Dcreate2(dst, name, ft, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    if (bytes) ck_assert_int_ge(H5Dwrite(d, ft, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf), 0);
    copy_attrs(src, d);
    H5Dclose(d);
    free(buf);
    H5Pclose(dcpl);
    H5Sclose(sp);
    H5Tclose(ft);
}

static void copy_group(hid_t src, hid_t dst) {
    copy_attrs(src, dst);
    H5G_info_t info;
    H5Gget_info(src, &info);
    for (hsize_t i = 0; i < info.nlinks; i++) {
        char name[256];
        H5Lget_name_by_idx(src, ".", H5_INDEX_NAME, H5_ITER_INC, i, name, sizeof name, H5P_DEFAULT);
        hid_t obj = H5Oopen(src, name, H5P_DEFAULT);
        if (H5Iget_type(obj) == H5I_GROUP) {
            hid_t gcpl = H5Pcreate(H5P_GROUP_CREATE);
            if (!strcmp(name, "config")) H5Pset_attr_creation_order(gcpl, H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED);
            hid_t g = H5Gcreate2(dst, name, H5P_DEFAULT, gcpl, H5P_DEFAULT);
            copy_group(obj, g);
            H5Gclose(g);
            H5Pclose(gcpl);
        } else {
            copy_dataset(obj, dst, name);
        }
        H5Oclose(obj);
    }
}

/* Checkpoints of format_version 1 (no checksums) still load, bit for bit. */
START_TEST(format_version_1_still_loads) {
    Fixture fx;
    start_with_good_checkpoint(&fx);
    State t;
    char old[512];
    in_tmp(old, sizeof old, "old.h5");
    hid_t src = H5Fopen(fx.path, H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t dst = H5Fcreate(old, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    hid_t g = H5Gopen2(src, "/", H5P_DEFAULT), root = H5Gopen2(dst, "/", H5P_DEFAULT);
    copy_group(g, root);
    H5Gclose(g);
    H5Gclose(root);
    H5Fclose(src);
    H5Fclose(dst);
    /* it really is the old layout: no filter on the tensors */
    hid_t f = H5Fopen(old, H5F_ACC_RDONLY, H5P_DEFAULT), d = H5Dopen2(f, "/model/fc.weight", H5P_DEFAULT);
    hid_t dcpl = H5Dget_create_plist(d);
    ck_assert_int_eq(H5Pget_nfilters(dcpl), 0);
    H5Pclose(dcpl);
    H5Dclose(d);
    H5Fclose(f);

    ck_assert_msg(read_into_fresh(old, ARCH_PAPER, OPT_ADAM, 10, &t) == 0, "%s", rn_last_error());
    assert_same_state(&fx.s, &t);
    Settings a, b;
    ck_assert_int_eq(checkpoint_read_settings(fx.path, &a), 0);
    ck_assert_msg(checkpoint_read_settings(old, &b) == 0, "%s", rn_last_error());
    assert_same_settings(&a, &b);
    ck_assert_msg(checkpoint_verify(old, NULL) == 0, "%s", rn_last_error());
    free_state(&t);
    finish(&fx);
}
END_TEST

/* ---- metrics ---------------------------------------------------------------------------------------- */

#include "resnet/metrics.h"

START_TEST(metrics_lines) {
    make_tmpdir();
    char path[512];
    in_tmp(path, sizeof path, "metrics.jsonl");
    MetricsLog log = {0};
    ck_assert_int_eq(metrics_open(&log, path, 0), 0);
    metrics_write(&log, 50, 1, 50, 2.0741234, 0.288, 0.001, 512.3, 12.5);
    /* flushed: readable before close */
    long n;
    unsigned char *text = slurp(path, &n);
    ck_assert_int_gt(n, 0);
    free(text);
    metrics_close(&log);
    ck_assert_int_eq(metrics_open(&log, path, 1), 0);   /* a resume appends */
    metrics_write(&log, 100, 1, 100, NAN, INFINITY, 0.001, 500, 25);
    metrics_write_ema(&log, 150, 2, 50, 1.5, 0.5, 0.625, 0.001, 500, 37.5);
    metrics_close(&log);
    metrics_close(&log);   /* twice is harmless */

    text = slurp(path, &n);
    text[n] = '\0';
    const char *s = (const char *)text;
    ck_assert_msg(strncmp(s, "{\"step\":50,\"epoch\":1,\"batch\":50,\"train_loss\":2.0741234", 52) == 0, "%s", s);
    ck_assert_ptr_nonnull(strstr(s, "\"val_acc\":0.28799999999999998,\"lr\":0.001,\"images_per_s\":512.3,\"time_s\":12.500}\n"));
    ck_assert_ptr_nonnull(strstr(s, "{\"step\":100,\"epoch\":1,\"batch\":100,\"train_loss\":null,\"val_acc\":null,"));
    ck_assert_ptr_nonnull(strstr(s, "\"val_acc\":0.5,\"val_acc_ema\":0.625,\"lr\":0.001,"));
    ck_assert(strstr(s, "val_acc_ema") > strrchr(s, '{'));   /* only on the --ema line, the last */
    int lines = 0;
    for (const char *p = s; *p; p++) lines += *p == '\n';
    ck_assert_int_eq(lines, 3);
    free(text);

    ck_assert_int_eq(metrics_open(&log, path, 0), 0);   /* a fresh run starts over */
    metrics_close(&log);
    ck_assert_int_eq(file_size(path), 0);

    in_tmp(path, sizeof path, "missing/metrics.jsonl");
    ck_assert_int_eq(metrics_open(&log, path, 0), -1);
    assert_error_names(path, "No such file or directory");
    remove_tmpdir();
}
END_TEST

/* ---- /ema: the parameters' moving average (--ema) ------------------------------------------------- */

/* A good state whose /config says ema = decay_setting, written with the average e (NULL: none). */
static void write_with_ema(const char *path, State *s, const char *decay_setting, const Ema *e) {
    make_state(s, ARCH_PAPER, OPT_ADAM, 10, 3);
    settings_put(&s->settings, "ema", decay_setting);
    const int rc = checkpoint_write_ema(path, &s->model, &s->opt, &s->ts, &s->hist, &s->settings, e);
    ck_assert_msg(rc == 0, "write failed: %s", rn_last_error());
}

/* An average that differs from every parameter, n_averaged updates in. */
static void make_average(Ema *e, const State *s, double decay, long n_averaged) {
    ck_assert_int_eq(ema_init(e, decay, s->model.params, s->model.num_params), 0);
    for (size_t i = 0; i < e->n; i++) e->params[i] = 0.5f * e->params[i] + 0.25f;
    e->n_averaged = n_averaged;
}

/* Reading path with a fresh average into a fresh model must fail naming the file and needle. */
static void assert_ema_read_refused(const char *path, Ema *want, const char *needle) {
    State t;
    fresh_state(&t, ARCH_PAPER, OPT_ADAM, 10);
    ck_assert_int_eq(checkpoint_read_ema(path, &t.model, &t.opt, &t.ts, &t.hist, want), -1);
    assert_error_names(path, needle);
    free_state(&t);
}

START_TEST(ema_round_trip) {
    Fixture fx;
    start_with_state(&fx, ARCH_PAPER, OPT_ADAM, 3);
    State t;
    Ema e, back;
    make_average(&e, &fx.s, 0.999, 700);
    free_state(&fx.s);
    write_with_ema(fx.path, &fx.s, "0.999", &e);

    blank_state(&t, ARCH_PAPER, 10, &fx.s.opt.cfg, 99);
    ck_assert_int_eq(ema_init(&back, 0.5, t.model.params, t.model.num_params), 0);
    ck_assert_msg(checkpoint_read_ema(fx.path, &t.model, &t.opt, &t.ts, &t.hist, &back) == 0, "%s", rn_last_error());
    assert_same_state(&fx.s, &t);
    ck_assert(memcmp(back.params, e.params, sizeof(float) * e.n) == 0);
    ck_assert(back.decay == 0.999);
    ck_assert_int_eq(back.n_averaged, 700);
    /* the raw weights alone (eval --weights raw): /ema is checked, not loaded */
    ck_assert_msg(checkpoint_read(fx.path, &t.model, NULL, NULL, NULL) == 0, "%s", rn_last_error());
    ck_assert_int_eq(checkpoint_verify(fx.path, NULL), 0);
    ema_free(&back);
    free_state(&t);

    /* the average's tensors carry the parameters' names and shapes, under /ema */
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "h5dump -H -g /ema '%s' | grep -c 'DATASET \"'", fx.path);
    FILE *p = popen(cmd, "r");
    int datasets = 0;
    ck_assert_int_eq(fscanf(p, "%d", &datasets), 1);
    pclose(p);
    ck_assert_int_eq(datasets, fx.s.model.num_param_tensors);
    ema_free(&e);
    finish(&fx);
}
END_TEST

/* /ema exactly when /config says ema > 0, with its decay, a count within the steps, finite values; an
 * average asked of a file without one is refused; a non-finite average is never written. */
START_TEST(ema_inconsistent_files_refused) {
    Fixture fx;
    start_with_state(&fx, ARCH_PAPER, OPT_ADAM, 3);
    Ema e, want;
    make_average(&e, &fx.s, 0.999, 700);
    ck_assert_int_eq(ema_init(&want, 0.999, fx.s.model.params, fx.s.model.num_params), 0);
    free_state(&fx.s);

    write_with_ema(fx.path, &fx.s, "0.999", NULL);
    assert_read_refused(fx.path, ARCH_PAPER, OPT_ADAM, 10, "missing group /ema");
    free_state(&fx.s);
    write_with_ema(fx.path, &fx.s, "0", &e);
    assert_read_refused(fx.path, ARCH_PAPER, OPT_ADAM, 10, "/ema is present, but /config says ema 0");
    free_state(&fx.s);
    write_with_ema(fx.path, &fx.s, "0.9", &e);
    assert_read_refused(fx.path, ARCH_PAPER, OPT_ADAM, 10, "attribute decay of /ema is 0.999");
    free_state(&fx.s);
    e.n_averaged = 778;   /* /train says 777 steps */
    write_with_ema(fx.path, &fx.s, "0.999", &e);
    assert_ema_read_refused(fx.path, &want, "attribute n_averaged of /ema is 778");
    free_state(&fx.s);
    write_with_ema(fx.path, &fx.s, "0", NULL);
    assert_ema_read_refused(fx.path, &want, "no moving average (/ema)");

    e.n_averaged = 7;
    e.params[e.n - 1] = NAN;
    const int rc = checkpoint_write_ema(fx.path, &fx.s.model, &fx.s.opt, &fx.s.ts, &fx.s.hist, &fx.s.settings, &e);
    ck_assert_int_eq(rc, -1);
    assert_error_names(fx.path, "not written: /ema/fc.bias holds a non-finite value");
    ema_free(&want);
    ema_free(&e);
    finish(&fx);
}
END_TEST

/* --bn-eval reference: reference statistics that look measured (variances at least 0), laid out as
 * Model.reference. */
static void fill_reference(const Model *m, float *reference, uint64_t seed) {
    fill_random(reference, m->num_reference_floats, seed);
    for (int i = 0; i < m->num_reference_tensors; i++) {
        const TensorInfo *ti = &m->reference_info[i];
        const int apps = ti->shape[0], c = ti->shape[2];
        for (int a = 0; a < apps; a++)
            for (int ch = 0; ch < c; ch++) {
                float *var = &reference[ti->offset + (size_t)(2 * a + 1) * c + ch];
                *var = fabsf(*var);
            }
    }
}

/* The average's reference statistics (/ema/reference) beside the raw weights' (/reference): each comes
 * back bitwise into its own place; a file without /ema/reference reads with them not valid. */
START_TEST(ema_reference_round_trip) {
    Fixture fx;
    start_with_state(&fx, ARCH_SEED, OPT_ADAM, 3);
    Ema e, back;
    make_average(&e, &fx.s, 0.999, 700);
    ck_assert_int_eq(ema_reserve_reference(&e, fx.s.model.num_reference_floats), 0);
    fill_reference(&fx.s.model, e.reference, 11);
    e.reference_valid = 1;
    free_state(&fx.s);
    make_state(&fx.s, ARCH_SEED, OPT_ADAM, 10, 3);
    fill_reference(&fx.s.model, fx.s.model.reference, 12);
    fx.s.model.reference_valid = 1;
    settings_put(&fx.s.settings, "ema", "0.999");
    ck_assert_msg(checkpoint_write_ema(fx.path, &fx.s.model, &fx.s.opt, &fx.s.ts, &fx.s.hist, &fx.s.settings, &e) == 0,
                  "%s", rn_last_error());

    State t;
    blank_state(&t, ARCH_SEED, 10, &fx.s.opt.cfg, 99);
    ck_assert_int_eq(ema_init(&back, 0.5, t.model.params, t.model.num_params), 0);   /* reserved by the read */
    ck_assert_msg(checkpoint_read_ema(fx.path, &t.model, &t.opt, &t.ts, &t.hist, &back) == 0, "%s", rn_last_error());
    const size_t bytes = sizeof(float) * t.model.num_reference_floats;
    ck_assert(back.reference_valid && back.reference_floats == t.model.num_reference_floats);
    ck_assert(memcmp(back.reference, e.reference, bytes) == 0);
    ck_assert(t.model.reference_valid && memcmp(t.model.reference, fx.s.model.reference, bytes) == 0);
    ck_assert_int_eq(checkpoint_verify(fx.path, NULL), 0);
    /* one dataset per BN module, named and shaped as /reference's */
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "h5ls -r '%s' | grep -c '^/ema/reference/.*\\.reference *Dataset {[0-9]*, 2, [0-9]*}'",
             fx.path);
    FILE *p = popen(cmd, "r");
    int datasets = 0;
    ck_assert_int_eq(fscanf(p, "%d", &datasets), 1);
    pclose(p);
    ck_assert_int_eq(datasets, fx.s.model.num_reference_tensors);

    /* not valid (an update since): not written, and read back as not there */
    e.reference_valid = 0;
    ck_assert_int_eq(
        checkpoint_write_ema(fx.path, &fx.s.model, &fx.s.opt, &fx.s.ts, &fx.s.hist, &fx.s.settings, &e), 0);
    ck_assert_msg(checkpoint_read_ema(fx.path, &t.model, &t.opt, &t.ts, &t.hist, &back) == 0, "%s", rn_last_error());
    ck_assert(!back.reference_valid && t.model.reference_valid);
    ema_free(&back);
    free_state(&t);
    ema_free(&e);
    finish(&fx);
}
END_TEST

/* A damaged /ema/reference is refused like a damaged /reference, naming the file and the dataset, and
 * leaves the caller's average as it was. which: 0 negative variance, 1 a dataset of no BN module, 2 a
 * wrong shape. */
START_TEST(ema_reference_refused) {
    Fixture fx;
    start_with_state(&fx, ARCH_SEED, OPT_ADAM, 3);
    Ema e;
    make_average(&e, &fx.s, 0.999, 700);
    ck_assert_int_eq(ema_reserve_reference(&e, fx.s.model.num_reference_floats), 0);
    fill_reference(&fx.s.model, e.reference, 11);
    e.reference_valid = 1;
    const TensorInfo *last = &fx.s.model.reference_info[fx.s.model.num_reference_tensors - 1];
    char dataset[160];
    snprintf(dataset, sizeof dataset, "/ema/reference/%s", last->name);
    if (_i == 0) e.reference[last->offset + (size_t)last->shape[2] + 3] = -0.5f;   /* application 0, channel 3 */
    free_state(&fx.s);
    make_state(&fx.s, ARCH_SEED, OPT_ADAM, 10, 3);
    settings_put(&fx.s.settings, "ema", "0.999");
    ck_assert_int_eq(
        checkpoint_write_ema(fx.path, &fx.s.model, &fx.s.opt, &fx.s.ts, &fx.s.hist, &fx.s.settings, &e), 0);
    if (_i > 0) {
        hid_t f = H5Fopen(fx.path, H5F_ACC_RDWR, H5P_DEFAULT);
        if (_i == 1) {
            /* the model's own datasets all there, and one more under a name no BN module has */
            ck_assert_int_ge(H5Lcreate_hard(f, dataset, f, "/ema/reference/stowaway.reference", H5P_DEFAULT,
                                            H5P_DEFAULT), 0);
        } else {
            ck_assert_int_ge(H5Ldelete(f, dataset, H5P_DEFAULT), 0);
            const hsize_t dims[3] = {1, 2, 3};
            hid_t sp = H5Screate_simple(3, dims, NULL);
            hid_t d = H5Dcreate2(f, dataset, H5T_IEEE_F32LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
            const float zeros[6] = {0};
            ck_assert_int_ge(H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, zeros), 0);
            H5Dclose(d);
            H5Sclose(sp);
        }
        H5Fclose(f);
    }
    Ema want;
    ck_assert_int_eq(ema_init(&want, 0.999, fx.s.model.params, fx.s.model.num_params), 0);
    ck_assert_int_eq(ema_reserve_reference(&want, fx.s.model.num_reference_floats), 0);
    State t;
    fresh_state(&t, ARCH_SEED, OPT_ADAM, 10);
    ck_assert_int_eq(checkpoint_read_ema(fx.path, &t.model, &t.opt, &t.ts, &t.hist, &want), -1);
    const char *needle[] = {"holds a negative variance (application 0, channel 3)", "not a BN statistic of this model",
                            "shape"};
    char expect[300];
    snprintf(expect, sizeof expect, "%s", _i == 1 ? "/ema/reference/stowaway.reference" : dataset);
    assert_error_names(fx.path, expect);
    assert_error_names(fx.path, needle[_i]);
    ck_assert(!want.reference_valid && want.n_averaged == 0);
    /* the raw weights' read (eval --weights raw) checks /ema whole too */
    ck_assert_int_eq(checkpoint_read(fx.path, &t.model, NULL, NULL, NULL), -1);
    assert_error_names(fx.path, needle[_i]);
    free_state(&t);
    ema_free(&want);
    ema_free(&e);
    finish(&fx);
}
END_TEST

Suite *test_suite(void) {
    /* HDF5 calls made by the tests themselves stay quiet like the program's */
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    Suite *s = suite_create("checkpoint");
    TCase *t = tcase_create("round trip");
    tcase_add_test(t, round_trip_paper_sgd);
    tcase_add_test(t, round_trip_seed_adam);
    tcase_add_test(t, round_trip_adamw_empty_history);
    tcase_add_test(t, round_trip_lamb);
    tcase_add_test(t, settings_round_trip);
    tcase_add_test(t, history_grows);
    tcase_add_test(t, deterministic_bytes);
    suite_add_tcase(s, t);
    t = tcase_create("atomic");
    tcase_add_test(t, write_into_missing_or_bad_folder);
    tcase_add_test(t, unwritable_folder_keeps_old_file);
    tcase_add_test(t, failed_write_keeps_old_file);
    tcase_add_test(t, relative_path_in_current_folder);
    suite_add_tcase(s, t);
    t = tcase_create("bad files");
    tcase_add_test(t, truncated_file);
    tcase_add_test(t, not_hdf5_and_missing);
    tcase_add_test(t, missing_dataset);
    tcase_add_test(t, wrong_shape);
    tcase_add_test(t, other_architecture);
    tcase_add_test(t, extra_dataset);
    tcase_add_test(t, wrong_format_version);
    tcase_add_test(t, optimizer_mismatch);
    tcase_add_loop_test(t, train_state_out_of_range, 0, BAD_TRAIN_STATES);
    tcase_add_loop_test(t, nonfinite_tensor_refused, 0, 3);
    tcase_add_test(t, nonfinite_state_not_written);
    tcase_add_test(t, ema_round_trip);
    tcase_add_test(t, ema_inconsistent_files_refused);
    tcase_add_test(t, ema_reference_round_trip);
    tcase_add_loop_test(t, ema_reference_refused, 0, 3);
    suite_add_tcase(s, t);
    t = tcase_create("layout");
    tcase_add_test(t, h5dump_layout);
    tcase_add_test(t, keep_checkpoints);
    suite_add_tcase(s, t);
    t = tcase_create("checksums");
    tcase_add_test(t, flipped_bytes_never_load_silently);
    tcase_add_test(t, verify_names_the_damaged_dataset);
    tcase_add_test(t, format_version_1_still_loads);
    tcase_add_test(t, damaged_global_heap_refused);
    suite_add_tcase(s, t);
    t = tcase_create("metrics");
    tcase_add_test(t, metrics_lines);
    suite_add_tcase(s, t);
    return s;
}
