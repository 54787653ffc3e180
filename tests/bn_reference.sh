#!/usr/bin/env bash
# --bn-eval reference on the training path: the statistics are measured at every validation and
# checkpoint and stored in /reference; eval uses the stored ones, and measures them (the same) for a
# checkpoint written without them; the result is the same on 1 and 2 ranks; a resumed run stores bitwise
# what an uninterrupted one does; training itself is untouched by the evaluation mode. (The statistics
# and the evaluation against PyTorch: test_parity's expect_reference.)
source "$(dirname "$0")/lib.sh"
common=("${FM_QUICK[@]}" --limit-train 1024 --batch-size 64 --eval-every 5 --early-stop off --bn-sample 300 --quiet)

mpi 2 "${common[@]}" --threads 1 --max-steps 20 --checkpoint-dir "$TMP/batch" >/dev/null || fail "--bn-eval batch run"
mpi 2 "${common[@]}" --threads 1 --max-steps 20 --bn-eval reference --checkpoint-dir "$TMP/ref" >/dev/null ||
  fail "--bn-eval reference run"
h5diff "$TMP/batch/last.h5" "$TMP/ref/last.h5" /model /model || fail "the evaluation mode changed the training"
h5ls -r "$TMP/ref/last.h5" | grep -q '^/reference/module1.0.bn.reference Dataset {2, 2, 16}' ||
  fail "no /reference in last.h5: $(h5ls -r "$TMP/ref/last.h5" | grep -c reference) entries"
if h5ls "$TMP/batch/last.h5" | grep -q reference; then fail "a --bn-eval batch run stored /reference"; fi
pass "training is the same under --bn-eval batch and reference; /reference stored only by the latter"

stored=$("$BIN" eval --checkpoint "$TMP/ref/last.h5" --threads 2 --json) || fail "eval of the stored statistics"
two=$(mpi 2 eval --checkpoint "$TMP/ref/last.h5" --threads 1 --json) || fail "eval on 2 ranks"
[ "$stored" = "$two" ] || fail "1 and 2 ranks differ: $stored / $two"
measured=$("$BIN" eval --checkpoint "$TMP/batch/last.h5" --bn-eval reference --bn-sample 300 --threads 2 --json) ||
  fail "eval measuring the statistics"
[ "$stored" = "$measured" ] || fail "stored and freshly measured statistics evaluate differently: $stored / $measured"
batch=$("$BIN" eval --checkpoint "$TMP/batch/last.h5" --threads 2 --json) || fail "eval with batch statistics"
[ "$stored" != "$batch" ] || fail "reference and batch statistics give identical results: the mode is not applied"
pass "eval: stored = measured now, 1 rank = 2 ranks, and not the batch-statistics result"

mpi 2 "${common[@]}" --threads 1 --max-steps 12 --bn-eval reference --checkpoint-dir "$TMP/half" >/dev/null ||
  fail "12 steps"
mpi 2 "${common[@]}" --threads 1 --max-steps 20 --bn-eval reference --checkpoint-dir "$TMP/half" --resume auto \
  >/dev/null || fail "resume"
for g in /model /reference /optimizer /history/val_acc; do
  h5diff "$TMP/ref/last.h5" "$TMP/half/last.h5" "$g" "$g" || fail "resumed run: $g differs"
done
pass "12 steps + resume = 20 steps: /model /reference /optimizer /history bitwise identical"

set +e
out=$("$BIN" "${common[@]}" --bn-sample 0 --checkpoint-dir "$TMP/bad" 2>&1)
code=$?
set -e
[ "$code" -eq 2 ] && [ "$(echo "$out" | wc -l)" -eq 1 ] && grep -q -- "--bn-sample" <<<"$out" ||
  fail "--bn-sample 0: exit $code: $out"
pass "--bn-sample 0 refused: $out"

# --ema with reference statistics: the average gets its own (measured over the same sample), so eval of
# the average (which measures them, /reference being the raw weights') reproduces the run's EMA test line
out=$(mpi 2 "${common[@]}" --threads 1 --max-steps 20 --bn-eval reference --ema 0.9 --checkpoint-dir "$TMP/ema") ||
  fail "--ema with --bn-eval reference"
run_ema=$(sed -n 's/^EMA test accuracy: //p' <<<"$out")
run_raw=$(sed -n 's/^test accuracy: //p' <<<"$out")
eval_ema=$("$BIN" eval --checkpoint "$TMP/ema/last.h5" --threads 2 | sed -n 's/^test accuracy: \([0-9.]*\).*/\1/p')
eval_raw=$("$BIN" eval --checkpoint "$TMP/ema/last.h5" --weights raw --threads 2 |
  sed -n 's/^test accuracy: \([0-9.]*\).*/\1/p')
[ -n "$run_ema" ] && [ "$run_ema" = "$eval_ema" ] && [ "$run_raw" = "$eval_raw" ] ||
  fail "EMA + reference: run says raw $run_raw, EMA $run_ema; eval says raw $eval_raw, EMA $eval_ema"
pass "--ema + --bn-eval reference: eval reproduces the run's raw ($run_raw) and EMA ($run_ema) test accuracy"
