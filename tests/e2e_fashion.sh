#!/usr/bin/env bash
# End to end on real data: one epoch of 4,000 Fashion-MNIST images must learn far beyond chance (10%).
# A broken gradient, BN or data path stays near chance; a working one reaches ~0.8 here.
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/lib.sh"
THRESHOLD=0.60
out=$("$BIN" train "${FM_SMALL[@]}" --limit-train 4000 --batch-size 32 --epochs 1 --eval-every epoch --threads 2 \
      --checkpoint-dir "$TMP/ck" 2>&1) || fail "training exited $?: $out"
echo "$out"
acc=$(echo "$out" | sed -n 's/.*validation accuracy: \([0-9.]*\).*/\1/p' | tail -1)
[ -n "$acc" ] || fail "no validation line"
awk -v a="$acc" -v t="$THRESHOLD" 'BEGIN { exit !(a >= t) }' || fail "validation accuracy $acc < $THRESHOLD"
pass "validation accuracy $acc >= $THRESHOLD"
test_acc=$(echo "$out" | sed -n 's/^test accuracy: \([0-9.]*\).*/\1/p')
awk -v a="$test_acc" -v t="$THRESHOLD" 'BEGIN { exit !(a >= t) }' || fail "test accuracy '$test_acc' < $THRESHOLD"
pass "test accuracy $test_acc"
echo "$out" | grep -q "Ankle boot" || fail "no confusion matrix with class names"
[ -s "$TMP/ck/last.h5" ] && [ -s "$TMP/ck/best.h5" ] && [ -s "$TMP/ck/metrics.jsonl" ] || fail "missing outputs in $TMP/ck"
pass "checkpoints and metrics written"
