/* The HDF5 plumbing under checkpoint.c, which owns the file layout: files built and parsed in memory
 * (HDF5 never opens, locks or writes a file on disk itself), written atomically, attributes and datasets
 * written and read by name. With checkpoint.c the only file that calls HDF5.
 *
 * Errors are sticky in the small H5ioWriter / H5ioReader contexts: the first failure records its one-line
 * rn_error, starting with the file's path, and every later call becomes a no-op, which keeps long write
 * and read sequences free of per-call error plumbing. HDF5's own error stack printing is switched off;
 * its innermost message (or the system error it wraps) becomes the cause in our message, and a failed
 * checksum anywhere in the stack reads "checksum mismatch (the file is corrupt)". `where` is the path of
 * the object a call works on ("/", "/model"), for messages. */
#ifndef RESNET_H5IO_H
#define RESNET_H5IO_H

#include <stddef.h>
#include <stdint.h>

#include <hdf5.h>

/* The numbers the files hold: the type in the file (little-endian) and in memory. */
typedef enum {
    H5IO_F32,    /* float */
    H5IO_F64,    /* double */
    H5IO_I64,    /* int64_t */
    H5IO_LONG,   /* long, stored as a 64-bit integer */
} H5ioValue;

typedef struct {
    const char *path;   /* the target, for messages */
    int failed;
} H5ioWriter;

typedef struct {
    const char *path;       /* the file, or the name an image in memory goes by: every message starts with it */
    const void *image;      /* the file's bytes, when the caller has them (else the file is read) */
    size_t image_size;
    size_t file_size;       /* bytes of the file opened */
    int fixed_strings;      /* variable-length strings are refused (they live in the unchecked global heap) */
    int failed;
} H5ioReader;

/* ---- writing ---- */

/* Fills the file in memory: groups, attributes and datasets under `file`. */
typedef void (*H5ioBuild)(H5ioWriter *w, hid_t file, void *data);

/* Builds the file in memory (the HDF5 1.10 format, with checksums on all metadata) and writes it
 * atomically: a hidden temporary file beside path, fsync'd, renamed over path, the folder fsync'd. A
 * crash or an error at any moment leaves the previous file at path whole. 0, or -1 with rn_error. */
int h5io_write_file(const char *path, H5ioBuild build, void *data);

/* A group whose links and attributes stay compact in its checksummed header; ordered_attrs: attributes
 * come back in the order they were written. -1 on failure (recorded). */
hid_t h5io_group_create(H5ioWriter *w, hid_t parent, const char *name, const char *where, int ordered_attrs);
void h5io_group_close(hid_t g);   /* nothing for g < 0 */

void h5io_write_i64(H5ioWriter *w, hid_t loc, const char *where, const char *name, int64_t v);
void h5io_write_u64(H5ioWriter *w, hid_t loc, const char *where, const char *name, uint64_t v);
void h5io_write_f64(H5ioWriter *w, hid_t loc, const char *where, const char *name, double v);
/* A fixed-length string attribute (inside the checksummed header, unlike a variable-length one). */
void h5io_write_str(H5ioWriter *w, hid_t loc, const char *where, const char *name, const char *s);
/* "a,b,c" as a 1-D array of fixed-length strings, each padded to the longest. */
void h5io_write_str_list(H5ioWriter *w, hid_t loc, const char *where, const char *name, const char *csv);

/* A dataset of ndim dims (0: a scalar, kept compact in its header), chunked with a Fletcher32 checksum;
 * extendible: an unlimited first dimension in chunks of 256 (a history column that may grow). */
void h5io_write_dataset(H5ioWriter *w, hid_t loc, const char *where, const char *name, H5ioValue type, int ndim,
                        const hsize_t *dims, const void *data, int extendible);

/* printf-style failure "PATH: message", recorded once. */
void h5io_write_fail(H5ioWriter *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- reading ---- */

/* Opens r->image, else the file read whole into memory (a FIFO or a folder refused without waiting on
 * it), read-only. The file id, or -1 with rn_error (unreadable, not HDF5, truncated, damaged). */
hid_t h5io_open(H5ioReader *r);
void h5io_file_close(hid_t file);

/* printf-style failure "PATH: message", recorded once. */
void h5io_fail(H5ioReader *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A failed HDF5 call on `what`: "PATH: WHAT: checksum mismatch ..." or "PATH: cannot read WHAT: cause". */
void h5io_fail_h5(H5ioReader *r, const char *what);

/* 1 when loc has the attribute, 0 when not or on failure (recorded). */
int h5io_has_attr(H5ioReader *r, hid_t loc, const char *where, const char *name);
/* H5Lexists as it is: > 0 when loc has a link of that name. */
int h5io_has_link(hid_t loc, const char *name);

/* An existing group, or -1 ("missing group WHERE/NAME", recorded). */
hid_t h5io_group_open(H5ioReader *r, hid_t loc, const char *where, const char *name);

/* Single-valued attributes; 0 (or "") after a failure. An integer reads as a float, nothing else
 * converts. */
int64_t h5io_read_i64(H5ioReader *r, hid_t loc, const char *where, const char *name);
int h5io_read_int(H5ioReader *r, hid_t loc, const char *where, const char *name);
double h5io_read_f64(H5ioReader *r, hid_t loc, const char *where, const char *name);
/* A string attribute (a 1-D array of strings joined by ","). */
void h5io_read_str(H5ioReader *r, hid_t loc, const char *where, const char *name, char *out, size_t size);

/* Every attribute of obj as text (a string, or a single number in its shortest decimal), in the order
 * written when the object keeps it, else by name; values longer than value_size - 1 characters (at most
 * 4095) fail. fn returns nonzero (having recorded why) to stop. */
typedef int (*H5ioAttrText)(H5ioReader *r, const char *name, const char *value, void *data);
void h5io_attrs_as_text(H5ioReader *r, hid_t obj, const char *where, size_t value_size, H5ioAttrText fn,
                        void *data);

/* Every link of group g, by name; fn returns nonzero (having recorded why) to stop. */
typedef int (*H5ioLink)(H5ioReader *r, const char *name, void *data);
void h5io_each_link(H5ioReader *r, hid_t g, const char *where, H5ioLink fn, void *data);

/* A float dataset whose shape must be dims[0..ndim) into out. 0 when it was read. */
int h5io_read_floats(H5ioReader *r, hid_t loc, const char *where, const char *name, int ndim, const hsize_t *dims,
                     float *out);
/* A dataset holding one integer. */
int64_t h5io_read_scalar_i64(H5ioReader *r, hid_t loc, const char *where, const char *name);
/* The values a dataset holds, or -1 when it is missing (recorded) or has no extent. */
hssize_t h5io_dataset_points(H5ioReader *r, hid_t loc, const char *where, const char *name);
/* A 1-D column (an H5IO_LONG or H5IO_F64 array) in a fresh array the caller frees; *n >= 0: the length
 * it must have; set to the length read. NULL after a failure. */
void *h5io_read_column(H5ioReader *r, hid_t loc, const char *where, const char *name, H5ioValue type, hssize_t *n);

/* Reads every dataset and attribute of the file, which makes HDF5 verify every checksum in it. */
void h5io_verify_all(H5ioReader *r, hid_t file);

#endif
