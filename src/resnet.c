/* ResNet for CIFAR-sized images, two variants:
 *   seed  - the seed notebook's network, quirks included: stem conv (with bias) + BN + ReLU; each block
 *           has ONE BatchNorm applied twice: conv1 -> bn -> relu -> conv2 -> (+ shortcut) -> bn -> relu,
 *           the shortcut a 1x1 stride-2 conv + its own BN where the size changes, else identity.
 *   paper - He et al. 2016: stem conv (no bias) + BN + ReLU; block conv-BN-ReLU-conv-BN, + shortcut,
 *           ReLU, with the parameter-free option-A shortcut where the shape changes.
 * Then global average pooling and a linear classifier. Activations are C,N,H,W throughout (conv.h). */
#include "resnet/resnet.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "resnet/conv.h"
#include "resnet/layers.h"
#include "resnet/perf.h"
#include "resnet/rng.h"
#include "resnet/util.h"

#define MAX_TENSORS 1024
#define STAGES 3

/* Offsets into the parameter buffer (and, for the paper arch, the running-stat buffer) of one BN. */
typedef struct { size_t gamma, beta, running_mean, running_var; int channels; } BnParams;

typedef struct {
    int cin, cout, stride;
    int h_in, h_out;             /* square spatial sizes */
    ConvShape conv1, conv2, proj;
    size_t conv1_w, conv2_w, proj_w;
    BnParams bn1, bn2, proj_bn;  /* seed: bn2 is bn1 (one module used twice) */
    size_t ref1, ref2, ref_proj; /* each application's reference mean (the variance follows it) */
    int has_proj;                /* seed: 1x1 conv + BN shortcut */
    int option_a;                /* paper: subsample + zero channels */
    size_t param_lo;             /* the block's first parameter: its own run from here to the next block */
} Block;

/* Activation pointers of one block. In a training arena every tensor is its own; in an inference arena
 * they alias (see inference_places) so that a whole evaluation set fits: there the seed's c2 is its
 * shortcut's buffer (x or db), into which conv2 accumulates. */
typedef struct {
    float *x;                    /* input [cin, n, h_in, h_in] (the previous block's out) */
    float *c1, *a1;              /* conv1 output, BN+ReLU of it */
    float *c2;                   /* conv2 output */
    float *out;                  /* block output; seed: also the pre-BN sum */
    float *d, *db;               /* seed projection: conv output, BN output; paper option A: shortcut */
    /* seed: c2 becomes the pre-BN sum c2 + shortcut in place (conv2's backward needs only a1) */
    float *stats;                /* mean, rstd, var for each BN application: 4 applications x 3 x cout */
} BlockActs;

typedef struct {
    int capacity;                /* images */
    int training;
    float *memory;
    size_t floats;
    float *x0, *c0, *a0;         /* stem: input C,N,H,W; conv output; BN+ReLU */
    float *stem_stats;
    BlockActs *blocks;
    float *pooled;               /* [n, features] */
    float *logits, *dlogits;     /* [n, classes] */
    float *grad[4];              /* training only: backward scratch, each the largest activation */
    float *grad_pooled;
} Arena;

struct ModelPlan {
    int num_blocks;
    Block *blocks;
    ConvShape stem;
    size_t stem_w, stem_b;       /* stem_b: (size_t)-1 when there is no bias */
    BnParams stem_bn;
    size_t stem_ref;
    size_t fc_w, fc_b;
    int features;                /* channels into the classifier */
    int final_size;
    Arena train, eval;
    float *conv_scratch;
    size_t conv_scratch_floats;
    Arena *last;                 /* arena of the last forward */
    BnMode last_mode;
};

#define NO_OFFSET ((size_t)-1)

/* ---- parameter table ---------------------------------------------------------------------------- */

static size_t add_tensor(TensorInfo *table, int *count, size_t *total, const char *name, int ndim,
                         const int *shape) {
    TensorInfo *t = &table[(*count)++];
    size_t len = strlen(name);   /* names are at most ~32 characters: module3.17.downsample.0.weight */
    if (len >= sizeof t->name) len = sizeof t->name - 1;
    memcpy(t->name, name, len);
    t->name[len] = '\0';
    t->ndim = ndim;
    t->numel = 1;
    for (int i = 0; i < ndim; i++) {
        t->shape[i] = shape[i];
        t->numel *= (size_t)shape[i];
    }
    t->offset = *total;
    *total += t->numel;
    return t->offset;
}

typedef struct {
    TensorInfo *params, *buffers, *refs;
    int num_params, num_buffers, num_refs;
    size_t param_floats, buffer_floats, ref_floats;
} Tables;

static size_t param(Tables *t, const char *name, int ndim, int d0, int d1, int d2, int d3) {
    int shape[4] = {d0, d1, d2, d3};
    return add_tensor(t->params, &t->num_params, &t->param_floats, name, ndim, shape);
}

static BnParams bn_params(Tables *t, const char *prefix, int channels, int running) {
    char name[160];
    BnParams bn = {.channels = channels, .running_mean = NO_OFFSET, .running_var = NO_OFFSET};
    snprintf(name, sizeof name, "%s.weight", prefix);
    bn.gamma = param(t, name, 1, channels, 0, 0, 0);
    snprintf(name, sizeof name, "%s.bias", prefix);
    bn.beta = param(t, name, 1, channels, 0, 0, 0);
    if (running) {
        int shape[1] = {channels};
        snprintf(name, sizeof name, "%s.running_mean", prefix);
        bn.running_mean = add_tensor(t->buffers, &t->num_buffers, &t->buffer_floats, name, 1, shape);
        snprintf(name, sizeof name, "%s.running_var", prefix);
        bn.running_var = add_tensor(t->buffers, &t->num_buffers, &t->buffer_floats, name, 1, shape);
    }
    return bn;
}

/* "<prefix>.reference" [applications, 2, channels]: returns the first application's mean; application k's
 * mean is at + 2 * k * channels, its variance at + (2 * k + 1) * channels. */
static size_t reference_slots(Tables *t, const char *prefix, int channels, int applications) {
    char name[160];
    snprintf(name, sizeof name, "%s.reference", prefix);
    int shape[3] = {applications, 2, channels};
    return add_tensor(t->refs, &t->num_refs, &t->ref_floats, name, 3, shape);
}

static size_t conv_param(Tables *t, const char *name, ConvShape s) {
    return param(t, name, 4, s.cout, s.cin, s.k, s.k);
}

static int valid_config(const ModelConfig *cfg) {
    if (cfg->depth < 8 || (cfg->depth - 2) % 6 != 0)
        return rn_error("depth %d is not 6n+2 (20, 32, 44, 56, 110)", cfg->depth);
    if (cfg->in_channels < 1 || cfg->in_channels > 16)
        return rn_error("input channels %d out of range 1..16", cfg->in_channels);
    if (cfg->image_size < 8 || cfg->image_size > 512)
        return rn_error("image size %d out of range 8..512", cfg->image_size);
    if (cfg->classes < 2 || cfg->classes > 1000) return rn_error("classes %d out of range 2..1000", cfg->classes);
    if (cfg->arch != ARCH_SEED && cfg->arch != ARCH_PAPER) return rn_error("unknown architecture");
    return 0;
}

/* Builds the block list and the parameter table in PyTorch state_dict order (module registration
 * order: the seed's block registers bn, conv1, conv2, downsample; the paper's conv1, bn1, conv2, bn2). */
static void build_plan(ModelPlan *p, Tables *t, const ModelConfig *cfg) {
    const int n = (cfg->depth - 2) / 6, seed = cfg->arch == ARCH_SEED, running = !seed;
    p->num_blocks = STAGES * n;
    p->stem = (ConvShape){cfg->in_channels, 16, 3, 1, 1};
    p->stem_w = conv_param(t, "conv1.weight", p->stem);
    p->stem_b = seed ? param(t, "conv1.bias", 1, 16, 0, 0, 0) : NO_OFFSET;
    p->stem_bn = bn_params(t, "bn1", 16, running);
    p->stem_ref = reference_slots(t, "bn1", 16, 1);
    int cin = 16, size = cfg->image_size;
    for (int s = 0; s < STAGES; s++) {
        const int cout = 16 << s;
        for (int i = 0; i < n; i++) {
            Block *b = &p->blocks[s * n + i];
            b->param_lo = t->param_floats;
            char prefix[48], name[112];
            snprintf(prefix, sizeof prefix, "module%d.%d", s + 1, i);
            b->cin = cin;
            b->cout = cout;
            b->stride = (s > 0 && i == 0) ? 2 : 1;
            b->h_in = size;
            b->h_out = conv_out_size(size, 3, b->stride, 1);
            b->conv1 = (ConvShape){cin, cout, 3, b->stride, 1};
            b->conv2 = (ConvShape){cout, cout, 3, 1, 1};
            if (seed) {
                /* the seed compares spatial sizes only: a channel change at stride 1 would not project */
                b->has_proj = b->h_out != b->h_in;
                snprintf(name, sizeof name, "%s.bn", prefix);
                b->bn1 = bn_params(t, name, cout, 0);
                b->bn2 = b->bn1;
                b->ref1 = reference_slots(t, name, cout, 2);
                b->ref2 = b->ref1 + 2 * (size_t)cout;
                snprintf(name, sizeof name, "%s.conv1.weight", prefix);
                b->conv1_w = conv_param(t, name, b->conv1);
                snprintf(name, sizeof name, "%s.conv2.weight", prefix);
                b->conv2_w = conv_param(t, name, b->conv2);
                if (b->has_proj) {
                    b->proj = (ConvShape){cin, cout, 1, b->stride, 0};
                    snprintf(name, sizeof name, "%s.downsample.0.weight", prefix);
                    b->proj_w = conv_param(t, name, b->proj);
                    snprintf(name, sizeof name, "%s.downsample.1", prefix);
                    b->proj_bn = bn_params(t, name, cout, 0);
                    b->ref_proj = reference_slots(t, name, cout, 1);
                }
            } else {
                b->option_a = b->stride != 1 || cin != cout;
                snprintf(name, sizeof name, "%s.conv1.weight", prefix);
                b->conv1_w = conv_param(t, name, b->conv1);
                snprintf(name, sizeof name, "%s.bn1", prefix);
                b->bn1 = bn_params(t, name, cout, running);
                b->ref1 = reference_slots(t, name, cout, 1);
                snprintf(name, sizeof name, "%s.conv2.weight", prefix);
                b->conv2_w = conv_param(t, name, b->conv2);
                snprintf(name, sizeof name, "%s.bn2", prefix);
                b->bn2 = bn_params(t, name, cout, running);
                b->ref2 = reference_slots(t, name, cout, 1);
            }
            cin = cout;
            size = b->h_out;
        }
    }
    p->features = cin;
    p->final_size = size;
    p->fc_w = param(t, "fc.weight", 2, cfg->classes, cin, 0, 0);
    p->fc_b = param(t, "fc.bias", 1, cfg->classes, 0, 0, 0);
}

size_t model_count_params(const ModelConfig *cfg) {
    if (valid_config(cfg)) return 0;
    static _Thread_local TensorInfo params[MAX_TENSORS], buffers[MAX_TENSORS], refs[MAX_TENSORS];
    Tables t = {.params = params, .buffers = buffers, .refs = refs};
    ModelPlan p = {0};
    p.blocks = calloc((size_t)(cfg->depth - 2) / 2, sizeof *p.blocks);
    if (!p.blocks) return 0;
    build_plan(&p, &t, cfg);
    free(p.blocks);
    return t.param_floats;
}

/* ---- initialisation ------------------------------------------------------------------------------ */

static void init_kaiming_fan_out(float *w, ConvShape s, Rng *rng) {
    /* nn.init.kaiming_normal_(mode='fan_out', nonlinearity='relu'): std = sqrt(2 / (cout * k * k)) */
    const double std = sqrt(2.0 / (double)(s.cout * s.k * s.k));
    const size_t count = (size_t)s.cout * s.cin * s.k * s.k;
    for (size_t i = 0; i < count; i++) w[i] = (float)(std * rng_normal(rng));
}

static void init_uniform(float *w, size_t count, double bound, Rng *rng) {
    for (size_t i = 0; i < count; i++) w[i] = (float)(bound * (2.0 * rng_uniform(rng) - 1.0));
}

static void init_bn(Model *m, BnParams bn) {
    for (int c = 0; c < bn.channels; c++) {
        m->params[bn.gamma + c] = 1.0f;
        m->params[bn.beta + c] = 0.0f;
        if (bn.running_mean != NO_OFFSET) {
            m->buffers[bn.running_mean + c] = 0.0f;
            m->buffers[bn.running_var + c] = 1.0f;
        }
    }
}

static void init_params(Model *m, uint64_t seed) {
    ModelPlan *p = m->plan;
    Rng rng;
    rng_init(&rng, seed, 0x696e6974 /* "init" */);
    init_kaiming_fan_out(m->params + p->stem_w, p->stem, &rng);
    if (p->stem_b != NO_OFFSET)   /* PyTorch's Conv2d default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) */
        init_uniform(m->params + p->stem_b, 16, 1.0 / sqrt(p->stem.cin * 9.0), &rng);
    init_bn(m, p->stem_bn);
    for (int i = 0; i < p->num_blocks; i++) {
        Block *b = &p->blocks[i];
        init_kaiming_fan_out(m->params + b->conv1_w, b->conv1, &rng);
        init_kaiming_fan_out(m->params + b->conv2_w, b->conv2, &rng);
        init_bn(m, b->bn1);
        init_bn(m, b->bn2);
        if (b->has_proj) {
            init_kaiming_fan_out(m->params + b->proj_w, b->proj, &rng);
            init_bn(m, b->proj_bn);
        }
    }
    /* nn.Linear's default: weight and bias U(-1/sqrt(in), 1/sqrt(in)) */
    const double bound = 1.0 / sqrt((double)p->features);
    init_uniform(m->params + p->fc_w, (size_t)m->cfg.classes * p->features, bound, &rng);
    init_uniform(m->params + p->fc_b, (size_t)m->cfg.classes, bound, &rng);
}

int model_init(Model *m, const ModelConfig *cfg, uint64_t seed) {
    memset(m, 0, sizeof *m);
    if (valid_config(cfg)) return -1;
    m->cfg = *cfg;
    TensorInfo *params = calloc(MAX_TENSORS, sizeof *params);
    TensorInfo *buffers = calloc(MAX_TENSORS, sizeof *buffers);
    TensorInfo *refs = calloc(MAX_TENSORS, sizeof *refs);
    ModelPlan *p = calloc(1, sizeof *p);
    if (!params || !buffers || !refs || !p) goto oom;
    p->blocks = calloc((size_t)(cfg->depth - 2) / 2, sizeof *p->blocks);
    if (!p->blocks) goto oom;
    Tables t = {.params = params, .buffers = buffers, .refs = refs};
    build_plan(p, &t, cfg);
    m->plan = p;
    m->param_info = params;
    m->num_param_tensors = t.num_params;
    m->num_params = t.param_floats;
    m->buffer_info = buffers;
    m->num_buffer_tensors = t.num_buffers;
    m->num_buffer_floats = t.buffer_floats;
    m->reference_info = refs;
    m->num_reference_tensors = t.num_refs;
    m->num_reference_floats = t.ref_floats;
    m->params = rn_alloc(sizeof(float) * m->num_params);
    m->grads = rn_alloc(sizeof(float) * m->num_params);
    m->buffers = rn_alloc(sizeof(float) * (m->num_buffer_floats ? m->num_buffer_floats : 1));
    m->reference = rn_alloc(sizeof(float) * m->num_reference_floats);
    if (!m->params || !m->grads || !m->buffers || !m->reference) {
        model_free(m);
        return -1;
    }
    memset(m->reference, 0, sizeof(float) * m->num_reference_floats);
    init_params(m, seed);
    return 0;
oom:
    free(params);
    free(buffers);
    free(refs);
    if (p) free(p->blocks);
    free(p);
    return rn_error("out of memory building the model");
}

static void arena_free(Arena *a) {
    rn_free(a->memory);
    free(a->blocks);
    memset(a, 0, sizeof *a);
}

void model_free(Model *m) {
    if (m->plan) {
        arena_free(&m->plan->train);
        arena_free(&m->plan->eval);
        rn_free(m->plan->conv_scratch);
        free(m->plan->blocks);
        free(m->plan);
    }
    free(m->param_info);
    free(m->buffer_info);
    free(m->reference_info);
    rn_free(m->reference);
    rn_free(m->params);
    rn_free(m->grads);
    rn_free(m->buffers);
    memset(m, 0, sizeof *m);
}

static const TensorInfo *find(const TensorInfo *table, int count, const char *name) {
    for (int i = 0; i < count; i++)
        if (strcmp(table[i].name, name) == 0) return &table[i];
    return NULL;
}

const TensorInfo *model_find_param(const Model *m, const char *name) {
    return find(m->param_info, m->num_param_tensors, name);
}

const TensorInfo *model_find_reference(const Model *m, const char *name) {
    return find(m->reference_info, m->num_reference_tensors, name);
}

const TensorInfo *model_find_buffer(const Model *m, const char *name) {
    return find(m->buffer_info, m->num_buffer_tensors, name);
}

/* ---- activation arena ----------------------------------------------------------------------------- */

/* Floats of a tensor in the arena: every tensor starts 64-byte aligned. */
static size_t aligned_floats(size_t count) { return (count + 15) / 16 * 16; }

/* Where a tensor of the inference arena lies: buffer `buf` at float offset `off`. */
typedef struct { int buf; size_t off; } Place;

static float *place_at(float *const *bufs, Place at) { return bufs ? bufs[at.buf] + at.off : NULL; }

/* need[b] = max(need[b], end of a tensor of `count` floats at `at`) */
static void place_need(size_t need[3], Place at, size_t count) {
    const size_t end = at.off + aligned_floats(count);
    if (end > need[at.buf]) need[at.buf] = end;
}

/* The inference arena: the whole evaluated set passes through a few whole-set buffers, and every later write
 * overwrites an earlier one in place, so n images cost about 2 activations of the largest layer (seed) or 3
 * (paper). Seed: the block input x stays in its buffer, conv1 / BN / ReLU go to the other one, and conv2
 * accumulates into the shortcut (conv_forward_add with the shortcut as addend and output) - x itself,
 * or, where the block projects, the projection's output, which lies in the other buffer after a1 (at
 * stride 2 both together are about the size of x); BN and ReLU then run in place. Paper: BN comes between
 * conv2 and the sum, so conv2 needs a third buffer next to x and a1 (its option-A shortcut lies after a1).
 * The stem's input (C,N,H,W) lies in buffer 1, its output in 0. Computes each buffer's floats into need
 * (the most any tensor placed in it reaches); with bufs, also points the arena's tensors into them. */
static void inference_places(const Model *m, Arena *a, int n, float *const *bufs, size_t need[3]) {
    const ModelPlan *p = m->plan;
    const int S = m->cfg.image_size, seed = m->cfg.arch == ARCH_SEED, nbufs = seed ? 2 : 3;
    const Place stem_in = {1, 0}, stem_out = {0, 0};
    place_need(need, stem_in, (size_t)m->cfg.in_channels * n * S * S);
    place_need(need, stem_out, (size_t)16 * n * S * S);
    if (bufs) {
        a->x0 = place_at(bufs, stem_in);
        a->c0 = a->a0 = place_at(bufs, stem_out);
    }
    Place x = stem_out;
    for (int i = 0; i < p->num_blocks; i++) {
        const Block *b = &p->blocks[i];
        const size_t out = (size_t)b->cout * n * b->h_out * b->h_out;
        const Place t = {(x.buf + 1) % nbufs, 0}, after_t = {t.buf, aligned_floats(out)};
        const Place sum = seed ? (b->has_proj ? after_t : x) : (Place){(x.buf + 2) % nbufs, 0};
        place_need(need, t, out);
        place_need(need, sum, out);
        if (b->has_proj || b->option_a) place_need(need, after_t, out);
        if (bufs) {
            BlockActs *ba = &a->blocks[i];
            ba->x = place_at(bufs, x);
            ba->c1 = ba->a1 = place_at(bufs, t);
            ba->c2 = ba->out = place_at(bufs, sum);
            ba->d = ba->db = b->has_proj || b->option_a ? place_at(bufs, after_t) : NULL;
        }
        x = sum;
    }
}

/* Lays the arena out twice: with memory == NULL it only counts floats. A training arena gives every
 * tensor backward needs its own place; an inference arena is laid out by inference_places. */
static size_t arena_layout(const Model *m, Arena *a, int n, int training, float *memory) {
    const ModelPlan *p = m->plan;
    const int S = m->cfg.image_size;
    size_t used = 0;
#define TAKE(ptr, count)                                                                       \
    do {                                                                                       \
        ptr = memory ? memory + used : NULL;                                                   \
        used += aligned_floats(count);                                                         \
    } while (0)
    size_t largest = (size_t)16 * S * S;   /* floats per image of the largest activation */
    for (int i = 0; i < p->num_blocks; i++) {
        size_t in = (size_t)p->blocks[i].cin * p->blocks[i].h_in * p->blocks[i].h_in;
        size_t out = (size_t)p->blocks[i].cout * p->blocks[i].h_out * p->blocks[i].h_out;
        if (in > largest) largest = in;
        if (out > largest) largest = out;
    }
    largest *= (size_t)n;
    if (training) TAKE(a->x0, (size_t)m->cfg.in_channels * n * S * S);
    TAKE(a->stem_stats, 3 * 16);
    if (training) {
        TAKE(a->c0, (size_t)16 * n * S * S);
        TAKE(a->a0, (size_t)16 * n * S * S);
    }
    for (int i = 0; i < p->num_blocks; i++) {
        const Block *b = &p->blocks[i];
        BlockActs *ba = memory ? &a->blocks[i] : &(BlockActs){0};
        const size_t out = (size_t)b->cout * n * b->h_out * b->h_out;
        TAKE(ba->stats, 4 * 3 * b->cout);
        if (!training) continue;
        if (memory) ba->x = i == 0 ? a->a0 : a->blocks[i - 1].out;
        TAKE(ba->c1, out);
        TAKE(ba->a1, out);
        TAKE(ba->c2, out);
        TAKE(ba->out, out);
        if (b->has_proj || b->option_a) {
            TAKE(ba->d, out);
            if (b->has_proj) TAKE(ba->db, out); else ba->db = ba->d;
        }
    }
    TAKE(a->pooled, (size_t)n * p->features);
    TAKE(a->logits, (size_t)n * m->cfg.classes);
    TAKE(a->dlogits, (size_t)n * m->cfg.classes);
    if (training) {
        for (int g = 0; g < 4; g++) TAKE(a->grad[g], largest);
        TAKE(a->grad_pooled, (size_t)n * p->features);
    } else {
        size_t need[3] = {0, 0, 0};
        float *bufs[3] = {NULL, NULL, NULL};
        inference_places(m, a, n, NULL, need);
        for (int b = 0; b < 3; b++)
            if (need[b]) TAKE(bufs[b], need[b]);
        if (memory) inference_places(m, a, n, bufs, need);
    }
#undef TAKE
    return used;
}

static size_t conv_scratch_need(const ModelPlan *p, int n, int image_size) {
    size_t need = conv_scratch_floats(p->stem, n, image_size, image_size);
    for (int i = 0; i < p->num_blocks; i++) {
        const Block *b = &p->blocks[i];
        size_t s1 = conv_scratch_floats(b->conv1, n, b->h_in, b->h_in);
        size_t s2 = conv_scratch_floats(b->conv2, n, b->h_out, b->h_out);
        size_t s3 = b->has_proj ? conv_scratch_floats(b->proj, n, b->h_in, b->h_in) : 0;
        if (s1 > need) need = s1;
        if (s2 > need) need = s2;
        if (s3 > need) need = s3;
    }
    return need;
}

int model_reserve(Model *m, int max_batch, int training) {
    ModelPlan *p = m->plan;
    if (max_batch < 1) return rn_error("batch size %d must be at least 1", max_batch);
    Arena *a = training ? &p->train : &p->eval;
    if (a->capacity >= max_batch && a->memory) return 0;
    arena_free(a);
    Arena counted = {0};
    size_t floats = arena_layout(m, &counted, max_batch, training, NULL);
    a->blocks = calloc((size_t)p->num_blocks, sizeof *a->blocks);
    a->memory = rn_alloc(sizeof(float) * floats);
    if (!a->blocks || !a->memory) {
        arena_free(a);
        return rn_error("out of memory reserving activations for %d images (%.0f MiB)", max_batch,
                        (double)floats * 4 / 1048576.0);
    }
    arena_layout(m, a, max_batch, training, a->memory);
    a->capacity = max_batch;
    a->training = training;
    a->floats = floats;
    size_t need = conv_scratch_need(p, max_batch, m->cfg.image_size);
    if (need > p->conv_scratch_floats) {
        rn_free(p->conv_scratch);
        p->conv_scratch = rn_alloc(sizeof(float) * need);
        if (!p->conv_scratch) {
            p->conv_scratch_floats = 0;
            return -1;
        }
        p->conv_scratch_floats = need;
    }
    return 0;
}

size_t model_arena_bytes(const Model *m) {
    return sizeof(float) * (m->plan->train.floats + m->plan->eval.floats + m->plan->conv_scratch_floats);
}

/* ---- profile: where a step's time goes, per layer kind and convolution shape (bench --profile) ---- */

/* Runs call_, and when profiling adds its time (and flops_) to perf's entry label_. */
#define PROFILED(label_, flops_, call_)                                         \
    do {                                                                        \
        if (!perf_profile_enabled()) {                                          \
            call_;                                                              \
        } else {                                                                \
            const double t0_ = rn_now();                                        \
            call_;                                                              \
            perf_profile_add(label_, rn_now() - t0_, flops_);                   \
        }                                                                       \
    } while (0)

static const char *conv_label(char *buf, size_t size, ConvShape s, int h, const char *pass) {
    snprintf(buf, size, "conv %dx%d/%d %3d->%-3d %2dx%-2d %s", s.k, s.k, s.stride, s.cin, s.cout, h, h, pass);
    return buf;
}

static double conv_flops_n(ConvShape s, int h, int n) {
    return perf_conv_flops(s.cin, s.cout, s.k, conv_out_size(h, s.k, s.stride, s.pad), n);
}

static void conv_fwd(float *y, const float *x, const float *w, const float *bias, int n, int h, ConvShape s,
                     float *scratch) {
    char label[64];
    PROFILED(perf_profile_enabled() ? conv_label(label, sizeof label, s, h, "forward") : "", conv_flops_n(s, h, n),
             conv_forward(y, x, w, bias, n, h, h, s, scratch));
}

/* y = addend + conv(x) (addend may be y), rounded as conv_fwd followed by add_into (conv.h) */
static void conv_fwd_add(float *y, const float *addend, const float *x, const float *w, int n, int h, ConvShape s,
                         float *scratch) {
    char label[64];
    PROFILED(perf_profile_enabled() ? conv_label(label, sizeof label, s, h, "forward") : "", conv_flops_n(s, h, n),
             conv_forward_add(y, addend, x, w, NULL, n, h, h, s, scratch));
}

/* with an addend (NULL: none), dx = addend + the input gradient, rounded as conv_bwd followed by add_into */
static void conv_bwd_add(float *dx, const float *addend, float *dw, float *dbias, const float *dy, const float *x,
                         const float *w, int n, int h, ConvShape s, float *scratch) {
    char label[64];
    PROFILED(perf_profile_enabled() ? conv_label(label, sizeof label, s, h, "backward") : "",
             (dx ? 2 : 1) * conv_flops_n(s, h, n),
             conv_backward_add(dx, addend, dw, dbias, dy, x, w, n, h, h, s, scratch));
}

static void conv_bwd(float *dx, float *dw, float *dbias, const float *dy, const float *x, const float *w, int n,
                     int h, ConvShape s, float *scratch) {
    conv_bwd_add(dx, NULL, dw, dbias, dy, x, w, n, h, s, scratch);
}

/* ---- forward -------------------------------------------------------------------------------------- */

typedef struct {
    Model *m;
    BnMode mode;
    int capture;   /* BN_EVAL_BATCH: keep every application's statistics as the reference */
    long count;    /* n * h * w of the current tensor */
} Pass;

/* One BN application: batch statistics (training, or the whole evaluated set), running statistics or the
 * reference statistics at offset ref. stats holds mean, rstd, var of this application for backward. */
static void bn_apply_now(Pass *ps, float *y, const float *x, BnParams bn, float *stats, size_t ref, int relu,
                         long m_count) {
    Model *m = ps->m;
    const float *gamma = m->params + bn.gamma, *beta = m->params + bn.beta;
    const int c = bn.channels;
    if (ps->mode == BN_EVAL_RUNNING || ps->mode == BN_EVAL_REFERENCE) {
        const int running = ps->mode == BN_EVAL_RUNNING;
        const float *mean = running ? m->buffers + bn.running_mean : m->reference + ref;
        const float *var = running ? m->buffers + bn.running_var : m->reference + ref + c;
        batchnorm_forward_fixed(y, x, gamma, beta, mean, var, c, m_count, relu);
        return;
    }
    const StatReducer *red = ps->mode == BN_TRAIN ? &m->train_reducer : &m->eval_reducer;
    double total = batchnorm_forward_train(y, stats, stats + c, stats + 2 * c, x, gamma, beta, c, m_count, relu,
                                           red->sum ? red : NULL);
    if (ps->mode == BN_TRAIN && bn.running_mean != NO_OFFSET)
        batchnorm_update_running(m->buffers + bn.running_mean, m->buffers + bn.running_var, stats, stats + 2 * c,
                                 c, total);
    if (ps->capture) {
        memcpy(m->reference + ref, stats, sizeof(float) * c);
        memcpy(m->reference + ref + c, stats + 2 * c, sizeof(float) * c);
    }
}

static void bn_apply(Pass *ps, float *y, const float *x, BnParams bn, float *stats, size_t ref, int relu,
                     long m_count) {
    PROFILED("batchnorm (+relu) forward", 0, bn_apply_now(ps, y, x, bn, stats, ref, relu, m_count));
}

static void add_into(float *y, const float *x, size_t count) {
    PROFILED("add / relu / shortcut", 0, add_inplace(y, x, count));
}

static void block_forward(Pass *ps, const Block *b, BlockActs *ba, int n) {
    Model *m = ps->m;
    const float *P = m->params;
    float *scratch = m->plan->conv_scratch;
    const long out_count = (long)n * b->h_out * b->h_out;
    const size_t out_size = (size_t)b->cout * out_count;
    const int c = b->cout;
    conv_fwd(ba->c1, ba->x, P + b->conv1_w, NULL, n, b->h_in, b->conv1, scratch);
    bn_apply(ps, ba->a1, ba->c1, b->bn1, ba->stats, b->ref1, 1, out_count);
    if (m->cfg.arch == ARCH_SEED) {
        /* out = relu(bn(c2 + shortcut)), the block's BN applied a second time */
        const float *shortcut = ba->x;
        if (b->has_proj) {
            conv_fwd(ba->d, ba->x, P + b->proj_w, NULL, n, b->h_in, b->proj, scratch);
            bn_apply(ps, ba->db, ba->d, b->proj_bn, ba->stats + 3 * c, b->ref_proj, 0, out_count);
            shortcut = ba->db;
        }
        /* the sum formed in conv2's store: in the inference arena c2 is the shortcut's buffer itself */
        conv_fwd_add(ba->c2, shortcut, ba->a1, P + b->conv2_w, n, b->h_out, b->conv2, scratch);
        bn_apply(ps, ba->out, ba->c2, b->bn2, ba->stats + 6 * c, b->ref2, 1, out_count);
    } else {
        /* out = relu(bn2(c2) + shortcut) */
        conv_fwd(ba->c2, ba->a1, P + b->conv2_w, NULL, n, b->h_out, b->conv2, scratch);
        bn_apply(ps, ba->out, ba->c2, b->bn2, ba->stats + 6 * c, b->ref2, 0, out_count);
        if (b->option_a) {
            PROFILED("add / relu / shortcut", 0,
                     shortcut_a_forward(ba->d, ba->x, b->cin, b->cout, n, b->h_in, b->h_in, b->stride));
            add_into(ba->out, ba->d, out_size);
        } else {
            add_into(ba->out, ba->x, out_size);
        }
        PROFILED("add / relu / shortcut", 0, relu_forward(ba->out, ba->out, out_size));
    }
}

static void forward_pass(Model *m, const float *images, int n, BnMode mode, int capture) {
    ModelPlan *p = m->plan;
    Arena *a = NULL;
    if (mode == BN_TRAIN || p->eval.capacity < n) a = &p->train;
    else a = &p->eval;
    if (a->capacity < n || (mode == BN_TRAIN && !a->training)) {
        /* a programming error, not a user's: the trainer reserves before it steps */
        rn_message("model_forward: %d images but no arena reserved for them", n);
        abort();
    }
    const int S = m->cfg.image_size, hw = S * S;
    Pass ps = {.m = m, .mode = mode, .capture = capture};
    PROFILED("input layout", 0, nchw_to_cnhw(a->x0, images, n, m->cfg.in_channels, hw));
    conv_fwd(a->c0, a->x0, m->params + p->stem_w, p->stem_b == NO_OFFSET ? NULL : m->params + p->stem_b, n, S,
             p->stem, p->conv_scratch);
    bn_apply(&ps, a->a0, a->c0, p->stem_bn, a->stem_stats, p->stem_ref, 1, (long)n * hw);
    for (int i = 0; i < p->num_blocks; i++) block_forward(&ps, &p->blocks[i], &a->blocks[i], n);
    const BlockActs *last = &a->blocks[p->num_blocks - 1];
    PROFILED("pool + linear + loss", 0, {
        avgpool_forward(a->pooled, last->out, p->features, n, p->final_size * p->final_size);
        linear_forward(a->logits, a->pooled, m->params + p->fc_w, m->params + p->fc_b, n, p->features,
                       m->cfg.classes);
    });
    if (mode == BN_TRAIN) m->bn_batches_tracked++;
    m->batch = n;
    m->logits = a->logits;
    m->dlogits = a->dlogits;
    p->last = a;
    p->last_mode = mode;
}

void model_forward(Model *m, const float *images, int n, BnMode mode) {
    if (mode == BN_EVAL_REFERENCE && !m->reference_valid) {
        rn_message("model_forward: reference BN statistics were not measured");   /* a programming error */
        abort();
    }
    forward_pass(m, images, n, mode, 0);
}

void model_measure_reference(Model *m, const float *images, int n) {
    forward_pass(m, images, n, BN_EVAL_BATCH, 1);
    m->reference_valid = 1;
}

double model_loss(Model *m, const int *labels, int n, double denom) {
    double loss = 0;
    PROFILED("pool + linear + loss", 0, loss = softmax_xent(m->dlogits, m->logits, labels, n, m->cfg.classes, denom));
    return loss;
}

void model_zero_grad(Model *m) { memset(m->grads, 0, sizeof(float) * m->num_params); }

void model_predict(const Model *m, int n, int *predictions) {
    const int k = m->cfg.classes;
    for (int i = 0; i < n; i++) {
        const float *row = m->logits + (size_t)i * k;
        int best = 0;
        for (int j = 1; j < k; j++)
            if (row[j] > row[best]) best = j;
        predictions[i] = best;
    }
}

/* ---- backward ------------------------------------------------------------------------------------- */

static void bn_backward_apply(Model *m, float *dx, const float *dy, const float *x, BnParams bn, const float *stats,
                              int relu, long m_count) {
    const int c = bn.channels;
    PROFILED("batchnorm (+relu) backward", 0,
             batchnorm_backward(dx, m->grads + bn.gamma, m->grads + bn.beta, dy, x, stats, stats + c,
                                m->params + bn.gamma, m->params + bn.beta, c, m_count, relu,
                                m->train_reducer.sum ? &m->train_reducer : NULL));
}

/* gout holds d(block output) and is consumed; writes d(block input) to gin. g2, g3 are scratch. */
static void block_backward(Model *m, const Block *b, const BlockActs *ba, int n, float *gout, float *gin,
                           float *g2, float *g3) {
    const float *P = m->params;
    float *G = m->grads, *scratch = m->plan->conv_scratch;
    const long out_count = (long)n * b->h_out * b->h_out;
    const size_t out_size = (size_t)b->cout * out_count, in_size = (size_t)b->cin * n * b->h_in * b->h_in;
    const int c = b->cout;
    float *gsum = gout;   /* gradient at the sum (before the last BN / ReLU), shared by both branches */
    float *gc2;
    if (m->cfg.arch == ARCH_SEED) {
        bn_backward_apply(m, gsum, gout, ba->c2, b->bn2, ba->stats + 6 * c, 1, out_count);
        gc2 = gsum;
    } else {
        PROFILED("add / relu / shortcut", 0, relu_backward(gsum, gout, ba->out, out_size));
        bn_backward_apply(m, g2, gsum, ba->c2, b->bn2, ba->stats + 6 * c, 0, out_count);
        gc2 = g2;
    }
    /* main branch: g3 = d a1, then d c1 in place, then gin = d x */
    conv_bwd(g3, G + b->conv2_w, NULL, gc2, ba->a1, P + b->conv2_w, n, b->h_out, b->conv2, scratch);
    bn_backward_apply(m, g3, g3, ba->c1, b->bn1, ba->stats, 1, out_count);
    /* an identity shortcut's gradient (gsum itself) is added in conv1's store; the others after it */
    const int identity = !b->has_proj && !b->option_a;
    conv_bwd_add(gin, identity ? gsum : NULL, G + b->conv1_w, NULL, g3, ba->x, P + b->conv1_w, n, b->h_in, b->conv1,
                 scratch);
    if (b->has_proj) {
        /* seed: the sum saw bn(conv(x)); g2 = d(proj conv out), then g3 = its d x */
        bn_backward_apply(m, g2, gsum, ba->d, b->proj_bn, ba->stats + 3 * c, 0, out_count);
        conv_bwd(g3, G + b->proj_w, NULL, g2, ba->x, P + b->proj_w, n, b->h_in, b->proj, scratch);
        add_into(gin, g3, in_size);
    } else if (b->option_a) {
        PROFILED("add / relu / shortcut", 0, shortcut_a_backward(g3, gsum, b->cin, b->cout, n, b->h_in, b->h_in, b->stride));
        add_into(gin, g3, in_size);
    }
}

void model_backward(Model *m) {
    ModelPlan *p = m->plan;
    Arena *a = p->last;
    if (!a || !a->training || p->last_mode != BN_TRAIN) {
        rn_message("model_backward without a training forward");
        abort();
    }
    const int n = m->batch, S = m->cfg.image_size, last = p->num_blocks - 1;
    PROFILED("pool + linear + loss", 0,
             linear_backward(a->grad_pooled, m->grads + p->fc_w, m->grads + p->fc_b, a->dlogits, a->pooled,
                             m->params + p->fc_w, n, p->features, m->cfg.classes));
    /* parameters lie in forward order, so the backward finishes them from the end of the buffer down */
    if (m->grads_final) m->grads_final(p->fc_w < p->fc_b ? p->fc_w : p->fc_b);
    float *gout = a->grad[0], *gin = a->grad[1];
    PROFILED("pool + linear + loss", 0, avgpool_backward(gout, a->grad_pooled, p->features, n, p->final_size * p->final_size));
    for (int i = last; i >= 0; i--) {
        block_backward(m, &p->blocks[i], &a->blocks[i], n, gout, gin, a->grad[2], a->grad[3]);
        if (m->grads_final) m->grads_final(p->blocks[i].param_lo);
        float *t = gout;
        gout = gin;
        gin = t;
    }
    bn_backward_apply(m, gout, gout, a->c0, p->stem_bn, a->stem_stats, 1, (long)n * S * S);
    conv_bwd(NULL, m->grads + p->stem_w, p->stem_b == NO_OFFSET ? NULL : m->grads + p->stem_b, gout, a->x0,
             m->params + p->stem_w, n, S, p->stem, p->conv_scratch);
    if (m->grads_final) m->grads_final(0);
}

/* ---- cost ----------------------------------------------------------------------------------------- */

static double conv_flops(ConvShape s, int h_out) { return perf_conv_flops(s.cin, s.cout, s.k, h_out, 1); }

double model_flops_per_image(const Model *m, int training) {
    const ModelPlan *p = m->plan;
    const int S = m->cfg.image_size;
    /* backward costs two GEMMs per convolution (input and weight gradients), the stem only one */
    double stem = conv_flops(p->stem, S), rest = 0;
    for (int i = 0; i < p->num_blocks; i++) {
        const Block *b = &p->blocks[i];
        rest += conv_flops(b->conv1, b->h_out) + conv_flops(b->conv2, b->h_out);
        if (b->has_proj) rest += conv_flops(b->proj, b->h_out);
    }
    double fc = 2.0 * p->features * m->cfg.classes;
    return training ? 2 * stem + 3 * rest + 3 * fc : stem + rest + fc;
}

/* ---- the layer list, in torchsummary's order ------------------------------------------------------ */

typedef struct { ModelLayer *rows; int capacity, count; } LayerList;

static void layer_row(LayerList *l, const char *type, const char *module, int channels, int size) {
    if (l->count < l->capacity) {
        ModelLayer *r = &l->rows[l->count];
        snprintf(r->type, sizeof r->type, "%s", type);
        snprintf(r->module, sizeof r->module, "%s", module);
        r->channels = channels;
        r->height = r->width = size;
    }
    l->count++;
}

/* The modules forward calls, in its order: the seed's block runs its shortcut (conv + BN) first, then
 * conv1, bn, relu, conv2, bn, relu; the paper's block calls F.relu and its shortcut as functions,
 * which torchsummary does not see. */
static void block_layers(LayerList *l, const Block *b, int seed, const char *prefix) {
    char name[64];
    const int c = b->cout, h = b->h_out;
    if (seed && b->has_proj) {
        snprintf(name, sizeof name, "%s.downsample.0", prefix);
        layer_row(l, "Conv2d", name, c, h);
        snprintf(name, sizeof name, "%s.downsample.1", prefix);
        layer_row(l, "BatchNorm2d", name, c, h);
    }
    for (int conv = 1; conv <= 2; conv++) {
        snprintf(name, sizeof name, "%s.conv%d", prefix, conv);
        layer_row(l, "Conv2d", name, c, h);
        if (seed) snprintf(name, sizeof name, "%s.bn", prefix);
        else snprintf(name, sizeof name, "%s.bn%d", prefix, conv);
        layer_row(l, "BatchNorm2d", name, c, h);
        snprintf(name, sizeof name, "%s.relu", prefix);
        if (seed) layer_row(l, "ReLU", name, c, h);
    }
    layer_row(l, seed ? "block" : "BasicBlock", prefix, c, h);
}

int model_layers(const Model *m, ModelLayer *rows, int capacity) {
    const ModelPlan *p = m->plan;
    const int seed = m->cfg.arch == ARCH_SEED, n = p->num_blocks / STAGES, size = m->cfg.image_size;
    LayerList l = {rows, capacity, 0};
    layer_row(&l, "Conv2d", "conv1", p->stem.cout, size);
    layer_row(&l, "BatchNorm2d", "bn1", p->stem.cout, size);
    if (seed) layer_row(&l, "ReLU", "relu", p->stem.cout, size);
    for (int i = 0; i < p->num_blocks; i++) {
        char prefix[32];
        snprintf(prefix, sizeof prefix, "module%d.%d", i / n + 1, i % n);
        block_layers(&l, &p->blocks[i], seed, prefix);
    }
    layer_row(&l, "AvgPool2d", "avgpool", p->features, 1);
    layer_row(&l, "Linear", "fc", m->cfg.classes, 0);
    return l.count;
}
