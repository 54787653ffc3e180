/* Optimizers over the flat parameter and gradient buffers, with PyTorch's update rules, and the
 * learning-rate schedules. The state (moments or momentum) is one contiguous buffer. */
#ifndef RESNET_OPTIM_H
#define RESNET_OPTIM_H

#include <stddef.h>

typedef enum { OPT_ADAM = 0, OPT_ADAMW, OPT_SGD, OPT_LAMB } OptimizerKind;
/* As the command line and the checkpoint spell them: OptimizerKind order, NULL-terminated. */
extern const char *const optim_names[];
const char *optim_name(OptimizerKind kind);   /* "unknown" for a value out of range */

typedef struct {
    OptimizerKind kind;
    float lr;             /* base learning rate */
    float weight_decay;   /* Adam, SGD: coupled L2 (added to the gradient); AdamW, LAMB: decoupled */
    float beta1, beta2, eps;
    float momentum;       /* SGD */
    int nesterov;         /* SGD */
} OptimConfig;

typedef struct {
    OptimConfig cfg;
    size_t n;             /* parameters */
    long step;            /* updates done so far */
    float *state;         /* Adam/AdamW/LAMB: exp_avg [n] then exp_avg_sq [n]; SGD: momentum_buffer [n] */
    float *exp_avg, *exp_avg_sq, *momentum_buffer;   /* views into state, NULL where unused */
    size_t *layer_end;    /* LAMB: where each layer (parameter tensor) ends, ascending; NULL: one layer */
    int num_layers;
} Optimizer;

void optim_defaults(OptimConfig *cfg, OptimizerKind kind);   /* PyTorch's betas/eps, lr */
int optim_init(Optimizer *opt, const OptimConfig *cfg, size_t n);   /* 0 or -1 (no memory) */
void optim_free(Optimizer *opt);
size_t optim_state_floats(const Optimizer *opt);
/* The layers LAMB scales each update of: consecutive tensors, ending at ends[0] < ends[1] < ... = n.
 * 0 or -1 (no memory, or ends not so). */
int optim_set_layers(Optimizer *opt, const size_t *ends, int count);
/* One update of params [n] from grads [n] at learning rate lr (from the schedule). */
void optim_step(Optimizer *opt, float *params, const float *grads, float lr);

typedef enum { SCHED_CONSTANT = 0, SCHED_STEP, SCHED_COSINE } ScheduleKind;
extern const char *const schedule_names[];   /* ScheduleKind order, NULL-terminated */

#define SCHED_MAX_MILESTONES 8
typedef struct {
    ScheduleKind kind;
    float base_lr;
    long total_steps;                      /* cosine: lr reaches 0 at total_steps */
    int num_milestones;
    long milestones[SCHED_MAX_MILESTONES]; /* step: lr *= gamma at each of these steps */
    float gamma;                           /* 0.1 */
    long warmup_steps;                     /* step s < warmup_steps runs at (s+1)/warmup_steps of the rate */
} Schedule;

/* The learning rate for the update that follows `step` completed updates. */
float schedule_lr(const Schedule *s, long step);

#endif
