#!/usr/bin/env python3
"""scripts/scaling-model.py on tests/data/scaling-model-input.txt, a synthetic input whose answer is known
(compute 5 + 4.375 b ms at batch b, optimizer 2 ms, backward share 0.65; allreduce exactly
2(p-1) alpha + 2(p-1)/p bytes beta, 1gbit: alpha 0.1 ms and 1 Gbit/s, shm: 0.002 ms and 16 Gbit/s):
  - the fit recovers alpha and the bandwidth of both links, with no residual;
  - every number of the Markdown model tables follows from the inputs (compute, allreduce, step with and
    without overlap, images/s, epoch time);
  - strong scaling saturates: images/s falls as nodes are added, and only where the allreduce costs more
    than the compute; weak scaling loses efficiency with nodes, and overlap never makes a step slower;
  - the measured points sit beside the model's numbers for their configuration;
  - bad input: one line naming the file and line (exit 1), a bad option (exit 2).
usage: scaling_model_check.py SCALING_MODEL_PY INPUT"""
import os
import subprocess
import sys
import tempfile

ALPHA = {"1gbit": 0.1, "shm": 0.002}
BETA = {"1gbit": 8e-6, "shm": 0.5e-6}
GRADIENT_BYTES = 4 * 271818
SHARE = 0.65


def fail(message):
    print(f"FAIL: {message}", file=sys.stderr)
    sys.exit(1)


def check(condition, message):
    if not condition:
        fail(message)


def run(script, *args):
    return subprocess.run([sys.executable, script, *args], capture_output=True, text=True, timeout=60)


def tables(text):
    """{section title: [row cells...]} for every '### title' followed by a Markdown table."""
    found, title = {}, None
    for line in text.splitlines():
        if line.startswith("### "):
            title, found[line[4:]] = line[4:], []
        elif title and line.startswith("| ") and not line.startswith("|---"):
            found[title].append([c.strip() for c in line.strip("|").split("|")])
    return {t: rows[1:] for t, rows in found.items()}   # without the header row


def section(all_tables, start):
    hits = [rows for title, rows in all_tables.items() if title.startswith(start)]
    check(len(hits) == 1, f"expected one table '{start}...', found {len(hits)}: {list(all_tables)}")
    return hits[0]


def near(a, b, tol):
    return abs(a - b) <= tol


def compute_ms(b):
    return 5 + 4.375 * b


def comm_ms(link, p):
    return 0.0 if p == 1 else 2 * (p - 1) * ALPHA[link] + 2 * (p - 1) / p * GRADIENT_BYTES * BETA[link]


def check_fit(t):
    rows = {r[0]: r for r in section(t, "Allreduce model fitted")}
    check(set(rows) == {"1gbit", "shm"}, f"fitted links: {sorted(rows)}")
    for link, alpha_us, gbit in (("1gbit", "100.0", "1.00"), ("shm", "2.0", "16.00")):
        r = rows[link]
        check(r[3] == alpha_us and r[4] == gbit and r[6] == "0%", f"fit of {link}: {r} (want {alpha_us} us, {gbit} Gbit/s, 0%)")
        at = [float(x) for x in r[5].split(" / ")]
        check(all(near(a, comm_ms(link, p), 0.006) for a, p in zip(at, (2, 4, 128))), f"{link}: gradient times {at}")
    print(f"ok: the fit recovers alpha and bandwidth: {rows['1gbit'][3:5]} and {rows['shm'][3:5]}")


def check_row(r, cores, global_batch, scaling):
    """One model row against the inputs; returns (ranks, compute + optimizer, comm, images/s, overlap images/s)."""
    nodes, ranks, b = int(r[0]), int(r[1]), float(r[2])
    check(ranks == nodes * cores, f"row {r}: ranks")
    check(b == (global_batch / ranks if scaling == "strong" else 128), f"row {r}: batch per rank")
    work, comm = float(r[3]), float(r[4])
    check(near(work, compute_ms(b) + 2, 0.06), f"row {r}: compute + optimizer {work}, want {compute_ms(b) + 2:.2f}")
    want_comm = comm_ms("shm" if nodes == 1 else "1gbit", ranks)
    check(near(comm, want_comm, 0.006), f"row {r}: allreduce {comm}, want {want_comm:.3f}")
    images = b * ranks
    step, ips, epoch = float(r[5]), float(r[6]), float(r[7].split()[0])
    check(near(step, work + comm, 0.11), f"row {r}: step without overlap")
    check(near(ips, images / step * 1e3, ips * 0.002 + 0.1), f"row {r}: images/s without overlap")
    check(near(epoch, 45000 / ips, 45000 / ips * 0.01 + 0.5), f"row {r}: epoch time")
    step_o, ips_o = float(r[9]), float(r[10])
    want_o = work + max(0.0, comm - SHARE * compute_ms(b))
    check(near(step_o, want_o, 0.11), f"row {r}: step with overlap {step_o}, want {want_o:.2f}")
    check(ips_o >= ips and step_o <= step, f"row {r}: overlap slower than none")
    return ranks, work, comm, ips, ips_o, float(r[8].rstrip("%")), float(r[12].rstrip("%"))


def check_strong(t):
    rows = [check_row(r, 2, 128, "strong") for r in section(t, "Model (predicted, not measured): strong scaling")]
    check(len(rows) == 7, f"strong scaling rows: {len(rows)}")
    falls = [(prev, cur) for prev, cur in zip(rows, rows[1:]) if cur[3] < prev[3]]
    check(falls, f"strong scaling never saturates: images/s {[r[3] for r in rows]}")
    for _, cur in falls:
        check(cur[2] > cur[1], f"images/s falls at {cur[0]} ranks although allreduce {cur[2]} < compute {cur[1]}")
    best = max(rows, key=lambda r: r[3])
    print(f"ok: strong scaling saturates at {best[0]} ranks ({best[3]:.0f} images/s), falls only where the "
          f"allreduce exceeds the compute; every number follows from the inputs")


def check_weak(t):
    rows = [check_row(r, 2, 128, "weak") for r in section(t, "Model (predicted, not measured): weak scaling")]
    efficiency = [r[5] for r in rows]
    check(all(a >= b for a, b in zip(efficiency, efficiency[1:])), f"weak efficiency without overlap rises: {efficiency}")
    check(efficiency[-1] < efficiency[0], f"weak efficiency without overlap never falls: {efficiency}")
    check(all(r[6] >= r[5] and r[6] <= 100 for r in rows), f"weak efficiency with overlap: {[r[6] for r in rows]}")
    print(f"ok: weak scaling efficiency {efficiency[0]:.0f}% -> {efficiency[-1]:.0f}% without overlap, "
          f"{rows[-1][6]:.0f}% with it at {rows[-1][0]} ranks")


def check_measured(t):
    split = {(r[0], r[1], r[2], r[3]): r for r in section(t, "Measured step split")}
    r = split.get(("1gbit", "2 x 4", "32", "0.25 MiB"))
    check(r is not None and r[10] == "11.0" and r[7] == "8.0 (5.0)", f"measured split, 4 ranks with overlap: {r}")
    beside = {(r[0], r[1], r[3]): r for r in section(t, "Measured points beside the model")}
    r = beside.get(("1gbit", "2 x 2", "0"))
    check(r is not None and r[10] == f"{comm_ms('1gbit', 2):.1f}", f"2 hosts x 2 ranks beside the model: {r}")
    r = beside.get(("1gbit", "2 x 4", "0"))
    check(r is not None and r[4] == "2" and r[8] == f"{2 * compute_ms(32):.1f}",
          f"2 hosts x 4 ranks on the 2-core machine: ranks per core and compute: {r}")
    check(("shm", "1 x 1", "0") in beside and ("shm", "1 x 2", "0") in beside, f"1-node points: {sorted(beside)}")
    print("ok: measured points beside the model (1 node x 1 and 2 ranks, 2 hosts x 2 and 4 ranks)")


def check_one_core_nodes(script, path):
    out = run(script, "--cores", "1", "--nodes", "1,2", path)
    check(out.returncode == 0, f"--cores 1: exit {out.returncode}: {out.stderr}")
    rows = section(tables(out.stdout), "Model (predicted, not measured): strong scaling")
    check(len(rows) == 2, f"--nodes 1,2: {len(rows)} rows")
    one = rows[0]
    check(one[:5] == ["1", "1", "128", f"{compute_ms(128) + 2:.1f}", "0.00"] and one[6] == f"{128e3 / 567:.1f}",
          f"1 node of 1 core: {one}")
    print(f"ok: 1 node x 1 core = the measured batch-128 step: {one[5]} ms, {one[6]} images/s")


def check_errors(script, path):
    with tempfile.TemporaryDirectory() as d:
        bad = os.path.join(d, "bad.txt")
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
        lines.insert(7, "compute 64 not-a-number 2.0 0.65")
        with open(bad, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        cases = [([bad], 1, f"{bad}:8:"), ([os.path.join(d, "missing.txt")], 1, "missing.txt"),
                 (["--cores", "0", path], 2, "--cores"), (["--links", "10gbit", path], 2, "10gbit"), ([], 2, "results")]
        for args, code, named in cases:
            out = run(script, *args)
            lines_err = out.stderr.strip().splitlines()
            check(out.returncode == code and len(lines_err) == 1 and named in lines_err[0] and not out.stdout,
                  f"{args}: exit {out.returncode} (want {code}), stderr {out.stderr!r}, want one line naming {named}")
    print("ok: bad input: one line naming the file and line (exit 1); bad options (exit 2)")


def main():
    script, path = sys.argv[1], sys.argv[2]
    out = run(script, path)
    check(out.returncode == 0, f"exit {out.returncode}: {out.stderr}")
    t = tables(out.stdout)
    check_fit(t)
    check_strong(t)
    check_weak(t)
    check_measured(t)
    check_one_core_nodes(script, path)
    check_errors(script, path)


if __name__ == "__main__":
    main()
