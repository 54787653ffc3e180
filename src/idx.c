/* IDX files (LeCun's MNIST format, also Fashion-MNIST's), gzip-compressed or plain. Headers are checked
 * before anything large is allocated, and the payload must be exactly what the header promises: a download
 * cut short anywhere, even inside the gzip trailer, must fail here rather than train on a partial set. */
#include "resnet/idx.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "resnet/util.h"

#define IDX_IMAGES_MAGIC 0x00000803u   /* unsigned byte, 3 dimensions */
#define IDX_LABELS_MAGIC 0x00000801u   /* unsigned byte, 1 dimension */
#define IDX_CLASSES 10
#define IDX_MAX_SIDE 1024              /* far above any IDX image set; catches garbage headers */

static const char *const fashion_names[IDX_CLASSES] = {
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
};

/* A byte source that is a plain file or a gzip stream, told apart by the gzip magic. zlib's gzread is not
 * used: when a file is cut inside the gzip trailer (CRC and length) gzread reports a clean end of file and
 * gzclose_r returns Z_OK, so a truncated download would pass. Driving inflate ourselves makes reaching
 * Z_STREAM_END, which inflate only returns after checking the trailer, a condition of success. */
typedef struct {
    FILE *f;           /* the file; NULL when the bytes are in memory */
    const uint8_t *mem;
    size_t mem_left;
    const char *path;
    int gz;            /* gzip stream (else plain bytes) */
    int zinit;         /* inflateInit2 succeeded: inflateEnd owed */
    int member_end;    /* the last gzip member ended properly and nothing followed it */
    int member_next;   /* bytes followed a member: they must start another one */
    z_stream zs;       /* next_in / avail_in also serve the plain case as the read buffer */
    uint8_t in[1 << 16];
} Source;

/* Next chunk of the file into the input buffer once it is used up: bytes available, 0 at end, -1 on error. */
static int refill(Source *s) {
    if (s->zs.avail_in) return 1;
    if (!s->f) {
        const size_t n = s->mem_left < UINT_MAX ? s->mem_left : UINT_MAX;
        s->zs.next_in = (Bytef *)s->mem;   /* zlib only reads through next_in */
        s->zs.avail_in = (uInt)n;
        s->mem += n;
        s->mem_left -= n;
        return n > 0;
    }
    const size_t n = fread(s->in, 1, sizeof s->in, s->f);
    if (n == 0 && ferror(s->f)) return rn_error("%s: read error: %s", s->path, strerror(errno));
    s->zs.next_in = s->in;
    s->zs.avail_in = (uInt)n;
    return n > 0;
}

/* Reads the first bytes: a gzip stream is told apart by its magic. */
static int source_start(Source *s) {
    if (refill(s) < 0) return -1;
    s->gz = s->zs.avail_in >= 2 && s->zs.next_in[0] == 0x1f && s->zs.next_in[1] == 0x8b;
    if (s->gz) {
        /* 16 + MAX_WBITS: gzip wrapper only, so that the trailer is required and checked */
        if (inflateInit2(&s->zs, 16 + MAX_WBITS) != Z_OK) return rn_error("%s: cannot start zlib", s->path);
        s->zinit = 1;
    }
    return 0;
}

static int source_open(Source *s, const char *path) {
    memset(s, 0, sizeof *s);
    s->path = path;
    s->f = rn_fopen_regular(path);
    if (!s->f) return -1;
    return source_start(s);
}

static int source_memory(Source *s, const char *name, const uint8_t *bytes, size_t size) {
    memset(s, 0, sizeof *s);
    s->path = name;
    s->mem = bytes;
    s->mem_left = size;
    return source_start(s);
}

static void source_close(Source *s) {
    if (s->zinit) inflateEnd(&s->zs);
    if (s->f) fclose(s->f);
    s->zinit = 0;
    s->f = NULL;
}

/* Up to n bytes into dst: the count read (short only at the end of the data), or -1 with rn_error. */
static long source_read(Source *s, uint8_t *dst, size_t n) {
    size_t done = 0;
    while (done < n) {
        const int r = refill(s);
        if (r < 0) return -1;
        if (r == 0) break;
        if (!s->gz) {
            const size_t k = n - done < s->zs.avail_in ? n - done : s->zs.avail_in;
            memcpy(dst + done, s->zs.next_in, k);
            s->zs.next_in += k;
            s->zs.avail_in -= (uInt)k;
            done += k;
            continue;
        }
        const size_t want = n - done < (size_t)1 << 30 ? n - done : (size_t)1 << 30;
        s->zs.next_out = dst + done;
        s->zs.avail_out = (uInt)want;
        s->member_end = 0;
        const int z = inflate(&s->zs, Z_NO_FLUSH);
        done += want - s->zs.avail_out;
        if (z == Z_STREAM_END) {
            /* concatenated members are valid gzip; anything else after a member fails its header check */
            const int more = refill(s);
            if (more < 0) return -1;
            if (more == 0) {
                s->member_end = 1;
                break;
            }
            inflateReset(&s->zs);
            s->member_next = 1;
        } else if (z != Z_OK) {
            if (s->member_next) return rn_error("%s: data after the end of the gzip stream", s->path);
            return rn_error("%s: corrupt gzip data (%s)", s->path, s->zs.msg ? s->zs.msg : zError(z));
        } else {
            s->member_next = 0;
        }
    }
    return (long)done;
}

/* Exactly n bytes or an error naming the file and `what` was cut short. */
static int read_exact(Source *s, const char *what, uint8_t *dst, size_t n) {
    const long got = source_read(s, dst, n);
    if (got < 0) return -1;
    if ((size_t)got < n)
        return rn_error("%s: truncated%s: %ld of %zu %s bytes", s->path,
                        s->gz && !s->member_end ? " gzip stream" : "", got, n, what);
    return 0;
}

/* Reads the magic and the dimension words of a header (big endian 32-bit each). */
static int read_header(Source *s, uint32_t magic, int ndims, uint32_t *dims) {
    const char *path = s->path;
    uint8_t raw[16];
    if (read_exact(s, "header", raw, (size_t)4 * (1 + ndims))) return -1;
    uint32_t words[4];
    for (int i = 0; i <= ndims; i++)
        words[i] = (uint32_t)raw[4 * i] << 24 | (uint32_t)raw[4 * i + 1] << 16 | (uint32_t)raw[4 * i + 2] << 8 |
                   raw[4 * i + 3];
    if (words[0] != magic)
        return rn_error("%s: bad magic 0x%08x, expected 0x%08x (IDX %s)", path, words[0], magic,
                        magic == IDX_IMAGES_MAGIC ? "unsigned byte images, 3 dimensions"
                                                  : "unsigned byte labels, 1 dimension");
    for (int i = 0; i < ndims; i++) dims[i] = words[i + 1];
    return 0;
}

/* After the promised payload the data must end; trailing bytes mean the header lies about the count. For
 * gzip the one-byte read also drives inflate through the trailer, whose CRC and length it checks. */
static int expect_end(Source *s) {
    uint8_t extra;
    const long got = source_read(s, &extra, 1);
    if (got < 0) return -1;
    if (got > 0) return rn_error("%s: more data than the header promises", s->path);
    if (s->gz && !s->member_end) return rn_error("%s: truncated gzip stream (its end is missing)", s->path);
    return 0;
}

/* Exactly n payload bytes into a buffer grown as they arrive: the header's promise alone (up to 2^31
 * images of 1024x1024 pixels) never decides how much memory is taken, only data that is really there. */
static int read_payload(Source *s, const char *what, size_t n, uint8_t **out) {
    size_t cap = n < ((size_t)1 << 20) ? n : (size_t)1 << 20, done = 0;
    uint8_t *buf = malloc(cap ? cap : 1);
    if (!buf) return rn_error("%s: out of memory", s->path);
    while (done < n) {
        if (done == cap) {
            const size_t grown = cap > n / 2 ? n : 2 * cap;
            uint8_t *p = realloc(buf, grown);
            if (!p) {
                free(buf);
                return rn_error("%s: out of memory for %zu %s bytes", s->path, n, what);
            }
            buf = p;
            cap = grown;
        }
        const size_t want = cap - done;
        const long got = source_read(s, buf + done, want);
        if (got < 0) {
            free(buf);
            return -1;
        }
        done += (size_t)got;
        if ((size_t)got < want) break;   /* the data ended */
    }
    if (done < n) {
        free(buf);
        return rn_error("%s: truncated%s: %zu of %zu %s bytes", s->path, s->gz && !s->member_end ? " gzip stream" : "",
                        done, n, what);
    }
    *out = buf;
    return 0;
}

static int idx_read(Source *fi, Source *fl, ImageSet *out) {
    const char *images_path = fi->path, *labels_path = fl->path;
    uint32_t idims[3] = {0}, ldims[1] = {0};
    int rc = read_header(fi, IDX_IMAGES_MAGIC, 3, idims);
    if (rc == 0) rc = read_header(fl, IDX_LABELS_MAGIC, 1, ldims);
    if (rc == 0 && (idims[1] != idims[2] || idims[1] == 0 || idims[1] > IDX_MAX_SIDE))
        rc = rn_error("%s: images of %ux%u pixels, expected square images of 1..%d pixels", images_path, idims[1],
                      idims[2], IDX_MAX_SIDE);
    if (rc == 0 && (idims[0] == 0 || idims[0] > INT_MAX))
        rc = rn_error("%s: %u images, expected 1..%d", images_path, idims[0], INT_MAX);
    /* checked before the payload is read: a mismatched pair fails at once */
    if (rc == 0 && ldims[0] != idims[0])
        rc = rn_error("%s: %u labels, but %s holds %u images", labels_path, ldims[0], images_path, idims[0]);
    const size_t count = idims[0], pixels = (size_t)idims[1] * idims[2];
    if (rc == 0) {
        out->count = (int)count;
        out->channels = 1;
        out->size = (int)idims[1];
        out->classes = IDX_CLASSES;
        rc = read_payload(fi, "image", count * pixels, &out->pixels);
    }
    if (rc == 0) rc = expect_end(fi);
    if (rc == 0) rc = read_payload(fl, "label", count, &out->labels);
    if (rc == 0) rc = expect_end(fl);
    for (size_t i = 0; rc == 0 && i < count; i++)
        if (out->labels[i] >= IDX_CLASSES)
            rc = rn_error("%s: record %zu has label %u, expected 0..%d", labels_path, i, out->labels[i],
                          IDX_CLASSES - 1);
    return rc;
}

/* src[0] images, src[1] labels, both opened when rc is 0: read them into out, then close and free them
 * (out is left empty on failure). rc, or idx_read's result. */
static int read_and_close(Source *src, int rc, ImageSet *out) {
    if (rc == 0) rc = idx_read(&src[0], &src[1], out);
    source_close(&src[0]);
    source_close(&src[1]);
    free(src);
    if (rc != 0) imageset_free(out);
    return rc;
}

int idx_load(const char *images_path, const char *labels_path, ImageSet *out) {
    memset(out, 0, sizeof *out);
    /* on the heap: each source holds a 64 KiB buffer, too much for a small thread stack */
    Source *src = calloc(2, sizeof *src);
    if (!src) return rn_error("%s: out of memory", images_path);
    int rc = source_open(&src[0], images_path);
    if (rc == 0) rc = source_open(&src[1], labels_path);
    return read_and_close(src, rc, out);
}

int idx_parse(const char *images_name, const uint8_t *images, size_t images_size, const char *labels_name,
              const uint8_t *labels, size_t labels_size, ImageSet *out) {
    memset(out, 0, sizeof *out);
    Source *src = calloc(2, sizeof *src);
    if (!src) return rn_error("%s: out of memory", images_name);
    int rc = source_memory(&src[0], images_name, images, images_size);
    if (rc == 0) rc = source_memory(&src[1], labels_name, labels, labels_size);
    return read_and_close(src, rc, out);
}

/* The official names end in .gz; a folder someone gunzipped by hand holds the bare names. When neither is
 * there the .gz name is kept, so that the error names the file the release ships. */
static void find_file(char *buf, size_t size, const char *dir, const char *base) {
    const size_t n = strlen(dir);
    const char *sep = n && dir[n - 1] == '/' ? "" : "/";
    snprintf(buf, size, "%s%s%s.gz", dir, sep, base);
    if (access(buf, F_OK) == 0) return;
    snprintf(buf, size, "%s%s%s", dir, sep, base);
    if (access(buf, F_OK) == 0) return;
    snprintf(buf, size, "%s%s%s.gz", dir, sep, base);
}

int fashion_mnist_load(const char *dir, int train, ImageSet *out) {
    const char *prefix = train ? "train" : "t10k";
    char base[64], images[4096], labels[4096];
    snprintf(base, sizeof base, "%s-images-idx3-ubyte", prefix);
    find_file(images, sizeof images, dir, base);
    snprintf(base, sizeof base, "%s-labels-idx1-ubyte", prefix);
    find_file(labels, sizeof labels, dir, base);
    if (idx_load(images, labels, out)) return -1;
    for (int k = 0; k < IDX_CLASSES; k++)
        snprintf(out->class_names[k], sizeof out->class_names[k], "%s", fashion_names[k]);
    return 0;
}
