#!/usr/bin/env bash
# End to end on real data, all defaults (the tuned recipe: the seed's training with --ema 0.999,
# --bn-eval reference and --validate-raw off): one epoch of 4,000 Fashion-MNIST images must learn far
# beyond chance (10%), in the moving average that validations follow and in the trained weights that the
# final test scores too. A broken gradient, BN or data path stays near chance; a working one reaches ~0.8
# here. The default run's outputs hold the average and its statistics, and no raw validation.
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/lib.sh"
THRESHOLD=0.60
out=$("$BIN" train "${FM_DEFAULT[@]}" --limit-train 4000 --batch-size 32 --epochs 1 --eval-every epoch --threads 2 \
      --checkpoint-dir "$TMP/ck" 2>&1) || fail "training exited $?: $out"
echo "$out"
at_least() { awk -v a="$1" -v t="$THRESHOLD" 'BEGIN { exit !(a != "" && a >= t) }'; }
acc_ema=$(echo "$out" | sed -n 's/.*EMA validation accuracy: \([0-9.]*\).*/\1/p' | tail -1)
at_least "$acc_ema" || fail "EMA validation accuracy '$acc_ema' < $THRESHOLD"
if echo "$out" | grep -q "| validation accuracy: "; then fail "the default validated the raw weights"; fi
grep -q '"val_acc":null,"val_acc_ema":0\.' "$TMP/ck/metrics.jsonl" || fail "metrics: $(cat "$TMP/ck/metrics.jsonl")"
pass "EMA validation accuracy $acc_ema >= $THRESHOLD; the raw weights not validated (val_acc null)"
test_acc=$(echo "$out" | sed -n 's/^test accuracy: \([0-9.]*\).*/\1/p')
test_ema=$(echo "$out" | sed -n 's/^EMA test accuracy[^:]*: \([0-9.]*\).*/\1/p')
at_least "$test_acc" || fail "test accuracy '$test_acc' < $THRESHOLD"
at_least "$test_ema" || fail "EMA test accuracy '$test_ema' < $THRESHOLD"
pass "test accuracy $test_acc, EMA $test_ema"
echo "$out" | grep -q "Ankle boot" || fail "no confusion matrix with class names"
[ -s "$TMP/ck/last.h5" ] && [ -s "$TMP/ck/best.h5" ] && [ -s "$TMP/ck/metrics.jsonl" ] || fail "missing outputs in $TMP/ck"
pass "checkpoints and metrics written"
attr() { h5dump -a "$2" "$1" | sed -n 's/^ *(0): //p' | tr -d '"'; }
for f in last best; do
  [ "$(attr "$TMP/ck/$f.h5" /config/recipe)" = tuned ] || fail "$f.h5: /config/recipe is not tuned"
  [ "$(attr "$TMP/ck/$f.h5" /ema/decay)" = 0.999 ] || fail "$f.h5: no /ema with decay 0.999"
  h5ls "$TMP/ck/$f.h5/ema/reference" > /dev/null 2>&1 || fail "$f.h5: no /ema/reference statistics"
  if h5ls "$TMP/ck/$f.h5/reference" > /dev/null 2>&1; then fail "$f.h5: /reference of raw weights never validated"; fi
done
grep -q "the moving average" "$TMP/ck/report.md" && grep -q "reference" "$TMP/ck/report.md" ||
  fail "report.md does not name the moving average and the reference statistics as what decided"
pass "the default run keeps /ema (0.999) and /ema/reference; report.md names what decided"
