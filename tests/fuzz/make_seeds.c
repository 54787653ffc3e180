/* Writes the committed seed corpus of the fuzzing harnesses: usage make_seeds DIR (then DIR/checkpoint,
 * DIR/idx and DIR/cifar10 hold small valid inputs). The checkpoint seed holds the fuzzing model of
 * fuzz.h, with Adam state, a train state, three history entries and a full /config, so that a whole read
 * succeeds on it; tiny-ema.h5 is the same with a moving average (--ema), /reference and /ema/reference.
 * corpus/checkpoint/tiny-v1.h5 is this program's output built at commit b4994dd, the last writer of format_version 1 (no checksums, variable-length strings, contiguous tensors). */
#include <errno.h>
#include <stdint.h>
#include <sys/stat.h>
#include <zlib.h>

#include "resnet/checkpoint.h"
#include "resnet/config.h"
#include "resnet/ema.h"
#include "resnet/optim.h"
#include "fuzz.h"

static void write_file(const char *dir, const char *sub, const char *name, const void *data, size_t size) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, sub);
    if (mkdir(path, 0777) && errno != EEXIST) exit(1);
    snprintf(path, sizeof path, "%s/%s/%s", dir, sub, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, size, f) != size || fclose(f)) {
        fprintf(stderr, "make_seeds: cannot write %s\n", path);
        exit(1);
    }
}

static void checkpoint_seed(const char *dir) {
    float params[26], buffers[4], reference[4] = {0};
    Model m;
    fuzz_model(&m, params, buffers, reference);
    for (int i = 0; i < 26; i++) params[i] = 0.25f * (float)(i - 13);
    for (int i = 0; i < 4; i++) buffers[i] = 1.0f + (float)i;
    m.bn_batches_tracked = 7;
    OptimConfig oc;
    optim_defaults(&oc, OPT_ADAM);
    Optimizer opt;
    if (optim_init(&opt, &oc, m.num_params)) exit(1);
    for (size_t i = 0; i < optim_state_floats(&opt); i++) opt.state[i] = 0.001f * (float)i;
    opt.step = 12;
    TrainState ts = {.epoch = 1, .step = 12, .batch_in_epoch = 2, .best_val_acc = 0.5, .best_step = 10,
                     .prev_val_acc = 0.25, .non_increase_count = 1, .running_loss_sum = 1.5,
                     .running_loss_count = 2, .elapsed_s = 3.0};
    History h = {0};
    for (int i = 0; i < 3; i++) history_append(&h, 4 * (i + 1), 1, 2.0 - i, 0.1 * i, 1.0 * i);
    Config c;
    config_defaults(&c);
    c.arch = ARCH_PAPER;
    c.depth = 8;
    Settings s;
    config_to_settings(&c, &s);
    settings_put(&s, "world-size", "1");
    settings_put(&s, "in-channels", "1");
    settings_put(&s, "image-size", "4");
    settings_put(&s, "classes", "2");
    settings_put(&s, "class_names", "yes,no");
    char path[1024];
    snprintf(path, sizeof path, "%s/checkpoint", dir);
    if (mkdir(path, 0777) && errno != EEXIST) exit(1);
    snprintf(path, sizeof path, "%s/checkpoint/tiny-v%d.h5", dir, CHECKPOINT_FORMAT_VERSION);
    if (checkpoint_write(path, &m, &opt, &ts, &h, &s)) {
        fprintf(stderr, "make_seeds: %s\n", rn_last_error());
        exit(1);
    }
    /* the same with --ema: /ema beside /model, and reference BN statistics (/reference) */
    for (size_t i = 0; i < m.num_reference_floats; i++) m.reference[i] = 0.25f + 0.01f * (float)i;
    m.reference_valid = 1;
    Ema ema;
    if (ema_init(&ema, 0.9, params, m.num_params)) exit(1);
    for (int i = 0; i < 26; i++) ema.params[i] = 0.5f * params[i];
    ema.n_averaged = 12;
    /* and the average's own statistics (/ema/reference), as the default recipe writes them */
    if (ema_reserve_reference(&ema, m.num_reference_floats)) exit(1);
    for (size_t i = 0; i < m.num_reference_floats; i++) ema.reference[i] = 0.5f + 0.02f * (float)i;
    ema.reference_valid = 1;
    settings_put(&s, "ema", "0.9");
    snprintf(path, sizeof path, "%s/checkpoint/tiny-ema.h5", dir);
    if (checkpoint_write_ema(path, &m, &opt, &ts, &h, &s, &ema)) {
        fprintf(stderr, "make_seeds: %s\n", rn_last_error());
        exit(1);
    }
    ema_free(&ema);
    history_free(&h);
    optim_free(&opt);
}

static size_t gzip(const uint8_t *in, size_t n, uint8_t *out, size_t cap) {
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    if (deflateInit2(&zs, 9, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) != Z_OK) exit(1);
    zs.next_in = (Bytef *)in;
    zs.avail_in = (uInt)n;
    zs.next_out = out;
    zs.avail_out = (uInt)cap;
    if (deflate(&zs, Z_FINISH) != Z_STREAM_END) exit(1);
    deflateEnd(&zs);
    return cap - zs.avail_out;
}

/* The harness's input: [images length, 2 bytes LE][images][labels]. */
static void idx_seed(const char *dir, const char *name, int compress) {
    uint8_t images[16 + 3 * 16] = {0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 4};
    uint8_t labels[8 + 3] = {0, 0, 8, 1, 0, 0, 0, 3, 0, 9, 4};
    for (int i = 16; i < (int)sizeof images; i++) images[i] = (uint8_t)(i * 7);
    uint8_t gi[256], gl[256], input[600];
    size_t ni = sizeof images, nl = sizeof labels;
    const uint8_t *pi = images, *pl = labels;
    if (compress) {
        ni = gzip(images, sizeof images, gi, sizeof gi);
        nl = gzip(labels, sizeof labels, gl, sizeof gl);
        pi = gi;
        pl = gl;
    }
    input[0] = (uint8_t)ni;
    input[1] = (uint8_t)(ni >> 8);
    memcpy(input + 2, pi, ni);
    memcpy(input + 2 + ni, pl, nl);
    write_file(dir, "idx", name, input, 2 + ni + nl);
}

static void cifar10_seeds(const char *dir) {
    uint8_t records[2 * 3073];
    for (int i = 0; i < (int)sizeof records; i++) records[i] = (uint8_t)(i * 31);
    records[0] = 3;
    records[3073] = 9;
    write_file(dir, "cifar10", "records.bin", records, sizeof records);
    static const char meta[] = "airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n\n";
    write_file(dir, "cifar10", "meta.txt", meta, sizeof meta - 1);
    static const char crlf[] = "a\r\nb \r\n\r\nc\td\r\ne\r\nf\r\ng\r\nh\r\ni\r\nj\r\nk";
    write_file(dir, "cifar10", "meta-crlf.txt", crlf, sizeof crlf - 1);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: make_seeds DIR\n");
        return 2;
    }
    if (mkdir(argv[1], 0777) && errno != EEXIST) {
        fprintf(stderr, "make_seeds: cannot create %s\n", argv[1]);
        return 1;
    }
    checkpoint_seed(argv[1]);
    idx_seed(argv[1], "plain.bin", 0);
    idx_seed(argv[1], "gzip.bin", 1);
    cifar10_seeds(argv[1]);
    return 0;
}
