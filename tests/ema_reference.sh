#!/usr/bin/env bash
# The default recipe's model (--ema with --bn-eval reference) evaluated from its checkpoint alone: every
# checkpoint stores the moving average's own reference BN statistics as /ema/reference (not /reference's,
# which belong to the raw weights); `eval` of the average uses them, so it reproduces the logged
# val_acc_ema and the run's EMA test accuracy with a --data folder that has no training files, and says
# nothing about measuring; a file without /ema/reference (an earlier version's) is measured as before, to
# the same result; a run stopped mid-way and resumed stores /ema/reference bitwise as an uninterrupted one.
# The default, --validate-raw off, trains and averages the same and validates only the average: no
# /reference in its files, val_acc null; eval of its raw weights measures their statistics.
# (Reading and refusing the group: test_checkpoint; the export: torch_export.sh.)
source "$(dirname "$0")/lib.sh"
# the default recipe (FM_DEFAULT: --ema 0.999 --ema-warmup on --bn-eval reference), with --validate-raw
# on until the last part, on ResNet-8: 16 steps an epoch, a validation at its batches 5, 10 and 15; 20
# steps (last.h5 at step 20 is no validation's, so the checkpoint measures the statistics itself), or 12
# and a resume
common=("${FM_DEFAULT[@]}" --depth 8 --limit-train 1024 --batch-size 64 --eval-every 5 --early-stop off
        --bn-sample 300 --threads 1 --quiet)
raw=(--validate-raw on)   # the raw weights validated too, so that /reference is there to compare

out=$(mpi 2 "${common[@]}" "${raw[@]}" --max-steps 20 --checkpoint-dir "$TMP/full") || fail "20 steps of the default recipe, --validate-raw on"
for f in last best; do
  listing=$(h5ls -r "$TMP/full/$f.h5")
  refs=$(grep -c '^/reference/.* Dataset' <<<"$listing" || true)
  emas=$(grep -c '^/ema/reference/.* Dataset' <<<"$listing" || true)
  [ "$refs" -gt 0 ] && [ "$emas" -eq "$refs" ] || fail "$f.h5: $emas datasets in /ema/reference, $refs in /reference"
  grep -q '^/ema/reference/module1.0.bn.reference Dataset {2, 2, 16}' <<<"$listing" ||
    fail "$f.h5: /ema/reference/module1.0.bn.reference is not [2, 2, 16]"
  code=0
  h5diff -q "$TMP/full/$f.h5" "$TMP/full/$f.h5" /reference /ema/reference || code=$?
  [ "$code" -eq 1 ] || fail "$f.h5: h5diff of /reference and /ema/reference exits $code: the raw weights' statistics?"
done
pass "the default recipe stores /ema/reference ($emas BN modules, not /reference's) in last.h5 and best.h5"

# test files only: any measurement (which reads the training files) would fail
mkdir "$TMP/test-only"
cp "$FM_DIR"/t10k-* "$TMP/test-only/"
# a copy of last.h5 without /ema/reference, as an earlier version wrote it
/usr/bin/python3 - "$TMP/full/last.h5" "$TMP/old.h5" <<'EOF' || fail "could not remove /ema/reference"
import shutil, sys, h5py
shutil.copy(sys.argv[1], sys.argv[2])
with h5py.File(sys.argv[2], "r+") as f:
    del f["ema/reference"]
EOF
/usr/bin/python3 - "$TMP/full" "$BIN" "$TMP/test-only" "$TMP/old.h5" "$out" <<'EOF' || fail "eval of the average"
import json, subprocess, sys
folder, binary, test_only, old, run_out = sys.argv[1:6]
lines = {l["step"]: l for l in map(json.loads, open(folder + "/metrics.jsonl")) if "step" in l}
report = json.load(open(folder + "/report.json"))

def evaluate(path, *extra, ok=True):
    done = subprocess.run(["mpirun", "--oversubscribe", "--bind-to", "none", "-np", "2", binary, "eval",
                           "--checkpoint", path, "--threads", "1", *extra], capture_output=True, text=True)
    if not ok:
        return done
    assert done.returncode == 0, (path, extra, done.stderr)
    assert "measured now" not in done.stdout, (path, extra, done.stdout)
    return json.loads(done.stdout.strip().splitlines()[-1]) if "--json" in extra else done.stdout

best = report["outcome"]["best_step"]
got = evaluate(folder + "/best.h5", "--split", "val", "--json")
assert got["weights"] == "ema", got
assert abs(got["accuracy"] - lines[best]["val_acc_ema"]) < 1e-6, (got["accuracy"], lines[best])
print(f"ok: eval of best.h5 (step {best}, a validation's statistics) gives its val_acc_ema {got['accuracy']:.4f}")
# last.h5 is of step 20, no validation: its statistics were measured for the checkpoint itself
stored = evaluate(folder + "/last.h5", "--split", "val", "--json")
measured = evaluate(old, "--split", "val", "--json", ok=False)
assert measured.returncode == 0 and "measured now" not in measured.stdout.splitlines()[-1], measured
assert json.loads(measured.stdout.strip().splitlines()[-1]) == stored, (measured.stdout, stored)
print(f"ok: eval of last.h5 (step 20) with its stored statistics = measured now (val {stored['accuracy']:.4f}, "
      "confusion matrix and all)")

ema_test = report["test"]["ema"]["accuracy"]
got = evaluate(folder + "/last.h5", "--split", "test", "--data", test_only, "--json")
assert abs(got["accuracy"] - ema_test) < 1e-6, (got["accuracy"], ema_test)
raw = evaluate(folder + "/last.h5", "--split", "test", "--data", test_only, "--weights", "raw", "--json")
assert abs(raw["accuracy"] - report["test"]["accuracy"]) < 1e-6, (raw["accuracy"], report["test"])
print(f"ok: with the test files alone, eval of last.h5 gives the run's EMA ({ema_test:.4f}) and raw "
      f"({raw['accuracy']:.4f}) test accuracy")

# the file without /ema/reference: measured from the training data, to the same numbers; not without it
measured = evaluate(old, "--split", "test", ok=False)
assert measured.returncode == 0 and "of the moving average not in the checkpoint (/ema/reference), measured now" \
    in measured.stdout, measured
assert f"EMA test accuracy: {ema_test:.4f}" in run_out and f"test accuracy: {ema_test:.4f}" in measured.stdout, \
    (run_out, measured.stdout)
refused = evaluate(old, "--split", "test", "--data", test_only, ok=False)
assert refused.returncode == 1 and "train-images" in refused.stderr, (refused.returncode, refused.stderr)
print(f"ok: without /ema/reference eval measures the average's statistics ({ema_test:.4f} again) and needs "
      f"the training files: {next(l for l in refused.stderr.splitlines() if 'train-images' in l)}")
EOF

mpi 2 "${common[@]}" "${raw[@]}" --max-steps 12 --checkpoint-dir "$TMP/half" >/dev/null || fail "12 steps"
grep -q '^/ema/reference/' <<<"$(h5ls -r "$TMP/half/last.h5")" || fail "the checkpoint at step 12 has no /ema/reference"
cp -r "$TMP/half" "$TMP/mixed"   # step 12 with /reference, resumed below with --validate-raw off
mpi 2 "${common[@]}" "${raw[@]}" --max-steps 20 --checkpoint-dir "$TMP/half" --resume auto >/dev/null || fail "resume"
for f in last best; do
  for g in /ema/reference /ema /reference /model; do
    h5diff "$TMP/full/$f.h5" "$TMP/half/$f.h5" "$g" "$g" >/dev/null || fail "$f.h5: $g differs after the resume"
  done
done
pass "12 steps + resume = 20 steps: /ema/reference (and /ema /reference /model) of last.h5 and best.h5 bitwise"

# the default (--validate-raw off): the same training, the average's validations only
mpi 2 "${common[@]}" --max-steps 20 --checkpoint-dir "$TMP/off" >/dev/null || fail "20 steps, --validate-raw off"
for f in last best; do
  for g in /model /optimizer /ema/reference; do
    h5diff "$TMP/full/$f.h5" "$TMP/off/$f.h5" "$g" "$g" >/dev/null || fail "$f.h5: $g differs under --validate-raw off"
  done
  if h5ls "$TMP/off/$f.h5/reference" >/dev/null 2>&1; then fail "$f.h5: /reference without raw validations"; fi
done
/usr/bin/python3 - "$TMP/full" "$TMP/off" "$BIN" <<'EOF' || fail "--validate-raw off"
import json, subprocess, sys
full, off, binary = sys.argv[1:4]
read = lambda d: [l for l in map(json.loads, open(d + "/metrics.jsonl")) if "step" in l]
on_lines, off_lines = read(full), read(off)
assert [l["val_acc_ema"] for l in on_lines] == [l["val_acc_ema"] for l in off_lines], (on_lines, off_lines)
assert all(l["val_acc"] is None for l in off_lines) and all(l["val_acc"] is not None for l in on_lines), off_lines
raw_test = json.load(open(full + "/report.json"))["test"]["accuracy"]
assert json.load(open(off + "/report.json"))["test"]["accuracy"] == raw_test
done = subprocess.run(["mpirun", "--oversubscribe", "--bind-to", "none", "-np", "2", binary, "eval", "--checkpoint",
                       off + "/last.h5", "--weights", "raw", "--threads", "1"], capture_output=True, text=True)
assert done.returncode == 0 and "not in the checkpoint (/reference), measured now" in done.stdout, done
got = float(next(l for l in done.stdout.splitlines() if l.startswith("test accuracy: ")).split()[2])
assert abs(got - raw_test) < 6e-5, (got, raw_test)   # printed to 4 digits
print(f"ok: --validate-raw off: {len(off_lines)} validations of the average alone (val_acc_ema as with raw "
      f"ones, val_acc null), the same test accuracy; eval of the raw weights measures their statistics ({got:.4f})")
EOF
pass "--validate-raw off: /model /optimizer /ema/reference bitwise as with raw validations, no /reference"
# a run resumed with --validate-raw off from a file with /reference (step 12) does not save those
# statistics as the later weights'
mpi 2 "${common[@]}" --validate-raw off --max-steps 20 --checkpoint-dir "$TMP/mixed" --resume auto >/dev/null ||
  fail "resume with --validate-raw off"
h5diff "$TMP/full/last.h5" "$TMP/mixed/last.h5" /model /model >/dev/null || fail "the resumed run's /model differs"
if h5ls "$TMP/mixed/last.h5/reference" >/dev/null 2>&1; then fail "step 20's last.h5 has step 12's /reference"; fi
pass "resumed with --validate-raw off: the same /model, no stale /reference in last.h5"
