/* HDF5 plumbing under checkpoint.c: see h5io.h. With checkpoint.c the only file that calls HDF5.
 *
 * Writing: the file is built in memory, written to a hidden temporary file beside the target, fsync'd
 * and renamed over the target, and the folder is fsync'd so that the rename itself is durable. An error
 * removes the temporary file.
 *
 * Reading: the file is read whole with read(2) and parsed from memory, after the one structure libhdf5
 * 1.10 trusts blindly (the global heap) has been checked here. */
#include "resnet/h5io.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "resnet/util.h"

/* The link information the iteration callbacks receive (renamed in HDF5 1.12). */
#if H5_VERS_MAJOR > 1 || (H5_VERS_MAJOR == 1 && H5_VERS_MINOR >= 12)
typedef H5L_info2_t LinkInfo;
#else
typedef H5L_info_t LinkInfo;
#endif

typedef struct { hid_t file, memory; size_t bytes; H5T_class_t cls; } ValueType;

static ValueType value_type(H5ioValue type) {
    switch (type) {
    case H5IO_F32: return (ValueType){H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, sizeof(float), H5T_FLOAT};
    case H5IO_F64: return (ValueType){H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, sizeof(double), H5T_FLOAT};
    case H5IO_I64: return (ValueType){H5T_STD_I64LE, H5T_NATIVE_INT64, sizeof(int64_t), H5T_INTEGER};
    case H5IO_LONG: break;
    }
    return (ValueType){H5T_STD_I64LE, H5T_NATIVE_LONG, sizeof(long), H5T_INTEGER};
}

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

/* "PATH: message" as the rn_error of a writer's or reader's first failure. */
static void record_failure(const char *path, int *failed, const char *fmt, va_list ap) {
    char msg[768];
    vsnprintf(msg, sizeof msg, fmt, ap);
    rn_error("%s: %s", path, msg);
    *failed = 1;
}

/* ---- writing ---------------------------------------------------------------------------------------- */

void h5io_write_fail(H5ioWriter *w, const char *fmt, ...) {
    if (w->failed) return;
    va_list ap;
    va_start(ap, fmt);
    record_failure(w->path, &w->failed, fmt, ap);
    va_end(ap);
}

static void wfail(H5ioWriter *w, const char *what) {
    if (w->failed) return;
    char cause[256];
    h5io_write_fail(w, "cannot write %s: %s", what, h5_cause(cause, sizeof cause));
}

/* Links and attributes are kept "compact", inside the group's object header, however many there are:
 * the header's checksum then covers them, and HDF5 1.10 never parses the "dense" storage (fractal heap
 * and B-trees), whose error paths crash the library on damaged input (a SEGV in H5G__dense_iterate). */
#define COMPACT_MAX 65535

static herr_t keep_compact(hid_t gcpl) {
    if (H5Pset_link_phase_change(gcpl, COMPACT_MAX, COMPACT_MAX) < 0) return -1;
    return H5Pset_attr_phase_change(gcpl, COMPACT_MAX, COMPACT_MAX);
}

hid_t h5io_group_create(H5ioWriter *w, hid_t parent, const char *name, const char *where, int ordered_attrs) {
    if (w->failed) return -1;
    hid_t gcpl = H5Pcreate(H5P_GROUP_CREATE);
    hid_t g = -1;
    if (gcpl >= 0 && H5Pset_obj_track_times(gcpl, 0) >= 0 && keep_compact(gcpl) >= 0 &&
        (!ordered_attrs || H5Pset_attr_creation_order(gcpl, H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED) >= 0))
        g = H5Gcreate2(parent, name, H5P_DEFAULT, gcpl, H5P_DEFAULT);
    if (gcpl >= 0) H5Pclose(gcpl);
    if (g < 0) wfail(w, where);
    return g;
}

void h5io_group_close(hid_t g) {
    if (g >= 0) H5Gclose(g);
}

static void wattr(H5ioWriter *w, hid_t loc, const char *where, const char *name, hid_t ftype, hid_t mtype,
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

static void wattr_scalar(H5ioWriter *w, hid_t loc, const char *where, const char *name, hid_t ftype, hid_t mtype,
                         const void *data) {
    if (w->failed) return;
    hid_t space = H5Screate(H5S_SCALAR);
    wattr(w, loc, where, name, ftype, mtype, space, data);
    H5Sclose(space);
}

void h5io_write_i64(H5ioWriter *w, hid_t loc, const char *where, const char *name, int64_t v) {
    wattr_scalar(w, loc, where, name, H5T_STD_I64LE, H5T_NATIVE_INT64, &v);
}

void h5io_write_u64(H5ioWriter *w, hid_t loc, const char *where, const char *name, uint64_t v) {
    wattr_scalar(w, loc, where, name, H5T_STD_U64LE, H5T_NATIVE_UINT64, &v);
}

void h5io_write_f64(H5ioWriter *w, hid_t loc, const char *where, const char *name, double v) {
    wattr_scalar(w, loc, where, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &v);
}

void h5io_write_str(H5ioWriter *w, hid_t loc, const char *where, const char *name, const char *s) {
    if (w->failed) return;
    const size_t n = strlen(s);
    hid_t t = string_type(n);
    /* an empty string is one NUL byte: a fixed-length type cannot be empty */
    wattr_scalar(w, loc, where, name, t, t, n ? s : "");
    H5Tclose(t);
}

/* A class name cannot contain a comma. */
void h5io_write_str_list(H5ioWriter *w, hid_t loc, const char *where, const char *name, const char *csv) {
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
        h5io_write_fail(w, "out of memory");
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

void h5io_write_dataset(H5ioWriter *w, hid_t loc, const char *where, const char *name, H5ioValue type, int ndim,
                        const hsize_t *dims, const void *data, int extendible) {
    if (w->failed) return;
    const ValueType vt = value_type(type);
    herr_t st = -1;
    hsize_t maxdims[1] = {H5S_UNLIMITED};
    /* extendible: chunked with an unlimited extent, so an empty one is a valid dataset and h5py users
     * can grow it */
    hid_t space = ndim == 0 ? H5Screate(H5S_SCALAR) : H5Screate_simple(ndim, dims, extendible ? maxdims : NULL);
    hid_t dcpl = wdcpl(ndim, dims, extendible);
    if (space >= 0 && dcpl >= 0) {
        hid_t d = H5Dcreate2(loc, name, vt.file, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
        if (d >= 0) {
            hssize_t points = H5Sget_simple_extent_npoints(space);
            st = points > 0 ? H5Dwrite(d, vt.memory, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) : 0;
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

/* The image of an open in-memory file, which is then closed. NULL after a failure. */
static void *take_image(H5ioWriter *w, hid_t fid, size_t *size) {
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

/* The whole file built in memory (HDF5's core driver, no backing store): HDF5 then never meets an I/O
 * error, which it handles badly (a file whose close failed stays open and crashes the library at
 * exit), and our own write(2) reports a full disk in plain words. A checkpoint is a few MB. */
static void *build_image(H5ioWriter *w, const char *name, H5ioBuild build, void *data, size_t *size) {
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
    build(w, fid, data);
    return take_image(w, fid, size);
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

/* tmp, fsync'd, renamed over path; the folder dir fsync'd after. 0, or -1 with rn_error (tmp removed). */
static int replace_file(const char *path, const char *dir, const char *tmp, const unsigned char *image,
                        size_t size) {
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0666);
    if (fd < 0) return rn_error("%s: cannot create: %s", path, strerror(errno));
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

int h5io_write_file(const char *path, H5ioBuild build, void *data) {
    h5_quiet();
    char dir[PATH_MAX], tmp[PATH_MAX + 64];
    const char *base;
    if (split_path(path, dir, sizeof dir, &base)) return rn_error("%s: not a file name", path);
    if ((size_t)snprintf(tmp, sizeof tmp, "%s/.%s.tmp.%ld", dir, base, (long)getpid()) >= sizeof tmp)
        return rn_error("%s: path too long", path);
    H5ioWriter w = {.path = path, .failed = 0};
    size_t size = 0;
    unsigned char *image = build_image(&w, tmp, build, data, &size);
    if (!image) return -1;
    const int rc = replace_file(path, dir, tmp, image, size);
    free(image);
    return rc;
}

/* ---- reading ---------------------------------------------------------------------------------------- */

void h5io_fail(H5ioReader *r, const char *fmt, ...) {
    if (r->failed) return;
    H5Eclear2(H5E_DEFAULT);
    va_list ap;
    va_start(ap, fmt);
    record_failure(r->path, &r->failed, fmt, ap);
    va_end(ap);
}

/* A failed HDF5 call on `what`. Damaged bytes say so in the same words wherever they are found;
 * anything else says what could not be read and why, or, for an object that would not open as `kind`
 * (not NULL), that it is something else by that name. */
static void fail_cause(H5ioReader *r, const char *what, const char *kind) {
    if (r->failed) return;
    char cause[256];
    h5_cause(cause, sizeof cause);
    if (!strcmp(cause, CORRUPT_CAUSE)) h5io_fail(r, "%s: %s", what, cause);
    else if (kind) h5io_fail(r, "%s is not a %s", what, kind);
    else h5io_fail(r, "cannot read %s: %s", what, cause);
}

void h5io_fail_h5(H5ioReader *r, const char *what) { fail_cause(r, what, NULL); }

static void fail_attr(H5ioReader *r, const char *where, const char *name) {
    char what[256];
    snprintf(what, sizeof what, "attribute %s of %s", name, where);
    h5io_fail_h5(r, what);
}

static void join_path(char *out, size_t size, const char *where, const char *name) {
    snprintf(out, size, "%s%s%s", where, strcmp(where, "/") ? "/" : "", name);
}

/* An existing child object of loc; a missing one is reported as `kind` ("group", "dataset"). */
static int rexists(H5ioReader *r, hid_t loc, const char *where, const char *name, const char *kind) {
    if (r->failed) return 0;
    char what[256];
    join_path(what, sizeof what, where, name);
    htri_t ex = H5Lexists(loc, name, H5P_DEFAULT);
    if (ex > 0) return 1;
    if (ex < 0) h5io_fail_h5(r, what);
    else h5io_fail(r, "missing %s %s", kind, what);
    return 0;
}

int h5io_has_link(hid_t loc, const char *name) { return H5Lexists(loc, name, H5P_DEFAULT); }

/* An existing child of loc opened by `open` as a `kind` ("group", "dataset"), or -1 (recorded) when it
 * is missing, damaged or something else. */
static hid_t open_child(H5ioReader *r, hid_t loc, const char *where, const char *name, const char *kind,
                        hid_t (*open)(hid_t, const char *, hid_t)) {
    if (!rexists(r, loc, where, name, kind)) return -1;
    hid_t id = open(loc, name, H5P_DEFAULT);
    if (id < 0) {
        char what[256];
        join_path(what, sizeof what, where, name);
        fail_cause(r, what, kind);
    }
    return id;
}

hid_t h5io_group_open(H5ioReader *r, hid_t loc, const char *where, const char *name) {
    return open_child(r, loc, where, name, "group", H5Gopen2);
}

int h5io_has_attr(H5ioReader *r, hid_t loc, const char *where, const char *name) {
    if (r->failed) return 0;
    const htri_t exists = H5Aexists(loc, name);
    if (exists < 0) fail_attr(r, where, name);
    return exists > 0;
}

/* An open scalar attribute of the given type class (H5T_NO_CLASS: any), or -1. */
static hid_t rattr(H5ioReader *r, hid_t loc, const char *where, const char *name, H5T_class_t want, const char *desc) {
    if (r->failed) return -1;
    char what[256];
    snprintf(what, sizeof what, "attribute %s of %s", name, where);
    const htri_t exists = H5Aexists(loc, name);
    if (exists <= 0) {
        if (exists < 0) h5io_fail_h5(r, what);
        else h5io_fail(r, "missing %s", what);
        return -1;
    }
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    if (a < 0) {
        h5io_fail_h5(r, what);
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
        h5io_fail(r, "attribute %s of %s is not %s", name, where, desc);
        H5Aclose(a);
        return -1;
    }
    return a;
}

/* A single number of class want (desc names it for messages) into *out, read as mtype. */
static void read_number(H5ioReader *r, hid_t loc, const char *where, const char *name, H5T_class_t want,
                        const char *desc, hid_t mtype, void *out) {
    hid_t a = rattr(r, loc, where, name, want, desc);
    if (a < 0) return;
    if (H5Aread(a, mtype, out) < 0) fail_attr(r, where, name);
    H5Aclose(a);
}

int64_t h5io_read_i64(H5ioReader *r, hid_t loc, const char *where, const char *name) {
    int64_t v = 0;
    read_number(r, loc, where, name, H5T_INTEGER, "an integer", H5T_NATIVE_INT64, &v);
    return v;
}

int h5io_read_int(H5ioReader *r, hid_t loc, const char *where, const char *name) {
    int64_t v = h5io_read_i64(r, loc, where, name);
    if (v < INT_MIN || v > INT_MAX) {
        h5io_fail(r, "attribute %s of %s is out of range: %" PRId64, name, where, v);
        return 0;
    }
    return (int)v;
}

double h5io_read_f64(H5ioReader *r, hid_t loc, const char *where, const char *name) {
    double v = 0;
    read_number(r, loc, where, name, H5T_FLOAT, "a number", H5T_NATIVE_DOUBLE, &v);
    return v;
}

#define ATTR_MAX_BYTES ((size_t)1 << 20)

/* A memory type for reading the strings of ftype. */
static hid_t string_memory_type(hid_t ftype, int vlen, size_t fixed) {
    hid_t mtype = H5Tcopy(H5T_C_S1);
    if (mtype >= 0 && (H5Tset_size(mtype, vlen ? H5T_VARIABLE : fixed + 1) < 0 ||
                       H5Tset_strpad(mtype, H5T_STR_NULLTERM) < 0 || H5Tset_cset(mtype, H5Tget_cset(ftype)) < 0)) {
        H5Tclose(mtype);
        return -1;
    }
    return mtype;
}

/* The n strings read into buf, joined by sep into out; variable-length ones given back to HDF5. */
static int join_strings(void *buf, hssize_t n, int vlen, size_t fixed, char *out, size_t size, const char *sep,
                        char *why, size_t why_size) {
    size_t used = 0;
    int rc = 0;
    for (hssize_t i = 0; i < n; i++) {
        const char *s = vlen ? ((char **)buf)[i] : (char *)buf + (size_t)i * (fixed + 1);
        if (!s) s = "";
        const size_t need = strlen(s) + (i ? strlen(sep) : 0);
        if (used + need >= size) {
            snprintf(why, why_size, "longer than %zu characters", size - 1);
            rc = -1;
        } else {
            used += (size_t)snprintf(out + used, size - used, "%s%s", i ? sep : "", s);
        }
        if (vlen && ((char **)buf)[i]) H5free_memory(((char **)buf)[i]);
    }
    return rc;
}

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
    const int vlen = H5Tis_variable_str(ftype) > 0;
    const size_t fixed = vlen ? 0 : H5Tget_size(ftype);
    /* variable-length strings live in the global heap, which no checksum covers and whose parser in
     * libhdf5 1.10 crashes on damaged input: only format_version 1 wrote them */
    if (vlen && !allow_vlen) {
        snprintf(why, why_size, "a variable-length string, which this format version does not use");
        goto done;
    }
    /* an attribute lives in an object header (64 KiB a message): a larger claim is damage, and memory
     * is not sized by it */
    if ((size_t)n > ATTR_MAX_BYTES || fixed > ATTR_MAX_BYTES / ((size_t)n + 1)) {
        snprintf(why, why_size, "%lld strings of %zu bytes: more than an attribute holds", (long long)n, fixed);
        goto done;
    }
    if ((mtype = string_memory_type(ftype, vlen, fixed)) < 0) {
        snprintf(why, why_size, "unreadable string type");
        goto done;
    }
    void *buf = calloc(n ? (size_t)n : 1, vlen ? sizeof(char *) : fixed + 1);
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
    rc = join_strings(buf, n, vlen, fixed, out, size, sep, why, why_size);
    free(buf);
done:
    if (mtype >= 0) H5Tclose(mtype);
    if (space >= 0) H5Sclose(space);
    if (ftype >= 0) H5Tclose(ftype);
    return rc;
}

void h5io_read_str(H5ioReader *r, hid_t loc, const char *where, const char *name, char *out, size_t size) {
    out[0] = '\0';
    hid_t a = rattr(r, loc, where, name, H5T_STRING, "a string");
    if (a < 0) return;
    char why[160];
    if (string_attr_text(a, !r->fixed_strings, out, size, ",", why, sizeof why))
        h5io_fail(r, "attribute %s of %s: %s", name, where, why);
    H5Aclose(a);
}

/* A number attribute as text: 0, or -1 with the cause in why. */
static int number_attr_text(hid_t a, hid_t t, H5T_class_t cls, char *value, size_t size, char *why, size_t why_size) {
    int rc;
    if (cls == H5T_INTEGER && H5Tget_sign(t) == H5T_SGN_NONE) {
        uint64_t v;
        if ((rc = H5Aread(a, H5T_NATIVE_UINT64, &v) < 0 ? -1 : 0) == 0) snprintf(value, size, "%" PRIu64, v);
    } else if (cls == H5T_INTEGER) {
        int64_t v;
        if ((rc = H5Aread(a, H5T_NATIVE_INT64, &v) < 0 ? -1 : 0) == 0) snprintf(value, size, "%" PRId64, v);
    } else {
        double v;
        if ((rc = H5Aread(a, H5T_NATIVE_DOUBLE, &v) < 0 ? -1 : 0) == 0) rn_format_double(value, size, v);
    }
    if (rc) h5_cause(why, why_size);
    return rc;
}

typedef struct {
    H5ioReader *r;
    const char *where;
    size_t value_size;
    H5ioAttrText fn;
    void *data;
} TextWalk;

static herr_t attr_text(hid_t loc, const char *name, const H5A_info_t *info, void *data) {
    (void)info;
    TextWalk *tw = data;
    H5ioReader *r = tw->r;
    char value[4096], why[160] = "";
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    if (a < 0) {
        fail_attr(r, tw->where, name);
        return -1;
    }
    hid_t t = H5Aget_type(a), s = H5Aget_space(a);
    const H5T_class_t cls = t >= 0 ? H5Tget_class(t) : H5T_NO_CLASS;
    const hssize_t points = s >= 0 ? H5Sget_simple_extent_npoints(s) : -1;
    int rc = -1;
    if (cls == H5T_STRING)
        rc = string_attr_text(a, !r->fixed_strings, value, tw->value_size, ",", why, sizeof why);
    else if ((cls == H5T_INTEGER || cls == H5T_FLOAT) && points == 1)
        rc = number_attr_text(a, t, cls, value, tw->value_size, why, sizeof why);
    else
        snprintf(why, sizeof why, "not a string or a single number");
    if (t >= 0) H5Tclose(t);
    if (s >= 0) H5Sclose(s);
    H5Aclose(a);
    if (rc) {
        h5io_fail(r, "%s attribute %s: %s", tw->where, name, why);
        return -1;
    }
    return tw->fn(r, name, value, tw->data) ? -1 : 0;
}

void h5io_attrs_as_text(H5ioReader *r, hid_t obj, const char *where, size_t value_size, H5ioAttrText fn,
                        void *data) {
    if (r->failed) return;
    /* creation order when the object tracks it: the values come back as they were written */
    H5_index_t index = H5_INDEX_NAME;
    hid_t ocpl = H5Gget_create_plist(obj);
    unsigned flags = 0;
    if (ocpl >= 0 && H5Pget_attr_creation_order(ocpl, &flags) >= 0 && (flags & H5P_CRT_ORDER_INDEXED))
        index = H5_INDEX_CRT_ORDER;
    if (ocpl >= 0) H5Pclose(ocpl);
    TextWalk tw = {r, where, value_size < 4096 ? value_size : 4096, fn, data};
    hsize_t idx = 0;
    /* native order: in the creation-order index that is creation order, and HDF5 walks its B-tree
     * rather than building a sorted table first (see h5io_each_link) */
    if (H5Aiterate2(obj, index, H5_ITER_NATIVE, &idx, attr_text, &tw) < 0) h5io_fail_h5(r, where);
}

typedef struct {
    H5ioReader *r;
    H5ioLink fn;
    void *data;
} LinkWalk;

static herr_t each_link(hid_t g, const char *name, const LinkInfo *info, void *data) {
    (void)g;
    (void)info;
    LinkWalk *lw = data;
    return lw->fn(lw->r, name, lw->data) ? 1 : 0;
}

void h5io_each_link(H5ioReader *r, hid_t g, const char *where, H5ioLink fn, void *data) {
    if (r->failed) return;
    LinkWalk lw = {r, fn, data};
    hsize_t idx = 0;
    /* native order: any other makes HDF5 build a table of the links first, whose error path frees
     * entries it never filled when the group's storage is damaged */
    if (H5Literate(g, H5_INDEX_NAME, H5_ITER_NATIVE, &idx, each_link, &lw) < 0) h5io_fail_h5(r, where);
}

/* ---- datasets ---- */

static hid_t rdataset(H5ioReader *r, hid_t loc, const char *where, const char *name) {
    return open_child(r, loc, where, name, "dataset", H5Dopen2);
}

int h5io_read_floats(H5ioReader *r, hid_t loc, const char *where, const char *name, int ndim, const hsize_t *want,
                     float *out) {
    hid_t d = rdataset(r, loc, where, name);
    if (d < 0) return -1;
    hid_t s = H5Dget_space(d), t = H5Dget_type(d);
    hsize_t dims[H5S_MAX_RANK];
    const int got = s >= 0 ? H5Sget_simple_extent_ndims(s) : -1;
    const int rank_ok = got >= 0 && got <= H5S_MAX_RANK;
    if (rank_ok) H5Sget_simple_extent_dims(s, dims, NULL);
    int same = rank_ok && got == ndim;
    for (int i = 0; same && i < got; i++) same = dims[i] == want[i];
    char what[256];
    join_path(what, sizeof what, where, name);
    int rc = -1;
    if (got < 0) {
        h5io_fail_h5(r, what);
    } else if (!same) {
        char shape[96], expected[96];
        format_shape(shape, sizeof shape, rank_ok ? got : 0, dims);
        format_shape(expected, sizeof expected, ndim, want);
        h5io_fail(r, "%s/%s has shape %s, expected %s", where, name, shape, expected);
    } else if (H5Tget_class(t) != H5T_FLOAT) {
        h5io_fail(r, "%s/%s is not floating point", where, name);
    } else if (H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, out) < 0) {
        h5io_fail_h5(r, what);
    } else {
        rc = 0;
    }
    if (t >= 0) H5Tclose(t);
    if (s >= 0) H5Sclose(s);
    H5Dclose(d);
    return rc;
}

int64_t h5io_read_scalar_i64(H5ioReader *r, hid_t loc, const char *where, const char *name) {
    int64_t v = 0;
    hid_t d = rdataset(r, loc, where, name);
    if (d < 0) return 0;
    hid_t s = H5Dget_space(d), t = H5Dget_type(d);
    if (s < 0 || t < 0 || H5Sget_simple_extent_npoints(s) != 1 || H5Tget_class(t) != H5T_INTEGER)
        h5io_fail(r, "%s/%s is not a single integer", where, name);
    else if (H5Dread(d, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, &v) < 0) {
        char what[256];
        join_path(what, sizeof what, where, name);
        h5io_fail_h5(r, what);
    }
    if (t >= 0) H5Tclose(t);
    if (s >= 0) H5Sclose(s);
    H5Dclose(d);
    return v;
}

hssize_t h5io_dataset_points(H5ioReader *r, hid_t loc, const char *where, const char *name) {
    hid_t d = rdataset(r, loc, where, name);
    if (d < 0) return -1;
    hid_t s = H5Dget_space(d);
    const hssize_t points = s >= 0 ? H5Sget_simple_extent_npoints(s) : -1;
    if (s >= 0) H5Sclose(s);
    H5Dclose(d);
    return points;
}

void *h5io_read_column(H5ioReader *r, hid_t loc, const char *where, const char *name, H5ioValue type, hssize_t *n) {
    hid_t d = rdataset(r, loc, where, name);
    if (d < 0) return NULL;
    const ValueType vt = value_type(type);
    void *buf = NULL;
    hid_t s = H5Dget_space(d), t = H5Dget_type(d);
    const int ndim = s >= 0 ? H5Sget_simple_extent_ndims(s) : -1;
    const hssize_t points = s >= 0 ? H5Sget_simple_extent_npoints(s) : -1;
    if (ndim != 1 || points < 0 || t < 0 || H5Tget_class(t) != vt.cls) {
        h5io_fail(r, "%s/%s is not a 1-D %s array", where, name, vt.cls == H5T_INTEGER ? "integer" : "float");
    } else if (*n >= 0 && points != *n) {
        h5io_fail(r, "%s/%s has %lld entries, the other columns %lld", where, name, (long long)points, (long long)*n);
    } else if (points > INT_MAX || (size_t)points > r->file_size) {
        /* every entry takes bytes of the file: a longer claim is damage, and memory is not sized by it */
        h5io_fail(r, "%s/%s has %lld entries, more than the file can hold", where, name, (long long)points);
    } else if (!(buf = calloc(points ? (size_t)points : 1, vt.bytes))) {
        h5io_fail(r, "out of memory");
    } else if (points > 0 && H5Dread(d, vt.memory, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0) {
        char what[256];
        join_path(what, sizeof what, where, name);
        h5io_fail_h5(r, what);
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

/* ---- opening ---- */

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

hid_t h5io_open(H5ioReader *r) {
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
    }
    return fid;
}

void h5io_file_close(hid_t file) {
    if (file >= 0) H5Fclose(file);
}

/* ---- verification ----------------------------------------------------------------------------------- */

/* Reading every byte of every dataset and attribute makes HDF5 check every checksum of the file:
 * Fletcher32 on the data, the metadata checksums on the headers that hold attributes, scalars and chunk
 * indexes. A file without them (checkpoint format_version 1) only proves that it parses. */

typedef struct {
    H5ioReader *r;
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
    H5ioReader *r = vw->r;
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    if (a < 0) {
        fail_attr(r, vw->where, name);
        return -1;
    }
    hid_t t = H5Aget_type(a), s = H5Aget_space(a);
    const hssize_t points = s >= 0 ? H5Sget_simple_extent_npoints(s) : -1;
    const size_t bytes = t >= 0 ? H5Tget_size(t) : 0;
    if (t < 0 || points < 0 || bytes == 0) {
        fail_attr(r, vw->where, name);
    } else if ((size_t)points > ATTR_MAX_BYTES / bytes) {
        h5io_fail(r, "attribute %s of %s claims %lld values of %zu bytes: more than an attribute holds", name,
                  vw->where, (long long)points, bytes);
    } else if (H5Tget_class(t) == H5T_STRING) {
        char text[4096], why[160];
        /* longer than any setting: the read went through even if the text does not fit */
        if (string_attr_text(a, !r->fixed_strings, text, sizeof text, ",", why, sizeof why) &&
            !strstr(why, "longer than"))
            h5io_fail(r, "attribute %s of %s: %s", name, vw->where, why);
    } else if (plain_type(t)) {
        void *buf = calloc((size_t)points ? (size_t)points : 1, bytes);
        if (!buf) h5io_fail(r, "out of memory");
        else if (points > 0 && H5Aread(a, t, buf) < 0) fail_attr(r, vw->where, name);
        free(buf);
    }
    if (t >= 0) H5Tclose(t);
    if (s >= 0) H5Sclose(s);
    H5Aclose(a);
    return r->failed ? -1 : 0;
}

static void verify_dataset(VerifyWalk *vw, hid_t d) {
    H5ioReader *r = vw->r;
    hid_t t = H5Dget_type(d), s = H5Dget_space(d);
    const hssize_t points = s >= 0 ? H5Sget_simple_extent_npoints(s) : -1;
    const size_t elem = t >= 0 ? H5Tget_size(t) : 0;
    if (points < 0 || elem == 0) {
        h5io_fail_h5(r, vw->where);
    } else if (plain_type(t) && points > 0) {
        if ((size_t)points > vw->limit / elem) {
            h5io_fail(r, "%s claims %lld values of %zu bytes, more than the file can hold", vw->where,
                      (long long)points, elem);
        } else {
            void *buf = malloc((size_t)points * elem);
            if (!buf) h5io_fail(r, "out of memory for %s", vw->where);
            else if (H5Dread(d, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0) h5io_fail_h5(r, vw->where);
            free(buf);
        }
    }
    if (t >= 0) H5Tclose(t);
    if (s >= 0) H5Sclose(s);
}

static void verify_attributes(VerifyWalk *vw, hid_t obj) {
    hsize_t idx = 0;
    if (!vw->r->failed && H5Aiterate2(obj, H5_INDEX_NAME, H5_ITER_NATIVE, &idx, verify_attr, vw) < 0)
        h5io_fail_h5(vw->r, vw->where);
}

static herr_t verify_link(hid_t root, const char *name, const LinkInfo *info, void *data) {
    VerifyWalk *walk = data;
    H5ioReader *r = walk->r;
    /* soft and external links lead elsewhere (another file, even): only what the file holds is checked */
    if (info->type != H5L_TYPE_HARD) return 0;
    char where[512];
    snprintf(where, sizeof where, "/%s", name);
    VerifyWalk vw = {r, where, walk->limit};
    hid_t obj = H5Oopen(root, name, H5P_DEFAULT);
    if (obj < 0) {
        h5io_fail_h5(r, where);
        return -1;
    }
    verify_attributes(&vw, obj);
    if (!r->failed && H5Iget_type(obj) == H5I_DATASET) verify_dataset(&vw, obj);
    H5Oclose(obj);
    return r->failed ? -1 : 0;
}

void h5io_verify_all(H5ioReader *r, hid_t file) {
    /* a dataset may be larger than the file only by compression, which our files do not use */
    const size_t limit = r->file_size * 4 + ((size_t)1 << 20);
    VerifyWalk vw = {r, "/", limit};
    verify_attributes(&vw, file);
    if (!r->failed && H5Lvisit(file, H5_INDEX_NAME, H5_ITER_NATIVE, verify_link, &vw) < 0) h5io_fail_h5(r, "/");
}
