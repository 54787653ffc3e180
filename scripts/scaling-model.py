#!/usr/bin/env python3
"""A model of data-parallel scaling fitted to measurements (scripts/bench-overlap.sh writes them):

    /usr/bin/python3 scripts/scaling-model.py [--cores C] RESULTS

Prints Markdown: the measured step splits, the fitted allreduce model, the model's strong scaling (global
batch 128) and weak scaling (128 images per rank) on 1-64 nodes of C cores, and the measured points beside
the model's prediction for them. Plain python3, standard library only.

The model, and what it assumes:
- A node of C cores runs C ranks of 1 thread; p = nodes x C ranks; a rank computes b images a step
  (strong: b = 128 / p; weak: b = 128).
- Compute per step (forward + backward) is the measured one-rank time at batch b, linear between the
  measured batches and extrapolated from the nearest two beyond them (never below the per-image time of
  the smallest batch measured); the optimizer's time (measured, independent of b) is added. Ranks do not
  slow each other (own cores, own memory bandwidth); in the measured points beside the model, ranks beyond
  the measuring machine's cores share them, which multiplies compute by ranks / cores.
- The gradient allreduce is a ring: t = 2(p-1) alpha + 2(p-1)/p n beta for n bytes. alpha and beta are
  fitted per link by least squares on the relative error over every measured message size and rank
  count that has no more ranks than the measuring machine's cores (more ranks than cores measure the
  scheduler's time slices). Within one node (nodes = 1) the fit of `shm` (shared memory) is used,
  across nodes the link's.
- Without overlap a step is compute + allreduce + optimizer. With overlap (--bucket-mb) the allreduce
  runs during the backward, so only what the backward cannot cover is exposed:
  exposed = max(0, allreduce - s x compute), s = the backward's share of forward + backward (measured
  with bench --profile). This is a bound: it ignores that the last bucket can only start when the
  backward ends, that more messages pay more latency, and that on one core MPI progresses the transfers
  only when the backward calls it between layers.
"""
import argparse
import math
import sys

PROG = "scaling-model"
EPOCH_IMAGES = 45000


class InputError(Exception):
    """A bad results file: one line naming it and the cause."""


def fail(code, message):
    print(f"{PROG}: {message}", file=sys.stderr)
    sys.exit(code)


def median(values):
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


# ---- the results file ---------------------------------------------------------------------------------

FIELDS = {  # record kind: (names, types) after the kind
    "compute": (("batch", "compute_ms", "optimizer_ms", "backward_share"), (int, float, float, float)),
    "allreduce": (("link", "ranks", "hosts", "floats", "median_ms", "fastest_ms"), (str, int, int, int, float, float)),
    "step": (("link", "ranks", "hosts", "batch", "bucket_mb", "step_ms", "compute_ms", "allreduce_ms",
              "allreduce_least_ms", "optimizer_ms"), (str, int, int, int, float, float, float, float, float, float)),
}


def parse_record(words, where):
    kind = words[0]
    if kind in ("model", "machine"):
        if len(words) != 3:
            raise InputError(f"{where}: '{kind}' takes a key and a value")
        return kind, (words[1], words[2])
    if kind not in FIELDS:
        raise InputError(f"{where}: unknown record '{kind}' (compute, allreduce, step, model, machine)")
    names, types = FIELDS[kind]
    if len(words) != len(names) + 1:
        raise InputError(f"{where}: '{kind}' needs {len(names)} values ({' '.join(names)}), has {len(words) - 1}")
    try:
        values = [t(w) for t, w in zip(types, words[1:])]
    except ValueError:
        raise InputError(f"{where}: '{kind}' has a value that is not a number: {' '.join(words[1:])}") from None
    record = dict(zip(names, values))
    if any(isinstance(v, (int, float)) and (v < 0 or math.isnan(v) or math.isinf(v)) for v in values):
        raise InputError(f"{where}: '{kind}' has a negative or non-finite value")
    return kind, record


def read_results(path):
    data = {"compute": [], "allreduce": [], "step": [], "model": {}, "machine": {}}
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: cannot read: {getattr(e, 'strerror', None) or e}") from None
    for number, line in enumerate(lines, 1):
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        kind, record = parse_record(words, f"{path}:{number}")
        if kind in ("model", "machine"):
            data[kind][record[0]] = record[1]
        else:
            data[kind].append(record)
    if not data["compute"]:
        raise InputError(f"{path}: no 'compute' records (bench-overlap.sh --parts compute makes them)")
    if not any(r["link"] != "shm" for r in data["allreduce"]):
        raise InputError(f"{path}: no 'allreduce' records over a link between hosts (--parts allreduce)")
    return data


# ---- compute per step ---------------------------------------------------------------------------------

class ComputeCurve:
    """Forward + backward ms per step at batch b, from the medians of the measured batches."""

    def __init__(self, records):
        batches = sorted({r["batch"] for r in records})
        self.points = [(b, median([r["compute_ms"] for r in records if r["batch"] == b])) for b in batches]
        self.optimizer_ms = median([r["optimizer_ms"] for r in records])
        self.backward_share = median([r["backward_share"] for r in records])

    def compute_ms(self, b):
        pts = self.points
        if len(pts) == 1:
            return pts[0][1] * b / pts[0][0]
        if b <= pts[0][0]:
            (b0, t0), (b1, t1) = pts[0], pts[1]
        elif b >= pts[-1][0]:
            (b0, t0), (b1, t1) = pts[-2], pts[-1]
        else:
            i = next(i for i in range(1, len(pts)) if pts[i][0] >= b)
            (b0, t0), (b1, t1) = pts[i - 1], pts[i]
        t = t0 + (t1 - t0) * (b - b0) / (b1 - b0)
        # below the smallest batch measured, a step costs at least that batch's time per image
        return max(t, pts[0][1] * b / pts[0][0]) if b < pts[0][0] else t

    def step_ms(self, b):
        return self.compute_ms(b) + self.optimizer_ms


# ---- the allreduce: ring latency + bandwidth --------------------------------------------------------

def ring_terms(ranks, nbytes):
    return 2.0 * (ranks - 1), 2.0 * (ranks - 1) / ranks * nbytes


class AllreduceFit:
    """t = 2(p-1) alpha + 2(p-1)/p n beta, least squares on the relative error."""

    def __init__(self, link, records, stat):
        self.link = link
        self.ranks = sorted({r["ranks"] for r in records})
        rows = [(*ring_terms(r["ranks"], 4.0 * r["floats"]), r[stat]) for r in records if r[stat] > 0]
        if not rows:
            raise InputError(f"link {link}: no allreduce time above 0")
        # normal equations of sum ((a alpha + c beta - t) / t)^2
        saa = sum((a / t) ** 2 for a, c, t in rows)
        scc = sum((c / t) ** 2 for a, c, t in rows)
        sac = sum(a * c / t ** 2 for a, c, t in rows)
        sa = sum(a / t for a, c, t in rows)
        sc = sum(c / t for a, c, t in rows)
        det = saa * scc - sac * sac
        alpha, beta = ((sa * scc - sc * sac) / det, (saa * sc - sac * sa) / det) if det > 0 else (-1, -1)
        if alpha < 0 or beta < 0:   # one term alone fits better: keep the other at zero
            alpha, beta = (sa / saa, 0.0) if beta < 0 and saa > 0 else (0.0, sc / scc)
        self.alpha_ms, self.beta_ms_per_byte = alpha, beta
        self.worst = max(abs(self.ms_terms(a, c) - t) / t for a, c, t in rows)
        self.sizes = len(rows)

    def ms_terms(self, a, c):
        return a * self.alpha_ms + c * self.beta_ms_per_byte

    def ms(self, ranks, nbytes):
        return 0.0 if ranks <= 1 else self.ms_terms(*ring_terms(ranks, nbytes))

    def gbit_s(self):
        return 8.0 / (self.beta_ms_per_byte * 1e6) if self.beta_ms_per_byte > 0 else math.inf


def fit_links(data, stat, cores, oversubscribed):
    """One fit per link, from the runs with no more ranks than the measuring machine's cores (more ranks
    than cores measure the scheduler's time slices, not the link) unless there are none or asked to."""
    fits = {}
    for link in sorted({r["link"] for r in data["allreduce"]}):
        records = [r for r in data["allreduce"] if r["link"] == link]
        within = [r for r in records if r["ranks"] <= cores]
        fits[link] = AllreduceFit(link, records if oversubscribed or not within else within, stat)
    return fits


# ---- the model at one configuration -------------------------------------------------------------------

class Model:
    def __init__(self, curve, fits, link, gradient_bytes, backward_share):
        self.curve, self.fits, self.link = curve, fits, link
        self.gradient_bytes, self.share = gradient_bytes, backward_share

    def allreduce_ms(self, nodes, ranks):
        fit = self.fits.get("shm", self.fits[self.link]) if nodes == 1 else self.fits[self.link]
        return fit.ms(ranks, self.gradient_bytes)

    def exposed_ms(self, comm, compute, overlap):
        return max(0.0, comm - self.share * compute) if overlap else comm

    def predict(self, nodes, ranks, batch, slowdown=1.0):
        """ms per step (compute, optimizer, allreduce, exposed without / with overlap) at b per rank."""
        compute = self.curve.compute_ms(batch) * slowdown
        optimizer = self.curve.optimizer_ms * slowdown
        comm = self.allreduce_ms(nodes, ranks)
        return {"compute": compute, "optimizer": optimizer, "comm": comm,
                "step": compute + optimizer + self.exposed_ms(comm, compute, False),
                "step_overlap": compute + optimizer + self.exposed_ms(comm, compute, True)}


# ---- output -------------------------------------------------------------------------------------------

def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def f1(x):
    return f"{x:.1f}"


def f2(x):
    return f"{x:.2f}"


def epoch_text(images_per_s):
    seconds = EPOCH_IMAGES / images_per_s
    return f"{seconds:.1f} s" if seconds < 100 else f"{seconds:.0f} s"


def print_step_splits(data):
    steps = data["step"]
    if not steps:
        return
    groups = {}
    for r in steps:
        groups.setdefault((r["link"], r["hosts"], r["ranks"], r["batch"], r["bucket_mb"]), []).append(r)
    rows = []
    for key in sorted(groups, key=lambda k: (k[0] != "shm", k[0], k[2], k[1], k[3], k[4])):
        link, hosts, ranks, batch, bucket = key
        m = {f: median([r[f] for r in groups[key]]) for f in FIELDS["step"][0][5:]}
        base = groups.get((link, hosts, ranks, batch, 0.0))
        saved = "" if bucket == 0 or not base else f1(median([r["step_ms"] for r in base]) - m["step_ms"])
        rows.append([link, f"{hosts} x {ranks}" if hosts > 1 else f"1 x {ranks}", batch,
                     "none" if bucket == 0 else f"{bucket:g} MiB", len(groups[key]), f1(m["step_ms"]),
                     f1(m["compute_ms"]), f"{m['allreduce_ms']:.1f} ({m['allreduce_least_ms']:.1f})",
                     f1(m["optimizer_ms"]), f"{100 * m['allreduce_ms'] / m['step_ms']:.1f}%", saved])
    print("### Measured step split (ms per step, mean over ranks; medians over rounds)\n")
    print(table(["link", "hosts x ranks", "batch/rank", "overlap", "runs", "step", "compute", "exposed allreduce (least rank)",
                 "optimizer", "exposed share", "saved by overlap"], rows))
    print("\nexposed allreduce: the step's wait for the gradient after the backward (with overlap, what the "
          "backward did not hide), including the wait for slower ranks; the least over ranks is the rank "
          "that waited for nobody. compute includes starting and progressing the buckets.\n")


def print_fits(fits, gradient_bytes, stat):
    rows = []
    for link, fit in fits.items():
        rows.append([link, " ".join(map(str, fit.ranks)), fit.sizes, f"{fit.alpha_ms * 1e3:.1f}",
                     "inf" if math.isinf(fit.gbit_s()) else f"{fit.gbit_s():.2f}",
                     " / ".join(f2(fit.ms(p, gradient_bytes)) for p in (2, 4, 128)),
                     f"{100 * fit.worst:.0f}%"])
    print(f"### Allreduce model fitted to the measured times ({stat} of each size)\n")
    print(table(["link", "ranks fitted", "points", "alpha (us)", "bandwidth 1/beta (Gbit/s)",
                 f"gradient ({gradient_bytes / 1e6:.2f} MB) at 2 / 4 / 128 ranks, ms", "worst relative error"], rows))
    print("\nt = 2(p-1) alpha + 2(p-1)/p bytes beta (ring allreduce over p ranks); fitted to the runs with no more "
          "ranks than the measuring machine's cores (--fit-oversubscribed: to all)\n")


def model_rows(model, args, scaling):
    base_ips = args.global_batch / model.curve.step_ms(args.global_batch) * 1e3   # one rank, one core
    rows = []
    for nodes in args.nodes:
        ranks = nodes * args.cores
        if scaling == "strong" and ranks > args.global_batch:
            rows.append([nodes, ranks, "-"] + ["fewer than one image per rank"] + [""] * 8)
            continue
        batch = args.global_batch / ranks if scaling == "strong" else args.per_rank_batch
        images = batch * ranks
        p = model.predict(nodes, ranks, batch)
        ips, ips_o = images / p["step"] * 1e3, images / p["step_overlap"] * 1e3
        rows.append([nodes, ranks, f"{batch:g}", f1(p["compute"] + p["optimizer"]), f2(p["comm"]),
                     f1(p["step"]), f1(ips), epoch_text(ips), f"{100 * ips / base_ips / ranks:.0f}%",
                     f1(p["step_overlap"]), f1(ips_o), epoch_text(ips_o), f"{100 * ips_o / base_ips / ranks:.0f}%"])
    return rows


def print_model(model, args, scaling):
    fit = model.fits[model.link]
    what = (f"global batch {args.global_batch}" if scaling == "strong" else f"{args.per_rank_batch} images per rank")
    print(f"### Model (predicted, not measured): {scaling} scaling, {what}, nodes of {args.cores} cores "
          f"({args.cores} ranks x 1 thread), link {model.link} (alpha {fit.alpha_ms * 1e3:.1f} us, "
          f"{fit.gbit_s():.2f} Gbit/s)\n")
    print(table(["nodes", "ranks", "batch/rank", "compute + optimizer ms", "allreduce ms",
                 "no overlap: step ms", "images/s", "epoch", "efficiency",
                 "overlap: step ms", "images/s", "epoch", "efficiency"], model_rows(model, args, scaling)))
    print(f"\nepoch: {EPOCH_IMAGES} images; efficiency: images/s over ranks x one rank's at batch "
          f"{args.global_batch} ({args.global_batch / model.curve.step_ms(args.global_batch) * 1e3:.1f} images/s)\n")


def measured_beside_model(data, models, cores):
    rows = []
    for r in sorted(data["step"], key=lambda r: (r["link"] != "shm", r["link"], r["ranks"], r["batch"], r["bucket_mb"])):
        link = r["link"] if r["link"] != "shm" else next(iter(models))
        if link not in models:
            continue
        model = models[link]
        slowdown = max(1.0, r["ranks"] / cores)
        p = model.predict(r["hosts"], r["ranks"], r["batch"], slowdown)
        overlap = r["bucket_mb"] > 0
        exposed_given = model.exposed_ms(p["comm"], r["compute_ms"], overlap)
        step = p["step_overlap"] if overlap else p["step"]
        images = r["batch"] * r["ranks"]
        rows.append([r["link"], f"{r['hosts']} x {r['ranks']}", r["batch"], f"{r['bucket_mb']:g}",
                     f"{slowdown:g}", f1(r["step_ms"]), f1(step), f1(r["compute_ms"]), f1(p["compute"]),
                     f"{r['allreduce_ms']:.1f} ({r['allreduce_least_ms']:.1f})", f1(exposed_given),
                     f1(images / r["step_ms"] * 1e3), f1(images / step * 1e3)])
    return rows


def print_measured_beside_model(data, models, cores):
    rows = measured_beside_model(data, models, cores)
    if not rows:
        return
    print(f"### Measured points beside the model (each measured run; the measuring machine had {cores} cores)\n")
    print(table(["link", "hosts x ranks", "batch/rank", "bucket MiB", "ranks per core", "step ms measured",
                 "model", "compute measured", "model", "exposed allreduce measured (least)",
                 "model, given the measured compute", "images/s measured", "model"], rows))
    print("\nranks per core above 1: the hosts share the measuring machine's cores, and the model multiplies "
          "compute by it; model exposed allreduce: the fitted allreduce, less the backward's share of the "
          "measured compute with overlap\n")


# ---- main ---------------------------------------------------------------------------------------------

class Parser(argparse.ArgumentParser):
    def error(self, message):   # one line, exit 2 (argparse would print the usage too)
        fail(2, message)


def node_list(text):
    try:
        nodes = [int(x) for x in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--nodes takes whole numbers, not '{text}'") from None
    if not nodes or min(nodes) < 1:
        raise argparse.ArgumentTypeError(f"--nodes takes numbers of at least 1, not '{text}'")
    return nodes


def positive_int(text):
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, not '{text}'")
    return int(text)


def parse_args(argv):
    ap = Parser(prog=PROG, description="Scaling model fitted to scripts/bench-overlap.sh's measurements.")
    ap.add_argument("results", help="the records bench-overlap.sh wrote")
    ap.add_argument("--cores", type=positive_int, default=2, help="cores per node: ranks per node (default 2)")
    ap.add_argument("--nodes", type=node_list, default=[1, 2, 4, 8, 16, 32, 64], help="node counts (1,2,4,...,64)")
    ap.add_argument("--global-batch", type=positive_int, default=128, help="strong scaling's batch (128)")
    ap.add_argument("--per-rank-batch", type=positive_int, default=128, help="weak scaling's batch per rank (128)")
    ap.add_argument("--links", help="links to model (default: every one measured between hosts)")
    ap.add_argument("--stat", choices=("median", "fastest"), default="median",
                    help="which allreduce time to fit: the median round or the fastest (default median)")
    ap.add_argument("--fit-oversubscribed", action="store_true",
                    help="fit the allreduce also to runs with more ranks than the measuring machine's cores")
    ap.add_argument("--backward-share", type=float, help="overrides the measured backward share of compute")
    return ap.parse_args(argv)


def main(argv):
    args = parse_args(argv)
    try:
        data = read_results(args.results)
        cores = int(data["machine"].get("cores", "0")) or args.cores
        fits = fit_links(data, args.stat + "_ms", cores, args.fit_oversubscribed)
    except (InputError, ValueError) as e:
        fail(1, f"{args.results}: {e}" if isinstance(e, ValueError) else str(e))
    curve = ComputeCurve(data["compute"])
    share = curve.backward_share if args.backward_share is None else args.backward_share
    if not 0 <= share <= 1:
        fail(2, f"--backward-share must be within 0..1, not {share}")
    floats = int(data["model"].get("params", "271818"))
    links = [l for l in fits if l != "shm"] if not args.links else args.links.replace(",", " ").split()
    for link in links:
        if link not in fits or link == "shm":
            fail(2, f"--links: no allreduce measured between hosts over '{link}' in {args.results}")
    models = {link: Model(curve, fits, link, 4.0 * floats, share) for link in links}
    print(f"Fitted to {args.results}: compute at batches {', '.join(str(b) for b, _ in curve.points)}, optimizer "
          f"{curve.optimizer_ms:.2f} ms, backward {100 * share:.0f}% of forward + backward; gradient {floats} floats; "
          f"measuring machine load {data['machine'].get('load', '?')} at the start\n")
    print_step_splits(data)
    print_fits(fits, 4.0 * floats, args.stat)
    for link in links:
        for scaling in ("strong", "weak"):
            print_model(models[link], args, scaling)
    print_measured_beside_model(data, models, cores)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
