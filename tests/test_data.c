/* The data layer: the CIFAR-10 and IDX readers on files written here (valid ones and every kind of damage),
 * the real Fashion-MNIST release, the seeded split, the epoch order, augmentation against an independent
 * computation, and the counter-based RNG underneath them. */
#include <check.h>
#include <ftw.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "check_main.h"
#include "resnet/cifar10.h"
#include "resnet/dataset.h"
#include "resnet/idx.h"
#include "resnet/rng.h"
#include "resnet/util.h"

#define CIFAR_RECORD 3073
#define CIFAR_PER_FILE 10000

static char tmp_root[256];

/* A fresh folder under the suite's temporary root, one per test so that forked tests never share files. */
static const char *test_dir(const char *name) {
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", tmp_root, name);
    ck_assert_int_eq(mkdir(path, 0755), 0);
    return path;
}

static void write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    ck_assert_msg(f != NULL, "cannot create %s", path);
    ck_assert_uint_eq(fwrite(data, 1, n, f), n);
    ck_assert_int_eq(fclose(f), 0);
}

/* dir/name holding the n bytes at data. */
static void write_in(const char *dir, const char *name, const void *data, size_t n) {
    char path[600];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    write_file(path, data, n);
}

static void write_text_in(const char *dir, const char *name, const char *text) {
    write_in(dir, name, text, strlen(text));
}

static void write_gz(const char *path, const void *data, size_t n) {
    gzFile f = gzopen(path, "wb");
    ck_assert_msg(f != NULL, "cannot create %s", path);
    ck_assert_int_eq(gzwrite(f, data, (unsigned)n), (int)n);
    ck_assert_int_eq(gzclose(f), Z_OK);
}

static long file_size(const char *path) {
    struct stat st;
    ck_assert_int_eq(stat(path, &st), 0);
    return (long)st.st_size;
}

/* A failed load: -1, a one-line message that contains each of the given fragments, and an empty set. */
static void expect_error(int rc, const ImageSet *s, const char *frag1, const char *frag2) {
    const char *msg = rn_last_error();
    ck_assert_msg(rc == -1, "expected failure, got %d", rc);
    ck_assert_msg(strchr(msg, '\n') == NULL, "message is not one line: %s", msg);
    ck_assert_msg(strstr(msg, frag1) != NULL, "message \"%s\" lacks \"%s\"", msg, frag1);
    if (frag2) ck_assert_msg(strstr(msg, frag2) != NULL, "message \"%s\" lacks \"%s\"", msg, frag2);
    if (s) ck_assert(s->pixels == NULL && s->labels == NULL && s->count == 0);
}

/* ---- CIFAR-10 ----------------------------------------------------------------------------------------- */

/* Record r of the synthetic set: its label and pixels depend on r, so that a record read from the wrong
 * file or the wrong offset is caught. */
static uint8_t cifar_label(int r) { return (uint8_t)((r * 7 + 3) % 10); }
static uint8_t cifar_pixel(int r, int j) { return (uint8_t)(r * 31 + j * 7 + (r >> 8) + (j >> 5)); }

/* One batch file holding records first .. first + n - 1 */
static uint8_t *cifar_bytes(int first, int n) {
    uint8_t *buf = malloc((size_t)n * CIFAR_RECORD);
    ck_assert(buf != NULL);
    for (int i = 0; i < n; i++) {
        uint8_t *rec = buf + (size_t)i * CIFAR_RECORD;
        rec[0] = cifar_label(first + i);
        for (int j = 0; j < 3072; j++) rec[1 + j] = cifar_pixel(first + i, j);
    }
    return buf;
}

static void write_cifar(const char *dir, const char *name, int first) {
    uint8_t *buf = cifar_bytes(first, CIFAR_PER_FILE);
    write_in(dir, name, buf, (size_t)CIFAR_PER_FILE * CIFAR_RECORD);
    free(buf);
}

static void check_cifar_records(const ImageSet *s) {
    for (int r = 0; r < s->count; r++) {
        ck_assert_msg(s->labels[r] == cifar_label(r), "record %d label %d", r, s->labels[r]);
        const uint8_t *p = s->pixels + (size_t)r * 3072;
        for (int j = 0; j < 3072; j++)
            if (p[j] != cifar_pixel(r, j)) ck_abort_msg("record %d pixel %d: %d, expected %d", r, j, p[j], cifar_pixel(r, j));
    }
}

START_TEST(cifar_test_batch_loads) {
    const char *dir = test_dir("cifar_test");
    write_cifar(dir, "test_batch.bin", 0);
    /* names with CR LF and trailing blank lines, as files edited elsewhere come */
    write_text_in(dir, "batches.meta.txt",
                  "plane\r\ncar\r\nbird\r\ncat\r\ndeer\r\ndog\r\nfrog\r\nhorse\r\nship\r\ntruck\r\n\r\n\n");
    ImageSet s;
    ck_assert_int_eq(cifar10_load(dir, 0, &s), 0);
    ck_assert_int_eq(s.count, 10000);
    ck_assert_int_eq(s.channels, 3);
    ck_assert_int_eq(s.size, 32);
    ck_assert_int_eq(s.classes, 10);
    check_cifar_records(&s);
    ck_assert_str_eq(s.class_names[0], "plane");
    ck_assert_str_eq(s.class_names[9], "truck");
    imageset_free(&s);
    ck_assert(s.pixels == NULL && s.count == 0);

    /* a trailing slash on the folder is the same folder */
    char slash[600];
    snprintf(slash, sizeof slash, "%s/", dir);
    ck_assert_int_eq(dataset_load("cifar10", slash, 0, &s), 0);
    ck_assert_int_eq(s.count, 10000);
    imageset_free(&s);
}
END_TEST

START_TEST(cifar_train_batches_in_order) {
    const char *dir = test_dir("cifar_train");
    for (int k = 0; k < 5; k++) {
        char name[32];
        snprintf(name, sizeof name, "data_batch_%d.bin", k + 1);
        write_cifar(dir, name, k * CIFAR_PER_FILE);
    }
    ImageSet s;
    ck_assert_int_eq(dataset_load("cifar10", dir, 1, &s), 0);
    ck_assert_int_eq(s.count, 50000);
    check_cifar_records(&s);
    /* no batches.meta.txt: the standard names */
    ck_assert_str_eq(s.class_names[0], "airplane");
    ck_assert_str_eq(s.class_names[1], "automobile");
    ck_assert_str_eq(s.class_names[9], "truck");
    imageset_free(&s);
}
END_TEST

START_TEST(cifar_missing_file) {
    const char *dir = test_dir("cifar_missing");
    ImageSet s;
    expect_error(cifar10_load(dir, 0, &s), &s, "test_batch.bin", "cannot open");
    /* batches 1 and 2 there, 3 missing: the message names the one that is missing */
    write_cifar(dir, "data_batch_1.bin", 0);
    char a[600], b[600];
    snprintf(a, sizeof a, "%s/data_batch_1.bin", dir);
    snprintf(b, sizeof b, "%s/data_batch_2.bin", dir);
    ck_assert_int_eq(symlink(a, b), 0);
    expect_error(cifar10_load(dir, 1, &s), &s, "data_batch_3.bin", "No such file");
}
END_TEST

START_TEST(cifar_wrong_size) {
    const char *dir = test_dir("cifar_size");
    uint8_t *buf = cifar_bytes(0, CIFAR_PER_FILE);
    ImageSet s;
    write_in(dir, "test_batch.bin", buf, (size_t)CIFAR_PER_FILE * CIFAR_RECORD - 1000);
    expect_error(cifar10_load(dir, 0, &s), &s, "test_batch.bin: size 30729000 bytes, expected 30730000",
                 "10000 records of 3073");
    write_in(dir, "test_batch.bin", buf, 0);
    expect_error(cifar10_load(dir, 0, &s), &s, "test_batch.bin: size 0 bytes", NULL);
    free(buf);
    /* a folder where the file should be */
    char path[600];
    snprintf(path, sizeof path, "%s/test_batch.bin", dir);
    ck_assert_int_eq(unlink(path), 0);
    ck_assert_int_eq(mkdir(path, 0755), 0);
    expect_error(cifar10_load(dir, 0, &s), &s, "test_batch.bin", NULL);
}
END_TEST

START_TEST(cifar_label_out_of_range) {
    const char *dir = test_dir("cifar_label");
    uint8_t *buf = cifar_bytes(0, CIFAR_PER_FILE);
    buf[(size_t)17 * CIFAR_RECORD] = 12;
    write_in(dir, "test_batch.bin", buf, (size_t)CIFAR_PER_FILE * CIFAR_RECORD);
    free(buf);
    ImageSet s;
    expect_error(cifar10_load(dir, 0, &s), &s, "test_batch.bin: record 17 has label 12", "0..9");
}
END_TEST

START_TEST(cifar_bad_class_names) {
    const char *dir = test_dir("cifar_meta");
    write_cifar(dir, "test_batch.bin", 0);
    write_text_in(dir, "batches.meta.txt", "a\nb\nc\nd\ne\nf\ng\nh\ni\n");
    ImageSet s;
    expect_error(cifar10_load(dir, 0, &s), &s, "batches.meta.txt", "9 class names");
    write_text_in(dir, "batches.meta.txt", "a\nb\nc\nd\ne\nf\ng\nh\ni\nj\nk\n");
    expect_error(cifar10_load(dir, 0, &s), &s, "batches.meta.txt", "more than 10");
}
END_TEST

/* ---- IDX ------------------------------------------------------------------------------------------------ */

#define IDX_N 50
#define IDX_SIDE 28

static uint8_t idx_pixel(int i, int j) { return (uint8_t)(i * 13 + j * 5 + (j >> 4)); }
static uint8_t idx_label(int i) { return (uint8_t)((i * 3 + 1) % 10); }

static void put_be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* The bytes of an image file of n images rows x cols, with the given magic; *len receives the size. */
static uint8_t *idx_images(uint32_t magic, int n, int rows, int cols, size_t *len) {
    *len = 16 + (size_t)n * rows * cols;
    uint8_t *b = malloc(*len);
    put_be32(b, magic);
    put_be32(b + 4, (uint32_t)n);
    put_be32(b + 8, (uint32_t)rows);
    put_be32(b + 12, (uint32_t)cols);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < rows * cols; j++) b[16 + (size_t)i * rows * cols + j] = idx_pixel(i, j);
    return b;
}

static uint8_t *idx_labels(uint32_t magic, int n, size_t *len) {
    *len = 8 + (size_t)n;
    uint8_t *b = malloc(*len);
    put_be32(b, magic);
    put_be32(b + 4, (uint32_t)n);
    for (int i = 0; i < n; i++) b[8 + i] = idx_label(i);
    return b;
}

/* Writes the pair into dir as train-*-ubyte[.gz]; paths come back in img/lab. */
static void write_idx_pair(const char *dir, int gz, const uint8_t *ib, size_t il, const uint8_t *lb, size_t ll,
                           char *img, char *lab) {
    sprintf(img, "%s/train-images-idx3-ubyte%s", dir, gz ? ".gz" : "");
    sprintf(lab, "%s/train-labels-idx1-ubyte%s", dir, gz ? ".gz" : "");
    if (gz) {
        write_gz(img, ib, il);
        write_gz(lab, lb, ll);
    } else {
        write_file(img, ib, il);
        write_file(lab, lb, ll);
    }
}

/* The pair written to dir (gzipped or not) is refused by idx_load with a message holding frag1 and frag2. */
static void expect_pair_refused(const char *dir, int gz, const uint8_t *ib, size_t il, const uint8_t *lb, size_t ll,
                                const char *frag1, const char *frag2) {
    char img[600], lab[600];
    ImageSet s;
    write_idx_pair(dir, gz, ib, il, lb, ll, img, lab);
    expect_error(idx_load(img, lab, &s), &s, frag1, frag2);
}

static void write_valid_pair(const char *dir, int gz, char *img, char *lab) {
    size_t il, ll;
    uint8_t *ib = idx_images(0x803, IDX_N, IDX_SIDE, IDX_SIDE, &il), *lb = idx_labels(0x801, IDX_N, &ll);
    write_idx_pair(dir, gz, ib, il, lb, ll, img, lab);
    free(ib);
    free(lb);
}

static void check_idx_set(const ImageSet *s) {
    ck_assert_int_eq(s->count, IDX_N);
    ck_assert_int_eq(s->channels, 1);
    ck_assert_int_eq(s->size, IDX_SIDE);
    ck_assert_int_eq(s->classes, 10);
    for (int i = 0; i < IDX_N; i++) {
        ck_assert_int_eq(s->labels[i], idx_label(i));
        for (int j = 0; j < IDX_SIDE * IDX_SIDE; j++)
            ck_assert_int_eq(s->pixels[(size_t)i * IDX_SIDE * IDX_SIDE + j], idx_pixel(i, j));
    }
}

START_TEST(idx_plain_and_gzip_load) {
    char img[600], lab[600];
    ImageSet s;
    const char *plain = test_dir("idx_plain");
    write_valid_pair(plain, 0, img, lab);
    ck_assert_int_eq(idx_load(img, lab, &s), 0);
    check_idx_set(&s);
    imageset_free(&s);
    /* fashion_mnist_load takes the names without .gz too */
    ck_assert_int_eq(fashion_mnist_load(plain, 1, &s), 0);
    check_idx_set(&s);
    ck_assert_str_eq(s.class_names[0], "T-shirt/top");
    ck_assert_str_eq(s.class_names[9], "Ankle boot");
    imageset_free(&s);

    const char *gz = test_dir("idx_gz");
    write_valid_pair(gz, 1, img, lab);
    ck_assert_int_eq(idx_load(img, lab, &s), 0);
    check_idx_set(&s);
    imageset_free(&s);
    ck_assert_int_eq(dataset_load("fashion-mnist", gz, 1, &s), 0);
    check_idx_set(&s);
    imageset_free(&s);
    /* t10k-* for the test split, which is not there */
    expect_error(fashion_mnist_load(gz, 0, &s), &s, "t10k-images-idx3-ubyte.gz", "cannot open");

    /* gzip made of two members (concatenated .gz files) is valid gzip */
    const char *multi = test_dir("idx_multi");
    size_t il, ll;
    uint8_t *ib = idx_images(0x803, IDX_N, IDX_SIDE, IDX_SIDE, &il), *lb = idx_labels(0x801, IDX_N, &ll);
    sprintf(img, "%s/a.gz", multi);
    sprintf(lab, "%s/l", multi);
    char part[600];
    sprintf(part, "%s/part.gz", multi);
    write_gz(img, ib, 1000);
    write_gz(part, ib + 1000, il - 1000);
    FILE *a = fopen(img, "ab"), *p = fopen(part, "rb");
    int ch;
    while ((ch = fgetc(p)) != EOF) fputc(ch, a);
    fclose(p);
    fclose(a);
    write_file(lab, lb, ll);
    ck_assert_int_eq(idx_load(img, lab, &s), 0);
    check_idx_set(&s);
    imageset_free(&s);
    free(ib);
    free(lb);
}
END_TEST

START_TEST(idx_bad_magic) {
    char img[600], lab[600];
    size_t il, ll;
    ImageSet s;
    const char *dir = test_dir("idx_magic");
    uint8_t *ib = idx_images(0x801, IDX_N, IDX_SIDE, IDX_SIDE, &il), *lb = idx_labels(0x801, IDX_N, &ll);
    write_idx_pair(dir, 1, ib, il, lb, ll, img, lab);
    expect_error(idx_load(img, lab, &s), &s, "train-images-idx3-ubyte.gz", "bad magic 0x00000801");
    free(ib);
    free(lb);
    /* the pair swapped: each file has the other's magic */
    expect_error(idx_load(lab, img, &s), &s, "train-labels-idx1-ubyte.gz", "bad magic");
    ib = idx_images(0x803, IDX_N, IDX_SIDE, IDX_SIDE, &il);
    lb = idx_labels(0x803, IDX_N, &ll);
    expect_pair_refused(dir, 0, ib, il, lb, ll, "train-labels-idx1-ubyte", "bad magic 0x00000803");
    free(ib);
    free(lb);
}
END_TEST

START_TEST(idx_wrong_dimensions) {
    size_t il, ll;
    const char *dir = test_dir("idx_dims");
    uint8_t *lb = idx_labels(0x801, IDX_N, &ll);
    uint8_t *ib = idx_images(0x803, IDX_N, 28, 27, &il);
    expect_pair_refused(dir, 1, ib, il, lb, ll, "train-images-idx3-ubyte.gz", "28x27");
    free(ib);
    ib = idx_images(0x803, IDX_N, 0, 0, &il);
    expect_pair_refused(dir, 1, ib, il, lb, ll, "train-images-idx3-ubyte.gz", "0x0");
    free(ib);
    /* a header cut short */
    ib = idx_images(0x803, IDX_N, IDX_SIDE, IDX_SIDE, &il);
    expect_pair_refused(dir, 1, ib, 10, lb, ll, "train-images-idx3-ubyte.gz", "truncated");
    free(ib);
    free(lb);
}
END_TEST

START_TEST(idx_truncated_and_trailing) {
    char img[600], lab[600];
    ImageSet s;
    const char *dir = test_dir("idx_trunc");
    write_valid_pair(dir, 1, img, lab);
    const long full = file_size(img);
    /* cut in the compressed data, and inside the 8-byte gzip trailer (CRC, length), where zlib's gzread
     * would report a clean end */
    const long cuts[] = {full / 2, full - 9, full - 5, full - 1};
    for (size_t k = 0; k < sizeof cuts / sizeof cuts[0]; k++) {
        write_valid_pair(dir, 1, img, lab);
        ck_assert_int_eq(truncate(img, cuts[k]), 0);
        expect_error(idx_load(img, lab, &s), &s, "train-images-idx3-ubyte.gz", "truncated");
    }
    /* the labels file cut in its trailer */
    write_valid_pair(dir, 1, img, lab);
    ck_assert_int_eq(truncate(lab, file_size(lab) - 3), 0);
    expect_error(idx_load(img, lab, &s), &s, "train-labels-idx1-ubyte.gz", "truncated");
    /* damaged compressed data: the CRC catches it */
    write_valid_pair(dir, 1, img, lab);
    FILE *f = fopen(img, "r+b");
    fseek(f, full - 8, SEEK_SET);
    const int crc_byte = fgetc(f);
    fseek(f, full - 8, SEEK_SET);
    fputc(crc_byte ^ 0xff, f);
    fclose(f);
    expect_error(idx_load(img, lab, &s), &s, "train-images-idx3-ubyte.gz", NULL);

    /* plain files: short payload, and bytes beyond what the header promises */
    write_valid_pair(dir, 0, img, lab);
    ck_assert_int_eq(truncate(img, file_size(img) - 1), 0);
    expect_error(idx_load(img, lab, &s), &s, "train-images-idx3-ubyte", "truncated");
    write_valid_pair(dir, 0, img, lab);
    ck_assert_int_eq(truncate(lab, file_size(lab) + 1), 0);
    expect_error(idx_load(img, lab, &s), &s, "train-labels-idx1-ubyte", "more data");
    /* gzip with a payload longer than promised, and with garbage after the stream */
    size_t il, ll;
    uint8_t *ib = idx_images(0x803, IDX_N, IDX_SIDE, IDX_SIDE, &il), *lb = idx_labels(0x801, IDX_N, &ll);
    uint8_t *longer = calloc(il + 1, 1);
    memcpy(longer, ib, il);
    expect_pair_refused(dir, 1, longer, il + 1, lb, ll, "train-images-idx3-ubyte.gz", "more data");
    write_idx_pair(dir, 1, ib, il, lb, ll, img, lab);
    f = fopen(img, "ab");
    fputs("garbage\n", f);
    fclose(f);
    expect_error(idx_load(img, lab, &s), &s, "train-images-idx3-ubyte.gz", NULL);
    free(longer);
    free(ib);
    free(lb);
}
END_TEST

START_TEST(idx_count_mismatch_and_labels) {
    char img[600], lab[600];
    size_t il, ll;
    ImageSet s;
    const char *dir = test_dir("idx_count");
    uint8_t *ib = idx_images(0x803, IDX_N, IDX_SIDE, IDX_SIDE, &il), *lb = idx_labels(0x801, IDX_N - 1, &ll);
    expect_pair_refused(dir, 1, ib, il, lb, ll, "train-labels-idx1-ubyte.gz: 49 labels", "train-images-idx3-ubyte.gz");
    free(lb);
    lb = idx_labels(0x801, IDX_N, &ll);
    lb[8 + 3] = 10;
    write_idx_pair(dir, 1, ib, il, lb, ll, img, lab);
    expect_error(idx_load(img, lab, &s), &s, "train-labels-idx1-ubyte.gz: record 3 has label 10", "0..9");
    free(ib);
    free(lb);
    char missing[600];
    sprintf(missing, "%s/nothing.gz", dir);
    expect_error(idx_load(missing, lab, &s), &s, "nothing.gz: cannot open", NULL);
    expect_error(idx_load(img, missing, &s), &s, "nothing.gz: cannot open", NULL);
}
END_TEST

static const char *fashion_dir(void) {
    const char *d = getenv("RESNET_FASHION_MNIST");
    return d && *d ? d : "/usr/share/datasets/fashion-mnist";
}

/* The parsers under the file readers, on bytes in memory (what the fuzzing harnesses drive). */
START_TEST(readers_from_memory) {
    char names[IMAGESET_MAX_CLASSES][32];
    static const char crlf[] = "a\r\nb \r\n\r\nc d\r\ne\r\nf\r\ng\r\nh\r\ni\r\nj\r\nk";
    ck_assert_int_eq(cifar10_parse_class_names("m.txt", crlf, sizeof crlf - 1, names), 0);
    ck_assert_str_eq(names[1], "b");
    ck_assert_str_eq(names[2], "c d");
    ck_assert_str_eq(names[9], "k");
    static const char nul[] = "a\nb\0c\nc\nd\ne\nf\ng\nh\ni\nj\n";
    ck_assert_int_eq(cifar10_parse_class_names("m.txt", nul, sizeof nul - 1, names), -1);
    ck_assert_str_eq(rn_last_error(), "m.txt: line 2 is not text (a NUL byte)");
    static const char eleven[] = "a\nb\nc\nd\ne\nf\ng\nh\ni\nj\nk\n";
    ck_assert_int_eq(cifar10_parse_class_names("m.txt", eleven, sizeof eleven - 1, names), -1);
    ck_assert_str_eq(rn_last_error(), "m.txt: more than 10 class names");

    uint8_t *rec = cifar_bytes(0, 2), labels[2], pixels[2 * 3072];
    ck_assert_int_eq(cifar10_parse_records("b.bin", rec, 2 * CIFAR_RECORD, 2, labels, pixels), 0);
    ck_assert_int_eq(labels[1], cifar_label(1));
    ck_assert_int_eq(pixels[3072 + 5], cifar_pixel(1, 5));
    ck_assert_int_eq(cifar10_parse_records("b.bin", rec, 2 * CIFAR_RECORD - 1, 2, labels, pixels), -1);
    rec[CIFAR_RECORD] = 10;
    ck_assert_int_eq(cifar10_parse_records("b.bin", rec, 2 * CIFAR_RECORD, 2, labels, pixels), -1);
    ck_assert_str_eq(rn_last_error(), "b.bin: record 1 has label 10, expected 0..9");
    free(rec);

    /* a header promising 2^31-1 images of 1024x1024 pixels over no data: "truncated", not an attempt at
     * 2 PB of memory */
    static const uint8_t huge[16] = {0, 0, 8, 3, 0x7f, 0xff, 0xff, 0xff, 0, 0, 4, 0, 0, 0, 4, 0};
    static const uint8_t huge_labels[8] = {0, 0, 8, 1, 0x7f, 0xff, 0xff, 0xff};
    ImageSet set;
    ck_assert_int_eq(idx_parse("i", huge, sizeof huge, "l", huge_labels, sizeof huge_labels, &set), -1);
    ck_assert_msg(strstr(rn_last_error(), "i: truncated: 0 of 2251799812636672 image bytes") != NULL, "%s",
                  rn_last_error());
    size_t il, ll;
    uint8_t *ib = idx_images(0x803, IDX_N, IDX_SIDE, IDX_SIDE, &il), *lb = idx_labels(0x801, IDX_N, &ll);
    ck_assert_int_eq(idx_parse("i", ib, il, "l", lb, ll, &set), 0);
    check_idx_set(&set);
    imageset_free(&set);
    free(ib);
    free(lb);
}
END_TEST

START_TEST(fashion_mnist_real_release) {
    ImageSet s;
    const int train = _i;
    const int rc = dataset_load("fashion-mnist", fashion_dir(), train, &s);
    ck_assert_msg(rc == 0, "%s (install the dataset-fashion-mnist package)", rn_last_error());
    const int n = train ? 60000 : 10000;
    ck_assert_int_eq(s.count, n);
    ck_assert_int_eq(s.channels, 1);
    ck_assert_int_eq(s.size, 28);
    ck_assert_int_eq(s.classes, 10);
    /* the release is balanced: n / 10 of every class */
    int per_class[10] = {0};
    for (int i = 0; i < n; i++) per_class[s.labels[i]]++;
    for (int k = 0; k < 10; k++) ck_assert_int_eq(per_class[k], n / 10);
    ck_assert_int_eq(s.labels[0], 9);   /* both splits start with an ankle boot */
    ck_assert_str_eq(s.class_names[s.labels[0]], "Ankle boot");
    imageset_free(&s);
}
END_TEST

/* The real CIFAR-10 where scripts/get-cifar10.sh puts it (or $RESNET_CIFAR10), when it is there: CI
 * machines need not download 163 MB for the unit suite, the synthetic files above cover the reader. */
START_TEST(cifar10_real_release_if_present) {
    char dir[1024];
    const char *env = getenv("RESNET_CIFAR10"), *tests = getenv("RESNET_TEST_DATA");
    if (env && *env) snprintf(dir, sizeof dir, "%s", env);
    else snprintf(dir, sizeof dir, "%s/../../data/cifar-10-batches-bin", tests && *tests ? tests : "tests/data");
    if (access(dir, F_OK) != 0) return;
    const int train = _i;
    ImageSet s;
    ck_assert_msg(cifar10_load(dir, train, &s) == 0, "%s", rn_last_error());
    const int n = train ? 50000 : 10000;
    ck_assert_int_eq(s.count, n);
    int per_class[10] = {0};
    for (int i = 0; i < n; i++) per_class[s.labels[i]]++;
    for (int k = 0; k < 10; k++) ck_assert_int_eq(per_class[k], n / 10);
    /* the first labels of each release, as torchvision reads them */
    const uint8_t first_train[] = {6, 9, 9, 4, 1, 1, 2, 7, 8, 3}, first_test[] = {3, 8, 8, 0, 6, 6, 1, 6, 3, 1};
    ck_assert_mem_eq(s.labels, train ? first_train : first_test, 10);
    ck_assert_str_eq(s.class_names[6], "frog");
    imageset_free(&s);
}
END_TEST

/* ---- split and epoch order ------------------------------------------------------------------------------ */

START_TEST(split_is_a_partition) {
    uint32_t *tr, *va, *tr2, *va2, *tr3, *va3;
    int nt, nv, nt2, nv2, nt3, nv3;
    ck_assert_int_eq(dataset_split(50000, 5000, 42, &tr, &nt, &va, &nv), 0);
    ck_assert_int_eq(nt, 45000);
    ck_assert_int_eq(nv, 5000);
    char *seen = calloc(50000, 1);
    for (int i = 0; i < nt; i++) {
        ck_assert_uint_lt(tr[i], 50000);
        ck_assert_int_eq(seen[tr[i]]++, 0);
    }
    for (int i = 0; i < nv; i++) {
        ck_assert_uint_lt(va[i], 50000);
        ck_assert_int_eq(seen[va[i]]++, 0);
    }
    for (int i = 0; i < 50000; i++) ck_assert_int_eq(seen[i], 1);
    free(seen);
    /* not the identity: the validation records come from all over the set */
    int high = 0;
    for (int i = 0; i < nv; i++) high += va[i] >= 45000;
    ck_assert_int_lt(high, 1000);

    ck_assert_int_eq(dataset_split(50000, 5000, 42, &tr2, &nt2, &va2, &nv2), 0);
    ck_assert_mem_eq(tr, tr2, sizeof *tr * 45000);
    ck_assert_mem_eq(va, va2, sizeof *va * 5000);
    ck_assert_int_eq(dataset_split(50000, 5000, 43, &tr3, &nt3, &va3, &nv3), 0);
    ck_assert(memcmp(va, va3, sizeof *va * 5000) != 0);
    int same = 0;
    for (int i = 0; i < nv; i++) same += va[i] == va3[i];
    ck_assert_int_lt(same, 10);
    free(tr);
    free(va);
    free(tr2);
    free(va2);
    free(tr3);
    free(va3);

    /* the extremes that still leave both parts non-empty */
    ck_assert_int_eq(dataset_split(10, 9, 1, &tr, &nt, &va, &nv), 0);
    ck_assert(nt == 1 && nv == 9);
    free(tr);
    free(va);
    ck_assert_int_eq(dataset_split(10, 1, 1, &tr, &nt, &va, &nv), 0);
    ck_assert(nt == 9 && nv == 1);
    free(tr);
    free(va);
}
END_TEST

START_TEST(split_rejects_bad_sizes) {
    uint32_t *tr, *va;
    int nt, nv;
    const int bad[][2] = {{50000, 0}, {50000, 50000}, {50000, -1}, {50000, 60000}, {1, 1}, {0, 0}};
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        ck_assert_int_eq(dataset_split(bad[k][0], bad[k][1], 1, &tr, &nt, &va, &nv), -1);
        ck_assert(tr == NULL && va == NULL && nt == 0 && nv == 0);
        ck_assert_msg(strstr(rn_last_error(), "validation size") != NULL, "%s", rn_last_error());
    }
}
END_TEST

static void check_permutation(const uint32_t *p, int n) {
    char *seen = calloc((size_t)n, 1);
    for (int i = 0; i < n; i++) {
        ck_assert_uint_lt(p[i], (uint32_t)n);
        ck_assert_int_eq(seen[p[i]]++, 0);
    }
    free(seen);
}

START_TEST(epoch_order_is_a_seeded_permutation) {
    const int n = 45000;
    uint32_t *a = malloc(sizeof *a * n), *b = malloc(sizeof *b * n), *c = malloc(sizeof *c * n);
    dataset_epoch_order(a, n, 7, 0);
    check_permutation(a, n);
    dataset_epoch_order(b, n, 7, 0);
    ck_assert_mem_eq(a, b, sizeof *a * n);
    int fixed = 0;
    for (int i = 0; i < n; i++) fixed += a[i] == (uint32_t)i;
    ck_assert_int_lt(fixed, 10);   /* about one fixed point is expected of a random permutation */
    dataset_epoch_order(c, n, 7, 1);
    check_permutation(c, n);
    ck_assert(memcmp(a, c, sizeof *a * n) != 0);
    dataset_epoch_order(c, n, 8, 0);
    ck_assert(memcmp(a, c, sizeof *a * n) != 0);
    dataset_epoch_order(c, 1, 7, 3);
    ck_assert_uint_eq(c[0], 0);
    free(a);
    free(b);
    free(c);
}
END_TEST

/* ---- augmentation and batches --------------------------------------------------------------------------- */

START_TEST(augment_params_distribution) {
    const int n = 20000;
    int flips = 0, dy_count[9] = {0}, dx_count[9] = {0};
    int joint[81] = {0};
    for (int r = 0; r < n; r++) {
        int flip, dy, dx;
        dataset_augment_params(5, 2, (uint32_t)r, &flip, &dy, &dx);
        ck_assert(flip == 0 || flip == 1);
        ck_assert(dy >= 0 && dy <= 8 && dx >= 0 && dx <= 8);
        flips += flip;
        dy_count[dy]++;
        dx_count[dx]++;
        joint[dy * 9 + dx]++;
        int f2, y2, x2;
        dataset_augment_params(5, 2, (uint32_t)r, &f2, &y2, &x2);
        ck_assert(f2 == flip && y2 == dy && x2 == dx);
    }
    /* binomial standard deviations: 71 flips, 44 per offset value; the bounds are 5 to 7 of them */
    ck_assert_int_lt(abs(flips - n / 2), 400);
    for (int v = 0; v < 9; v++) {
        ck_assert_int_lt(abs(dy_count[v] - n / 9), 300);
        ck_assert_int_lt(abs(dx_count[v] - n / 9), 300);
    }
    for (int v = 0; v < 81; v++) ck_assert_int_gt(joint[v], 0);
    /* another epoch draws other augmentations for the same records */
    int differ = 0;
    for (int r = 0; r < 100; r++) {
        int f1, y1, x1, f2, y2, x2;
        dataset_augment_params(5, 2, (uint32_t)r, &f1, &y1, &x1);
        dataset_augment_params(5, 3, (uint32_t)r, &f2, &y2, &x2);
        differ += f1 != f2 || y1 != y2 || x1 != x2;
    }
    ck_assert_int_gt(differ, 80);
}
END_TEST

/* A synthetic set with every pixel different across positions, channels and images. */
static ImageSet synthetic_set(int count, int channels, int size) {
    ImageSet s;
    memset(&s, 0, sizeof s);
    s.count = count;
    s.channels = channels;
    s.size = size;
    s.classes = 10;
    const size_t px = (size_t)channels * size * size;
    s.pixels = malloc((size_t)count * px);
    s.labels = malloc((size_t)count);
    Rng r;
    rng_init(&r, 99, 1);
    for (size_t i = 0; i < (size_t)count * px; i++) s.pixels[i] = (uint8_t)rng_below(&r, 256);
    for (int i = 0; i < count; i++) s.labels[i] = (uint8_t)rng_below(&r, 10);
    return s;
}

/* The transform spelled out step by step, independently of dataset.c: flip into a copy, pad that copy by 4
 * zeros on every side, cut the size x size window at (dy, dx). */
static void reference_augment(const uint8_t *img, int channels, int size, int flip, int dy, int dx, float *out) {
    const int padded = size + 8;
    float *flipped = malloc(sizeof *flipped * (size_t)size * size);
    float *pad = calloc((size_t)padded * padded, sizeof *pad);
    for (int c = 0; c < channels; c++) {
        const uint8_t *plane = img + (size_t)c * size * size;
        for (int y = 0; y < size; y++)
            for (int x = 0; x < size; x++) flipped[y * size + x] = plane[y * size + (flip ? size - 1 - x : x)] / 255.0f;
        for (int y = 0; y < size; y++)
            for (int x = 0; x < size; x++) pad[(y + 4) * padded + (x + 4)] = flipped[y * size + x];
        for (int y = 0; y < size; y++)
            for (int x = 0; x < size; x++)
                out[(size_t)c * size * size + y * size + x] = pad[(y + dy) * padded + (x + dx)];
    }
    free(flipped);
    free(pad);
}

static void check_augmented_batch(int channels, int size) {
    const int count = 40, n = 64;
    ImageSet s = synthetic_set(count, channels, size);
    uint32_t records[64];
    for (int i = 0; i < n; i++) records[i] = (uint32_t)((i * 17 + 5) % count);   /* repeats, any order */
    const size_t px = (size_t)channels * size * size;
    float *out = malloc(sizeof *out * px * n), *ref = malloc(sizeof *ref * px);
    int labels[64], flips = 0, corners = 0;
    dataset_fill_batch(&s, records, n, out, labels, 1, 11, 4);
    for (int i = 0; i < n; i++) {
        int flip, dy, dx;
        dataset_augment_params(11, 4, records[i], &flip, &dy, &dx);
        flips += flip;
        corners += (dy == 0 || dy == 8) && (dx == 0 || dx == 8);
        reference_augment(s.pixels + records[i] * px, channels, size, flip, dy, dx, ref);
        ck_assert_int_eq(labels[i], s.labels[records[i]]);
        for (size_t j = 0; j < px; j++)
            if (out[i * px + j] != ref[j])
                ck_abort_msg("sample %d (flip %d, dy %d, dx %d) value %zu: %g, expected %g", i, flip, dy, dx, j,
                             out[i * px + j], ref[j]);
    }
    /* the batch did exercise both flips and the extreme crops */
    ck_assert(flips > 0 && flips < n);
    ck_assert_int_gt(corners, 0);
    free(out);
    free(ref);
    imageset_free(&s);
}

START_TEST(augmentation_matches_hand_computation) {
    check_augmented_batch(3, 32);
    check_augmented_batch(1, 28);
    check_augmented_batch(2, 5);   /* smaller than the padding: some crops are mostly zeros */
}
END_TEST

START_TEST(no_augment_gives_exact_pixels) {
    ImageSet s = synthetic_set(30, 3, 32);
    const uint32_t records[5] = {29, 0, 7, 7, 13};
    const size_t px = 3 * 32 * 32;
    float *out = malloc(sizeof *out * px * 5);
    int labels[5];
    dataset_fill_batch(&s, records, 5, out, labels, 0, 1, 1);
    for (int i = 0; i < 5; i++) {
        ck_assert_int_eq(labels[i], s.labels[records[i]]);
        for (size_t j = 0; j < px; j++) {
            const float want = (float)s.pixels[records[i] * px + j] / 255.0f;
            ck_assert_msg(out[i * px + j] == want, "sample %d value %zu", i, j);
            ck_assert(out[i * px + j] >= 0.0f && out[i * px + j] <= 1.0f);
        }
    }
    free(out);
    imageset_free(&s);
}
END_TEST

START_TEST(batch_independent_of_threads) {
    ImageSet s = synthetic_set(300, 3, 32);
    const int n = 256;
    uint32_t records[256];
    dataset_epoch_order(records, n, 3, 0);
    const size_t px = 3 * 32 * 32;
    float *a = malloc(sizeof *a * px * n), *b = malloc(sizeof *b * px * n);
    int la[256], lb[256];
    for (int augment = 0; augment <= 1; augment++) {
        omp_set_num_threads(1);
        dataset_fill_batch(&s, records, n, a, la, augment, 21, 6);
        omp_set_num_threads(2);
        dataset_fill_batch(&s, records, n, b, lb, augment, 21, 6);
        ck_assert_mem_eq(a, b, sizeof *a * px * n);
        ck_assert_mem_eq(la, lb, sizeof la);
        /* a sample does not depend on where in the batch it sits: a rank holding a slice fills the same */
        dataset_fill_batch(&s, records + 100, 10, b, lb, augment, 21, 6);
        ck_assert_mem_eq(a + 100 * px, b, sizeof *a * px * 10);
    }
    free(a);
    free(b);
    imageset_free(&s);
}
END_TEST

START_TEST(unknown_dataset) {
    ImageSet s;
    expect_error(dataset_load("mnist", "/nowhere", 1, &s), &s, "mnist", "cifar10");
    imageset_free(&s);   /* harmless on an empty set */
}
END_TEST

/* ---- RNG ------------------------------------------------------------------------------------------------ */

START_TEST(rng_basics) {
    /* pure functions of their coordinates, and every coordinate matters */
    ck_assert_uint_eq(rng_hash(1, 2, 3, 4), rng_hash(1, 2, 3, 4));
    ck_assert_uint_ne(rng_hash(1, 2, 3, 4), rng_hash(1, 3, 2, 4));
    ck_assert_uint_ne(rng_hash(1, 2, 3, 4), rng_hash(2, 2, 3, 4));
    ck_assert_uint_ne(rng_hash(1, 2, 3, 4), rng_hash(1, 2, 3, 5));
    Rng a, b;
    rng_init(&a, 3, 4);
    rng_init(&b, 3, 4);
    for (int i = 0; i < 10; i++) ck_assert_uint_eq(rng_next(&a), rng_next(&b));
    rng_init(&b, 3, 5);
    ck_assert_uint_ne(rng_next(&a), rng_next(&b));

    const int n = 200000;
    double sum = 0, sum2 = 0, nsum = 0, nsum2 = 0;
    int below[7] = {0};
    rng_init(&a, 1, 1);
    for (int i = 0; i < n; i++) {
        const double u = rng_uniform(&a);
        ck_assert(u >= 0.0 && u < 1.0);
        sum += u;
        sum2 += u * u;
        const double z = rng_normal(&a);
        ck_assert(isfinite(z));
        nsum += z;
        nsum2 += z * z;
        const uint32_t k = rng_below(&a, 7);
        ck_assert_uint_lt(k, 7);
        below[k]++;
    }
    ck_assert_double_eq_tol(sum / n, 0.5, 0.005);
    ck_assert_double_eq_tol(sum2 / n - (sum / n) * (sum / n), 1.0 / 12, 0.002);
    ck_assert_double_eq_tol(nsum / n, 0.0, 0.01);
    ck_assert_double_eq_tol(nsum2 / n, 1.0, 0.015);
    for (int k = 0; k < 7; k++) ck_assert_int_lt(abs(below[k] - n / 7), 800);   /* sd 157 */
    ck_assert_uint_eq(rng_below(&a, 1), 0);
    ck_assert_uint_eq(rng_below(&a, 0), 0);
    /* a range near 2^32, where a plain modulo would be most biased, stays in range */
    for (int i = 0; i < 1000; i++) ck_assert_uint_lt(rng_below(&a, 3000000000u), 3000000000u);

    uint32_t p[1000], q[1000];
    rng_permutation(p, 1000, 9, 9);
    check_permutation(p, 1000);
    rng_permutation(q, 1000, 9, 9);
    ck_assert_mem_eq(p, q, sizeof p);
    rng_permutation(q, 1000, 9, 10);
    ck_assert(memcmp(p, q, sizeof p) != 0);
    rng_permutation(p, 0, 1, 1);   /* nothing to do, nothing touched */
}
END_TEST

/* Every position of a 3-element permutation is uniform: all 6 orders about equally often. */
START_TEST(rng_permutation_uniform) {
    int counts[6] = {0};
    const int n = 60000;
    for (int t = 0; t < n; t++) {
        uint32_t p[3];
        rng_permutation(p, 3, 1234, (uint64_t)t);
        counts[p[0] * 2 + (p[1] > p[2])]++;
    }
    for (int k = 0; k < 6; k++) ck_assert_int_lt(abs(counts[k] - n / 6), 500);   /* sd 91 */
}
END_TEST

/* ---- the suite ----------------------------------------------------------------------------------------- */

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* The readers' files live under one temporary root, made before the readers' tests and removed after
 * them (an unchecked fixture: it runs once, in the runner's process). */
static void make_tmp_root(void) {
    const char *base = getenv("TMPDIR");
    snprintf(tmp_root, sizeof tmp_root, "%s/test_data.XXXXXX", base && *base ? base : "/tmp");
    ck_assert_msg(mkdtemp(tmp_root) != NULL, "mkdtemp %s failed", tmp_root);
}

static void remove_tmp_root(void) { nftw(tmp_root, remove_entry, 16, FTW_DEPTH | FTW_PHYS); }

Suite *test_suite(void) {
    Suite *s = suite_create("data");
    TCase *readers = tcase_create("readers");
    tcase_add_unchecked_fixture(readers, make_tmp_root, remove_tmp_root);
    tcase_add_test(readers, cifar_test_batch_loads);
    tcase_add_test(readers, cifar_train_batches_in_order);
    tcase_add_test(readers, cifar_missing_file);
    tcase_add_test(readers, cifar_wrong_size);
    tcase_add_test(readers, cifar_label_out_of_range);
    tcase_add_test(readers, cifar_bad_class_names);
    tcase_add_test(readers, idx_plain_and_gzip_load);
    tcase_add_test(readers, idx_bad_magic);
    tcase_add_test(readers, idx_wrong_dimensions);
    tcase_add_test(readers, idx_truncated_and_trailing);
    tcase_add_test(readers, idx_count_mismatch_and_labels);
    tcase_add_loop_test(readers, fashion_mnist_real_release, 0, 2);
    tcase_add_loop_test(readers, cifar10_real_release_if_present, 0, 2);
    tcase_add_test(readers, unknown_dataset);
    tcase_add_test(readers, readers_from_memory);
    suite_add_tcase(s, readers);
    TCase *order = tcase_create("order");
    tcase_add_test(order, split_is_a_partition);
    tcase_add_test(order, split_rejects_bad_sizes);
    tcase_add_test(order, epoch_order_is_a_seeded_permutation);
    suite_add_tcase(s, order);
    TCase *batches = tcase_create("batches");
    tcase_add_test(batches, augment_params_distribution);
    tcase_add_test(batches, augmentation_matches_hand_computation);
    tcase_add_test(batches, no_augment_gives_exact_pixels);
    tcase_add_test(batches, batch_independent_of_threads);
    suite_add_tcase(s, batches);
    TCase *rng = tcase_create("rng");
    tcase_add_test(rng, rng_basics);
    tcase_add_test(rng, rng_permutation_uniform);
    suite_add_tcase(s, rng);
    return s;
}
