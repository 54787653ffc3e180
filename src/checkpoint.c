/* HDF5 checkpoints: the only file of the program that calls HDF5 (layout in the design's INTERFACE.md).
 *
 * Writing: the file is built in memory, written to a hidden temporary file beside the target,
 * fsync'd and renamed over the target, and the folder is fsync'd so that the rename itself is
 * durable. A crash or an error at any moment leaves the previous checkpoint whole; an error removes the
 * temporary file.
 *
 * Reading: every tensor is read into scratch memory first and copied into the model, optimizer, train
 * state and history only when the whole file checked out, so a bad file never leaves a half-loaded
 * model behind.
 *
 * Errors are sticky in the small Writer / Reader contexts: the first failure records its one-line
 * rn_error and every later call becomes a no-op, which keeps the long write and read sequences free of
 * per-call error plumbing. HDF5's own error stack printing is switched off; its innermost message (or
 * the system error it wraps) becomes the cause in our message. */
#include "resnet/checkpoint.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <hdf5.h>

#include "resnet/util.h"

/* Bounds of the counters a file may hold: the command line's own limits (--max-steps, --epochs). */
#define CHECKPOINT_STEP_MAX 1000000000000L
#define CHECKPOINT_EPOCH_MAX 1000000L

/* ---- history ---------------------------------------------------------------------------------------- */

int history_append(History *h, long step, long epoch, double train_loss, double val_acc, double time_s) {
    if (h->count == h->capacity) {
        if (h->capacity > INT_MAX / 2) return rn_error("history: too many entries");
        const int cap = h->capacity ? 2 * h->capacity : 64;
        /* each array is swapped in as soon as it has grown, so a failure part way leaves every array at
         * least `capacity` long and the history consistent */
        long *s = realloc(h->step, sizeof(long) * cap);
        if (!s) return rn_error("history: out of memory");
        h->step = s;
        long *e = realloc(h->epoch, sizeof(long) * cap);
        if (!e) return rn_error("history: out of memory");
        h->epoch = e;
        double **d[3] = {&h->train_loss, &h->val_acc, &h->time_s};
        for (int k = 0; k < 3; k++) {
            double *p = realloc(*d[k], sizeof(double) * cap);
            if (!p) return rn_error("history: out of memory");
            *d[k] = p;
        }
        h->capacity = cap;
    }
    h->step[h->count] = step;
    h->epoch[h->count] = epoch;
    h->train_loss[h->count] = train_loss;
    h->val_acc[h->count] = val_acc;
    h->time_s[h->count] = time_s;
    h->count++;
    return 0;
}

void history_free(History *h) {
    free(h->step);
    free(h->epoch);
    free(h->train_loss);
    free(h->val_acc);
    free(h->time_s);
    memset(h, 0, sizeof *h);
}

/* ---- HDF5 plumbing ---------------------------------------------------------------------------------- */

static void h5_quiet(void) {
    /* the library's default handler prints a multi-line stack per error; ours are one line */
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}

typedef struct { char innermost[200]; char system[120]; } H5Cause;

static herr_t cause_walk(unsigned n, const H5E_error2_t *e, void *data) {
    H5Cause *c = data;
    if (!e->desc) return 0;
    if (n == 0) snprintf(c->innermost, sizeof c->innermost, "%s", e->desc);
    /* the file drivers report failed system calls as "..., error message = 'No space left on device', ..." */
    const char *p = strstr(e->desc, "error message = '");
    if (p && !c->system[0]) {
        p += strlen("error message = '");
        const char *q = strchr(p, '\'');
        snprintf(c->system, sizeof c->system, "%.*s", q ? (int)(q - p) : (int)strlen(p), p);
    }
    return 0;
}

/* The most telling line of the current HDF5 error stack, which is then cleared. */
static const char *h5_cause(char *buf, size_t size) {
    H5Cause c = {{0}, {0}};
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, cause_walk, &c);
    H5Eclear2(H5E_DEFAULT);
    snprintf(buf, size, "%s", c.system[0] ? c.system : c.innermost[0] ? c.innermost : "HDF5 error");
    for (char *p = buf; *p; p++)
        if (*p == '\n' || *p == '\r') *p = ' ';
    return buf;
}

static hid_t string_type(void) {
    /* variable-length UTF-8: empty strings are allowed and h5py returns them as str */
    hid_t t = H5Tcopy(H5T_C_S1);
    if (t >= 0 && (H5Tset_size(t, H5T_VARIABLE) < 0 || H5Tset_cset(t, H5T_CSET_UTF8) < 0)) {
        H5Tclose(t);
        return -1;
    }
    return t;
}

static void format_shape(char *buf, size_t size, int ndim, const hsize_t *dims) {
    size_t used = (size_t)snprintf(buf, size, "[");
    for (int i = 0; i < ndim && used < size; i++)
        used += (size_t)snprintf(buf + used, size - used, "%s%llu", i ? "," : "", (unsigned long long)dims[i]);
    if (used < size) snprintf(buf + used, size - used, "]");
}

/* A float setting as the double of its shortest decimal (0.1f -> 0.1, not 0.10000000149011612), which
 * is what a reader of the file (h5dump, PyTorch's param_groups) expects to see. */
static double float_as_decimal(float x) {
    char buf[32];
    return strtod(rn_format_float(buf, sizeof buf, x), NULL);
}

/* ---- writing ---------------------------------------------------------------------------------------- */

typedef struct {
    const char *path;   /* the target, for messages */
    int failed;
} Writer;

static void wfail(Writer *w, const char *what) {
    if (w->failed) return;
    char cause[256];
    rn_error("%s: cannot write %s: %s", w->path, what, h5_cause(cause, sizeof cause));
    w->failed = 1;
}

static hid_t wgroup(Writer *w, hid_t parent, const char *name, const char *display, int ordered_attrs) {
    if (w->failed) return -1;
    hid_t gcpl = H5Pcreate(H5P_GROUP_CREATE);
    hid_t g = -1;
    if (gcpl >= 0 && H5Pset_obj_track_times(gcpl, 0) >= 0 &&
        (!ordered_attrs || H5Pset_attr_creation_order(gcpl, H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED) >= 0))
        g = H5Gcreate2(parent, name, H5P_DEFAULT, gcpl, H5P_DEFAULT);
    if (gcpl >= 0) H5Pclose(gcpl);
    if (g < 0) wfail(w, display);
    return g;
}

static void close_group(hid_t g) {
    if (g >= 0) H5Gclose(g);
}

static void wattr(Writer *w, hid_t loc, const char *where, const char *name, hid_t ftype, hid_t mtype,
                  hid_t space, const void *data) {
    if (w->failed) return;
    herr_t st = -1;
    hid_t a = H5Acreate2(loc, name, ftype, space, H5P_DEFAULT, H5P_DEFAULT);
    if (a >= 0) {
        st = H5Awrite(a, mtype, data);
        if (H5Aclose(a) < 0) st = -1;
    }
    if (st < 0) {
        char what[160];
        snprintf(what, sizeof what, "attribute %s of %s", name, where);
        wfail(w, what);
    }
}

static void wattr_scalar(Writer *w, hid_t loc, const char *where, const char *name, hid_t ftype, hid_t mtype,
                         const void *data) {
    if (w->failed) return;
    hid_t space = H5Screate(H5S_SCALAR);
    wattr(w, loc, where, name, ftype, mtype, space, data);
    H5Sclose(space);
}

static void wattr_i64(Writer *w, hid_t loc, const char *where, const char *name, int64_t v) {
    wattr_scalar(w, loc, where, name, H5T_STD_I64LE, H5T_NATIVE_INT64, &v);
}

static void wattr_u64(Writer *w, hid_t loc, const char *where, const char *name, uint64_t v) {
    wattr_scalar(w, loc, where, name, H5T_STD_U64LE, H5T_NATIVE_UINT64, &v);
}

static void wattr_f64(Writer *w, hid_t loc, const char *where, const char *name, double v) {
    wattr_scalar(w, loc, where, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &v);
}

static void wattr_str(Writer *w, hid_t loc, const char *where, const char *name, const char *s) {
    if (w->failed) return;
    hid_t t = string_type();
    wattr_scalar(w, loc, where, name, t, t, &s);
    H5Tclose(t);
}

/* "a,b,c" as a 1-D array of strings (a class name cannot contain a comma). */
static void wattr_str_list(Writer *w, hid_t loc, const char *where, const char *name, const char *csv) {
    if (w->failed) return;
    char *copy = strdup(csv);
    size_t n = 1;
    for (const char *p = csv; *p; p++) n += *p == ',';
    const char **items = malloc(sizeof(char *) * n);
    if (!copy || !items) {
        free(copy);
        free(items);
        rn_error("%s: out of memory", w->path);
        w->failed = 1;
        return;
    }
    size_t k = 0;
    for (char *p = copy;; p++) {
        items[k++] = p;
        p = strchr(p, ',');
        if (!p) break;
        *p = '\0';
    }
    hsize_t dims[1] = {n};
    hid_t space = H5Screate_simple(1, dims, NULL), t = string_type();
    wattr(w, loc, where, name, t, t, space, items);
    H5Tclose(t);
    H5Sclose(space);
    free(items);
    free(copy);
}

/* Decimal integer or decimal floating-point syntax only: strtod alone would also take "inf", "nan" and
 * hex floats, which are better kept as the strings the user typed. */
static int decimal_syntax(const char *s, int *is_integer) {
    const char *p = s;
    if (*p == '+' || *p == '-') p++;
    size_t digits = strspn(p, "0123456789");
    p += digits;
    *is_integer = digits > 0 && *p == '\0';
    if (*is_integer) return 1;
    if (*p == '.') {
        size_t frac = strspn(p + 1, "0123456789");
        p += 1 + frac;
        digits += frac;
    }
    if (digits == 0) return 0;
    if (*p == 'e' || *p == 'E') {
        p++;
        if (*p == '+' || *p == '-') p++;
        size_t exp = strspn(p, "0123456789");
        if (exp == 0) return 0;
        p += exp;
    }
    return *p == '\0';
}

/* One /config attribute, typed so that readers of the file get numbers as numbers. */
static void wsetting(Writer *w, hid_t g, const Setting *s) {
    if (w->failed) return;
    if (strcmp(s->key, "class_names") == 0 && s->value[0]) {
        wattr_str_list(w, g, "/config", s->key, s->value);
        return;
    }
    int is_integer;
    if (decimal_syntax(s->value, &is_integer)) {
        char *end;
        if (is_integer) {
            errno = 0;
            long long v = strtoll(s->value, &end, 10);
            if (!errno && !*end) {
                wattr_i64(w, g, "/config", s->key, (int64_t)v);
                return;
            }
            /* seeds are uint64: above INT64_MAX they still fit the unsigned type */
            errno = 0;
            unsigned long long u = strtoull(s->value, &end, 10);
            if (s->value[0] != '-' && !errno && !*end) {
                wattr_u64(w, g, "/config", s->key, (uint64_t)u);
                return;
            }
            /* wider than 64 bits: keep every digit as a string */
        } else {
            errno = 0;
            double d = strtod(s->value, &end);
            if (!errno && !*end && isfinite(d)) {
                wattr_f64(w, g, "/config", s->key, d);
                return;
            }
        }
    }
    wattr_str(w, g, "/config", s->key, s->value);
}

static hid_t wdcpl(Writer *w, int chunked, hsize_t chunk) {
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    if (dcpl >= 0 && H5Pset_obj_track_times(dcpl, 0) < 0) {
        H5Pclose(dcpl);
        return -1;
    }
    if (dcpl >= 0 && chunked && H5Pset_chunk(dcpl, 1, &chunk) < 0) {
        H5Pclose(dcpl);
        return -1;
    }
    return dcpl;
}

static void wdataset(Writer *w, hid_t loc, const char *where, const char *name, hid_t ftype, hid_t mtype,
                     int ndim, const hsize_t *dims, const void *data, int extendible) {
    if (w->failed) return;
    herr_t st = -1;
    hsize_t maxdims[1] = {H5S_UNLIMITED};
    /* history: chunked with an unlimited extent, so an empty one is a valid dataset and h5py users can
     * grow it */
    hid_t space = ndim == 0 ? H5Screate(H5S_SCALAR) : H5Screate_simple(ndim, dims, extendible ? maxdims : NULL);
    hid_t dcpl = wdcpl(w, extendible, 256);
    if (space >= 0 && dcpl >= 0) {
        hid_t d = H5Dcreate2(loc, name, ftype, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
        if (d >= 0) {
            hssize_t points = H5Sget_simple_extent_npoints(space);
            st = points > 0 ? H5Dwrite(d, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) : 0;
            if (H5Dclose(d) < 0) st = -1;
        }
    }
    if (dcpl >= 0) H5Pclose(dcpl);
    if (space >= 0) H5Sclose(space);
    if (st < 0) {
        char what[160];
        snprintf(what, sizeof what, "%s/%s", where, name);
        wfail(w, what);
    }
}

static void wtensor(Writer *w, hid_t loc, const char *where, const TensorInfo *ti, const float *base) {
    if (w->failed) return;
    hsize_t dims[4];
    size_t numel = 1;
    for (int i = 0; i < ti->ndim; i++) {
        dims[i] = (hsize_t)ti->shape[i];
        numel *= (size_t)ti->shape[i];
    }
    if (ti->ndim < 1 || ti->ndim > 4 || numel != ti->numel) {
        rn_error("%s: tensor %s: shape does not match its %zu values", w->path, ti->name, ti->numel);
        w->failed = 1;
        return;
    }
    wdataset(w, loc, where, ti->name, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, ti->ndim, dims, base + ti->offset, 0);
}

static const char RUNNING_MEAN[] = ".running_mean";

/* The BN prefix of a running_mean buffer name ("module1.0.bn1"), or 0 for other buffers. */
static int bn_prefix(const char *buffer_name, char *out, size_t size) {
    size_t n = strlen(buffer_name), k = sizeof RUNNING_MEAN - 1;
    if (n <= k || strcmp(buffer_name + n - k, RUNNING_MEAN) != 0 || n - k >= size) return 0;
    memcpy(out, buffer_name, n - k);
    out[n - k] = '\0';
    return 1;
}

static void write_model(Writer *w, hid_t fid, const Model *m) {
    hid_t g = wgroup(w, fid, "model", "/model", 0);
    for (int i = 0; i < m->num_param_tensors; i++) wtensor(w, g, "/model", &m->param_info[i], m->params);
    for (int i = 0; i < m->num_buffer_tensors; i++) wtensor(w, g, "/model", &m->buffer_info[i], m->buffers);
    for (int i = 0; i < m->num_buffer_tensors; i++) {
        char name[96];
        if (!bn_prefix(m->buffer_info[i].name, name, sizeof name - 24)) continue;
        strcat(name, ".num_batches_tracked");
        const int64_t v = m->bn_batches_tracked;
        wdataset(w, g, "/model", name, H5T_STD_I64LE, H5T_NATIVE_INT64, 0, NULL, &v, 0);
    }
    close_group(g);
}

static void write_optimizer(Writer *w, hid_t fid, const Model *m, const Optimizer *opt) {
    hid_t g = wgroup(w, fid, "optimizer", "/optimizer", 0);
    const OptimConfig *c = &opt->cfg;
    wattr_str(w, g, "/optimizer", "type", optim_name(c->kind));
    wattr_i64(w, g, "/optimizer", "step", opt->step);
    wattr_f64(w, g, "/optimizer", "lr", float_as_decimal(c->lr));
    wattr_f64(w, g, "/optimizer", "weight_decay", float_as_decimal(c->weight_decay));
    if (c->kind == OPT_SGD) {
        wattr_f64(w, g, "/optimizer", "momentum", float_as_decimal(c->momentum));
        wattr_i64(w, g, "/optimizer", "nesterov", c->nesterov);
    } else {
        wattr_f64(w, g, "/optimizer", "beta1", float_as_decimal(c->beta1));
        wattr_f64(w, g, "/optimizer", "beta2", float_as_decimal(c->beta2));
        wattr_f64(w, g, "/optimizer", "eps", float_as_decimal(c->eps));
    }
    static const char *const adam_groups[] = {"exp_avg", "exp_avg_sq"};
    static const char *const sgd_groups[] = {"momentum_buffer"};
    const int adam = c->kind != OPT_SGD;
    const int groups = adam ? 2 : 1;
    for (int k = 0; k < groups; k++) {
        const char *name = adam ? adam_groups[k] : sgd_groups[k];
        char where[64];
        snprintf(where, sizeof where, "/optimizer/%s", name);
        hid_t sub = wgroup(w, g, name, where, 0);
        /* the state buffer holds one parameter-sized slice per group, in the group order above */
        for (int i = 0; i < m->num_param_tensors; i++)
            wtensor(w, sub, where, &m->param_info[i], opt->state + (size_t)k * opt->n);
        close_group(sub);
    }
    close_group(g);
}

static void write_train(Writer *w, hid_t fid, const TrainState *ts) {
    hid_t g = wgroup(w, fid, "train", "/train", 0);
    const char *where = "/train";
    wattr_i64(w, g, where, "epoch", ts->epoch);
    wattr_i64(w, g, where, "step", ts->step);
    wattr_i64(w, g, where, "batch_in_epoch", ts->batch_in_epoch);
    wattr_f64(w, g, where, "best_val_acc", ts->best_val_acc);
    wattr_i64(w, g, where, "best_step", ts->best_step);
    wattr_f64(w, g, where, "prev_val_acc", ts->prev_val_acc);   /* -inf is a valid IEEE double */
    wattr_i64(w, g, where, "non_increase_count", ts->non_increase_count);
    wattr_f64(w, g, where, "running_loss_sum", ts->running_loss_sum);
    wattr_i64(w, g, where, "running_loss_count", ts->running_loss_count);
    wattr_f64(w, g, where, "elapsed_s", ts->elapsed_s);
    char reason[sizeof ts->stop_reason];
    snprintf(reason, sizeof reason, "%s", ts->stop_reason);   /* bounded even if not terminated */
    wattr_str(w, g, where, "stop_reason", reason);
    close_group(g);
}

static void write_history(Writer *w, hid_t fid, const History *h) {
    hid_t g = wgroup(w, fid, "history", "/history", 0);
    const hsize_t n[1] = {(hsize_t)(h->count > 0 ? h->count : 0)};
    const char *where = "/history";
    wdataset(w, g, where, "step", H5T_STD_I64LE, H5T_NATIVE_LONG, 1, n, h->step, 1);
    wdataset(w, g, where, "epoch", H5T_STD_I64LE, H5T_NATIVE_LONG, 1, n, h->epoch, 1);
    wdataset(w, g, where, "train_loss", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 1, n, h->train_loss, 1);
    wdataset(w, g, where, "val_acc", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 1, n, h->val_acc, 1);
    wdataset(w, g, where, "time_s", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 1, n, h->time_s, 1);
    close_group(g);
}

static void write_root(Writer *w, hid_t fid) {
    wattr_str(w, fid, "/", "format", CHECKPOINT_FORMAT);
    wattr_i64(w, fid, "/", "format_version", CHECKPOINT_FORMAT_VERSION);
    wattr_str(w, fid, "/", "program_version", RESNET_VERSION);
    /* SOURCE_DATE_EPOCH (the reproducible-builds convention) pins the one field that would otherwise
     * make two identical runs write different bytes */
    time_t now = time(NULL);
    const char *sde = getenv("SOURCE_DATE_EPOCH");
    if (sde && *sde) {
        char *end;
        long long v = strtoll(sde, &end, 10);
        if (!*end && v >= 0) now = (time_t)v;
    }
    struct tm tm;
    char created[32] = "1970-01-01T00:00:00Z";
    if (gmtime_r(&now, &tm)) strftime(created, sizeof created, "%Y-%m-%dT%H:%M:%SZ", &tm);
    wattr_str(w, fid, "/", "created", created);
}

/* The folder and file name of path: "a/b/c.h5" -> "a/b", "c.h5"; "c.h5" -> ".", "c.h5". */
static int split_path(const char *path, char *dir, size_t dir_size, const char **base) {
    const char *slash = strrchr(path, '/');
    if (!slash) {
        snprintf(dir, dir_size, ".");
        *base = path;
    } else {
        size_t n = slash == path ? 1 : (size_t)(slash - path);
        if (n >= dir_size) return -1;
        memcpy(dir, path, n);
        dir[n] = '\0';
        *base = slash + 1;
    }
    return **base ? 0 : -1;
}

/* The whole file built in memory (HDF5's core driver, no backing store): HDF5 then never meets an I/O
 * error, which it handles badly (a file whose close failed stays open and crashes the library at
 * exit), and our own write(2) reports a full disk in plain words. A checkpoint is a few MB. */
static void *build_image(Writer *w, const char *name, const Model *m, const Optimizer *opt, const TrainState *ts,
                         const History *h, const Settings *settings, size_t *size) {
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS), fcpl = H5Pcreate(H5P_FILE_CREATE), fid = -1;
    /* STRONG: closing the file closes whatever an error path left open */
    if (fapl >= 0 && fcpl >= 0 && H5Pset_fapl_core(fapl, 1 << 20, 0) >= 0 &&
        H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG) >= 0 && H5Pset_obj_track_times(fcpl, 0) >= 0)
        /* the name only identifies the in-memory file; a unique one never clashes with a file open in
         * this process under the target's name */
        fid = H5Fcreate(name, H5F_ACC_TRUNC, fcpl, fapl);
    if (fapl >= 0) H5Pclose(fapl);
    if (fcpl >= 0) H5Pclose(fcpl);
    if (fid < 0) {
        wfail(w, "(in memory)");
        return NULL;
    }
    write_root(w, fid);
    hid_t g = wgroup(w, fid, "config", "/config", 1);
    for (int i = 0; settings && i < settings->count; i++) wsetting(w, g, &settings->items[i]);
    close_group(g);
    write_model(w, fid, m);
    if (opt) write_optimizer(w, fid, m, opt);
    if (ts) write_train(w, fid, ts);
    if (h) write_history(w, fid, h);

    void *image = NULL;
    if (!w->failed && H5Fflush(fid, H5F_SCOPE_GLOBAL) < 0) wfail(w, "(flush)");
    ssize_t n = w->failed ? -1 : H5Fget_file_image(fid, NULL, 0);
    if (!w->failed && n <= 0) wfail(w, "(file image)");
    if (!w->failed && !(image = malloc((size_t)n))) {
        rn_error("%s: out of memory for a %zd-byte checkpoint", w->path, n);
        w->failed = 1;
    }
    if (!w->failed && H5Fget_file_image(fid, image, (size_t)n) != n) wfail(w, "(file image)");
    H5Fclose(fid);
    if (w->failed) {
        free(image);
        return NULL;
    }
    *size = (size_t)n;
    return image;
}

static int write_all(int fd, const unsigned char *p, size_t n) {
    while (n > 0) {
        ssize_t k = write(fd, p, n);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) return -1;
        if (k == 0) {
            errno = EIO;
            return -1;
        }
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

/* The tensor of a table that holds flat index i (of the buffer the table carves). */
static const char *tensor_at(const TensorInfo *table, int count, size_t i) {
    for (int k = 0; k < count; k++)
        if (i >= table[k].offset && i < table[k].offset + table[k].numel) return table[k].name;
    return "?";
}

/* A model or optimizer state with a NaN or Inf is never written: it would replace a good checkpoint
 * with one that no run can continue from. 0, or -1 with rn_error naming the tensor. */
static int check_finite_state(const char *path, const Model *m, const Optimizer *opt) {
    size_t bad = rn_first_nonfinite(m->params, m->num_params);
    if (bad < m->num_params)
        return rn_error("%s: not written: /model/%s holds a non-finite value (%g)", path,
                        tensor_at(m->param_info, m->num_param_tensors, bad), (double)m->params[bad]);
    bad = rn_first_nonfinite(m->buffers, m->num_buffer_floats);
    if (bad < m->num_buffer_floats)
        return rn_error("%s: not written: /model/%s holds a non-finite value (%g)", path,
                        tensor_at(m->buffer_info, m->num_buffer_tensors, bad), (double)m->buffers[bad]);
    const size_t state = opt ? optim_state_floats(opt) : 0;
    bad = state ? rn_first_nonfinite(opt->state, state) : 0;
    if (bad < state)
        return rn_error("%s: not written: optimizer state of %s holds a non-finite value (%g)", path,
                        tensor_at(m->param_info, m->num_param_tensors, bad % opt->n), (double)opt->state[bad]);
    return 0;
}

int checkpoint_write(const char *path, const Model *m, const Optimizer *opt, const TrainState *ts,
                     const History *h, const Settings *settings) {
    h5_quiet();
    if (opt && opt->n != m->num_params)
        return rn_error("%s: optimizer holds state for %zu parameters, the model has %zu", path, opt->n,
                        m->num_params);
    if (check_finite_state(path, m, opt)) return -1;
    char dir[PATH_MAX], tmp[PATH_MAX + 64];
    const char *base;
    if (split_path(path, dir, sizeof dir, &base)) return rn_error("%s: not a file name", path);
    if ((size_t)snprintf(tmp, sizeof tmp, "%s/.%s.tmp.%ld", dir, base, (long)getpid()) >= sizeof tmp)
        return rn_error("%s: path too long", path);

    Writer w = {.path = path, .failed = 0};
    size_t size = 0;
    unsigned char *image = build_image(&w, tmp, m, opt, ts, h, settings, &size);
    if (!image) return -1;

    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0666);
    if (fd < 0) {
        const int e = errno;
        free(image);
        return rn_error("%s: cannot create: %s", path, strerror(e));
    }
    const char *step = "cannot write";
    int failed = write_all(fd, image, size);
    /* fsync before the rename: the new name must never point at data still in the page cache */
    if (!failed && (failed = fsync(fd)) != 0) step = "cannot sync";
    int e = errno;
    /* some file systems (NFS) report a failed write only at close */
    if (close(fd) != 0 && !failed) {
        failed = 1;
        step = "cannot write";
        e = errno;
    }
    free(image);
    if (!failed && rename(tmp, path) != 0) {
        failed = 1;
        step = "cannot replace";
        e = errno;
    }
    if (failed) {
        unlink(tmp);
        return rn_error("%s: %s: %s", path, step, strerror(e));
    }
    /* the rename lives in the folder: without this a crash could bring back the old entry (or none) */
    fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd < 0) return rn_error("%s: written, but cannot open folder %s to sync it: %s", path, dir, strerror(errno));
    const int rc = fsync(fd);
    e = errno;
    close(fd);
    /* some file systems cannot sync a folder at all (EINVAL): nothing more can be done there */
    if (rc != 0 && e != EINVAL && e != ENOTSUP)
        return rn_error("%s: written, but cannot sync folder %s: %s", path, dir, strerror(e));
    return 0;
}

/* ---- reading ---------------------------------------------------------------------------------------- */

typedef struct {
    const char *path;
    int failed;
} Reader;

/* printf-style failure, recorded once */
static void rfail(Reader *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void rfail(Reader *r, const char *fmt, ...) {
    if (r->failed) return;
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    H5Eclear2(H5E_DEFAULT);
    rn_error("%s: %s", r->path, msg);
    r->failed = 1;
}

static void rfail_h5(Reader *r, const char *what) {
    if (r->failed) return;
    char cause[256];
    h5_cause(cause, sizeof cause);
    rfail(r, "cannot read %s: %s", what, cause);
}

/* An existing child object of loc; a missing one is reported as `kind` ("group", "dataset"). */
static int rexists(Reader *r, hid_t loc, const char *where, const char *name, const char *kind) {
    if (r->failed) return 0;
    htri_t ex = H5Lexists(loc, name, H5P_DEFAULT);
    if (ex > 0) return 1;
    rfail(r, "missing %s %s%s%s", kind, where, strcmp(where, "/") ? "/" : "", name);
    return 0;
}

static hid_t rgroup(Reader *r, hid_t loc, const char *where, const char *name) {
    if (!rexists(r, loc, where, name, "group")) return -1;
    hid_t g = H5Gopen2(loc, name, H5P_DEFAULT);
    if (g < 0) rfail(r, "%s%s%s is not a group", where, strcmp(where, "/") ? "/" : "", name);
    return g;
}

/* An open scalar attribute of the given type class (H5T_NO_CLASS: any), or -1. */
static hid_t rattr(Reader *r, hid_t loc, const char *where, const char *name, H5T_class_t want, const char *desc) {
    if (r->failed) return -1;
    if (H5Aexists(loc, name) <= 0) {
        rfail(r, "missing attribute %s of %s", name, where);
        return -1;
    }
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    if (a < 0) {
        rfail_h5(r, name);
        return -1;
    }
    hid_t t = H5Aget_type(a), s = H5Aget_space(a);
    H5T_class_t cls = t >= 0 ? H5Tget_class(t) : H5T_NO_CLASS;
    hssize_t points = s >= 0 ? H5Sget_simple_extent_npoints(s) : -1;
    if (t >= 0) H5Tclose(t);
    if (s >= 0) H5Sclose(s);
    /* an integer is a fine float; nothing else converts */
    int ok = cls == want || (want == H5T_FLOAT && cls == H5T_INTEGER) || want == H5T_NO_CLASS;
    if (!ok || points != 1) {
        rfail(r, "attribute %s of %s is not %s", name, where, desc);
        H5Aclose(a);
        return -1;
    }
    return a;
}

static int64_t rattr_i64(Reader *r, hid_t loc, const char *where, const char *name) {
    int64_t v = 0;
    hid_t a = rattr(r, loc, where, name, H5T_INTEGER, "an integer");
    if (a < 0) return 0;
    if (H5Aread(a, H5T_NATIVE_INT64, &v) < 0) rfail_h5(r, name);
    H5Aclose(a);
    return v;
}

static int rattr_int(Reader *r, hid_t loc, const char *where, const char *name) {
    int64_t v = rattr_i64(r, loc, where, name);
    if (v < INT_MIN || v > INT_MAX) {
        rfail(r, "attribute %s of %s is out of range: %" PRId64, name, where, v);
        return 0;
    }
    return (int)v;
}

static double rattr_f64(Reader *r, hid_t loc, const char *where, const char *name) {
    double v = 0;
    hid_t a = rattr(r, loc, where, name, H5T_FLOAT, "a number");
    if (a < 0) return 0;
    if (H5Aread(a, H5T_NATIVE_DOUBLE, &v) < 0) rfail_h5(r, name);
    H5Aclose(a);
    return v;
}

/* The strings of a string attribute (scalar or 1-D), fixed or variable length, joined by sep.
 * 0, or -1 with a reason in why. */
static int string_attr_text(hid_t a, char *out, size_t size, const char *sep, char *why, size_t why_size) {
    hid_t ftype = H5Aget_type(a), space = H5Aget_space(a), mtype = -1;
    int rc = -1;
    hssize_t n = space >= 0 ? H5Sget_simple_extent_npoints(space) : -1;
    out[0] = '\0';
    if (ftype < 0 || n < 0 || H5Tget_class(ftype) != H5T_STRING) {
        snprintf(why, why_size, "not a string");
        goto done;
    }
    const htri_t vlen = H5Tis_variable_str(ftype);
    const size_t fixed = vlen > 0 ? 0 : H5Tget_size(ftype);
    mtype = H5Tcopy(H5T_C_S1);
    if (mtype < 0 || H5Tset_size(mtype, vlen > 0 ? H5T_VARIABLE : fixed + 1) < 0 ||
        H5Tset_strpad(mtype, H5T_STR_NULLTERM) < 0 || H5Tset_cset(mtype, H5Tget_cset(ftype)) < 0) {
        snprintf(why, why_size, "unreadable string type");
        goto done;
    }
    void *buf = calloc(n ? (size_t)n : 1, vlen > 0 ? sizeof(char *) : fixed + 1);
    if (!buf) {
        snprintf(why, why_size, "out of memory");
        goto done;
    }
    if (n > 0 && H5Aread(a, mtype, buf) < 0) {
        free(buf);
        char cause[256];
        snprintf(why, why_size, "%s", h5_cause(cause, sizeof cause));
        goto done;
    }
    size_t used = 0;
    rc = 0;
    for (hssize_t i = 0; i < n; i++) {
        const char *s = vlen > 0 ? ((char **)buf)[i] : (char *)buf + (size_t)i * (fixed + 1);
        if (!s) s = "";
        const size_t need = strlen(s) + (i ? strlen(sep) : 0);
        if (used + need >= size) {
            snprintf(why, why_size, "longer than %zu characters", size - 1);
            rc = -1;
        } else {
            used += (size_t)snprintf(out + used, size - used, "%s%s", i ? sep : "", s);
        }
        if (vlen > 0 && ((char **)buf)[i]) H5free_memory(((char **)buf)[i]);
    }
    free(buf);
done:
    if (mtype >= 0) H5Tclose(mtype);
    if (space >= 0) H5Sclose(space);
    if (ftype >= 0) H5Tclose(ftype);
    return rc;
}

static void rattr_str(Reader *r, hid_t loc, const char *where, const char *name, char *out, size_t size) {
    out[0] = '\0';
    hid_t a = rattr(r, loc, where, name, H5T_STRING, "a string");
    if (a < 0) return;
    char why[160];
    if (string_attr_text(a, out, size, ",", why, sizeof why)) rfail(r, "attribute %s of %s: %s", name, where, why);
    H5Aclose(a);
}

/* Opens the file, checks that it is a checkpoint this program reads. The file id, or -1 with rn_error. */
static hid_t open_checkpoint(Reader *r) {
    h5_quiet();
    /* the system's own answer for a missing or unreadable file, before HDF5 turns it into a generic one;
     * a FIFO is refused here rather than left to block H5Fopen */
    int fd = rn_open_regular(r->path);
    if (fd < 0) return -1;
    close(fd);
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl >= 0) H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG);
#if H5_VERS_MAJOR > 1 || (H5_VERS_MAJOR == 1 && (H5_VERS_MINOR > 12 || (H5_VERS_MINOR == 12 && H5_VERS_RELEASE >= 1) || \
                                               (H5_VERS_MINOR == 10 && H5_VERS_RELEASE >= 7)))
    /* parallel file systems mounted without flock (Lustre, NFS) would fail the open on the lock alone,
     * which would then read as "not an HDF5 file" */
    if (fapl >= 0) H5Pset_file_locking(fapl, 1, 1);
#endif
    hid_t fid = H5Fopen(r->path, H5F_ACC_RDONLY, fapl >= 0 ? fapl : H5P_DEFAULT);
    if (fapl >= 0) H5Pclose(fapl);
    if (fid < 0) {
        H5Eclear2(H5E_DEFAULT);
        rn_error("%s: not an HDF5 file or truncated", r->path);
        return -1;
    }
    char format[64];
    if (H5Aexists(fid, "format") <= 0) {
        rfail(r, "not a resnet-mpi checkpoint (no format attribute)");
    } else {
        rattr_str(r, fid, "/", "format", format, sizeof format);
        if (!r->failed && strcmp(format, CHECKPOINT_FORMAT) != 0)
            rfail(r, "not a resnet-mpi checkpoint (format is '%s')", format);
    }
    const int64_t version = rattr_i64(r, fid, "/", "format_version");
    if (!r->failed && version != CHECKPOINT_FORMAT_VERSION)
        rfail(r, "format_version %" PRId64 ", this program reads %d", version, CHECKPOINT_FORMAT_VERSION);
    if (r->failed) {
        H5Fclose(fid);
        return -1;
    }
    return fid;
}

/* ---- /config ---- */

typedef struct {
    Reader *r;
    Settings *settings;
} ConfigWalk;

static herr_t config_attr(hid_t loc, const char *name, const H5A_info_t *info, void *data) {
    ConfigWalk *cw = data;
    Reader *r = cw->r;
    char value[sizeof cw->settings->items[0].value], why[160] = "";
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    if (a < 0) {
        rfail_h5(r, name);
        return -1;
    }
    hid_t t = H5Aget_type(a), s = H5Aget_space(a);
    const H5T_class_t cls = t >= 0 ? H5Tget_class(t) : H5T_NO_CLASS;
    const hssize_t points = s >= 0 ? H5Sget_simple_extent_npoints(s) : -1;
    int rc = -1;
    if (cls == H5T_STRING) {
        rc = string_attr_text(a, value, sizeof value, ",", why, sizeof why);
    } else if ((cls == H5T_INTEGER || cls == H5T_FLOAT) && points == 1) {
        if (cls == H5T_INTEGER && H5Tget_sign(t) == H5T_SGN_NONE) {
            uint64_t v;
            if ((rc = H5Aread(a, H5T_NATIVE_UINT64, &v) < 0 ? -1 : 0) == 0)
                snprintf(value, sizeof value, "%" PRIu64, v);
        } else if (cls == H5T_INTEGER) {
            int64_t v;
            if ((rc = H5Aread(a, H5T_NATIVE_INT64, &v) < 0 ? -1 : 0) == 0)
                snprintf(value, sizeof value, "%" PRId64, v);
        } else {
            double v;
            if ((rc = H5Aread(a, H5T_NATIVE_DOUBLE, &v) < 0 ? -1 : 0) == 0) rn_format_double(value, sizeof value, v);
        }
        if (rc) h5_cause(why, sizeof why);
    } else {
        snprintf(why, sizeof why, "not a string or a single number");
    }
    if (t >= 0) H5Tclose(t);
    if (s >= 0) H5Sclose(s);
    H5Aclose(a);
    if (rc) {
        rfail(r, "/config attribute %s: %s", name, why);
        return -1;
    }
    if (settings_put(cw->settings, name, value)) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", rn_last_error());
        rfail(r, "/config: %s", msg);
        return -1;
    }
    return 0;
}

static void read_config(Reader *r, hid_t fid, Settings *settings) {
    settings->count = 0;
    hid_t g = rgroup(r, fid, "/", "config");
    if (g < 0) return;
    /* creation order when the file tracks it (ours does): the settings come back as they were written */
    H5_index_t index = H5_INDEX_NAME;
    hid_t gcpl = H5Gget_create_plist(g);
    unsigned flags = 0;
    if (gcpl >= 0 && H5Pget_attr_creation_order(gcpl, &flags) >= 0 && (flags & H5P_CRT_ORDER_INDEXED))
        index = H5_INDEX_CRT_ORDER;
    if (gcpl >= 0) H5Pclose(gcpl);
    ConfigWalk cw = {r, settings};
    hsize_t idx = 0;
    if (H5Aiterate2(g, index, H5_ITER_INC, &idx, config_attr, &cw) < 0) rfail_h5(r, "/config");
    H5Gclose(g);
}

int checkpoint_read_settings(const char *path, Settings *settings) {
    Reader r = {.path = path, .failed = 0};
    hid_t fid = open_checkpoint(&r);
    if (fid < 0) return -1;
    read_config(&r, fid, settings);
    H5Fclose(fid);
    return r.failed ? -1 : 0;
}

/* ---- tensors ---- */

static hid_t rdataset(Reader *r, hid_t loc, const char *where, const char *name) {
    if (!rexists(r, loc, where, name, "dataset")) return -1;
    hid_t d = H5Dopen2(loc, name, H5P_DEFAULT);
    if (d < 0) rfail(r, "%s/%s is not a dataset", where, name);
    return d;
}

static int ends_with(const char *s, const char *tail) {
    const size_t n = strlen(s), k = strlen(tail);
    return n >= k && strcmp(s + n - k, tail) == 0;
}

/* A NaN or Inf would poison every step after a resume (and an evaluation would quietly score a broken
 * model), and a variance below zero has no square root: such a file is refused by name. */
static void check_tensor_values(Reader *r, const char *where, const TensorInfo *ti, const float *x) {
    const size_t bad = rn_first_nonfinite(x, ti->numel);
    if (bad < ti->numel) {
        rfail(r, "%s/%s holds a non-finite value (%g at index %zu)", where, ti->name, (double)x[bad], bad);
        return;
    }
    if (strcmp(where, "/optimizer/exp_avg_sq") != 0 && !ends_with(ti->name, ".running_var")) return;
    for (size_t i = 0; i < ti->numel; i++)
        if (x[i] < 0) {
            rfail(r, "%s/%s holds a negative value (%g at index %zu); a variance is at least 0", where, ti->name,
                  (double)x[i], i);
            return;
        }
}

/* Reads a float tensor whose shape must be the table's. */
static void rtensor(Reader *r, hid_t loc, const char *where, const TensorInfo *ti, float *base) {
    hid_t d = rdataset(r, loc, where, ti->name);
    if (d < 0) return;
    hid_t s = H5Dget_space(d), t = H5Dget_type(d);
    hsize_t dims[H5S_MAX_RANK], want[4];
    const int ndim = s >= 0 ? H5Sget_simple_extent_ndims(s) : -1;
    for (int i = 0; i < ti->ndim && i < 4; i++) want[i] = (hsize_t)ti->shape[i];
    const int rank_ok = ndim >= 0 && ndim <= H5S_MAX_RANK;
    if (rank_ok) H5Sget_simple_extent_dims(s, dims, NULL);
    int same = rank_ok && ndim == ti->ndim;
    for (int i = 0; same && i < ndim; i++) same = dims[i] == want[i];
    if (ndim < 0) {
        rfail_h5(r, ti->name);
    } else if (!same) {
        char got[96], exp[96];
        format_shape(got, sizeof got, rank_ok ? ndim : 0, dims);
        format_shape(exp, sizeof exp, ti->ndim, want);
        rfail(r, "%s/%s has shape %s, expected %s", where, ti->name, got, exp);
    } else if (H5Tget_class(t) != H5T_FLOAT) {
        rfail(r, "%s/%s is not floating point", where, ti->name);
    } else if (H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, base + ti->offset) < 0) {
        char what[160];
        snprintf(what, sizeof what, "%s/%s", where, ti->name);
        rfail_h5(r, what);
    } else {
        check_tensor_values(r, where, ti, base + ti->offset);
    }
    if (t >= 0) H5Tclose(t);
    if (s >= 0) H5Sclose(s);
    H5Dclose(d);
}

static int64_t rscalar_i64(Reader *r, hid_t loc, const char *where, const char *name) {
    int64_t v = 0;
    hid_t d = rdataset(r, loc, where, name);
    if (d < 0) return 0;
    hid_t s = H5Dget_space(d), t = H5Dget_type(d);
    if (s < 0 || t < 0 || H5Sget_simple_extent_npoints(s) != 1 || H5Tget_class(t) != H5T_INTEGER)
        rfail(r, "%s/%s is not a single integer", where, name);
    else if (H5Dread(d, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, &v) < 0)
        rfail_h5(r, name);
    if (t >= 0) H5Tclose(t);
    if (s >= 0) H5Sclose(s);
    H5Dclose(d);
    return v;
}

static int model_has(const Model *m, const char *name) {
    for (int i = 0; i < m->num_param_tensors; i++)
        if (strcmp(m->param_info[i].name, name) == 0) return 1;
    for (int i = 0; i < m->num_buffer_tensors; i++) {
        char bn[96];
        if (strcmp(m->buffer_info[i].name, name) == 0) return 1;
        if (bn_prefix(m->buffer_info[i].name, bn, sizeof bn - 24) && strcmp(strcat(bn, ".num_batches_tracked"), name) == 0)
            return 1;
    }
    return 0;
}

/* Every entry of /model must be one of the model's: a file of another architecture is refused even
 * when it happens to hold all of this model's names. */
static void check_no_extras(Reader *r, hid_t g, const Model *m) {
    if (r->failed) return;
    H5G_info_t info;
    if (H5Gget_info(g, &info) < 0) {
        rfail_h5(r, "/model");
        return;
    }
    for (hsize_t i = 0; i < info.nlinks && !r->failed; i++) {
        char name[256];
        ssize_t n = H5Lget_name_by_idx(g, ".", H5_INDEX_NAME, H5_ITER_INC, i, name, sizeof name, H5P_DEFAULT);
        if (n < 0) rfail_h5(r, "/model");
        else if ((size_t)n >= sizeof name || !model_has(m, name))
            rfail(r, "/model/%s is not a tensor of this model (%s, depth %d)", name,
                  m->cfg.arch == ARCH_PAPER ? "paper" : "seed", m->cfg.depth);
    }
}

static void read_model(Reader *r, hid_t fid, const Model *m, float *params, float *buffers, int64_t *tracked) {
    hid_t g = rgroup(r, fid, "/", "model");
    if (g < 0) return;
    for (int i = 0; i < m->num_param_tensors; i++) rtensor(r, g, "/model", &m->param_info[i], params);
    for (int i = 0; i < m->num_buffer_tensors; i++) rtensor(r, g, "/model", &m->buffer_info[i], buffers);
    int first = 1;
    for (int i = 0; i < m->num_buffer_tensors; i++) {
        char name[96];
        if (!bn_prefix(m->buffer_info[i].name, name, sizeof name - 24)) continue;
        strcat(name, ".num_batches_tracked");
        const int64_t v = rscalar_i64(r, g, "/model", name);
        if (v < 0) rfail(r, "/model/%s is %" PRId64 ", expected at least 0", name, v);
        /* the model keeps one counter for all BNs; the files we write hold the same value everywhere */
        if (first) *tracked = v;
        first = 0;
    }
    check_no_extras(r, g, m);
    H5Gclose(g);
}

/* Range checks of single values read from /train and /optimizer: a file edited by hand or written by a
 * broken program is refused by the attribute's name rather than steering the step loop off its tables. */
static void check_i64(Reader *r, const char *where, const char *name, int64_t v, int64_t lo, int64_t hi) {
    if (!r->failed && (v < lo || v > hi))
        rfail(r, "attribute %s of %s is %" PRId64 ", expected %" PRId64 "..%" PRId64, name, where, v, lo, hi);
}

/* lo <= v < hi (or <= hi when closed); always finite. */
static void check_f64(Reader *r, const char *where, const char *name, double v, double lo, double hi, int closed) {
    if (!r->failed && !(isfinite(v) && v >= lo && (closed ? v <= hi : v < hi)))
        rfail(r, "attribute %s of %s is %g, expected a number in [%g, %g%s", name, where, v, lo, hi,
              closed ? "]" : ")");
}

/* The hyperparameters beside the state: not used to resume (/config is), but a file whose values could
 * not have come from a run is not trusted for its tensors either. */
static void check_optimizer_settings(Reader *r, hid_t g, OptimizerKind kind) {
    const char *where = "/optimizer";
    const double lr = rattr_f64(r, g, where, "lr");
    check_f64(r, where, "lr", lr, 0, HUGE_VAL, 0);
    if (!r->failed && lr == 0) rfail(r, "attribute lr of /optimizer is 0, expected a number above 0");
    check_f64(r, where, "weight_decay", rattr_f64(r, g, where, "weight_decay"), 0, HUGE_VAL, 0);
    if (kind == OPT_SGD) {
        check_f64(r, where, "momentum", rattr_f64(r, g, where, "momentum"), 0, 1, 0);
        check_i64(r, where, "nesterov", rattr_i64(r, g, where, "nesterov"), 0, 1);
        return;
    }
    check_f64(r, where, "beta1", rattr_f64(r, g, where, "beta1"), 0, 1, 0);
    check_f64(r, where, "beta2", rattr_f64(r, g, where, "beta2"), 0, 1, 0);
    const double eps = rattr_f64(r, g, where, "eps");
    check_f64(r, where, "eps", eps, 0, HUGE_VAL, 0);
    if (!r->failed && eps == 0) rfail(r, "attribute eps of /optimizer is 0, expected a number above 0");
}

static void read_optimizer(Reader *r, hid_t fid, const Model *m, const Optimizer *opt, float *state, long *step) {
    hid_t g = rgroup(r, fid, "/", "optimizer");
    if (g < 0) return;
    char type[32];
    rattr_str(r, g, "/optimizer", "type", type, sizeof type);
    const char *mine = optim_name(opt->cfg.kind);
    if (!r->failed && strcmp(type, mine) != 0)
        rfail(r, "optimizer state is for %s, this run uses %s", type, mine);
    *step = (long)rattr_i64(r, g, "/optimizer", "step");
    check_i64(r, "/optimizer", "step", *step, 0, CHECKPOINT_STEP_MAX);
    check_optimizer_settings(r, g, opt->cfg.kind);
    if (!r->failed && opt->n != m->num_params)
        rfail(r, "the optimizer holds %zu parameters, the model %zu", opt->n, m->num_params);
    static const char *const adam_groups[] = {"exp_avg", "exp_avg_sq"};
    static const char *const sgd_groups[] = {"momentum_buffer"};
    const int adam = opt->cfg.kind != OPT_SGD;
    for (int k = 0; k < (adam ? 2 : 1) && !r->failed; k++) {
        const char *name = adam ? adam_groups[k] : sgd_groups[k];
        char where[64];
        snprintf(where, sizeof where, "/optimizer/%s", name);
        hid_t sub = rgroup(r, g, "/optimizer", name);
        for (int i = 0; i < m->num_param_tensors && sub >= 0; i++)
            rtensor(r, sub, where, &m->param_info[i], state + (size_t)k * opt->n);
        close_group(sub);
    }
    H5Gclose(g);
}

/* Every epoch took at least one step and the current one batch_in_epoch steps, so step bounds the
 * counters; the step loop indexes the epoch order with batch_in_epoch and the metrics log prints step. */
static void check_train_state(Reader *r, const TrainState *ts) {
    const char *where = "/train";
    check_i64(r, where, "step", ts->step, 0, CHECKPOINT_STEP_MAX);
    check_i64(r, where, "epoch", ts->epoch, 0, ts->step < CHECKPOINT_EPOCH_MAX ? ts->step : CHECKPOINT_EPOCH_MAX);
    check_i64(r, where, "batch_in_epoch", ts->batch_in_epoch, 0, ts->step - ts->epoch);
    check_i64(r, where, "best_step", ts->best_step, 0, ts->step);
    check_i64(r, where, "non_increase_count", ts->non_increase_count, 0, ts->step);
    check_i64(r, where, "running_loss_count", ts->running_loss_count, 0, ts->step);
    /* -1 and -inf are the values before any validation */
    if (ts->best_val_acc != -1.0) check_f64(r, where, "best_val_acc", ts->best_val_acc, 0, 1, 1);
    if (ts->prev_val_acc != -INFINITY) check_f64(r, where, "prev_val_acc", ts->prev_val_acc, 0, 1, 1);
    check_f64(r, where, "running_loss_sum", ts->running_loss_sum, 0, HUGE_VAL, 0);
    check_f64(r, where, "elapsed_s", ts->elapsed_s, 0, HUGE_VAL, 0);
    for (const char *p = ts->stop_reason; !r->failed && *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            rfail(r, "attribute stop_reason of /train holds control characters");
}

static void read_train(Reader *r, hid_t fid, TrainState *ts) {
    hid_t g = rgroup(r, fid, "/", "train");
    if (g < 0) return;
    const char *where = "/train";
    memset(ts, 0, sizeof *ts);
    ts->epoch = (long)rattr_i64(r, g, where, "epoch");
    ts->step = (long)rattr_i64(r, g, where, "step");
    ts->batch_in_epoch = (long)rattr_i64(r, g, where, "batch_in_epoch");
    ts->best_val_acc = rattr_f64(r, g, where, "best_val_acc");
    ts->best_step = (long)rattr_i64(r, g, where, "best_step");
    ts->prev_val_acc = rattr_f64(r, g, where, "prev_val_acc");
    ts->non_increase_count = rattr_int(r, g, where, "non_increase_count");
    ts->running_loss_sum = rattr_f64(r, g, where, "running_loss_sum");
    ts->running_loss_count = rattr_int(r, g, where, "running_loss_count");
    ts->elapsed_s = rattr_f64(r, g, where, "elapsed_s");
    rattr_str(r, g, where, "stop_reason", ts->stop_reason, sizeof ts->stop_reason);
    H5Gclose(g);
    check_train_state(r, ts);
}

static const char *const history_columns[] = {"step", "epoch", "train_loss", "val_acc", "time_s"};
#define HISTORY_COLUMNS 5

/* The entries of one history column, or -1 when it is missing (reported) or not a dataset. */
static hssize_t column_length(Reader *r, hid_t g, const char *name) {
    hid_t d = rdataset(r, g, "/history", name);
    if (d < 0) return -1;
    hid_t s = H5Dget_space(d);
    const hssize_t points = s >= 0 ? H5Sget_simple_extent_npoints(s) : -1;
    if (s >= 0) H5Sclose(s);
    H5Dclose(d);
    return points;
}

/* Every column must have as many entries as the others; the one that differs from the most common length
 * is the one named (a single lengthened column is that column's fault, not the next one read). */
static hssize_t history_length(Reader *r, hid_t g) {
    hssize_t len[HISTORY_COLUMNS];
    for (int i = 0; i < HISTORY_COLUMNS; i++)
        if ((len[i] = column_length(r, g, history_columns[i])) < 0 && !r->failed)
            rfail(r, "/history/%s has no length", history_columns[i]);
    if (r->failed) return -1;
    int odd = -1, fewest = HISTORY_COLUMNS + 1, common = 0;
    for (int i = 0; i < HISTORY_COLUMNS; i++) {
        int same = 0;
        for (int j = 0; j < HISTORY_COLUMNS; j++) same += len[j] == len[i];
        if (same < fewest) {
            fewest = same;
            odd = i;
        }
        if (same > HISTORY_COLUMNS / 2) common = i;
    }
    if (fewest < HISTORY_COLUMNS)
        rfail(r, "/history/%s has %lld entries, the other columns %lld", history_columns[odd], (long long)len[odd],
              (long long)len[common == odd ? (odd + 1) % HISTORY_COLUMNS : common]);
    return r->failed ? -1 : len[0];
}

/* A 1-D history column of n entries (history_length checked that), values into a fresh array. */
static void *rcolumn(Reader *r, hid_t g, const char *name, hid_t mtype, size_t elem, H5T_class_t cls, hssize_t *n) {
    hid_t d = rdataset(r, g, "/history", name);
    if (d < 0) return NULL;
    void *buf = NULL;
    hid_t s = H5Dget_space(d), t = H5Dget_type(d);
    const int ndim = s >= 0 ? H5Sget_simple_extent_ndims(s) : -1;
    const hssize_t points = s >= 0 ? H5Sget_simple_extent_npoints(s) : -1;
    if (ndim != 1 || points < 0 || t < 0 || H5Tget_class(t) != cls) {
        rfail(r, "/history/%s is not a 1-D %s array", name, cls == H5T_INTEGER ? "integer" : "float");
    } else if (*n >= 0 && points != *n) {
        rfail(r, "/history/%s has %lld entries, the other columns %lld", name, (long long)points, (long long)*n);
    } else if (points > INT_MAX) {
        rfail(r, "/history/%s has too many entries", name);
    } else if (!(buf = calloc(points ? (size_t)points : 1, elem))) {
        rfail(r, "out of memory");
    } else if (points > 0 && H5Dread(d, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0) {
        char what[64];
        snprintf(what, sizeof what, "/history/%s", name);
        rfail_h5(r, what);
    } else {
        *n = points;
    }
    if (t >= 0) H5Tclose(t);
    if (s >= 0) H5Sclose(s);
    H5Dclose(d);
    if (r->failed) {
        free(buf);
        return NULL;
    }
    return buf;
}

static void read_history(Reader *r, hid_t fid, History *out) {
    memset(out, 0, sizeof *out);
    hid_t g = rgroup(r, fid, "/", "history");
    if (g < 0) return;
    hssize_t n = history_length(r, g);
    out->step = rcolumn(r, g, "step", H5T_NATIVE_LONG, sizeof(long), H5T_INTEGER, &n);
    out->epoch = rcolumn(r, g, "epoch", H5T_NATIVE_LONG, sizeof(long), H5T_INTEGER, &n);
    out->train_loss = rcolumn(r, g, "train_loss", H5T_NATIVE_DOUBLE, sizeof(double), H5T_FLOAT, &n);
    out->val_acc = rcolumn(r, g, "val_acc", H5T_NATIVE_DOUBLE, sizeof(double), H5T_FLOAT, &n);
    out->time_s = rcolumn(r, g, "time_s", H5T_NATIVE_DOUBLE, sizeof(double), H5T_FLOAT, &n);
    H5Gclose(g);
    if (r->failed) {
        history_free(out);
        return;
    }
    out->count = out->capacity = (int)n;
}

int checkpoint_read(const char *path, Model *m, Optimizer *opt, TrainState *ts, History *h) {
    Reader r = {.path = path, .failed = 0};
    hid_t fid = open_checkpoint(&r);
    if (fid < 0) return -1;

    float *params = malloc(sizeof(float) * (m->num_params ? m->num_params : 1));
    float *buffers = malloc(sizeof(float) * (m->num_buffer_floats ? m->num_buffer_floats : 1));
    const size_t state_floats = opt ? optim_state_floats(opt) : 0;
    float *state = malloc(sizeof(float) * (state_floats ? state_floats : 1));
    int64_t tracked = m->bn_batches_tracked;
    long step = 0;
    TrainState train;
    History history = {0};
    if (!params || !buffers || !state) rfail(&r, "out of memory");

    read_model(&r, fid, m, params, buffers, &tracked);
    if (opt) read_optimizer(&r, fid, m, opt, state, &step);
    if (ts) read_train(&r, fid, &train);
    if (h) read_history(&r, fid, &history);
    H5Fclose(fid);
    /* Adam's bias correction runs on the optimizer's count: it must be the run's */
    if (!r.failed && opt && ts && step != train.step)
        rfail(&r, "attribute step of /optimizer is %ld, but /train says %ld steps were taken", step, train.step);

    if (!r.failed) {
        /* the whole file checked out: only now is anything of the caller's replaced */
        memcpy(m->params, params, sizeof(float) * m->num_params);
        if (m->num_buffer_floats) memcpy(m->buffers, buffers, sizeof(float) * m->num_buffer_floats);
        m->bn_batches_tracked = tracked;
        if (opt) {
            if (state_floats) memcpy(opt->state, state, sizeof(float) * state_floats);
            opt->step = step;
        }
        if (ts) *ts = train;
        if (h) {
            history_free(h);
            *h = history;
        }
    } else {
        history_free(&history);
    }
    free(params);
    free(buffers);
    free(state);
    return r.failed ? -1 : 0;
}
