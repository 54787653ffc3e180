#!/usr/bin/env bash
# Stop at any step, resume from its checkpoint: bitwise identical to a run that never stopped.
source "$(dirname "$0")/lib.sh"
# 1024 records at batch 64: 16 steps an epoch, so step 10 is mid-epoch and step 20 is in the next one;
# validation every 4 batches puts history entries and best.h5 writes on both sides of the stop
common=("${FM_QUICK[@]}" --limit-train 1024 --batch-size 64 --eval-every 4 --threads 1 --quiet)
model_and_optimizer_equal() {
  h5diff "$1" "$2" /model /model && h5diff "$1" "$2" /optimizer /optimizer
}

for np in 1 2; do
  mpi "$np" "${common[@]}" --max-steps 20 --checkpoint-dir "$TMP/full$np" >/dev/null || fail "$np ranks: 20 steps"
  mpi "$np" "${common[@]}" --max-steps 10 --checkpoint-dir "$TMP/half$np" >/dev/null || fail "$np ranks: 10 steps"
  mpi "$np" "${common[@]}" --max-steps 20 --checkpoint-dir "$TMP/half$np" --resume auto >/dev/null || fail "$np ranks: resume"
  model_and_optimizer_equal "$TMP/full$np/last.h5" "$TMP/half$np/last.h5" || fail "$np ranks: resumed run differs"
  h5diff "$TMP/full$np/last.h5" "$TMP/half$np/last.h5" /history/step /history/step || fail "$np ranks: history differs"
  pass "$np rank(s): 10 steps + resume 10 = 20 steps, /model /optimizer /history bitwise identical"
done

# LAMB (--optimizer lamb), whose layer-wise scaling is worked out afresh from the restored moments
lamb=("${common[@]}" --optimizer lamb --lr 0.01)
mpi 2 "${lamb[@]}" --max-steps 20 --checkpoint-dir "$TMP/lamb-full" >/dev/null || fail "lamb: 20 steps"
mpi 2 "${lamb[@]}" --max-steps 10 --checkpoint-dir "$TMP/lamb-half" >/dev/null || fail "lamb: 10 steps"
mpi 2 "${lamb[@]}" --max-steps 20 --checkpoint-dir "$TMP/lamb-half" --resume auto >/dev/null || fail "lamb: resume"
model_and_optimizer_equal "$TMP/lamb-full/last.h5" "$TMP/lamb-half/last.h5" || fail "lamb: resumed run differs"
h5dump -a /optimizer/type "$TMP/lamb-full/last.h5" | grep -q '"lamb"' || fail "lamb: /optimizer@type is not lamb"
h5diff -q "$TMP/lamb-full/last.h5" "$TMP/full2/last.h5" /model /model >/dev/null && fail "lamb trained as adam"
pass "--optimizer lamb on 2 ranks: 10 steps + resume 10 = 20 steps bitwise, /optimizer@type lamb"

# Resume on another number of ranks (sync-BN): 2 steps on 2 ranks + 2 resumed on 1 rank against 4 steps
# on 1 rank, parameters compared by relative norm. The gradient is summed in another order on another
# rank count, so float32 rounding differs (~1e-7) and training amplifies it: with SGD measured 4e-6 to
# 3e-5 (depending on the kernels' summation order), bound 1e-4. With Adam more: a parameter whose
# gradient is pure rounding noise (the seed's stem-conv and projection-BN biases, which the following
# BN cancels) moves by +-lr whatever the noise's size; measured 3e-4, bound 1e-3. A resume that lost
# state (moments, momentum, batch position) differs by 1e-2 or more.
for opt in "sgd 1e-4" "adam 1e-3"; do
  read -r name bound <<< "$opt"
  o=(--sync-bn --optimizer "$name" --lr 0.01)
  [ "$name" = adam ] && o=(--sync-bn)
  mpi 1 "${common[@]}" "${o[@]}" --max-steps 4 --checkpoint-dir "$TMP/$name-1" >/dev/null || fail "$name: 4 steps"
  mpi 2 "${common[@]}" "${o[@]}" --max-steps 2 --checkpoint-dir "$TMP/$name-2" >/dev/null || fail "$name: 2 steps on 2 ranks"
  mpi 1 "${common[@]}" "${o[@]}" --max-steps 4 --checkpoint-dir "$TMP/$name-2" --resume auto >/dev/null || fail "$name: resume on 1 rank"
  diff=$("${COMPARE_MODELS:?meson passes compare_models}" "$TMP/$name-2/last.h5" "$TMP/$name-1/last.h5") || fail "compare"
  awk -v d="$diff" -v b="$bound" 'BEGIN { exit !(d <= b) }' ||
    fail "sync-bn $name: 2 ranks + resume on 1 rank differs from 1 rank by $diff (bound $bound)"
  pass "sync-bn $name: 2 steps on 2 ranks + 2 resumed on 1 rank vs 4 steps on 1 rank: relative difference $diff (bound $bound)"
done

# a flag given on resume is applied and reported; an incompatible one is refused (a usage error: exit 2)
out=$("$BIN" "${common[@]}" --max-steps 21 --checkpoint-dir "$TMP/half1" --resume auto 2>&1) || fail "resume with a new --max-steps"
echo "$out" | grep -q "resume: --max-steps 21 (the checkpoint had 20)" || fail "new flag not reported: $out"
set +e
out=$("$BIN" "${common[@]}" --arch paper --checkpoint-dir "$TMP/half1" --resume auto 2>&1)
code=$?
set -e
[ "$code" -eq 2 ] && [ "$(echo "$out" | wc -l)" -eq 1 ] && echo "$out" | grep -q "arch" ||
  fail "incompatible resume: exit $code: $out"
pass "resume reports changed flags and refuses another architecture: $out"

# --keep N: numbered snapshots of the newest N checkpoints, beside last.h5
"$BIN" "${common[@]}" --max-steps 10 --checkpoint-every 2 --keep 2 --checkpoint-dir "$TMP/keep" >/dev/null || fail "--keep run"
snaps=$(find "$TMP/keep" -name 'step-*.h5' -printf '%f\n' | sort | tr '\n' ' ')
[ "$snaps" = "step-00000008.h5 step-00000010.h5 " ] || fail "--keep 2 left: $snaps"
h5diff "$TMP/keep/step-00000010.h5" "$TMP/keep/last.h5" /model /model >/dev/null || fail "newest snapshot's model differs from last.h5"
pass "--keep 2 keeps $snaps"
