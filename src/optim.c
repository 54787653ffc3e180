/* Adam, AdamW and SGD over the flat buffers, with PyTorch 1.13's update rules (torch/optim/adam.py,
 * adamw.py, sgd.py, the single-tensor paths), LAMB (You et al. 2020, which PyTorch 1.13 lacks), and the
 * learning-rate schedules of MultiStepLR and CosineAnnealingLR in closed form. Scalars that PyTorch
 * computes in Python (bias corrections, step size) are computed here in double too, then applied in
 * float as PyTorch's kernels do. */
#include "resnet/optim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "resnet/util.h"

void optim_defaults(OptimConfig *cfg, OptimizerKind kind) {
    memset(cfg, 0, sizeof *cfg);
    cfg->kind = kind;
    cfg->beta1 = 0.9f;
    cfg->beta2 = 0.999f;
    cfg->eps = 1e-8f;
    if (kind == OPT_SGD) {
        cfg->lr = 0.1f;
        cfg->momentum = 0.9f;
    } else {
        cfg->lr = 1e-3f;
        /* torch.optim.AdamW defaults to weight_decay 1e-2; Adam and SGD to 0 */
        cfg->weight_decay = kind == OPT_ADAMW ? 1e-2f : 0.0f;
    }
}

const char *const optim_names[] = {"adam", "adamw", "sgd", "lamb", NULL};
const char *const schedule_names[] = {"constant", "step", "cosine", NULL};

const char *optim_name(OptimizerKind kind) {
    return kind >= OPT_ADAM && kind <= OPT_LAMB ? optim_names[kind] : "unknown";
}

/* the optimizers that keep Adam's two moments */
static int is_adam(OptimizerKind kind) { return kind == OPT_ADAM || kind == OPT_ADAMW || kind == OPT_LAMB; }

size_t optim_state_floats(const Optimizer *opt) {
    if (is_adam(opt->cfg.kind)) return 2 * opt->n;
    /* PyTorch keeps no momentum buffer without momentum; neither do we */
    return opt->cfg.momentum != 0.0f ? opt->n : 0;
}

int optim_init(Optimizer *opt, const OptimConfig *cfg, size_t n) {
    memset(opt, 0, sizeof *opt);
    if (cfg->kind < OPT_ADAM || cfg->kind > OPT_LAMB) return rn_error("unknown optimizer kind %d", (int)cfg->kind);
    opt->cfg = *cfg;
    opt->n = n;
    size_t floats = optim_state_floats(opt);
    if (floats > 0) {
        opt->state = rn_alloc(floats * sizeof(float));   /* zero-filled: PyTorch's initial moments */
        if (!opt->state) return -1;
    }
    if (is_adam(cfg->kind)) {
        opt->exp_avg = opt->state;
        opt->exp_avg_sq = opt->state + n;
    } else {
        opt->momentum_buffer = opt->state;
    }
    return 0;
}

int optim_set_layers(Optimizer *opt, const size_t *ends, int count) {
    for (int i = 0; i < count; i++)
        if (ends[i] <= (i ? ends[i - 1] : 0) || ends[i] > opt->n)
            return rn_error("optimizer layers: end %zu of layer %d is out of order or past %zu", ends[i], i, opt->n);
    if (count < 1 || ends[count - 1] != opt->n) return rn_error("optimizer layers do not end at %zu", opt->n);
    size_t *copy = malloc((size_t)count * sizeof *copy);
    if (!copy) return rn_error("out of memory for %d optimizer layers", count);
    memcpy(copy, ends, (size_t)count * sizeof *copy);
    free(opt->layer_end);
    opt->layer_end = copy;
    opt->num_layers = count;
    return 0;
}

void optim_free(Optimizer *opt) {
    free(opt->layer_end);
    rn_free(opt->state);
    memset(opt, 0, sizeof *opt);
}

/* Adam (coupled L2) and AdamW (decoupled decay); t is the 1-based number of this update. */
static void adam_step(Optimizer *opt, float *restrict p, const float *restrict g, float lr, long t) {
    const OptimConfig *c = &opt->cfg;
    const int decoupled = c->kind == OPT_ADAMW;
    const float wd = c->weight_decay, b1 = c->beta1, b2 = c->beta2, eps = c->eps;
    const float one_b1 = (float)(1.0 - (double)b1), one_b2 = (float)(1.0 - (double)b2);
    const float decay = (float)(1.0 - (double)lr * (double)wd);
    const double bias_c1 = 1.0 - pow((double)b1, (double)t);
    const double bias_c2 = 1.0 - pow((double)b2, (double)t);
    const float step_size = (float)((double)lr / bias_c1);
    const float bias_c2_sqrt = (float)sqrt(bias_c2);
    float *restrict m = opt->exp_avg, *restrict v = opt->exp_avg_sq;
    const long n = (long)opt->n;

#pragma omp parallel for schedule(static)
    for (long i = 0; i < n; i++) {
        float gi = g[i], w = p[i];
        if (decoupled)
            w *= decay;
        else
            gi += wd * w;
        float mi = m[i] * b1 + one_b1 * gi;
        float vi = v[i] * b2 + one_b2 * gi * gi;
        float denom = sqrtf(vi) / bias_c2_sqrt + eps;
        m[i] = mi;
        v[i] = vi;
        p[i] = w - step_size * (mi / denom);
    }
}

/* LAMB's update direction of element i from its moments: Adam's bias-corrected ratio plus decoupled decay */
static inline float lamb_direction(float m, float v, float w, float bias_c1, float bias_c2, float eps, float wd) {
    return (m / bias_c1) / (sqrtf(v / bias_c2) + eps) + wd * w;
}

/* LAMB (You et al. 2020, "Large Batch Optimization for Deep Learning", Algorithm 2, with bias correction
 * and decoupled weight decay): Adam's moments, then per layer the direction u scaled by the trust ratio
 * ||w|| / ||u|| (1 where either norm is 0), so that every layer moves by lr times its own norm whatever
 * its gradients' scale: p -= lr * trust * u. The norms are summed in double, serially in element order,
 * so the step does not depend on the thread count; a second pass recomputes u (no n-float scratch). */
static void lamb_step(Optimizer *opt, float *restrict p, const float *restrict g, float lr, long t) {
    const OptimConfig *c = &opt->cfg;
    const float wd = c->weight_decay, b1 = c->beta1, b2 = c->beta2, eps = c->eps;
    const float one_b1 = (float)(1.0 - (double)b1), one_b2 = (float)(1.0 - (double)b2);
    const float bias_c1 = (float)(1.0 - pow((double)b1, (double)t));
    const float bias_c2 = (float)(1.0 - pow((double)b2, (double)t));
    float *restrict m = opt->exp_avg, *restrict v = opt->exp_avg_sq;
    const int layers = opt->layer_end ? opt->num_layers : 1;
    size_t begin = 0;
    for (int l = 0; l < layers; l++) {
        const size_t end = opt->layer_end ? opt->layer_end[l] : opt->n;
        double w_norm2 = 0, u_norm2 = 0;
        for (size_t i = begin; i < end; i++) {
            const float gi = g[i];
            m[i] = m[i] * b1 + one_b1 * gi;
            v[i] = v[i] * b2 + one_b2 * gi * gi;
            const float u = lamb_direction(m[i], v[i], p[i], bias_c1, bias_c2, eps, wd);
            w_norm2 += (double)p[i] * p[i];
            u_norm2 += (double)u * u;
        }
        const double trust = w_norm2 > 0 && u_norm2 > 0 ? sqrt(w_norm2) / sqrt(u_norm2) : 1.0;
        const float step = (float)((double)lr * trust);
        for (size_t i = begin; i < end; i++) p[i] -= step * lamb_direction(m[i], v[i], p[i], bias_c1, bias_c2, eps, wd);
        begin = end;
    }
}

/* SGD with coupled weight decay and momentum; the buffer starts as the first gradient (no damping). */
static void sgd_step(Optimizer *opt, float *restrict p, const float *restrict g, float lr, int first) {
    const OptimConfig *c = &opt->cfg;
    const float wd = c->weight_decay, mu = c->momentum;
    const int nesterov = c->nesterov;
    float *restrict buf = opt->momentum_buffer;
    const long n = (long)opt->n;

    if (!buf) {
#pragma omp parallel for schedule(static)
        for (long i = 0; i < n; i++) p[i] -= lr * (g[i] + wd * p[i]);
        return;
    }
#pragma omp parallel for schedule(static)
    for (long i = 0; i < n; i++) {
        float gi = g[i] + wd * p[i];
        float bi = first ? gi : buf[i] * mu + gi;
        buf[i] = bi;
        float d = nesterov ? gi + mu * bi : bi;
        p[i] -= lr * d;
    }
}

void optim_step(Optimizer *opt, float *params, const float *grads, float lr) {
    long t = ++opt->step;
    if (opt->cfg.kind == OPT_LAMB)
        lamb_step(opt, params, grads, lr, t);
    else if (is_adam(opt->cfg.kind))
        adam_step(opt, params, grads, lr, t);
    else
        sgd_step(opt, params, grads, lr, t == 1);
}

/* ---- schedules ---------------------------------------------------------------------------------- */

/* The schedule's rate before warmup, in double. */
static double schedule_rate(const Schedule *s, long step) {
    double base = s->base_lr;
    switch (s->kind) {
    case SCHED_STEP: {
        /* MultiStepLR: one factor of gamma for each milestone already reached (bisect_right) */
        int passed = 0;
        for (int i = 0; i < s->num_milestones && i < SCHED_MAX_MILESTONES; i++)
            if (s->milestones[i] <= step) passed++;
        return base * pow((double)s->gamma, passed);
    }
    case SCHED_COSINE: {
        if (s->total_steps <= 0) return base;
        /* PyTorch's closed form rises again after T_max; a run that outlives its schedule stays at 0 */
        long t = step < 0 ? 0 : step > s->total_steps ? s->total_steps : step;
        const double pi = 3.14159265358979323846;
        return base * 0.5 * (1.0 + cos(pi * (double)t / (double)s->total_steps));
    }
    case SCHED_CONSTANT:
    default:
        return base;
    }
}

/* Linear warmup composed with the schedule by product, as PyTorch's LambdaLR with
 * lambda s: min(1, (s+1)/W) * schedule(s) (equal to LinearLR(start_factor=1/W, total_iters=W-1) on a
 * constant rate). */
float schedule_lr(const Schedule *s, long step) {
    const double rate = schedule_rate(s, step);
    if (s->warmup_steps > 0 && step < s->warmup_steps)
        return (float)(rate * (double)(step + 1) / (double)s->warmup_steps);
    return (float)rate;
}
