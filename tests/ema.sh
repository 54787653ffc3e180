#!/usr/bin/env bash
# --ema DECAY end to end, on 2 ranks: a run stopped mid-epoch and resumed writes checkpoints bitwise
# those of an uninterrupted run (/model, /optimizer and /ema with its decay and n_averaged); every
# validation line of the metrics log has val_acc_ema; `eval` of best.h5 (the moving average by default,
# or --weights ema) reproduces the EMA validation accuracy logged at best.h5's step, and --weights raw
# the raw one; the end-of-run EMA test accuracy is eval's of last.h5 and report.json's; a run resumed
# with --ema from a checkpoint without one starts the average there; scripts/torch_export.py --weights
# ema exports /ema's tensors exactly. (The PyTorch numbers of the average itself: tests/test_ema.c;
# refused values and files: tests/bad_inputs.sh.)
source "$(dirname "$0")/lib.sh"
here=$(cd "$(dirname "$0")" && pwd)
# 1024 records at batch 64: 16 steps an epoch, step 10 mid-epoch, step 20 in the next one; a validation
# every 4 batches puts metrics lines and best.h5 writes on both sides of the stop
common=("${FM_QUICK[@]}" --limit-train 1024 --batch-size 64 --eval-every 4 --threads 1 --quiet --ema 0.9)

mpi 2 "${common[@]}" --max-steps 20 --checkpoint-dir "$TMP/full" > "$TMP/full.out" || fail "20 steps"
mpi 2 "${common[@]}" --max-steps 10 --checkpoint-dir "$TMP/half" > /dev/null || fail "10 steps"
mpi 2 "${common[@]}" --max-steps 20 --checkpoint-dir "$TMP/half" --resume auto > /dev/null || fail "resume"
attr() { h5dump -a "$2" "$1" | sed -n 's/^ *(0): //p'; }
for f in last best; do
  for g in /model /optimizer /ema; do
    h5diff "$TMP/full/$f.h5" "$TMP/half/$f.h5" "$g" "$g" > /dev/null || fail "$f.h5: $g differs after the resume"
  done
  for a in /ema/decay /ema/n_averaged /train/step /train/best_val_acc; do
    [ "$(attr "$TMP/full/$f.h5" "$a")" = "$(attr "$TMP/half/$f.h5" "$a")" ] || fail "$f.h5: $a differs after the resume"
  done
done
[ "$(attr "$TMP/full/last.h5" /ema/n_averaged)" = 20 ] || fail "n_averaged of last.h5 is not 20"
[ "$(attr "$TMP/full/last.h5" /ema/decay)" = 0.9 ] || fail "decay of last.h5 is not 0.9"
pass "10 steps + resume 10 = 20 steps with --ema on 2 ranks: last.h5 and best.h5 bitwise identical (/model /optimizer /ema)"

# every metrics line has both accuracies; best.h5 is the step of the best EMA accuracy; eval reproduces both
/usr/bin/python3 - "$TMP/full" "$BIN" <<'EOF' || fail "metrics, best.h5 and eval disagree"
import json, subprocess, sys
folder, binary = sys.argv[1], sys.argv[2]
lines = [json.loads(l) for l in open(folder + "/metrics.jsonl") if '"step"' in l]
assert [l["step"] for l in lines] == [4, 8, 12, 16, 20], lines
assert all("val_acc_ema" in l and 0 <= l["val_acc_ema"] <= 1 for l in lines), lines
report = json.load(open(folder + "/report.json"))
best_step = report["outcome"]["best_step"]
logged = {l["step"]: l for l in lines}[best_step]
assert report["outcome"]["best_val_acc"] == logged["val_acc_ema"], (report["outcome"], logged)
assert logged["val_acc_ema"] == max(l["val_acc_ema"] for l in lines if l["step"] <= best_step)

def evaluate(path, split, *extra):
    out = subprocess.run(["mpirun", "--oversubscribe", "--bind-to", "none", "-np", "2", binary, "eval",
                          "--checkpoint", path, "--split", split, "--json", *extra],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])

for extra, key, weights in (((), "val_acc_ema", "ema"), (("--weights", "ema"), "val_acc_ema", "ema"),
                            (("--weights", "raw"), "val_acc", "raw")):
    got = evaluate(folder + "/best.h5", "val", *extra)
    assert got["weights"] == weights, got
    assert abs(got["accuracy"] - logged[key]) < 1e-6, (extra, got["accuracy"], key, logged[key])
    print(f"ok: eval {' '.join(extra) or '(default)'} of best.h5 (step {best_step}) gives {got['accuracy']:.4f} = "
          f"logged {key}")
test = report["test"]
assert test["ema"]["decay"] == 0.9 and test["ema"]["other_protocol"]["protocol"] == "seed", test["ema"]
got = evaluate(folder + "/last.h5", "test")
assert abs(got["accuracy"] - test["ema"]["accuracy"]) < 1e-6, (got["accuracy"], test["ema"])
assert abs(got["other_protocol"]["accuracy"] - test["ema"]["other_protocol"]["accuracy"]) < 1e-6
got = evaluate(folder + "/last.h5", "test", "--weights", "raw")
assert abs(got["accuracy"] - test["accuracy"]) < 1e-6, (got["accuracy"], test["accuracy"])
print(f"ok: report.json's EMA test accuracy {test['ema']['accuracy']:.4f} is eval's of last.h5")
EOF
grep -qE '^test accuracy: [01]\.[0-9]{4}$' "$TMP/full.out" && grep -qE '^EMA test accuracy: [01]\.[0-9]{4}$' "$TMP/full.out" &&
  grep -qE '^EMA seed protocol test accuracy: [01]\.[0-9]{4}$' "$TMP/full.out" ||
  fail "the end-of-run lines lack the EMA test accuracy: $(cat "$TMP/full.out")"
pass "the run ends with 'EMA test accuracy' beside 'test accuracy'"

# a run without --ema resumed with it: the average starts at the resumed step, as a new AveragedModel would
plain=("${FM_QUICK[@]}" --limit-train 256 --batch-size 64 --eval-every 2 --threads 1 --progress never)
"$BIN" "${plain[@]}" --max-steps 2 --checkpoint-dir "$TMP/plain" > /dev/null || fail "run without --ema"
cp "$TMP/plain/last.h5" "$TMP/no-ema.h5"
[ "$(h5dump -A -g / "$TMP/plain/last.h5" | grep -c 'GROUP "ema"')" -eq 0 ] || fail "a run without --ema wrote /ema"
out=$("$BIN" "${plain[@]}" --max-steps 5 --ema 0.5 --checkpoint-dir "$TMP/plain" --resume auto) || fail "resume with --ema"
echo "$out" | grep -q "has no moving average: --ema starts one at step 2" || fail "the fresh average is not reported: $out"
echo "$out" | grep -q "EMA validation accuracy: " || fail "no EMA validation accuracy on the validation line: $out"
[ "$(attr "$TMP/plain/last.h5" /ema/n_averaged)" = 3 ] && [ "$(attr "$TMP/plain/last.h5" /config/ema)" = 0.5 ] ||
  fail "resumed with --ema 0.5: /ema/n_averaged $(attr "$TMP/plain/last.h5" /ema/n_averaged), /config/ema $(attr "$TMP/plain/last.h5" /config/ema)"
pass "a run resumed with --ema starts the average at the resumed step (3 updates in 3 steps)"

# scripts/torch_export.py --weights ema: /ema's tensors, bit for bit, under the state_dict's names
export=("/usr/bin/python3" "$here/../scripts/torch_export.py")
"${export[@]}" --weights ema --state-dict-only "$TMP/full/best.h5" "$TMP/ema.pt" > /dev/null || fail "export --weights ema"
"${export[@]}" --state-dict-only "$TMP/full/best.h5" "$TMP/raw.pt" > /dev/null || fail "export"
/usr/bin/python3 - "$TMP/full/best.h5" "$TMP/ema.pt" "$TMP/raw.pt" <<'EOF' || fail "exported tensors differ from the checkpoint's"
import sys, h5py, numpy as np, torch
f = h5py.File(sys.argv[1], "r")
ema, raw = torch.load(sys.argv[2]), torch.load(sys.argv[3])
assert set(f["ema"]) <= set(ema) and len(f["ema"]) > 0
for name in f["ema"]:
    assert np.array_equal(ema[name].numpy(), f["ema"][name][()]), name
    assert np.array_equal(raw[name].numpy(), f["model"][name][()]), name
assert any(not np.array_equal(f["ema"][n][()], f["model"][n][()]) for n in f["ema"]), "the average is the model"
EOF
set +e
msg=$("${export[@]}" --weights ema "$TMP/no-ema.h5" "$TMP/none.pt" 2>&1)
code=$?
set -e
[ "$code" -eq 1 ] && [ "$(echo "$msg" | wc -l)" -eq 1 ] && echo "$msg" | grep -q "no moving average" ||
  fail "export --weights ema of a file without /ema: exit $code: $msg"
pass "torch_export.py --weights ema exports /ema exactly; refuses a checkpoint without one: $msg"
