/* HDF5 checkpoints: the file's layout (the design's INTERFACE.md) over the plumbing of h5io.c, which
 * writes atomically, keeps every dataset checksummed and reads files from memory.
 *
 * Reading: every tensor is read into scratch memory first and copied into the model, optimizer, train
 * state and history only when the whole file checked out, so a bad file never leaves a half-loaded
 * model behind. Every value a run would steer by is range-checked, by its attribute's name. */
#include "resnet/checkpoint.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "resnet/h5io.h"
#include "resnet/util.h"

/* Bounds of the counters a file may hold: the command line's own limits (--max-steps, --epochs). */
#define CHECKPOINT_STEP_MAX 1000000000000L
#define CHECKPOINT_EPOCH_MAX 1000000L

/* ---- writing ---------------------------------------------------------------------------------------- */

/* A float setting as the double of its shortest decimal (0.1f -> 0.1, not 0.10000000149011612), which
 * is what a reader of the file (h5dump, PyTorch's param_groups) expects to see. */
static double float_as_decimal(float x) {
    char buf[32];
    return strtod(rn_format_float(buf, sizeof buf, x), NULL);
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
static void write_setting(H5ioWriter *w, hid_t g, const Setting *s) {
    if (w->failed) return;
    if (strcmp(s->key, "class_names") == 0 && s->value[0]) {
        h5io_write_str_list(w, g, "/config", s->key, s->value);
        return;
    }
    int is_integer;
    if (decimal_syntax(s->value, &is_integer)) {
        char *end;
        if (is_integer) {
            errno = 0;
            long long v = strtoll(s->value, &end, 10);
            if (!errno && !*end) {
                h5io_write_i64(w, g, "/config", s->key, (int64_t)v);
                return;
            }
            /* seeds are uint64: above INT64_MAX they still fit the unsigned type */
            errno = 0;
            unsigned long long u = strtoull(s->value, &end, 10);
            if (s->value[0] != '-' && !errno && !*end) {
                h5io_write_u64(w, g, "/config", s->key, (uint64_t)u);
                return;
            }
            /* wider than 64 bits: keep every digit as a string */
        } else {
            errno = 0;
            double d = strtod(s->value, &end);
            if (!errno && !*end && isfinite(d)) {
                h5io_write_f64(w, g, "/config", s->key, d);
                return;
            }
        }
    }
    h5io_write_str(w, g, "/config", s->key, s->value);
}

static void write_tensor(H5ioWriter *w, hid_t loc, const char *where, const TensorInfo *ti, const float *base) {
    if (w->failed) return;
    hsize_t dims[4];
    size_t numel = 1;
    for (int i = 0; i < ti->ndim && i < 4; i++) {
        dims[i] = (hsize_t)ti->shape[i];
        numel *= (size_t)ti->shape[i];
    }
    if (ti->ndim < 1 || ti->ndim > 4 || numel != ti->numel) {
        h5io_write_fail(w, "tensor %s: shape does not match its %zu values", ti->name, ti->numel);
        return;
    }
    h5io_write_dataset(w, loc, where, ti->name, H5IO_F32, ti->ndim, dims, base + ti->offset, 0);
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

static void write_model(H5ioWriter *w, hid_t fid, const Model *m) {
    hid_t g = h5io_group_create(w, fid, "model", "/model", 0);
    for (int i = 0; i < m->num_param_tensors; i++) write_tensor(w, g, "/model", &m->param_info[i], m->params);
    for (int i = 0; i < m->num_buffer_tensors; i++) write_tensor(w, g, "/model", &m->buffer_info[i], m->buffers);
    for (int i = 0; i < m->num_buffer_tensors; i++) {
        char name[96];
        if (!bn_prefix(m->buffer_info[i].name, name, sizeof name - 24)) continue;
        strcat(name, ".num_batches_tracked");
        const int64_t v = m->bn_batches_tracked;
        h5io_write_dataset(w, g, "/model", name, H5IO_I64, 0, NULL, &v, 0);
    }
    h5io_group_close(g);
}

/* A group "reference" under parent (where: its path): one [applications, 2, channels] dataset per BN
 * module, the statistics laid out as Model.reference. */
static void write_reference_group(H5ioWriter *w, hid_t parent, const char *where, const Model *m,
                                  const float *reference) {
    hid_t g = h5io_group_create(w, parent, "reference", where, 0);
    for (int i = 0; i < m->num_reference_tensors; i++) write_tensor(w, g, where, &m->reference_info[i], reference);
    h5io_group_close(g);
}

/* /reference: the reference BN statistics, when measured for these parameters (--bn-eval reference) */
static void write_reference(H5ioWriter *w, hid_t fid, const Model *m) {
    if (m->reference_valid) write_reference_group(w, fid, "/reference", m, m->reference);
}

static void write_optimizer(H5ioWriter *w, hid_t fid, const Model *m, const Optimizer *opt) {
    hid_t g = h5io_group_create(w, fid, "optimizer", "/optimizer", 0);
    const OptimConfig *c = &opt->cfg;
    h5io_write_str(w, g, "/optimizer", "type", optim_name(c->kind));
    h5io_write_i64(w, g, "/optimizer", "step", opt->step);
    h5io_write_f64(w, g, "/optimizer", "lr", float_as_decimal(c->lr));
    h5io_write_f64(w, g, "/optimizer", "weight_decay", float_as_decimal(c->weight_decay));
    if (c->kind == OPT_SGD) {
        h5io_write_f64(w, g, "/optimizer", "momentum", float_as_decimal(c->momentum));
        h5io_write_i64(w, g, "/optimizer", "nesterov", c->nesterov);
    } else {
        h5io_write_f64(w, g, "/optimizer", "beta1", float_as_decimal(c->beta1));
        h5io_write_f64(w, g, "/optimizer", "beta2", float_as_decimal(c->beta2));
        h5io_write_f64(w, g, "/optimizer", "eps", float_as_decimal(c->eps));
    }
    static const char *const adam_groups[] = {"exp_avg", "exp_avg_sq"};
    static const char *const sgd_groups[] = {"momentum_buffer"};
    const int adam = c->kind != OPT_SGD;
    const int groups = adam ? 2 : 1;
    for (int k = 0; k < groups; k++) {
        const char *name = adam ? adam_groups[k] : sgd_groups[k];
        char where[64];
        snprintf(where, sizeof where, "/optimizer/%s", name);
        hid_t sub = h5io_group_create(w, g, name, where, 0);
        /* the state buffer holds one parameter-sized slice per group, in the group order above */
        for (int i = 0; i < m->num_param_tensors; i++)
            write_tensor(w, sub, where, &m->param_info[i], opt->state + (size_t)k * opt->n);
        h5io_group_close(sub);
    }
    h5io_group_close(g);
}

static void write_ema(H5ioWriter *w, hid_t fid, const Model *m, const Ema *e) {
    hid_t g = h5io_group_create(w, fid, "ema", "/ema", 0);
    h5io_write_f64(w, g, "/ema", "decay", e->decay);
    h5io_write_i64(w, g, "/ema", "n_averaged", e->n_averaged);
    for (int i = 0; i < m->num_param_tensors; i++) write_tensor(w, g, "/ema", &m->param_info[i], e->params);
    /* the average's own reference statistics, when measured for it as saved (--bn-eval reference) */
    if (e->reference && e->reference_valid) {
        if (e->reference_floats != m->num_reference_floats)
            h5io_write_fail(w, "/ema/reference: %zu statistics, the model has %zu", e->reference_floats,
                            m->num_reference_floats);
        else
            write_reference_group(w, g, "/ema/reference", m, e->reference);
    }
    h5io_group_close(g);
}

static void write_train(H5ioWriter *w, hid_t fid, const TrainState *ts) {
    hid_t g = h5io_group_create(w, fid, "train", "/train", 0);
    const char *where = "/train";
    h5io_write_i64(w, g, where, "epoch", ts->epoch);
    h5io_write_i64(w, g, where, "step", ts->step);
    h5io_write_i64(w, g, where, "batch_in_epoch", ts->batch_in_epoch);
    h5io_write_f64(w, g, where, "best_val_acc", ts->best_val_acc);
    h5io_write_i64(w, g, where, "best_step", ts->best_step);
    h5io_write_f64(w, g, where, "prev_val_acc", ts->prev_val_acc);   /* -inf is a valid IEEE double */
    h5io_write_i64(w, g, where, "non_increase_count", ts->non_increase_count);
    h5io_write_f64(w, g, where, "running_loss_sum", ts->running_loss_sum);
    h5io_write_i64(w, g, where, "running_loss_count", ts->running_loss_count);
    h5io_write_f64(w, g, where, "elapsed_s", ts->elapsed_s);
    char reason[sizeof ts->stop_reason];
    snprintf(reason, sizeof reason, "%s", ts->stop_reason);   /* bounded even if not terminated */
    h5io_write_str(w, g, where, "stop_reason", reason);
    h5io_group_close(g);
}

static void write_history(H5ioWriter *w, hid_t fid, const History *h) {
    hid_t g = h5io_group_create(w, fid, "history", "/history", 0);
    const hsize_t n[1] = {(hsize_t)(h->count > 0 ? h->count : 0)};
    const char *where = "/history";
    h5io_write_dataset(w, g, where, "step", H5IO_LONG, 1, n, h->step, 1);
    h5io_write_dataset(w, g, where, "epoch", H5IO_LONG, 1, n, h->epoch, 1);
    h5io_write_dataset(w, g, where, "train_loss", H5IO_F64, 1, n, h->train_loss, 1);
    h5io_write_dataset(w, g, where, "val_acc", H5IO_F64, 1, n, h->val_acc, 1);
    h5io_write_dataset(w, g, where, "time_s", H5IO_F64, 1, n, h->time_s, 1);
    h5io_group_close(g);
}

static void write_root(H5ioWriter *w, hid_t fid) {
    h5io_write_str(w, fid, "/", "format", CHECKPOINT_FORMAT);
    h5io_write_i64(w, fid, "/", "format_version", CHECKPOINT_FORMAT_VERSION);
    h5io_write_str(w, fid, "/", "program_version", RESNET_VERSION);
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
    h5io_write_str(w, fid, "/", "created", created);
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

typedef struct {
    const Model *m;
    const Optimizer *opt;
    const TrainState *ts;
    const History *h;
    const Settings *settings;
    const Ema *ema;
} Contents;

static void write_contents(H5ioWriter *w, hid_t fid, void *data) {
    const Contents *c = data;
    write_root(w, fid);
    hid_t g = h5io_group_create(w, fid, "config", "/config", 1);
    for (int i = 0; c->settings && i < c->settings->count; i++) write_setting(w, g, &c->settings->items[i]);
    h5io_group_close(g);
    write_model(w, fid, c->m);
    write_reference(w, fid, c->m);
    if (c->opt) write_optimizer(w, fid, c->m, c->opt);
    if (c->ema) write_ema(w, fid, c->m, c->ema);
    if (c->ts) write_train(w, fid, c->ts);
    if (c->h) write_history(w, fid, c->h);
}

int checkpoint_write_ema(const char *path, const Model *m, const Optimizer *opt, const TrainState *ts,
                         const History *h, const Settings *settings, const Ema *ema) {
    if (opt && opt->n != m->num_params)
        return rn_error("%s: optimizer holds state for %zu parameters, the model has %zu", path, opt->n,
                        m->num_params);
    if (ema && ema->n != m->num_params)
        return rn_error("%s: the moving average holds %zu parameters, the model has %zu", path, ema->n,
                        m->num_params);
    if (check_finite_state(path, m, opt)) return -1;
    const size_t bad = ema ? rn_first_nonfinite(ema->params, ema->n) : 0;
    if (ema && bad < ema->n)
        return rn_error("%s: not written: /ema/%s holds a non-finite value (%g)", path,
                        tensor_at(m->param_info, m->num_param_tensors, bad), (double)ema->params[bad]);
    Contents c = {m, opt, ts, h, settings, ema};
    return h5io_write_file(path, write_contents, &c);
}

int checkpoint_write(const char *path, const Model *m, const Optimizer *opt, const TrainState *ts,
                     const History *h, const Settings *settings) {
    return checkpoint_write_ema(path, m, opt, ts, h, settings, NULL);
}

/* ---- reading ---------------------------------------------------------------------------------------- */

/* Opens the checkpoint (from r->image, else from the file read whole into memory) and checks that it
 * is one this program reads. The file id, or -1 with rn_error. */
static hid_t open_checkpoint(H5ioReader *r) {
    hid_t fid = h5io_open(r);
    if (fid < 0) return -1;
    /* format_version is read before the format string: it says whether strings may be variable-length
     * (read through the global heap) */
    char format[64];
    if (!h5io_has_attr(r, fid, "/", "format")) {
        h5io_fail(r, "not a resnet-mpi checkpoint (no format attribute)");
    } else {
        const int has_version = h5io_has_attr(r, fid, "/", "format_version");
        const int64_t version = has_version ? h5io_read_i64(r, fid, "/", "format_version") : 1;
        r->fixed_strings = version >= 2;
        h5io_read_str(r, fid, "/", "format", format, sizeof format);
        if (!r->failed && strcmp(format, CHECKPOINT_FORMAT) != 0)
            h5io_fail(r, "not a resnet-mpi checkpoint (format is '%s')", format);
        if (!r->failed && !has_version) h5io_fail(r, "missing attribute format_version of /");
        /* version 1 (no checksums) is read as before: its files still load, unverified */
        if (!r->failed && (version < 1 || version > CHECKPOINT_FORMAT_VERSION))
            h5io_fail(r, "format_version %" PRId64 ", this program reads 1 to %d", version, CHECKPOINT_FORMAT_VERSION);
    }
    if (r->failed) {
        h5io_file_close(fid);
        return -1;
    }
    return fid;
}

/* ---- /config ---- */

static int put_setting(H5ioReader *r, const char *name, const char *value, void *data) {
    if (!settings_put(data, name, value)) return 0;
    char msg[512];
    snprintf(msg, sizeof msg, "%s", rn_last_error());
    h5io_fail(r, "/config: %s", msg);
    return 1;
}

/* The settings come back in the order they were written. */
static void read_config(H5ioReader *r, hid_t fid, Settings *settings) {
    settings->count = 0;
    hid_t g = h5io_group_open(r, fid, "/", "config");
    if (g < 0) return;
    h5io_attrs_as_text(r, g, "/config", sizeof settings->items[0].value, put_setting, settings);
    h5io_group_close(g);
}

static int read_settings(H5ioReader *r, Settings *settings) {
    hid_t fid = open_checkpoint(r);
    if (fid < 0) return -1;
    read_config(r, fid, settings);
    h5io_file_close(fid);
    return r->failed ? -1 : 0;
}

int checkpoint_read_settings(const char *path, Settings *settings) {
    H5ioReader r = {.path = path};
    return read_settings(&r, settings);
}

int checkpoint_image_read_settings(const char *name, const void *image, size_t size, Settings *settings) {
    H5ioReader r = {.path = name, .image = image, .image_size = size};
    return read_settings(&r, settings);
}

/* ---- tensors ---- */

static int ends_with(const char *s, const char *tail) {
    const size_t n = strlen(s), k = strlen(tail);
    return n >= k && strcmp(s + n - k, tail) == 0;
}

/* A NaN or Inf would poison every step after a resume (and an evaluation would quietly score a broken
 * model), and a variance below zero has no square root: such a file is refused by name. */
static void check_tensor_values(H5ioReader *r, const char *where, const TensorInfo *ti, const float *x) {
    const size_t bad = rn_first_nonfinite(x, ti->numel);
    if (bad < ti->numel) {
        h5io_fail(r, "%s/%s holds a non-finite value (%g at index %zu)", where, ti->name, (double)x[bad], bad);
        return;
    }
    if (strcmp(where, "/optimizer/exp_avg_sq") != 0 && !ends_with(ti->name, ".running_var")) return;
    for (size_t i = 0; i < ti->numel; i++)
        if (x[i] < 0) {
            h5io_fail(r, "%s/%s holds a negative value (%g at index %zu); a variance is at least 0", where, ti->name,
                  (double)x[i], i);
            return;
        }
}

/* Reads a float tensor whose shape must be the table's. */
static void read_tensor(H5ioReader *r, hid_t loc, const char *where, const TensorInfo *ti, float *base) {
    hsize_t want[4];
    for (int i = 0; i < ti->ndim && i < 4; i++) want[i] = (hsize_t)ti->shape[i];
    if (h5io_read_floats(r, loc, where, ti->name, ti->ndim, want, base + ti->offset) == 0)
        check_tensor_values(r, where, ti, base + ti->offset);
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

static int extra_tensor(H5ioReader *r, const char *name, void *data) {
    const Model *m = data;
    if (model_has(m, name)) return 0;
    h5io_fail(r, "/model/%.200s is not a tensor of this model (%s, depth %d)", name,
              m->cfg.arch == ARCH_PAPER ? "paper" : "seed", m->cfg.depth);
    return 1;
}

/* Every entry of /model must be one of the model's: a file of another architecture is refused even
 * when it happens to hold all of this model's names. */
static void check_no_extras(H5ioReader *r, hid_t g, const Model *m) {
    h5io_each_link(r, g, "/model", extra_tensor, (void *)m);
}

static void read_model(H5ioReader *r, hid_t fid, const Model *m, float *params, float *buffers, int64_t *tracked) {
    hid_t g = h5io_group_open(r, fid, "/", "model");
    if (g < 0) return;
    for (int i = 0; i < m->num_param_tensors; i++) read_tensor(r, g, "/model", &m->param_info[i], params);
    for (int i = 0; i < m->num_buffer_tensors; i++) read_tensor(r, g, "/model", &m->buffer_info[i], buffers);
    int first = 1;
    for (int i = 0; i < m->num_buffer_tensors; i++) {
        char name[96];
        if (!bn_prefix(m->buffer_info[i].name, name, sizeof name - 24)) continue;
        strcat(name, ".num_batches_tracked");
        const int64_t v = h5io_read_scalar_i64(r, g, "/model", name);
        if (v < 0) h5io_fail(r, "/model/%s is %" PRId64 ", expected at least 0", name, v);
        /* the model keeps one counter for all BNs; the files we write hold the same value everywhere */
        if (first) *tracked = v;
        first = 0;
    }
    check_no_extras(r, g, m);
    h5io_group_close(g);
}

typedef struct {
    const Model *m;
    const char *where;
} ReferenceGroup;

static int extra_reference(H5ioReader *r, const char *name, void *data) {
    const ReferenceGroup *rg = data;
    if (model_find_reference(rg->m, name)) return 0;
    h5io_fail(r, "%s/%.200s is not a BN statistic of this model", rg->where, name);
    return 1;
}

/* The group "reference" of parent (at parent_where; where: the group's path, /reference or /ema/reference),
 * when the file has it: every BN module's [applications, 2, channels] mean and variance, the variances at
 * least 0, and nothing else. *valid: whether the file had them. */
static void read_reference_group(H5ioReader *r, hid_t parent, const char *parent_where, const char *where,
                                 const Model *m, float *reference, int *valid) {
    *valid = 0;
    if (r->failed || !h5io_has_link(parent, "reference")) return;
    hid_t g = h5io_group_open(r, parent, parent_where, "reference");
    if (g < 0) return;
    for (int i = 0; i < m->num_reference_tensors && !r->failed; i++) {
        const TensorInfo *ti = &m->reference_info[i];
        read_tensor(r, g, where, ti, reference);
        const int apps = ti->shape[0], c = ti->shape[2];
        for (int a = 0; a < apps && !r->failed; a++)
            for (int ch = 0; ch < c; ch++)
                if (reference[ti->offset + (size_t)(2 * a + 1) * c + ch] < 0) {
                    h5io_fail(r, "%s/%s holds a negative variance (application %d, channel %d)", where, ti->name, a,
                              ch);
                    break;
                }
    }
    ReferenceGroup rg = {m, where};
    h5io_each_link(r, g, where, extra_reference, &rg);
    h5io_group_close(g);
    *valid = !r->failed;
}

/* /reference: the statistics of /model's parameters */
static void read_reference(H5ioReader *r, hid_t fid, const Model *m, float *reference, int *valid) {
    read_reference_group(r, fid, "/", "/reference", m, reference, valid);
}

/* Range checks of single values read from /train and /optimizer: a file edited by hand or written by a
 * broken program is refused by the attribute's name rather than steering the step loop off its tables. */
static void check_i64(H5ioReader *r, const char *where, const char *name, int64_t v, int64_t lo, int64_t hi) {
    if (!r->failed && (v < lo || v > hi))
        h5io_fail(r, "attribute %s of %s is %" PRId64 ", expected %" PRId64 "..%" PRId64, name, where, v, lo, hi);
}

/* lo <= v < hi (or <= hi when closed); always finite. */
static void check_f64(H5ioReader *r, const char *where, const char *name, double v, double lo, double hi, int closed) {
    if (!r->failed && !(isfinite(v) && v >= lo && (closed ? v <= hi : v < hi)))
        h5io_fail(r, "attribute %s of %s is %g, expected a number in [%g, %g%s", name, where, v, lo, hi,
              closed ? "]" : ")");
}

/* The hyperparameters beside the state: not used to resume (/config is), but a file whose values could
 * not have come from a run is not trusted for its tensors either. */
static void check_optimizer_settings(H5ioReader *r, hid_t g, OptimizerKind kind) {
    const char *where = "/optimizer";
    const double lr = h5io_read_f64(r, g, where, "lr");
    check_f64(r, where, "lr", lr, 0, HUGE_VAL, 0);
    if (!r->failed && lr == 0) h5io_fail(r, "attribute lr of /optimizer is 0, expected a number above 0");
    check_f64(r, where, "weight_decay", h5io_read_f64(r, g, where, "weight_decay"), 0, HUGE_VAL, 0);
    if (kind == OPT_SGD) {
        check_f64(r, where, "momentum", h5io_read_f64(r, g, where, "momentum"), 0, 1, 0);
        check_i64(r, where, "nesterov", h5io_read_i64(r, g, where, "nesterov"), 0, 1);
        return;
    }
    check_f64(r, where, "beta1", h5io_read_f64(r, g, where, "beta1"), 0, 1, 0);
    check_f64(r, where, "beta2", h5io_read_f64(r, g, where, "beta2"), 0, 1, 0);
    const double eps = h5io_read_f64(r, g, where, "eps");
    check_f64(r, where, "eps", eps, 0, HUGE_VAL, 0);
    if (!r->failed && eps == 0) h5io_fail(r, "attribute eps of /optimizer is 0, expected a number above 0");
}

static void read_optimizer(H5ioReader *r, hid_t fid, const Model *m, const Optimizer *opt, float *state, long *step) {
    hid_t g = h5io_group_open(r, fid, "/", "optimizer");
    if (g < 0) return;
    char type[32];
    h5io_read_str(r, g, "/optimizer", "type", type, sizeof type);
    const char *mine = optim_name(opt->cfg.kind);
    if (!r->failed && strcmp(type, mine) != 0)
        h5io_fail(r, "optimizer state is for %s, this run uses %s", type, mine);
    *step = (long)h5io_read_i64(r, g, "/optimizer", "step");
    check_i64(r, "/optimizer", "step", *step, 0, CHECKPOINT_STEP_MAX);
    check_optimizer_settings(r, g, opt->cfg.kind);
    if (!r->failed && opt->n != m->num_params)
        h5io_fail(r, "the optimizer holds %zu parameters, the model %zu", opt->n, m->num_params);
    static const char *const adam_groups[] = {"exp_avg", "exp_avg_sq"};
    static const char *const sgd_groups[] = {"momentum_buffer"};
    const int adam = opt->cfg.kind != OPT_SGD;
    for (int k = 0; k < (adam ? 2 : 1) && !r->failed; k++) {
        const char *name = adam ? adam_groups[k] : sgd_groups[k];
        char where[64];
        snprintf(where, sizeof where, "/optimizer/%s", name);
        hid_t sub = h5io_group_open(r, g, "/optimizer", name);
        for (int i = 0; i < m->num_param_tensors && sub >= 0; i++)
            read_tensor(r, sub, where, &m->param_info[i], state + (size_t)k * opt->n);
        h5io_group_close(sub);
    }
    h5io_group_close(g);
}

/* ---- /ema ---- */

/* What /ema holds, read into scratch memory like the rest of the file. */
typedef struct {
    int present;
    double decay;
    long n_averaged;
    float *params;    /* m->num_params floats, when present */
    float *reference; /* m->num_reference_floats: /ema/reference, when reference_valid */
    int reference_valid;
} EmaRead;

static int ema_tensor(H5ioReader *r, const char *name, void *data) {
    const Model *m = data;
    if (strcmp(name, "reference") == 0) return 0;   /* the average's BN statistics, read on their own */
    for (int i = 0; i < m->num_param_tensors; i++)
        if (strcmp(m->param_info[i].name, name) == 0) return 0;
    h5io_fail(r, "/ema/%.200s is not a parameter of this model", name);
    return 1;
}

/* /config's ema (--ema DECAY): 0 in files written before the flag existed. */
static double config_ema(H5ioReader *r, hid_t fid) {
    hid_t g = h5io_group_open(r, fid, "/", "config");
    if (g < 0) return 0;
    const double v = h5io_has_attr(r, g, "/config", "ema") ? h5io_read_f64(r, g, "/config", "ema") : 0;
    h5io_group_close(g);
    check_f64(r, "/config", "ema", v, 0, 1, 0);
    return v;
}

/* A run with --ema writes /ema into every checkpoint, so the group is there exactly when /config's ema
 * is above 0; its decay is that setting. */
static void read_ema(H5ioReader *r, hid_t fid, const Model *m, EmaRead *out) {
    const double decay = config_ema(r, fid);
    if (r->failed) return;
    out->present = h5io_has_link(fid, "ema") > 0;
    if (!out->present && decay > 0) h5io_fail(r, "missing group /ema (the moving average; /config says ema %g)", decay);
    if (out->present && decay == 0) h5io_fail(r, "/ema is present, but /config says ema 0 (no moving average)");
    if (r->failed || !out->present) return;
    hid_t g = h5io_group_open(r, fid, "/", "ema");
    if (g < 0) return;
    out->decay = h5io_read_f64(r, g, "/ema", "decay");
    char got[32], want[32];
    if (!r->failed && out->decay != decay)
        h5io_fail(r, "attribute decay of /ema is %s, but /config says ema %s",
                  rn_format_double(got, sizeof got, out->decay), rn_format_double(want, sizeof want, decay));
    out->n_averaged = (long)h5io_read_i64(r, g, "/ema", "n_averaged");
    check_i64(r, "/ema", "n_averaged", out->n_averaged, 0, CHECKPOINT_STEP_MAX);
    out->params = malloc(sizeof(float) * (m->num_params ? m->num_params : 1));
    if (!out->params) h5io_fail(r, "out of memory");
    for (int i = 0; i < m->num_param_tensors && !r->failed; i++)
        read_tensor(r, g, "/ema", &m->param_info[i], out->params);
    out->reference = malloc(sizeof(float) * (m->num_reference_floats ? m->num_reference_floats : 1));
    if (!out->reference) h5io_fail(r, "out of memory");
    read_reference_group(r, g, "/ema", "/ema/reference", m, out->reference, &out->reference_valid);
    h5io_each_link(r, g, "/ema", ema_tensor, (void *)m);
    h5io_group_close(g);
}

/* After the whole file was read: what the caller asked of /ema, and its count against the steps. */
static void check_ema_read(H5ioReader *r, const Model *m, const Ema *want, const EmaRead *got, const TrainState *train) {
    if (r->failed) return;
    if (want && !got->present) h5io_fail(r, "no moving average (/ema): the run was trained without --ema");
    else if (want && want->n != m->num_params)
        h5io_fail(r, "the moving average holds %zu parameters, the model %zu", want->n, m->num_params);
    else if (got->present && train && got->n_averaged > train->step)
        h5io_fail(r, "attribute n_averaged of /ema is %ld, but /train says %ld steps were taken", got->n_averaged,
                  train->step);
}

/* Every epoch took at least one step and the current one batch_in_epoch steps, so step bounds the
 * counters; the step loop indexes the epoch order with batch_in_epoch and the metrics log prints step. */
static void check_train_state(H5ioReader *r, const TrainState *ts) {
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
            h5io_fail(r, "attribute stop_reason of /train holds control characters");
}

static void read_train(H5ioReader *r, hid_t fid, TrainState *ts) {
    hid_t g = h5io_group_open(r, fid, "/", "train");
    if (g < 0) return;
    const char *where = "/train";
    memset(ts, 0, sizeof *ts);
    ts->epoch = (long)h5io_read_i64(r, g, where, "epoch");
    ts->step = (long)h5io_read_i64(r, g, where, "step");
    ts->batch_in_epoch = (long)h5io_read_i64(r, g, where, "batch_in_epoch");
    ts->best_val_acc = h5io_read_f64(r, g, where, "best_val_acc");
    ts->best_step = (long)h5io_read_i64(r, g, where, "best_step");
    ts->prev_val_acc = h5io_read_f64(r, g, where, "prev_val_acc");
    ts->non_increase_count = h5io_read_int(r, g, where, "non_increase_count");
    ts->running_loss_sum = h5io_read_f64(r, g, where, "running_loss_sum");
    ts->running_loss_count = h5io_read_int(r, g, where, "running_loss_count");
    ts->elapsed_s = h5io_read_f64(r, g, where, "elapsed_s");
    h5io_read_str(r, g, where, "stop_reason", ts->stop_reason, sizeof ts->stop_reason);
    h5io_group_close(g);
    check_train_state(r, ts);
}

static const char *const history_columns[] = {"step", "epoch", "train_loss", "val_acc", "time_s"};
#define HISTORY_COLUMNS 5

/* Every column must have as many entries as the others; the one that differs from the most common length
 * is the one named (a single lengthened column is that column's fault, not the next one read). */
static hssize_t history_length(H5ioReader *r, hid_t g) {
    hssize_t len[HISTORY_COLUMNS];
    for (int i = 0; i < HISTORY_COLUMNS; i++)
        if ((len[i] = h5io_dataset_points(r, g, "/history", history_columns[i])) < 0 && !r->failed)
            h5io_fail(r, "/history/%s has no length", history_columns[i]);
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
        h5io_fail(r, "/history/%s has %lld entries, the other columns %lld", history_columns[odd], (long long)len[odd],
              (long long)len[common == odd ? (odd + 1) % HISTORY_COLUMNS : common]);
    return r->failed ? -1 : len[0];
}

static void read_history(H5ioReader *r, hid_t fid, History *out) {
    memset(out, 0, sizeof *out);
    hid_t g = h5io_group_open(r, fid, "/", "history");
    if (g < 0) return;
    hssize_t n = history_length(r, g);
    out->step = h5io_read_column(r, g, "/history", "step", H5IO_LONG, &n);
    out->epoch = h5io_read_column(r, g, "/history", "epoch", H5IO_LONG, &n);
    out->train_loss = h5io_read_column(r, g, "/history", "train_loss", H5IO_F64, &n);
    out->val_acc = h5io_read_column(r, g, "/history", "val_acc", H5IO_F64, &n);
    out->time_s = h5io_read_column(r, g, "/history", "time_s", H5IO_F64, &n);
    h5io_group_close(g);
    if (r->failed) {
        history_free(out);
        return;
    }
    out->count = out->capacity = (int)n;
}

static int read_checkpoint(H5ioReader *rd, Model *m, Optimizer *opt, TrainState *ts, History *h, Ema *ema) {
    H5ioReader r = *rd;
    hid_t fid = open_checkpoint(&r);
    if (fid < 0) return -1;

    float *params = malloc(sizeof(float) * (m->num_params ? m->num_params : 1));
    float *buffers = malloc(sizeof(float) * (m->num_buffer_floats ? m->num_buffer_floats : 1));
    float *reference = malloc(sizeof(float) * (m->num_reference_floats ? m->num_reference_floats : 1));
    int reference_valid = 0;
    const size_t state_floats = opt ? optim_state_floats(opt) : 0;
    float *state = malloc(sizeof(float) * (state_floats ? state_floats : 1));
    int64_t tracked = m->bn_batches_tracked;
    long step = 0;
    TrainState train;
    History history = {0};
    EmaRead averaged = {0};
    if (!params || !buffers || !reference || !state) h5io_fail(&r, "out of memory");

    read_model(&r, fid, m, params, buffers, &tracked);
    read_reference(&r, fid, m, reference, &reference_valid);
    if (opt) read_optimizer(&r, fid, m, opt, state, &step);
    read_ema(&r, fid, m, &averaged);
    if (ts) read_train(&r, fid, &train);
    if (h) read_history(&r, fid, &history);
    h5io_file_close(fid);
    /* Adam's bias correction runs on the optimizer's count: it must be the run's */
    if (!r.failed && opt && ts && step != train.step)
        h5io_fail(&r, "attribute step of /optimizer is %ld, but /train says %ld steps were taken", step, train.step);
    check_ema_read(&r, m, ema, &averaged, ts ? &train : NULL);
    if (!r.failed && ema && averaged.reference_valid && ema->reference_floats != m->num_reference_floats &&
        ema_reserve_reference(ema, m->num_reference_floats))
        h5io_fail(&r, "out of memory");

    if (!r.failed) {
        /* the whole file checked out: only now is anything of the caller's replaced */
        memcpy(m->params, params, sizeof(float) * m->num_params);
        if (m->num_buffer_floats) memcpy(m->buffers, buffers, sizeof(float) * m->num_buffer_floats);
        m->bn_batches_tracked = tracked;
        if (reference_valid && m->num_reference_floats)
            memcpy(m->reference, reference, sizeof(float) * m->num_reference_floats);
        m->reference_valid = reference_valid;
        if (opt) {
            if (state_floats) memcpy(opt->state, state, sizeof(float) * state_floats);
            opt->step = step;
        }
        if (ts) *ts = train;
        if (h) {
            history_free(h);
            *h = history;
        }
        if (ema) {
            memcpy(ema->params, averaged.params, sizeof(float) * m->num_params);
            ema->decay = averaged.decay;
            ema->n_averaged = averaged.n_averaged;
            ema->reference_valid = averaged.reference_valid;
            if (averaged.reference_valid && m->num_reference_floats)
                memcpy(ema->reference, averaged.reference, sizeof(float) * m->num_reference_floats);
        }
    } else {
        history_free(&history);
    }
    free(params);
    free(buffers);
    free(reference);
    free(state);
    free(averaged.params);
    free(averaged.reference);
    return r.failed ? -1 : 0;
}

int checkpoint_read(const char *path, Model *m, Optimizer *opt, TrainState *ts, History *h) {
    return checkpoint_read_ema(path, m, opt, ts, h, NULL);
}

int checkpoint_read_average(const char *path, Model *m, long *n_averaged) {
    Ema ema;
    if (ema_init(&ema, 0.5, m->params, m->num_params)) return -1;   /* the decay is the file's */
    const int rc = checkpoint_read_ema(path, m, NULL, NULL, NULL, &ema);
    if (rc == 0) {
        memcpy(m->params, ema.params, sizeof(float) * m->num_params);
        m->reference_valid = ema.reference_valid;
        if (ema.reference_valid && m->num_reference_floats)
            memcpy(m->reference, ema.reference, sizeof(float) * m->num_reference_floats);
        if (n_averaged) *n_averaged = ema.n_averaged;
    }
    ema_free(&ema);
    return rc;
}

int checkpoint_read_ema(const char *path, Model *m, Optimizer *opt, TrainState *ts, History *h, Ema *ema) {
    H5ioReader r = {.path = path};
    return read_checkpoint(&r, m, opt, ts, h, ema);
}

int checkpoint_image_read(const char *name, const void *image, size_t size, Model *m, Optimizer *opt,
                          TrainState *ts, History *h) {
    return checkpoint_image_read_ema(name, image, size, m, opt, ts, h, NULL);
}

int checkpoint_image_read_ema(const char *name, const void *image, size_t size, Model *m, Optimizer *opt,
                              TrainState *ts, History *h, Ema *ema) {
    H5ioReader r = {.path = name, .image = image, .image_size = size};
    return read_checkpoint(&r, m, opt, ts, h, ema);
}

/* ---- verification ----------------------------------------------------------------------------------- */

/* Every dataset and attribute read (every checksum verified), then /train/step for the caller choosing
 * among checkpoints. A file of format_version 1 has no checksums; its check only proves that it parses. */
static int verify(H5ioReader *r, long *step) {
    hid_t fid = open_checkpoint(r);
    if (fid < 0) return -1;
    h5io_verify_all(r, fid);
    if (!r->failed && step) {
        hid_t g = h5io_has_link(fid, "train") > 0 ? h5io_group_open(r, fid, "/", "train") : -1;
        *step = g >= 0 ? (long)h5io_read_i64(r, g, "/train", "step") : -1;
        h5io_group_close(g);
    }
    h5io_file_close(fid);
    return r->failed ? -1 : 0;
}

int checkpoint_verify(const char *path, long *step) {
    H5ioReader r = {.path = path};
    return verify(&r, step);
}

int checkpoint_image_verify(const char *name, const void *image, size_t size, long *step) {
    H5ioReader r = {.path = name, .image = image, .image_size = size};
    return verify(&r, step);
}
