#!/usr/bin/env bash
# What a run folder shows: a short real Fashion-MNIST run, stopped by --max-steps and resumed, leaves
# report.md and report.json whose test results are the `eval` subcommand's on the same checkpoint and
# whose best validation is the metrics log's; scripts/plot.py draws valid PNGs of sane size from it,
# keeps the steps increasing across the resume, adds the pictures to the report, overlays two runs,
# and reproduces the program's augmentation pixel for pixel.
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/lib.sh"
here=$(cd "$(dirname "$0")" && pwd)
PLOT=$here/../scripts/plot.py
AUGMENT_DUMP=${AUGMENT_DUMP:?meson passes the augment_dump helper}
PY=/usr/bin/python3
$PY -c "import matplotlib, numpy" 2>/dev/null ||
  fail "python3-matplotlib is not installed for $PY (scripts/test.sh installs it)"

run=$TMP/run
short=(train "${FM_SMALL[@]}" --val-size 200 --limit-train 256 --batch-size 32 --eval-every 2 --threads 2 --quiet
       --checkpoint-dir "$run")
"$BIN" "${short[@]}" --max-steps 4 >/dev/null || fail "first run exited $?"
cp -r "$run" "$TMP/first"   # the 4-step run as it was, a second run to overlay
"$BIN" "${short[@]}" --max-steps 8 --resume auto >/dev/null || fail "resumed run exited $?"
[ -s "$run/report.md" ] && [ -s "$run/report.json" ] || fail "no report.md / report.json in $run"
grep -q '"event":"resume","from_step":4,' "$run/metrics.jsonl" || fail "no resume marker in metrics.jsonl"
pass "report.md, report.json and a resume marker written"

# the report's numbers against eval on last.h5 and against the metrics log
eval_json=$("$BIN" eval --checkpoint "$run/last.h5" --data "$FM_DIR" --threads 2 --json) || fail "eval exited $?"
$PY - "$run" "$eval_json" "$FM_TEST" <<'PYEOF' || fail "report.json disagrees with the run"
import json, sys
run, ev = sys.argv[1], json.loads(sys.argv[2])
rep = json.load(open(run + "/report.json"))
test = rep["test"]
assert test["confusion"] == ev["confusion"], ("confusion", test["confusion"], ev["confusion"])
assert test["accuracy"] == ev["accuracy"] and test["images"] == ev["images"] == int(sys.argv[3]), (test["accuracy"], ev["accuracy"])
assert test["per_class"] == ev["per_class"]
points = [json.loads(l) for l in open(run + "/metrics.jsonl")]
vals = [p for p in points if "step" in p]
best = max(vals, key=lambda p: p["val_acc"])
out = rep["outcome"]
assert out["step"] == 8 and out["stop_reason"] == "max-steps", out
assert out["best_val_acc"] == best["val_acc"] and out["best_step"] == best["step"], (out, best)
assert rep["resumed_from"].endswith("last.h5") and rep["data"]["train"] == 256 and rep["data"]["validation"] == 200
assert rep["time"]["steps"] == 4 and rep["time"]["images"] == 128 and rep["time"]["core_hours"] > 0
assert {c["file"] for c in rep["checkpoints"]} == {"last.h5", "best.h5"}
print("test accuracy %.6f = eval's; best validation %.4f at step %d" % (test["accuracy"], best["val_acc"], best["step"]))
PYEOF
acc=$(sed -n 's/.*"accuracy":\([0-9.]*\),"per_class".*/\1/p' <<<"$eval_json")
grep -q "test accuracy (final model = last.h5, --bn-eval batch, clean images) | \*\*$(printf '%.4f' "$acc")\*\*" "$run/report.md" ||
  fail "report.md does not show the test accuracy $acc"
grep -q "| Ankle boot |" "$run/report.md" || fail "report.md has no confusion matrix with class names"
pass "report: test accuracy $acc and confusion matrix equal eval's on last.h5"

# the pictures
out=$($PY "$PLOT" "$run") || fail "plot.py exited $?"
for png in curves confusion augmentation; do
  grep -qx "$run/$png.png" <<<"$out" || fail "plot.py did not report $png.png"
done
$PY - "$run" <<'PYEOF' || fail "bad pictures"
import struct, sys, zlib
import matplotlib.image
run = sys.argv[1]
for name, (wmin, hmin) in {"curves": (600, 400), "confusion": (400, 400), "augmentation": (400, 300)}.items():
    path = "%s/%s.png" % (run, name)
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path + ": not a PNG"
    length, kind = struct.unpack(">I4s", data[8:16])
    width, height = struct.unpack(">II", data[16:24])
    assert kind == b"IHDR" and zlib.crc32(data[12:29]) == struct.unpack(">I", data[29:33])[0], path + ": bad header"
    assert wmin <= width <= 3000 and hmin <= height <= 3000, "%s: %dx%d" % (path, width, height)
    assert 5000 < len(data) < 150000, "%s: %d bytes" % (path, len(data))
    pixels = matplotlib.image.imread(path)
    assert pixels.shape[:2] == (height, width) and pixels[..., :3].std() > 0.05, path + ": blank"
    print("%s: %dx%d, %d bytes" % (name, width, height, len(data)))
PYEOF
grep -q '^!\[training curves\](curves.png)$' "$run/report.md" &&
  grep -q '^!\[test confusion matrix\](confusion.png)$' "$run/report.md" &&
  grep -q '^!\[augmentation\](augmentation.png)$' "$run/report.md" || fail "report.md does not show the pictures"
[ "$(grep -c '^## Images' "$run/report.md")" -eq 1 ] || fail "report.md has more than one images section"
$PY "$PLOT" "$run" >/dev/null || fail "plot.py exited $? the second time"
[ "$(grep -c '^!\[' "$run/report.md")" -eq 3 ] || fail "a second plot.py run duplicated the pictures"
grep -q '"images": *{"training curves": *"curves.png"' "$run/report.json" || fail "report.json lists no images"
pass "three valid PNGs of sane size, shown in report.md once"

# steps only increase across the resume, and the restart is where the resume picked up
$PY - "$run" "$PLOT" <<'PYEOF' || fail "metrics across the resume"
import importlib.util, sys
spec = importlib.util.spec_from_file_location("plot", sys.argv[2]); plot = importlib.util.module_from_spec(spec)
spec.loader.exec_module(plot)
points, restarts = plot.read_metrics(sys.argv[1] + "/metrics.jsonl")
assert [p["step"] for p in points] == [2, 4, 6, 8] and restarts == [4], (points, restarts)
PYEOF
pass "metrics read as steps 2, 4, 6, 8 with a restart at 4"

# two runs overlaid (the 4-step run before its resume, and the resumed one), labelled by the settings
# that differ
out=$($PY "$PLOT" "$run" "$TMP/first" -o "$TMP/plots") || fail "plot.py on two runs exited $?"
for png in curves confusion-run confusion-first augmentation; do
  [ -s "$TMP/plots/$png.png" ] || fail "two runs: no $png.png"
done
grep -q '(\.\./plots/confusion-first.png)' "$TMP/first/report.md" || fail "the second run's report.md does not show its pictures"
$PY - "$PLOT" "$run" "$TMP/first" <<'PYEOF' || fail "labels of two runs"
import importlib.util, sys
spec = importlib.util.spec_from_file_location("plot", sys.argv[1]); plot = importlib.util.module_from_spec(spec)
spec.loader.exec_module(plot)
runs = [plot.Run(d) for d in sys.argv[2:]]
plot.label_runs(runs, None)
assert [r.label for r in runs] == ["run (max-steps 8)", "first (max-steps 4)"], [r.label for r in runs]
PYEOF
pass "two runs overlaid and labelled, a confusion matrix each"

# the augmentation figure is the program's: plot.py's reproduction equals dataset_fill_batch
pairs=(0 0 0 1 1 0 3 59999 49 12345 7 777 2 31337 1000000 5 12 40000 0 2 1 2 2 2 3 2 4 2 5 2)
"$AUGMENT_DUMP" fashion-mnist "$FMNIST" 17 "$TMP/aug.bin" "${pairs[@]}" > "$TMP/aug.txt" || fail "augment_dump exited $?"
$PY - "$PLOT" "$FMNIST" "$TMP/aug.bin" "$TMP/aug.txt" <<'PYEOF' || fail "plot.py's augmentation differs from the program's"
import importlib.util, sys
import numpy as np
spec = importlib.util.spec_from_file_location("plot", sys.argv[1]); plot = importlib.util.module_from_spec(spec)
spec.loader.exec_module(plot)
images = np.fromfile(sys.argv[3], dtype=np.float32).reshape(-1, 1, 28, 28)
flips, offsets = set(), set()
for i, line in enumerate(open(sys.argv[4])):
    epoch, record, flip, dy, dx = map(int, line.split())
    assert plot.augment_params(17, epoch, record) == (flip, dy, dx), (epoch, record)
    image, _ = plot.read_record("fashion-mnist", sys.argv[2], record)
    mine = plot.augment(image, flip, dy, dx).astype(np.float32) / np.float32(255)
    assert np.array_equal(mine, images[i]), (epoch, record)
    flips.add(flip); offsets.add((dy, dx))
assert i == 14 and flips == {0, 1} and len(offsets) >= 8, (i, flips, offsets)
print("15 records: parameters and pixels equal; %d different crops" % len(offsets))
PYEOF
pass "augmentation reproduced bit for bit"

# bad input: one line, non-zero
err=$($PY "$PLOT" "$TMP/nothing" 2>&1) && fail "plot.py on a missing folder succeeded"
[ "$(echo "$err" | wc -l)" -eq 1 ] || fail "plot.py error is not one line: $err"
pass "missing folder: $err"
