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

/* The link information the iteration callbacks receive (renamed in HDF5 1.12). */
#if H5_VERS_MAJOR > 1 || (H5_VERS_MAJOR == 1 && H5_VERS_MINOR >= 12)
typedef H5L_info2_t LinkInfo;
#else
typedef H5L_info_t LinkInfo;
#endif

static void h5_quiet(void) {
    /* the library's default handler prints a multi-line stack per error; ours are one line */
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}

typedef struct { char innermost[200]; char system[120]; int checksum; } H5Cause;

static herr_t cause_walk(unsigned n, const H5E_error2_t *e, void *data) {
    H5Cause *c = data;
    if (!e->desc) return 0;
    if (n == 0) snprintf(c->innermost, sizeof c->innermost, "%s", e->desc);
    /* "incorrect metadata checksum ...", "data error detected by Fletcher32 checksum" */
    if (strstr(e->desc, "checksum")) c->checksum = 1;
    /* the file drivers report failed system calls as "..., error message = 'No space left on device', ..." */
    const char *p = strstr(e->desc, "error message = '");
    if (p && !c->system[0]) {
        p += strlen("error message = '");
        const char *q = strchr(p, '\'');
        snprintf(c->system, sizeof c->system, "%.*s", q ? (int)(q - p) : (int)strlen(p), p);
    }
    return 0;
}

#define CORRUPT_CAUSE "checksum mismatch (the file is corrupt)"

/* The most telling line of the current HDF5 error stack, which is then cleared. A failed checksum
 * anywhere in the stack wins: it says the bytes are damaged, whatever failed on top of it. */
static const char *h5_cause(char *buf, size_t size) {
    H5Cause c = {{0}, {0}, 0};
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, cause_walk, &c);
    H5Eclear2(H5E_DEFAULT);
    snprintf(buf, size, "%s", c.checksum ? CORRUPT_CAUSE : c.system[0] ? c.system : c.innermost[0] ? c.innermost : "HDF5 error");
    for (char *p = buf; *p; p++)
        if (*p == '\n' || *p == '\r') *p = ' ';
    return buf;
}

/* Fixed-length UTF-8 of `length` bytes (at least one), padded with NULs: a fixed-length string lives
 * in its attribute's object header, which the format's metadata checksum covers, where a
 * variable-length one would sit in the global heap, which no checksum covers. h5py returns these as
 * bytes. */
static hid_t string_type(size_t length) {
    hid_t t = H5Tcopy(H5T_C_S1);
    if (t >= 0 && (H5Tset_size(t, length ? length : 1) < 0 || H5Tset_strpad(t, H5T_STR_NULLPAD) < 0 ||
                   H5Tset_cset(t, H5T_CSET_UTF8) < 0)) {
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

/* A file access list for a file that lives in memory only: HDF5's core driver without a backing store,
 * holding a copy of image when one is given. HDF5 never opens, locks or writes a checkpoint on disk
 * itself (our own read(2) and write(2) do), so HDF5's file locking, which fails on many NFS and Lustre
 * mounts, never comes into play; it is switched off as well where the library lets us say so. */
static hid_t memory_fapl(const void *image, size_t size) {
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl < 0) return -1;
    herr_t st = H5Pset_fapl_core(fapl, 1 << 20, 0);
    /* STRONG: closing the file closes whatever an error path left open */
    if (st >= 0) st = H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG);
#if H5_VERS_MAJOR > 1 || (H5_VERS_MAJOR == 1 && (H5_VERS_MINOR > 12 || (H5_VERS_MINOR == 12 && H5_VERS_RELEASE >= 1) || \
                                               (H5_VERS_MINOR == 10 && H5_VERS_RELEASE >= 7)))
    if (st >= 0) st = H5Pset_file_locking(fapl, 0, 1);
#endif
    if (st >= 0 && image) st = H5Pset_file_image(fapl, (void *)image, size);
    if (st < 0) {
        H5Pclose(fapl);
        return -1;
    }
    return fapl;
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

/* Links and attributes are kept "compact", inside the group's object header, however many there are:
 * the header's checksum then covers them, and HDF5 1.10 never parses the "dense" storage (fractal heap
 * and B-trees), whose error paths crash the library on damaged input (a SEGV in H5G__dense_iterate). */
#define COMPACT_MAX 65535

static herr_t keep_compact(hid_t gcpl) {
    if (H5Pset_link_phase_change(gcpl, COMPACT_MAX, COMPACT_MAX) < 0) return -1;
    return H5Pset_attr_phase_change(gcpl, COMPACT_MAX, COMPACT_MAX);
}

static hid_t wgroup(Writer *w, hid_t parent, const char *name, const char *display, int ordered_attrs) {
    if (w->failed) return -1;
    hid_t gcpl = H5Pcreate(H5P_GROUP_CREATE);
    hid_t g = -1;
    if (gcpl >= 0 && H5Pset_obj_track_times(gcpl, 0) >= 0 && keep_compact(gcpl) >= 0 &&
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
    const size_t n = strlen(s);
    hid_t t = string_type(n);
    /* an empty string is one NUL byte: a fixed-length type cannot be empty */
    wattr_scalar(w, loc, where, name, t, t, n ? s : "");
    H5Tclose(t);
}

/* "a,b,c" as a 1-D array of strings (a class name cannot contain a comma), each padded to the longest. */
static void wattr_str_list(Writer *w, hid_t loc, const char *where, const char *name, const char *csv) {
    if (w->failed) return;
    size_t n = 1, longest = 1, run = 0;
    for (const char *p = csv;; p++) {
        if (*p == ',' || !*p) {
            if (run > longest) longest = run;
            run = 0;
            if (!*p) break;
            n++;
        } else {
            run++;
        }
    }
    char *items = calloc(n, longest);
    if (!items) {
        rn_error("%s: out of memory", w->path);
        w->failed = 1;
        return;
    }
    size_t k = 0;
    for (const char *p = csv; *p; p++) {
        if (*p == ',') {
            run = 0;
            k++;
        } else {
            items[k * longest + run++] = *p;
        }
    }
    hsize_t dims[1] = {n};
    hid_t space = H5Screate_simple(1, dims, NULL), t = string_type(longest);
    wattr(w, loc, where, name, t, t, space, items);
    H5Tclose(t);
    H5Sclose(space);
    free(items);
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

/* Every dataset carries a checksum: arrays are chunked (one chunk per tensor) with the Fletcher32
 * filter, verified by HDF5 on every read; a scalar is stored compact, inside its object header, which
 * the format's metadata checksum covers. */
static hid_t wdcpl(int ndim, const hsize_t *dims, int extendible) {
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    if (dcpl < 0) return -1;
    herr_t st = H5Pset_obj_track_times(dcpl, 0);
    if (st >= 0 && ndim == 0) {
        st = H5Pset_layout(dcpl, H5D_COMPACT);
    } else if (st >= 0) {
        hsize_t chunk[H5S_MAX_RANK];
        for (int i = 0; i < ndim; i++) chunk[i] = extendible ? 256 : dims[i];
        st = H5Pset_chunk(dcpl, ndim, chunk);
        if (st >= 0) st = H5Pset_fletcher32(dcpl);
    }
    if (st < 0) {
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
    hid_t dcpl = wdcpl(ndim, dims, extendible);
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

/* Bob Jenkins' lookup3 hash (hashlittle, public domain), the checksum of HDF5's metadata. */
static uint32_t rotl32(uint32_t x, int k) { return (x << k) | (x >> (32 - k)); }

static uint32_t lookup3(const unsigned char *k, size_t length) {
    uint32_t w[3];
    w[0] = w[1] = w[2] = 0xdeadbeefu + (uint32_t)length;
    for (;;) {
        const size_t n = length < 12 ? length : 12;
        if (n == 0) return w[2];
        for (size_t i = 0; i < n; i++) w[i / 4] += (uint32_t)k[i] << (8 * (i % 4));
        uint32_t a = w[0], b = w[1], c = w[2];
        if (length > 12) {
            a -= c; a ^= rotl32(c, 4); c += b;
            b -= a; b ^= rotl32(a, 6); a += c;
            c -= b; c ^= rotl32(b, 8); b += a;
            a -= c; a ^= rotl32(c, 16); c += b;
            b -= a; b ^= rotl32(a, 19); a += c;
            c -= b; c ^= rotl32(b, 4); b += a;
            w[0] = a;
            w[1] = b;
            w[2] = c;
            length -= 12;
            k += 12;
            continue;
        }
        c ^= b; c -= rotl32(b, 14);
        a ^= c; a -= rotl32(c, 11);
        b ^= a; b -= rotl32(a, 25);
        c ^= b; c -= rotl32(b, 16);
        a ^= c; a -= rotl32(c, 4);
        b ^= a; b -= rotl32(a, 14);
        c ^= b; c -= rotl32(b, 24);
        return c;
    }
}

/* HDF5 1.10's H5Fget_file_image clears the status flags of a version 3 superblock (the file is open for
 * writing while its image is taken) without updating the superblock's checksum, so the image would fail
 * its own check. The checksum is written again over the bytes as they are: a no-op where the library
 * already got it right. Superblock 2/3: signature, version, offset and length sizes, flags, four
 * addresses, then the checksum. */
static void seal_superblock(unsigned char *image, size_t size) {
    if (size < 12 || image[8] < 2) return;
    const size_t covered = 12 + 4 * (size_t)image[9];
    if (covered + 4 > size) return;
    const uint32_t sum = lookup3(image, covered);
    for (int i = 0; i < 4; i++) image[covered + i] = (unsigned char)(sum >> (8 * i));
}

/* The whole file built in memory (HDF5's core driver, no backing store): HDF5 then never meets an I/O
 * error, which it handles badly (a file whose close failed stays open and crashes the library at
 * exit), and our own write(2) reports a full disk in plain words. A checkpoint is a few MB. */
static void *build_image(Writer *w, const char *name, const Model *m, const Optimizer *opt, const TrainState *ts,
                         const History *h, const Settings *settings, size_t *size) {
    hid_t fapl = memory_fapl(NULL, 0), fcpl = H5Pcreate(H5P_FILE_CREATE), fid = -1;
    /* the 1.10 format puts a checksum on every piece of metadata (superblock v3, object headers v2,
     * the chunk index inside the header); the 1.8 default has none */
    if (fapl >= 0 && fcpl >= 0 && H5Pset_libver_bounds(fapl, H5F_LIBVER_V110, H5F_LIBVER_LATEST) >= 0 &&
        H5Pset_obj_track_times(fcpl, 0) >= 0 && keep_compact(fcpl) >= 0)
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
    if (!w->failed) seal_superblock(image, (size_t)n);
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
    const char *path;     /* the file, or the name an image in memory goes by: every message starts with it */
    const void *image;    /* the file's bytes, when the caller has them (else the file is read) */
    size_t image_size;
    size_t file_size;     /* bytes of the file opened */
    int64_t version;      /* its format_version, once known (0 before) */
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

/* A failed HDF5 call on `what` (an object of the file, by its path): damaged bytes say so in the same
 * words wherever they are found; anything else says what could not be read and why. */
static void rfail_h5(Reader *r, const char *what) {
    if (r->failed) return;
    char cause[256];
    h5_cause(cause, sizeof cause);
    if (!strcmp(cause, CORRUPT_CAUSE)) rfail(r, "%s: %s", what, cause);
    else rfail(r, "cannot read %s: %s", what, cause);
}

/* An object that would not open as `kind`: damaged, or something else by that name. */
static void rfail_kind(Reader *r, const char *what, const char *kind) {
    if (r->failed) return;
    char cause[256];
    h5_cause(cause, sizeof cause);
    if (!strcmp(cause, CORRUPT_CAUSE)) rfail(r, "%s: %s", what, cause);
    else rfail(r, "%s is not a %s", what, kind);
}

static void join_path(char *out, size_t size, const char *where, const char *name) {
    snprintf(out, size, "%s%s%s", where, strcmp(where, "/") ? "/" : "", name);
}

/* An existing child object of loc; a missing one is reported as `kind` ("group", "dataset"). */
static int rexists(Reader *r, hid_t loc, const char *where, const char *name, const char *kind) {
    if (r->failed) return 0;
    char what[256];
    join_path(what, sizeof what, where, name);
    htri_t ex = H5Lexists(loc, name, H5P_DEFAULT);
    if (ex > 0) return 1;
    if (ex < 0) rfail_h5(r, what);
    else rfail(r, "missing %s %s", kind, what);
    return 0;
}

static hid_t rgroup(Reader *r, hid_t loc, const char *where, const char *name) {
    if (!rexists(r, loc, where, name, "group")) return -1;
    hid_t g = H5Gopen2(loc, name, H5P_DEFAULT);
    if (g < 0) {
        char what[256];
        join_path(what, sizeof what, where, name);
        rfail_kind(r, what, "group");
    }
    return g;
}

static void rfail_attr(Reader *r, const char *where, const char *name) {
    char what[256];
    snprintf(what, sizeof what, "attribute %s of %s", name, where);
    rfail_h5(r, what);
}

/* An open scalar attribute of the given type class (H5T_NO_CLASS: any), or -1. */
static hid_t rattr(Reader *r, hid_t loc, const char *where, const char *name, H5T_class_t want, const char *desc) {
    if (r->failed) return -1;
    char what[256];
    snprintf(what, sizeof what, "attribute %s of %s", name, where);
    const htri_t exists = H5Aexists(loc, name);
    if (exists <= 0) {
        if (exists < 0) rfail_h5(r, what);
        else rfail(r, "missing %s", what);
        return -1;
    }
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    if (a < 0) {
        rfail_h5(r, what);
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
    if (H5Aread(a, H5T_NATIVE_INT64, &v) < 0) rfail_attr(r, where, name);
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
    if (H5Aread(a, H5T_NATIVE_DOUBLE, &v) < 0) rfail_attr(r, where, name);
    H5Aclose(a);
    return v;
}

#define ATTR_MAX_BYTES ((size_t)1 << 20)

/* The strings of a string attribute (scalar or 1-D), fixed or variable length, joined by sep.
 * 0, or -1 with a reason in why. */
static int string_attr_text(hid_t a, int allow_vlen, char *out, size_t size, const char *sep, char *why,
                            size_t why_size) {
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
    /* variable-length strings live in the global heap, which no checksum covers and whose parser in
     * libhdf5 1.10 crashes on damaged input: only format_version 1 wrote them */
    if (vlen > 0 && !allow_vlen) {
        snprintf(why, why_size, "a variable-length string, which this format version does not use");
        goto done;
    }
    /* an attribute lives in an object header (64 KiB a message): a larger claim is damage, and memory
     * is not sized by it */
    if ((size_t)n > ATTR_MAX_BYTES || fixed > ATTR_MAX_BYTES / ((size_t)n + 1)) {
        snprintf(why, why_size, "%lld strings of %zu bytes: more than an attribute holds", (long long)n, fixed);
        goto done;
    }
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
    if (string_attr_text(a, r->version < 2, out, size, ",", why, sizeof why))
        rfail(r, "attribute %s of %s: %s", name, where, why);
    H5Aclose(a);
}

/* The whole file in memory: 0, or -1 with rn_error in the system's own words (missing, unreadable,
 * not a regular file). */
static int slurp_file(const char *path, unsigned char **out, size_t *size) {
    /* refuses a FIFO or a folder before open() could block on it */
    int fd = rn_open_regular(path);
    if (fd < 0) return -1;
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return rn_error("%s: not a regular file", path);
    }
    const size_t n = (size_t)st.st_size;
    unsigned char *buf = malloc(n ? n : 1);
    if (!buf) {
        close(fd);
        return rn_error("%s: out of memory for its %zu bytes", path, n);
    }
    size_t got = 0;
    while (got < n) {
        ssize_t k = read(fd, buf + got, n - got);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) {
            const int e = k < 0 ? errno : 0;
            free(buf);
            close(fd);
            if (e) return rn_error("%s: read error: %s", path, strerror(e));
            return rn_error("%s: shrank while being read", path);
        }
        got += (size_t)k;
    }
    close(fd);
    *out = buf;
    *size = n;
    return 0;
}

static uint64_t le64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

/* libhdf5 1.10 trusts the object sizes inside a global heap collection, where format_version 1 kept its
 * variable-length strings (and which no checksum covers): a damaged size makes it loop for ever or copy
 * past its buffer (found by fuzzing, tests/fuzz/hdf5-crashes). Every collection in the file ("GCOL",
 * version 1) is walked here first, the way the library will walk it, and a file whose objects do not
 * tile their collection is refused. 0, or -1 with rn_error. */
static int check_global_heaps(const char *path, const unsigned char *image, size_t size) {
    static const unsigned char signature[8] = {'G', 'C', 'O', 'L', 1, 0, 0, 0};
    /* object sizes are "lengths": 8 bytes in every file this program writes; others are left to HDF5 */
    if (size < 16 || memcmp(image, "\x89HDF\r\n\x1a\n", 8) != 0) return 0;
    const unsigned lengths = image[8] >= 2 ? image[10] : image[14];
    if (lengths != 8) return 0;
    for (const unsigned char *p = image; (p = memchr(p, 'G', size - (size_t)(p - image))); p++) {
        const size_t at = (size_t)(p - image), left = size - at;
        if (left < 8 || memcmp(p, signature, 8) != 0) continue;
        const uint64_t total = left >= 16 ? le64(p + 8) : 0;
        int damaged = total < 16 || total > left;
        for (uint64_t q = 16; !damaged && total - q >= 16;) {
            const unsigned index = p[q] | (unsigned)p[q + 1] << 8;
            const uint64_t bytes = le64(p + q + 8);
            /* an object's header and data padded to 8 bytes; the free-space object (0) counts its own */
            const uint64_t need = bytes > total ? 0 : index ? 16 + ((bytes + 7) & ~(uint64_t)7) : bytes;
            damaged = need < 16 || need > total - q;
            q += need;
        }
        if (damaged) return rn_error("%s: damaged global heap (variable-length strings) at byte %zu", path, at);
    }
    return 0;
}

/* Opens the checkpoint (from r->image, else from the file read whole into memory) and checks that it
 * is one this program reads. The file id, or -1 with rn_error. */
static hid_t open_checkpoint(Reader *r) {
    h5_quiet();
    unsigned char *owned = NULL;
    const void *image = r->image;
    size_t size = r->image_size;
    if (!image) {
        if (slurp_file(r->path, &owned, &size)) return -1;
        image = owned;
    }
    r->file_size = size;
    if (size > 0 && check_global_heaps(r->path, image, size)) {
        free(owned);
        return -1;
    }
    /* a name no file can have: the core driver refuses to open an image under the name of an existing
     * file, and two open images of one name would be taken for the same file */
    static unsigned serial;
    char name[64];
    snprintf(name, sizeof name, "/dev/null/resnet-mpi-image-%u", serial++);
    hid_t fapl = size > 0 ? memory_fapl(image, size) : -1;
    free(owned);   /* the access list holds its own copy */
    hid_t fid = fapl >= 0 ? H5Fopen(name, H5F_ACC_RDONLY, fapl) : -1;
    if (fapl >= 0) H5Pclose(fapl);
    if (fid < 0) {
        char cause[256];
        if (!strcmp(h5_cause(cause, sizeof cause), CORRUPT_CAUSE)) rn_error("%s: superblock: %s", r->path, cause);
        else rn_error("%s: not an HDF5 file or truncated", r->path);
        return -1;
    }
    /* format_version is read before the format string: it says whether strings may be variable-length
     * (read through the global heap) */
    char format[64];
    const htri_t has_format = H5Aexists(fid, "format");
    if (has_format < 0) {
        rfail_h5(r, "attribute format of /");
    } else if (has_format == 0) {
        rfail(r, "not a resnet-mpi checkpoint (no format attribute)");
    } else {
        const htri_t has_version = H5Aexists(fid, "format_version");
        if (has_version < 0) rfail_h5(r, "attribute format_version of /");
        r->version = has_version > 0 ? rattr_i64(r, fid, "/", "format_version") : 1;
        rattr_str(r, fid, "/", "format", format, sizeof format);
        if (!r->failed && strcmp(format, CHECKPOINT_FORMAT) != 0)
            rfail(r, "not a resnet-mpi checkpoint (format is '%s')", format);
        if (!r->failed && has_version == 0) rfail(r, "missing attribute format_version of /");
        /* version 1 (no checksums) is read as before: its files still load, unverified */
        if (!r->failed && (r->version < 1 || r->version > CHECKPOINT_FORMAT_VERSION))
            rfail(r, "format_version %" PRId64 ", this program reads 1 to %d", r->version, CHECKPOINT_FORMAT_VERSION);
    }
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
        rfail_attr(r, "/config", name);
        return -1;
    }
    hid_t t = H5Aget_type(a), s = H5Aget_space(a);
    const H5T_class_t cls = t >= 0 ? H5Tget_class(t) : H5T_NO_CLASS;
    const hssize_t points = s >= 0 ? H5Sget_simple_extent_npoints(s) : -1;
    int rc = -1;
    if (cls == H5T_STRING) {
        rc = string_attr_text(a, r->version < 2, value, sizeof value, ",", why, sizeof why);
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
    /* native order: in the creation-order index that is creation order, and HDF5 walks its B-tree
     * rather than building a sorted table first (see check_no_extras) */
    if (H5Aiterate2(g, index, H5_ITER_NATIVE, &idx, config_attr, &cw) < 0) rfail_h5(r, "/config");
    H5Gclose(g);
}

static int read_settings(Reader *r, Settings *settings) {
    hid_t fid = open_checkpoint(r);
    if (fid < 0) return -1;
    read_config(r, fid, settings);
    H5Fclose(fid);
    return r->failed ? -1 : 0;
}

int checkpoint_read_settings(const char *path, Settings *settings) {
    Reader r = {.path = path};
    return read_settings(&r, settings);
}

int checkpoint_image_read_settings(const char *name, const void *image, size_t size, Settings *settings) {
    Reader r = {.path = name, .image = image, .image_size = size};
    return read_settings(&r, settings);
}

/* ---- tensors ---- */

static hid_t rdataset(Reader *r, hid_t loc, const char *where, const char *name) {
    if (!rexists(r, loc, where, name, "dataset")) return -1;
    hid_t d = H5Dopen2(loc, name, H5P_DEFAULT);
    if (d < 0) {
        char what[256];
        join_path(what, sizeof what, where, name);
        rfail_kind(r, what, "dataset");
    }
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
    char what[256];
    join_path(what, sizeof what, where, ti->name);
    if (ndim < 0) {
        rfail_h5(r, what);
    } else if (!same) {
        char got[96], exp[96];
        format_shape(got, sizeof got, rank_ok ? ndim : 0, dims);
        format_shape(exp, sizeof exp, ti->ndim, want);
        rfail(r, "%s/%s has shape %s, expected %s", where, ti->name, got, exp);
    } else if (H5Tget_class(t) != H5T_FLOAT) {
        rfail(r, "%s/%s is not floating point", where, ti->name);
    } else if (H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, base + ti->offset) < 0) {
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
    else if (H5Dread(d, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, &v) < 0) {
        char what[256];
        join_path(what, sizeof what, where, name);
        rfail_h5(r, what);
    }
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

typedef struct {
    Reader *r;
    const Model *m;
} ExtrasWalk;

static herr_t check_one(hid_t g, const char *name, const LinkInfo *info, void *data) {
    (void)g;
    (void)info;
    ExtrasWalk *ew = data;
    if (model_has(ew->m, name)) return 0;
    rfail(ew->r, "/model/%.200s is not a tensor of this model (%s, depth %d)", name,
          ew->m->cfg.arch == ARCH_PAPER ? "paper" : "seed", ew->m->cfg.depth);
    return 1;
}

/* Every entry of /model must be one of the model's: a file of another architecture is refused even
 * when it happens to hold all of this model's names. */
static void check_no_extras(Reader *r, hid_t g, const Model *m) {
    if (r->failed) return;
    ExtrasWalk ew = {r, m};
    hsize_t idx = 0;
    /* native order: any other makes HDF5 build a table of the links first, whose error path frees
     * entries it never filled when the group's storage is damaged */
    if (H5Literate(g, H5_INDEX_NAME, H5_ITER_NATIVE, &idx, check_one, &ew) < 0) rfail_h5(r, "/model");
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
    } else if (points > INT_MAX || (size_t)points > r->file_size) {
        /* every entry takes bytes of the file: a longer claim is damage, and memory is not sized by it */
        rfail(r, "/history/%s has %lld entries, more than the file can hold", name, (long long)points);
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

static int read_checkpoint(Reader *rd, Model *m, Optimizer *opt, TrainState *ts, History *h) {
    Reader r = *rd;
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

int checkpoint_read(const char *path, Model *m, Optimizer *opt, TrainState *ts, History *h) {
    Reader r = {.path = path};
    return read_checkpoint(&r, m, opt, ts, h);
}

int checkpoint_image_read(const char *name, const void *image, size_t size, Model *m, Optimizer *opt,
                          TrainState *ts, History *h) {
    Reader r = {.path = name, .image = image, .image_size = size};
    return read_checkpoint(&r, m, opt, ts, h);
}

/* ---- verification ----------------------------------------------------------------------------------- */

/* Reading every byte of every dataset and attribute makes HDF5 check every checksum of the file:
 * Fletcher32 on the data, the metadata checksums on the headers that hold attributes, scalars and chunk
 * indexes. A file of format_version 1 has none of these; its check only proves that it parses. */

typedef struct {
    Reader *r;
    const char *where;   /* the object's path, for messages */
    size_t limit;        /* bytes a dataset may claim before it is refused */
} VerifyWalk;

/* Types whose values live outside the object (variable-length data, references) are not read: our
 * files hold none, and their reading owes memory back to HDF5. */
static int plain_type(hid_t t) {
    return t >= 0 && H5Tis_variable_str(t) == 0 && H5Tdetect_class(t, H5T_VLEN) == 0 &&
           H5Tdetect_class(t, H5T_REFERENCE) == 0;
}

static herr_t verify_attr(hid_t loc, const char *name, const H5A_info_t *info, void *data) {
    (void)info;
    VerifyWalk *vw = data;
    Reader *r = vw->r;
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    if (a < 0) {
        rfail_attr(r, vw->where, name);
        return -1;
    }
    hid_t t = H5Aget_type(a), s = H5Aget_space(a);
    const hssize_t points = s >= 0 ? H5Sget_simple_extent_npoints(s) : -1;
    const size_t bytes = t >= 0 ? H5Tget_size(t) : 0;
    if (t < 0 || points < 0 || bytes == 0) {
        rfail_attr(r, vw->where, name);
    } else if ((size_t)points > ATTR_MAX_BYTES / bytes) {
        rfail(r, "attribute %s of %s claims %lld values of %zu bytes: more than an attribute holds", name,
              vw->where, (long long)points, bytes);
    } else if (H5Tget_class(t) == H5T_STRING) {
        char text[4096], why[160];
        /* longer than any setting: the read went through even if the text does not fit */
        if (string_attr_text(a, r->version < 2, text, sizeof text, ",", why, sizeof why) && !strstr(why, "longer than"))
            rfail(r, "attribute %s of %s: %s", name, vw->where, why);
    } else if (plain_type(t)) {
        void *buf = calloc((size_t)points ? (size_t)points : 1, bytes);
        if (!buf) rfail(r, "out of memory");
        else if (points > 0 && H5Aread(a, t, buf) < 0) rfail_attr(r, vw->where, name);
        free(buf);
    }
    if (t >= 0) H5Tclose(t);
    if (s >= 0) H5Sclose(s);
    H5Aclose(a);
    return r->failed ? -1 : 0;
}

static void verify_dataset(VerifyWalk *vw, hid_t d) {
    Reader *r = vw->r;
    hid_t t = H5Dget_type(d), s = H5Dget_space(d);
    const hssize_t points = s >= 0 ? H5Sget_simple_extent_npoints(s) : -1;
    const size_t elem = t >= 0 ? H5Tget_size(t) : 0;
    if (points < 0 || elem == 0) {
        rfail_h5(r, vw->where);
    } else if (plain_type(t) && points > 0) {
        if ((size_t)points > vw->limit / elem) {
            rfail(r, "%s claims %lld values of %zu bytes, more than the file can hold", vw->where,
                  (long long)points, elem);
        } else {
            void *buf = malloc((size_t)points * elem);
            if (!buf) rfail(r, "out of memory for %s", vw->where);
            else if (H5Dread(d, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0) rfail_h5(r, vw->where);
            free(buf);
        }
    }
    if (t >= 0) H5Tclose(t);
    if (s >= 0) H5Sclose(s);
}

static void verify_attributes(VerifyWalk *vw, hid_t obj) {
    hsize_t idx = 0;
    if (!vw->r->failed && H5Aiterate2(obj, H5_INDEX_NAME, H5_ITER_NATIVE, &idx, verify_attr, vw) < 0)
        rfail_h5(vw->r, vw->where);
}

static herr_t verify_link(hid_t root, const char *name, const LinkInfo *info, void *data) {
    VerifyWalk *walk = data;
    Reader *r = walk->r;
    /* soft and external links lead elsewhere (another file, even): only what the file holds is checked */
    if (info->type != H5L_TYPE_HARD) return 0;
    char where[512];
    snprintf(where, sizeof where, "/%s", name);
    VerifyWalk vw = {r, where, walk->limit};
    hid_t obj = H5Oopen(root, name, H5P_DEFAULT);
    if (obj < 0) {
        rfail_h5(r, where);
        return -1;
    }
    verify_attributes(&vw, obj);
    if (!r->failed && H5Iget_type(obj) == H5I_DATASET) verify_dataset(&vw, obj);
    H5Oclose(obj);
    return r->failed ? -1 : 0;
}

static int verify(Reader *r, long *step) {
    hid_t fid = open_checkpoint(r);
    if (fid < 0) return -1;
    /* a dataset may be larger than the file only by compression, which our files do not use */
    const size_t limit = r->file_size * 4 + ((size_t)1 << 20);
    VerifyWalk vw = {r, "/", limit};
    verify_attributes(&vw, fid);
    if (!r->failed && H5Lvisit(fid, H5_INDEX_NAME, H5_ITER_NATIVE, verify_link, &vw) < 0) rfail_h5(r, "/");
    if (!r->failed && step) {
        const htri_t has_train = H5Lexists(fid, "train", H5P_DEFAULT);
        hid_t g = has_train > 0 ? rgroup(r, fid, "/", "train") : -1;
        *step = g >= 0 ? (long)rattr_i64(r, g, "/train", "step") : -1;
        if (g >= 0) H5Gclose(g);
    }
    H5Fclose(fid);
    return r->failed ? -1 : 0;
}

int checkpoint_verify(const char *path, long *step) {
    Reader r = {.path = path};
    return verify(&r, step);
}

int checkpoint_image_verify(const char *name, const void *image, size_t size, long *step) {
    Reader r = {.path = name, .image = image, .image_size = size};
    return verify(&r, step);
}
