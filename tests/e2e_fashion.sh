#!/usr/bin/env bash
# End to end on real data, all defaults (the tuned recipe: the seed's training with --ema 0.999 and
# --bn-eval reference): one epoch of 4,000 Fashion-MNIST images must learn far beyond chance (10%), in
# the trained weights and in their moving average. A broken gradient, BN or data path stays near chance;
# a working one reaches ~0.8 here. The default run's outputs hold the average and the statistics.
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/lib.sh"
THRESHOLD=0.60
out=$("$BIN" train "${FM_DEFAULT[@]}" --limit-train 4000 --batch-size 32 --epochs 1 --eval-every epoch --threads 2 \
      --checkpoint-dir "$TMP/ck" 2>&1) || fail "training exited $?: $out"
echo "$out"
at_least() { awk -v a="$1" -v t="$THRESHOLD" 'BEGIN { exit !(a != "" && a >= t) }'; }
acc=$(echo "$out" | sed -n 's/.*| validation accuracy: \([0-9.]*\).*/\1/p' | tail -1)
acc_ema=$(echo "$out" | sed -n 's/.*EMA validation accuracy: \([0-9.]*\).*/\1/p' | tail -1)
at_least "$acc" || fail "validation accuracy '$acc' < $THRESHOLD"
at_least "$acc_ema" || fail "EMA validation accuracy '$acc_ema' < $THRESHOLD"
pass "validation accuracy $acc, EMA $acc_ema >= $THRESHOLD"
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
  h5ls "$TMP/ck/$f.h5/reference" > /dev/null 2>&1 || fail "$f.h5: no /reference statistics"
done
grep -q "the moving average" "$TMP/ck/report.md" && grep -q "reference" "$TMP/ck/report.md" ||
  fail "report.md does not name the moving average and the reference statistics as what decided"
pass "the default run keeps /ema (0.999) and /reference; report.md names what decided"
