#!/usr/bin/python3
"""Writes the PyTorch reference fixtures that tests/test_parity.c, test_optim.c and test_ema.c compare against.

Run with the interpreter that has PyTorch 1.13:  /usr/bin/python3 scripts/make_reference.py
Output: tests/data/ref_{seed,paper}_d20.bin, ref_seed_d32.bin, ref_seed_fmnist.bin, ref_optim.bin, ref_ema.bin, in the format
that tests/fixture.h documents. Seeded, single-threaded: a rerun writes the same bytes.

Model cases. The initial weights come from the seeded PyTorch initialisation and are written as
float32; everything after is computed in float64 from those exact values, so a fixture holds the
mathematically right answer to ~1e-12 and a C float32 run is judged on its own rounding, not on the sum
of its and PyTorch's. Three kinds of case:

  steps    (depth 20, the seed's own initialisation): the seed's training step three times
  general  (depth 32): BN weights/biases (and the paper's running statistics) drawn at random instead of
           1/0, so that a forward or backward that forgets gamma or beta cannot pass; no steps
  grads    (Fashion-MNIST shape: 1x28x28, 4 images): forward and backward only
In every case the BN biases are then nudged by at most 2e-3 so that no pre-ReLU value of the first
forward lies within float32 rounding of zero (see widen_relu_margins); the seed's zero biases become
values of ~1e-4..1e-3.

Tensors (every case):
  config                int32 [arch (0 seed, 1 paper), depth, in_channels, image_size, classes, batch]
  images, labels        the training batch
  init/<param>          initial parameters; general paper: init_running/<bn>.running_{mean,var} too
  logits, loss, grad/*  train-mode forward (batch statistics), mean cross-entropy, gradients
  paper: running1/<bn>.running_{mean,var}   after that first training forward
steps and general:
  eval_images           a second batch of 16
  eval_logits_batch, eval_logits_batch_images   batch-statistics evaluation (the seed's model.eval())
                        of eval_images and of the training images
  paper: eval_logits_running   model.eval() (running statistics) on eval_images
  reference/<bn>.reference      --bn-eval reference: mean and biased variance of every application of
                        the BN over the training images (batch statistics), [applications, 2, channels]
  eval_logits_reference eval_images with every BN application normalized by those statistics
steps: Adam (lr 1e-3, weight decay 1e-4), one fresh forward/backward per step on the same batch:
  step1/*, step3/*      parameters after 1 and 3 updates
  logits_step2          logits of the second forward (at the step-1 parameters)
  loss_steps            float64 [3], the loss of each forward
  paper: running/<bn>.running_{mean,var}   after the three forwards
  the evaluations above are of the step-3 parameters (and the paper's step-3 running statistics)
general: the evaluations are of the initial parameters after the one training forward.

Why so: after the second Adam update, float32 rounding is amplified chaotically (Adam's update of an
element with a near-zero gradient g moves by ~lr * (relative error of g)), so step-3 quantities only
agree to ~1e-3 even between two float32 PyTorch runs. tests/test_parity.c checks those loosely and
evaluates at the reference's step-3 weights to keep the evaluation checks tight.

ref_optim.bin: params0 [1000], grads [5, 1000] and, per case (adam, adam_betas, adamw, sgd,
sgd_nesterov, sgd_plain; lamb and lamb_nodecay, with their own <case>/params0 and <case>/layers, the
layers' ends, float64), <case>/config float64 [kind (0 adam, 1 adamw, 2 sgd, 3 lamb), lr, weight decay,
beta1, beta2, eps, momentum, nesterov], <case>/lr float64 [5] (the lr of each step) and
<case>/step1..step5, torch.optim's parameters after each update (float32, as torch runs them). And
sched_step (MultiStepLR 0.1, milestones 4, 8, gamma 0.1) and sched_cosine (CosineAnnealingLR 0.1,
T_max 10), sched_warmup (LinearLR 0.1 from 1/4 over 4 steps) and sched_warmup_cosine (LambdaLR:
min(1, (s+1)/4) x the cosine over 12 steps): the lr in force for the update after k completed updates.

ref_ema.bin: --ema against torch.optim.swa_utils.AveragedModel(model, avg_fn=lambda avg, p, n:
D * avg + (1 - D) * p) (use_buffers=False), D = DECAY or, with --ema-warmup on, min(DECAY, (1 + n) /
(10 + n)), update_parameters(model) after every Adam step of a 1000-vector: params0 [1000], grads
[6, 1000], adam float64 [lr, weight decay], params/step1..step6 (the model's parameters after each step)
and, per case (decay_0_9, decay_0_999, decay_0_5; warmup_0_999, warmup_0_3 with the warmup),
<case>/decay float64 [1], <case>/warmup int32 [1], <case>/init (the average before any update: AveragedModel's copy of the model),
<case>/step1..step6 (the average after the update that follows each step) and <case>/n_averaged int32 [6].
"""
import argparse
import copy
import math
import os
import struct
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import seed_model  # noqa: E402

ARCH_CODE = {"seed": 0, "paper": 1}
ADAM_LR, ADAM_WD = 1e-3, 1e-4
BATCH, EVAL_BATCH = 8, 16


class FixtureWriter:
    """Collects named tensors and writes them as one RNFX0001 file."""

    DTYPES = {np.dtype(np.float32): 0, np.dtype(np.int32): 1, np.dtype(np.float64): 2}

    def __init__(self):
        self.tensors = []
        self.margin = None   # smallest |pre-ReLU value|, for the log

    def add(self, name, value, dtype=np.float32):
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().numpy()
        # a copy: parameters and gradients change in place after they are recorded
        arr = np.array(value, dtype=dtype, order="C", copy=True)
        assert name not in (n for n, _ in self.tensors), name
        self.tensors.append((name, arr))

    def write(self, path):
        with open(path, "wb") as f:
            f.write(b"RNFX0001")
            f.write(struct.pack("<I", len(self.tensors)))
            for name, arr in self.tensors:
                raw = name.encode()
                f.write(struct.pack("<I", len(raw)) + raw)
                f.write(struct.pack("<II", self.DTYPES[arr.dtype], arr.ndim))
                f.write(struct.pack(f"<{arr.ndim}I", *arr.shape))
                f.write(arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes())
        return os.path.getsize(path)


def running_buffers(model):
    return {k: v for k, v in model.state_dict().items()
            if k.endswith("running_mean") or k.endswith("running_var")}


def randomize_bn(model, w):
    """Moves every BN off its trivial initial state (the 'general' cases)."""
    with torch.no_grad():
        for name, mod in model.named_modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.5, 0.5)
                if mod.track_running_stats:
                    mod.running_mean.normal_(0.0, 0.2)
                    mod.running_var.uniform_(0.5, 2.0)
                    w.add(f"init_running/{name}.running_mean", mod.running_mean)
                    w.add(f"init_running/{name}.running_var", mod.running_var)


# ---- ReLU margins ----------------------------------------------------------------------------------
#
# ReLU's derivative jumps at 0. A pre-ReLU value within float32 rounding (~1e-6) of zero can land on
# either side in a float32 run, and one such element flips that element's gradient and shifts every
# earlier gradient by ~1/sqrt(elements in the layer), ~5e-3: far above the 1e-4 the parity test asks.
# With ~1.5M ReLU inputs per forward (ResNet-20, 8 images) the value nearest to zero is typically
# ~1e-6 away, so an unlucky seed fails any float32 implementation, PyTorch's included. Each BN bias
# shifts the pre-ReLU values of its channel uniformly, so a nudge of at most MARGIN_WINDOW puts zero in
# the middle of a gap between them instead: ~1e-4 from the nearest value, far beyond rounding.

MARGIN_WINDOW = 2e-3
MARGIN_GRID = 4001


def best_shift(values, window):
    """Per channel (row of values [C, M]), the shift in [-window, window] that keeps shifted values
    furthest from zero."""
    grid = torch.linspace(-window, window, MARGIN_GRID, dtype=torch.float64)
    shifts = torch.empty(values.shape[0], dtype=torch.float64)
    for c, row in enumerate(values):
        near = row[row.abs() < 2 * window]
        if near.numel() == 0:
            shifts[c] = 0.0
            continue
        margin = (near[:, None] + grid[None, :]).abs().min(dim=0).values
        shifts[c] = grid[int(margin.argmax())]
    return shifts


def channel_rows(x):
    """[N, C, H, W] -> [C, N*H*W]"""
    return x.transpose(0, 1).reshape(x.shape[1], -1)


def shift_bias(bn, shifts):
    # round to float32: the fixture stores float32 weights and the margins must hold for those
    bn.bias.copy_((bn.bias + shifts).float().double())


def widen_seed_block(b, z, window, rounds=6):
    identity = b.downsample(z) if b.downsample is not None else z
    c1 = b.conv1(z)
    # one BN for both applications: its bias moves the values before both ReLUs, the second also
    # through conv2, so iterate with shrinking windows until the shifts settle
    for r in range(rounds):
        n1 = b.bn(c1)
        n2 = b.bn(b.conv2(F.relu(n1)) + identity)
        shift_bias(b.bn, best_shift(torch.cat([channel_rows(n1), channel_rows(n2)], dim=1), window / 2 ** r))
    n1 = b.bn(c1)
    n2 = b.bn(b.conv2(F.relu(n1)) + identity)
    return F.relu(n2), [n1, n2]


def widen_paper_block(b, z, window):
    n1 = b.bn1(b.conv1(z))
    shift_bias(b.bn1, best_shift(channel_rows(n1), window))
    n1 = b.bn1(b.conv1(z))
    c2 = b.conv2(F.relu(n1))
    v = b.bn2(c2) + b.shortcut(z)
    shift_bias(b.bn2, best_shift(channel_rows(v), window))
    v = b.bn2(c2) + b.shortcut(z)
    return F.relu(v), [n1, v]


def widen_relu_margins(model, images, window=MARGIN_WINDOW):
    """Nudges the BN biases of `model` (float32) so that no pre-ReLU value of the train-mode forward
    of `images` is close to zero. Returns the smallest |pre-ReLU value| afterwards."""
    md = copy.deepcopy(model).double().train()   # a copy: its running statistics move, the model's not
    with torch.no_grad():
        x = md.conv1(images.double())
        n = md.bn1(x)
        shift_bias(md.bn1, best_shift(channel_rows(n), window))
        n = md.bn1(x)
        pre = [n]
        h = F.relu(n)
        for stage in (md.module1, md.module2, md.module3):
            for b in stage:
                h, p = (widen_seed_block if isinstance(b, seed_model.block) else widen_paper_block)(b, h, window)
                pre += p
        for mine, moved in zip(model.modules(), md.modules()):
            if isinstance(mine, nn.BatchNorm2d):
                mine.bias.copy_(moved.bias.float())
    return min(float(t.abs().min()) for t in pre)


def forward_backward(model, images, labels):
    model.zero_grad(set_to_none=True)
    logits = model(images)
    loss = nn.CrossEntropyLoss()(logits, labels)
    loss.backward()
    return logits, loss


def add_params(w, prefix, model, grads=False):
    for name, p in model.named_parameters():
        w.add(prefix + name, p.grad if grads else p)


def add_running(w, prefix, model):
    for name, buf in running_buffers(model).items():
        w.add(prefix + name, buf)


def measure_reference(model, images):
    """--bn-eval reference: the mean and biased variance of every BN application's input in a
    batch-statistics forward over `images`, per module in call order ([applications, 2, channels]: the
    seed's block BN is applied twice)."""
    seen = {}
    hooks = []
    for name, mod in model.named_modules():
        if isinstance(mod, nn.BatchNorm2d):
            def hook(module, inputs, name=name):
                x = inputs[0]
                seen.setdefault(name, []).append(torch.stack([x.mean((0, 2, 3)), x.var((0, 2, 3), unbiased=False)]))
            hooks.append(mod.register_forward_pre_hook(hook))
    with torch.no_grad():
        model(images)
    for h in hooks:
        h.remove()
    return {name: torch.stack(calls) for name, calls in seen.items()}


def forward_with_reference(model, reference, images):
    """Every BN application normalizes with its reference statistics (seed_model.use_reference)."""
    with torch.no_grad():
        return seed_model.use_reference(model, reference)(images)


def add_reference_evaluations(w, model, images, eval_images):
    """Reference statistics measured over the training images, and the evaluation of eval_images with them
    (reference/<bn>.reference, eval_logits_reference)."""
    was_training = model.training
    measured = copy.deepcopy(model).train()   # batch statistics; the paper's running averages untouched
    if not any(getattr(m, "track_running_stats", False) for m in measured.modules()):
        measured.eval()                       # the seed's BNs use batch statistics in eval() too
    reference = measure_reference(measured, images)
    for name, stats in reference.items():
        w.add(f"reference/{name}.reference", stats)
    w.add("eval_logits_reference", forward_with_reference(copy.deepcopy(model), reference, eval_images))
    model.train(was_training)


def add_evaluations(w, arch, model, images, eval_images):
    with torch.no_grad():
        if arch == "seed":
            # track_running_stats=False: eval() still normalises with the batch's own statistics
            model.eval()
            w.add("eval_logits_batch", model(eval_images))
            w.add("eval_logits_batch_images", model(images))
        else:
            # batch statistics without touching the running averages: train mode on a copy
            copied = copy.deepcopy(model).train()
            w.add("eval_logits_batch", copied(eval_images))
            w.add("eval_logits_batch_images", copied(images))
            model.eval()
            w.add("eval_logits_running", model(eval_images))
    model.train()
    add_reference_evaluations(w, model, images, eval_images)


def model_case(arch, depth, seed, kind, in_channels=3, image_size=32, classes=10, batch=BATCH):
    assert kind in ("steps", "general", "grads")
    torch.manual_seed(seed)
    model = seed_model.build(arch, depth, in_channels, classes, image_size)
    images = torch.rand(batch, in_channels, image_size, image_size)
    labels = torch.randint(0, classes, (batch,))
    eval_images = torch.rand(EVAL_BATCH, in_channels, image_size, image_size)

    w = FixtureWriter()
    w.add("config", [ARCH_CODE[arch], depth, in_channels, image_size, classes, batch], np.int32)
    w.add("images", images)
    w.add("labels", labels, np.int32)
    if kind == "general":
        randomize_bn(model, w)
    w.margin = widen_relu_margins(model, images)
    add_params(w, "init/", model)

    # float64 from here on: the weights above are exact in both precisions
    model = model.double().train()
    images, eval_images = images.double(), eval_images.double()

    logits, loss = forward_backward(model, images, labels)
    w.add("logits", logits)
    w.add("loss", loss, np.float64)
    add_params(w, "grad/", model, grads=True)
    if arch == "paper":
        add_running(w, "running1/", model)
    if kind == "grads":
        return w
    if kind == "general":
        w.add("eval_images", eval_images)
        add_evaluations(w, arch, model, images, eval_images)
        return w

    opt = torch.optim.Adam(model.parameters(), lr=ADAM_LR, weight_decay=ADAM_WD)
    losses = [loss.item()]
    opt.step()
    add_params(w, "step1/", model)
    logits2, loss2 = forward_backward(model, images, labels)
    w.add("logits_step2", logits2)
    losses.append(loss2.item())
    opt.step()
    _, loss3 = forward_backward(model, images, labels)
    losses.append(loss3.item())
    opt.step()
    add_params(w, "step3/", model)
    w.add("loss_steps", losses, np.float64)
    if arch == "paper":
        add_running(w, "running/", model)
        assert all(int(v) == 3 for k, v in model.state_dict().items() if k.endswith("num_batches_tracked"))
    w.add("eval_images", eval_images)
    add_evaluations(w, arch, model, images, eval_images)
    return w


# ---- optimizer and schedule fixture ----------------------------------------------------------------

OPT_KIND = {"adam": 0, "adamw": 1, "sgd": 2, "lamb": 3}
# name: (kind, base lr, weight decay, beta1, beta2, eps, momentum, nesterov)
OPT_CASES = {
    "adam": ("adam", 1e-2, 5e-2, 0.9, 0.999, 1e-8, 0.0, 0),
    "adam_betas": ("adam", 3e-3, 0.0, 0.8, 0.99, 1e-6, 0.0, 0),
    "adamw": ("adamw", 1e-2, 5e-2, 0.9, 0.999, 1e-8, 0.0, 0),
    "sgd": ("sgd", 1e-1, 5e-2, 0.9, 0.999, 1e-8, 0.9, 0),
    "sgd_nesterov": ("sgd", 1e-1, 5e-2, 0.9, 0.999, 1e-8, 0.9, 1),
    "sgd_plain": ("sgd", 1e-1, 0.0, 0.9, 0.999, 1e-8, 0.0, 0),
}
OPT_STEPS, OPT_N = 5, 1000
LR_FACTORS = [1.0, 1.0, 0.5, 0.5, 0.25]   # the lr argument changes between steps, as a schedule does


def make_optimizer(param, kind, lr, wd, b1, b2, eps, momentum, nesterov):
    if kind == "adam":
        return torch.optim.Adam([param], lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd)
    if kind == "adamw":
        return torch.optim.AdamW([param], lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd)
    return torch.optim.SGD([param], lr=lr, momentum=momentum, weight_decay=wd, nesterov=bool(nesterov))


def optim_fixture():
    torch.manual_seed(1234)
    w = FixtureWriter()
    params0 = torch.randn(OPT_N)
    # gradients of mixed scales, with exact zeros and values near eps, to exercise every term
    grads = torch.randn(OPT_STEPS, OPT_N) * torch.logspace(-6, 1, OPT_N)[torch.randperm(OPT_N)]
    grads[:, ::97] = 0.0
    w.add("params0", params0)
    w.add("grads", grads)
    for case, (kind, lr, wd, b1, b2, eps, momentum, nesterov) in OPT_CASES.items():
        param = nn.Parameter(params0.clone())
        opt = make_optimizer(param, kind, lr, wd, b1, b2, eps, momentum, nesterov)
        w.add(case + "/config", [OPT_KIND[kind], lr, wd, b1, b2, eps, momentum, nesterov], np.float64)
        w.add(case + "/lr", [lr * f for f in LR_FACTORS], np.float64)
        for k in range(OPT_STEPS):
            opt.param_groups[0]["lr"] = lr * LR_FACTORS[k]
            param.grad = grads[k].clone()
            opt.step()
            w.add(f"{case}/step{k + 1}", param)

    # learning rate in force for the update after `step` completed updates, as PyTorch's schedulers say
    def schedule(make, steps):
        opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
        sched = make(opt)
        lrs = []
        for _ in range(steps):
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        return lrs

    w.add("sched_step", schedule(
        lambda o: torch.optim.lr_scheduler.MultiStepLR(o, milestones=[4, 8], gamma=0.1), 12), np.float64)
    w.add("sched_cosine", schedule(
        lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=10), 11), np.float64)
    # linear warmup over 4 steps on a constant rate (LinearLR), and composed with a cosine over 12 steps
    # by product (LambdaLR), as resnet_mpi's --warmup-steps composes with --schedule
    w.add("sched_warmup", schedule(
        lambda o: torch.optim.lr_scheduler.LinearLR(o, start_factor=1 / 4, end_factor=1.0, total_iters=3), 8),
        np.float64)
    w.add("sched_warmup_cosine", schedule(
        lambda o: torch.optim.lr_scheduler.LambdaLR(
            o, lambda s: min(1.0, (s + 1) / 4) * 0.5 * (1 + math.cos(math.pi * min(s, 12) / 12))), 14), np.float64)
    lamb_cases(w, params0, grads)
    return w


# LAMB (You et al. 2020, Algorithm 2, bias-corrected, decoupled decay; PyTorch 1.13 has none), written
# with torch's float32 tensor ops: Adam's moments, u = m_hat / (sqrt(v_hat) + eps) + wd * p, and per layer
# p -= lr * trust * u with trust = ||p|| / ||u|| (1 if either is 0). The norms in float64, as resnet_mpi.
# name: (lr, weight decay, beta1, beta2, eps, layer ends); the layer [100, 110) starts at zero (trust 1)
LAMB_CASES = {
    "lamb": (1e-2, 5e-2, 0.9, 0.999, 1e-8, [100, 110, 400, 999, 1000]),
    "lamb_nodecay": (3e-3, 0.0, 0.8, 0.99, 1e-6, [500, 1000]),
}


def lamb_cases(w, params0, grads):
    for case, (lr, wd, b1, b2, eps, ends) in LAMB_CASES.items():
        p = params0.clone()
        p[100:110] = 0.0
        m, v = torch.zeros_like(p), torch.zeros_like(p)
        w.add(case + "/config", [OPT_KIND["lamb"], lr, wd, b1, b2, eps, 0.0, 0], np.float64)
        w.add(case + "/lr", [lr * f for f in LR_FACTORS], np.float64)
        w.add(case + "/layers", ends, np.float64)
        w.add(case + "/params0", p)
        for k in range(OPT_STEPS):
            t, g = k + 1, grads[k]
            m = m * b1 + (1 - b1) * g
            v = v * b2 + (1 - b2) * g * g
            u = (m / (1 - b1 ** t)) / ((v / (1 - b2 ** t)).sqrt() + eps) + wd * p
            begin = 0
            for end in ends:
                wn, un = p[begin:end].double().norm().item(), u[begin:end].double().norm().item()
                trust = wn / un if wn > 0 and un > 0 else 1.0
                p[begin:end] -= (lr * LR_FACTORS[k] * trust) * u[begin:end]
                begin = end
            w.add(f"{case}/step{k + 1}", p)


# ---- moving average (--ema) fixture -------------------------------------------------------------------

EMA_DECAYS = {"decay_0_9": 0.9, "decay_0_999": 0.999, "decay_0_5": 0.5, "warmup_0_999": 0.999, "warmup_0_3": 0.3}
EMA_STEPS, EMA_N, EMA_LR, EMA_WD = 6, 1000, 1e-2, 5e-2


class OneTensor(nn.Module):
    def __init__(self, value):
        super().__init__()
        self.w = nn.Parameter(value.clone())
        # a buffer the average must not touch (AveragedModel's default use_buffers=False)
        self.register_buffer("running", torch.zeros(3))


def ema_fixture():
    from torch.optim.swa_utils import AveragedModel
    torch.manual_seed(4321)
    w = FixtureWriter()
    params0 = torch.randn(EMA_N)
    grads = torch.randn(EMA_STEPS, EMA_N) * torch.logspace(-4, 0, EMA_N)[torch.randperm(EMA_N)]
    w.add("params0", params0)
    w.add("grads", grads)
    w.add("adam", [EMA_LR, EMA_WD], np.float64)
    model = OneTensor(params0)
    opt = torch.optim.Adam(model.parameters(), lr=EMA_LR, weight_decay=EMA_WD)
    averaged = {}
    def warmed(avg, p, n, decay):
        d = min(decay, (1 + int(n)) / (10 + int(n)))   # the update's number n as a Python int
        return d * avg + (1 - d) * p

    for case, decay in EMA_DECAYS.items():
        warmup = case.startswith("warmup")
        if warmup:
            averaged[case] = AveragedModel(model, avg_fn=lambda avg, p, n, d=decay: warmed(avg, p, n, d))
        else:
            averaged[case] = AveragedModel(model, avg_fn=lambda avg, p, n, d=decay: d * avg + (1 - d) * p)
        w.add(case + "/decay", [decay], np.float64)
        w.add(case + "/warmup", [int(warmup)], np.int32)
        w.add(case + "/init", averaged[case].module.w)
    counts = {case: [] for case in EMA_DECAYS}
    for k in range(EMA_STEPS):
        model.w.grad = grads[k].clone()
        opt.step()
        model.running += 1.0
        w.add(f"params/step{k + 1}", model.w)
        for case, avg in averaged.items():
            avg.update_parameters(model)
            w.add(f"{case}/step{k + 1}", avg.module.w)
            counts[case].append(int(avg.n_averaged))
            assert float(avg.module.running.abs().sum()) == 0.0   # parameters only
    for case in EMA_DECAYS:
        w.add(case + "/n_averaged", counts[case], np.int32)
    return w


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(root, "tests", "data"))
    ap.add_argument("--only", help="write only this file (e.g. ref_optim.bin)")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(1)   # fixed reduction order: byte-identical reruns

    cases = [
        ("ref_seed_d20.bin", lambda: model_case("seed", 20, 20, "steps")),
        ("ref_paper_d20.bin", lambda: model_case("paper", 20, 21, "steps")),
        ("ref_seed_d32.bin", lambda: model_case("seed", 32, 32, "general")),
        ("ref_seed_fmnist.bin", lambda: model_case("seed", 20, 28, "grads", in_channels=1, image_size=28,
                                                   batch=4)),
        ("ref_optim.bin", optim_fixture),
        ("ref_ema.bin", ema_fixture),
    ]
    total = 0
    for name, make in cases:
        if args.only and name != args.only:
            continue
        w = make()
        size = w.write(os.path.join(args.out, name))
        total += size
        note = f"   smallest |pre-ReLU| {w.margin:.1e}" if w.margin is not None else ""
        print(f"{name:22s} {size / 1e6:6.2f} MB{note}")
    print(f"{'total':22s} {total / 1e6:6.2f} MB")


if __name__ == "__main__":
    main()
