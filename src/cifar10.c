/* The CIFAR-10 binary release. Every file is checked for its exact size and every label for its range
 * before anything is used: a truncated download must fail here with the file's name, not train quietly on
 * zeros or index past the classifier's outputs later. */
#include "resnet/cifar10.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "resnet/util.h"

#define CIFAR_SIZE 32
#define CIFAR_CHANNELS 3
#define CIFAR_CLASSES 10
#define CIFAR_PIXELS (CIFAR_CHANNELS * CIFAR_SIZE * CIFAR_SIZE)   /* 3072 */
#define CIFAR_RECORD (1 + CIFAR_PIXELS)                            /* 3073 */
#define CIFAR_PER_FILE 10000
#define CIFAR_TRAIN_FILES 5

static const char *const cifar_names[CIFAR_CLASSES] = {
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
};

static void join(char *buf, size_t size, const char *dir, const char *name) {
    const size_t n = strlen(dir);
    snprintf(buf, size, "%s%s%s", dir, n && dir[n - 1] == '/' ? "" : "/", name);
}

/* Large buffers on 2 MiB boundaries with transparent huge pages requested: first-touch page faults on
 * 4 KiB pages cost more than the read itself (measured: a 0.6 s load of the 150 MB train set became 0.04 s).
 * madvise is only advice, so its failure is ignored; free() releases the block either way. */
static void *alloc_bulk(size_t bytes) {
    const size_t huge = (size_t)2 << 20;
    const size_t rounded = (bytes + huge - 1) / huge * huge;
    void *p = aligned_alloc(huge, rounded ? rounded : huge);
#ifdef MADV_HUGEPAGE
    if (p) madvise(p, rounded, MADV_HUGEPAGE);
#endif
    return p;
}

/* The usual way to get here is a fresh checkout without data, so the message says how to fix that.
 * rn_fopen_regular has reported every other failure (a FIFO or a folder in the file's place too). */
static int open_error(const char *path) {
    const int e = errno;
    if (e == ENOENT)
        return rn_error("%s: cannot open: %s (fetch CIFAR-10 with scripts/get-cifar10.sh)", path, strerror(e));
    return -1;
}

/* One batch file into records [first, first + CIFAR_PER_FILE) of out; one fread of the whole file keeps
 * the ~150 MB load at disk speed. */
static int read_batch(const char *path, int first, ImageSet *out, uint8_t *buf) {
    const size_t expected = (size_t)CIFAR_PER_FILE * CIFAR_RECORD;
    FILE *f = rn_fopen_regular(path);
    if (!f) return open_error(path);
    struct stat st;
    if (fstat(fileno(f), &st) != 0) {
        const int e = errno;
        fclose(f);
        return rn_error("%s: cannot stat: %s", path, strerror(e));
    }
    if ((size_t)st.st_size != expected) {
        fclose(f);
        return rn_error("%s: size %lld bytes, expected %zu (%d records of %d)", path, (long long)st.st_size,
                        expected, CIFAR_PER_FILE, CIFAR_RECORD);
    }
    const size_t got = fread(buf, 1, expected, f);
    const int read_failed = ferror(f);
    const int e = errno;
    fclose(f);
    if (got != expected) {
        /* the size was right a moment ago: the file shrank under us or the disk failed */
        if (read_failed) return rn_error("%s: read error: %s", path, strerror(e));
        return rn_error("%s: read %zu of %zu bytes", path, got, expected);
    }
    return cifar10_parse_records(path, buf, expected, CIFAR_PER_FILE, out->labels + first,
                                 out->pixels + (size_t)first * CIFAR_PIXELS);
}

int cifar10_parse_records(const char *name, const uint8_t *buf, size_t size, size_t records, uint8_t *labels,
                          uint8_t *pixels) {
    if (records > SIZE_MAX / CIFAR_RECORD || size != records * CIFAR_RECORD)
        return rn_error("%s: %zu bytes, expected %zu records of %d", name, size, records, CIFAR_RECORD);
    for (size_t i = 0; i < records; i++) {
        const uint8_t *rec = buf + i * CIFAR_RECORD;
        if (rec[0] >= CIFAR_CLASSES)
            return rn_error("%s: record %zu has label %u, expected 0..%d", name, i, rec[0], CIFAR_CLASSES - 1);
        labels[i] = rec[0];
        memcpy(pixels + i * CIFAR_PIXELS, rec + 1, CIFAR_PIXELS);
    }
    return 0;
}

/* batches.meta.txt: one name a line; the official file ends with blank lines, so blank lines are skipped.
 * A file that is there but does not hold exactly ten usable names is an error rather than a silent
 * fallback, since the names end up in reports. */
int cifar10_parse_class_names(const char *name, const char *text, size_t size, char names[][32]) {
    int k = 0, lineno = 0;
    for (size_t at = 0; at < size;) {
        const char *line = text + at, *nl = memchr(line, '\n', size - at);
        size_t n = nl ? (size_t)(nl - line) : size - at;
        at += n + (nl != NULL);
        lineno++;
        if (memchr(line, '\0', n)) return rn_error("%s: line %d is not text (a NUL byte)", name, lineno);
        while (n && (line[n - 1] == '\r' || line[n - 1] == ' ' || line[n - 1] == '\t')) n--;
        if (n == 0) continue;
        if (k == CIFAR_CLASSES) return rn_error("%s: more than %d class names", name, CIFAR_CLASSES);
        if (n >= 32) return rn_error("%s: line %d: class name longer than %d characters", name, lineno, 31);
        memcpy(names[k], line, n);
        names[k++][n] = '\0';
    }
    if (k != CIFAR_CLASSES) return rn_error("%s: %d class names, expected %d", name, k, CIFAR_CLASSES);
    return 0;
}

/* A names file is a few hundred bytes: anything beyond this is not one. */
#define CLASS_NAMES_MAX_BYTES 65536

static int read_class_names(const char *dir, ImageSet *out) {
    char path[4096];
    join(path, sizeof path, dir, "batches.meta.txt");
    FILE *f = rn_fopen_regular(path);
    if (!f) {
        if (errno != ENOENT) return -1;
        for (int k = 0; k < CIFAR_CLASSES; k++) snprintf(out->class_names[k], sizeof out->class_names[k], "%s", cifar_names[k]);
        return 0;
    }
    char *text = malloc(CLASS_NAMES_MAX_BYTES + 1);
    const size_t n = text ? fread(text, 1, CLASS_NAMES_MAX_BYTES + 1, f) : 0;
    int rc = 0;
    if (!text) rc = rn_error("%s: out of memory", path);
    else if (ferror(f)) rc = rn_error("%s: read error", path);
    else if (n > CLASS_NAMES_MAX_BYTES) rc = rn_error("%s: larger than %d bytes: not a list of class names", path, CLASS_NAMES_MAX_BYTES);
    else rc = cifar10_parse_class_names(path, text, n, out->class_names);
    free(text);
    fclose(f);
    return rc;
}

int cifar10_load(const char *dir, int train, ImageSet *out) {
    memset(out, 0, sizeof *out);
    const int files = train ? CIFAR_TRAIN_FILES : 1;
    const int count = files * CIFAR_PER_FILE;
    out->count = count;
    out->channels = CIFAR_CHANNELS;
    out->size = CIFAR_SIZE;
    out->classes = CIFAR_CLASSES;
    out->pixels = alloc_bulk((size_t)count * CIFAR_PIXELS);
    out->labels = malloc((size_t)count);
    uint8_t *buf = alloc_bulk((size_t)CIFAR_PER_FILE * CIFAR_RECORD);
    int rc = 0;
    if (!out->pixels || !out->labels || !buf)
        rc = rn_error("out of memory loading CIFAR-10 from %s (%.0f MiB)", dir,
                      (double)count * CIFAR_RECORD / (1024.0 * 1024.0));
    for (int i = 0; rc == 0 && i < files; i++) {
        char name[32], path[4096];
        if (train) snprintf(name, sizeof name, "data_batch_%d.bin", i + 1);
        else snprintf(name, sizeof name, "test_batch.bin");
        join(path, sizeof path, dir, name);
        rc = read_batch(path, i * CIFAR_PER_FILE, out, buf);
    }
    free(buf);
    if (rc == 0) rc = read_class_names(dir, out);
    if (rc != 0) imageset_free(out);
    return rc;
}
