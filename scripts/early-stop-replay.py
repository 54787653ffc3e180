#!/usr/bin/env python3
"""What a run's validation history says, per validation series of its metrics log (val_acc: the trained
weights; val_acc_ema: the moving average, --ema): the best accuracy and its step, the epoch in which each
threshold was first reached, and the step at which an early-stopping rule would have stopped the run had
it followed that series (the program follows one: val_acc_ema under --ema, else val_acc).

usage: early-stop-replay.py METRICS.jsonl [--rule seed|best] [--patience 5] [--thresholds 0.80,0.85] [--json]

The rules are the program's (train.c's early_stop_update): seed, a check not above the previous one counts
(the seed's prevValAccuracy), best, a check not above the best so far counts; the run stops at the check
where the count exceeds --patience. Plain python3; errors are one line on stderr and exit 1 (unreadable
log) or 2 (bad options)."""
import argparse
import json
import sys

from metrics_log import LogError, read_points


def replay(points, rule, patience):
    """The step of the check that stops the run, or None."""
    prev, best, count = float("-inf"), float("-inf"), 0
    for step, acc in points:
        worse = acc <= (best if rule == "best" else prev)
        count = count + 1 if worse else 0
        prev, best = acc, max(best, acc)
        if count > patience:
            return step
    return None


def read_log(path):
    """The validation points of each val_acc* series in step order, the log read as one uninterrupted
    run (metrics_log.py: a resume drops the continuation it abandoned), whose rule state the checkpoint
    carries."""
    try:
        points, _ = read_points(path, "early-stop-replay.py")
    except LogError as e:
        raise SystemExit(f"early-stop-replay.py: {e}")
    series = {}
    for row in points:
        for key, value in row.items():
            if key.startswith("val_acc") and isinstance(value, (int, float)):
                series.setdefault(key, []).append((row["step"], row["epoch"], float(value)))
    if not series:
        raise SystemExit(f"early-stop-replay.py: {path}: no validation accuracy in it")
    return series


def summary(rows, rule, patience, thresholds):
    best = max(rows, key=lambda r: r[2])
    first = {}
    for t in thresholds:
        hit = next((r for r in rows if r[2] >= t), None)
        first[f"{t:g}"] = None if hit is None else {"epoch": hit[1], "step": hit[0]}
    stop = replay([(r[0], r[2]) for r in rows], rule, patience)
    stop_epoch = next((r[1] for r in rows if r[0] == stop), None)
    return {"checks": len(rows), "best": best[2], "best_step": best[0], "best_epoch": best[1],
            "first_reached": first, "would_stop_step": stop, "would_stop_epoch": stop_epoch,
            "last": rows[-1][2], "last_step": rows[-1][0]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("metrics")
    ap.add_argument("--rule", choices=("seed", "best"), default="seed")
    ap.add_argument("--patience", type=int, default=5)
    ap.add_argument("--thresholds", default="0.80,0.85")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    try:
        thresholds = [float(t) for t in args.thresholds.split(",")]
    except ValueError:
        ap.error(f"--thresholds {args.thresholds}: numbers like 0.80,0.85")
    if args.patience < 1:
        ap.error("--patience must be at least 1")
    out = {k: summary(v, args.rule, args.patience, thresholds) for k, v in sorted(read_log(args.metrics).items())}
    if args.json:
        print(json.dumps(out, sort_keys=True))
        return
    for key, s in out.items():
        reached = ", ".join(f"{t} in epoch {v['epoch']}" if v else f"{t} never" for t, v in s["first_reached"].items())
        stop = (f"would stop at step {s['would_stop_step']} (epoch {s['would_stop_epoch']})"
                if s["would_stop_step"] else "would not stop")
        print(f"{key}: {s['checks']} checks, best {s['best']:.4f} at step {s['best_step']} (epoch {s['best_epoch']}), "
              f"last {s['last']:.4f} at step {s['last_step']}; reached {reached}; "
              f"--early-stop {args.rule} --patience {args.patience} {stop}")


if __name__ == "__main__":
    sys.exit(main())
