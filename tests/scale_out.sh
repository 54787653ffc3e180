#!/usr/bin/env bash
# Scale-out mode: --batch-per-rank (global batch = N x ranks), --lr-scaling against --base-batch,
# --warmup-steps, and the validation cadence in images.
#   (1) 2 ranks x --batch-per-rank 64 compute the steps of 1 rank x --batch-size 128 (sync-BN, SGD):
#       parameters equal to float rounding (different summation order; bound as checkpoint_resume's)
#   (2) the rate the run says and logs: lr x sqrt(128 / 64) after a 3-step linear warmup
#   (3) --eval-every counts batches of --base-batch images: every 4 x 64 images = every 2 steps of 128
#   (4) the settings are in the checkpoint, and a resume on 1 rank says the global batch it now has
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/lib.sh"
common=("${FM_QUICK[@]}" --limit-train 1024 --threads 1 --sync-bn --optimizer sgd --lr 0.01 --max-steps 6
        --eval-every 4 --base-batch 64 --lr-scaling sqrt --warmup-steps 3)

"$BIN" "${common[@]}" --batch-size 128 --checkpoint-dir "$TMP/one" > "$TMP/one.out" 2>&1 ||
  fail "1 rank x 128: $(cat "$TMP/one.out")"
mpi 2 "${common[@]}" --batch-per-rank 64 --checkpoint-dir "$TMP/two" > "$TMP/two.out" 2>&1 ||
  fail "2 ranks x 64: $(cat "$TMP/two.out")"
diff=$("${COMPARE_MODELS:?meson passes compare_models}" "$TMP/two/last.h5" "$TMP/one/last.h5") || fail "compare"
awk -v d="$diff" 'BEGIN { exit !(d <= 1e-4) }' || fail "2 x --batch-per-rank 64 differs from 1 x 128 by $diff"
pass "(1) 2 ranks x --batch-per-rank 64 = 1 rank x --batch-size 128 after 6 steps: relative difference $diff (bound 1e-4)"

# (2) 0.01 x sqrt(2) = 0.0141421; warmup: steps 0, 1, 2 at 1/3, 2/3, 3/3 of it
grep -q "^global batch 128 (--batch-per-rank x ranks); learning rate 0.01 x 1.41421 (--lr-scaling sqrt, --base-batch 64) = 0.0141421, warmed up linearly over 3 steps$" "$TMP/two.out" ||
  fail "no learning-rate line: $(grep -i "learning rate" "$TMP/two.out")"
lrs=$(sed -n 's/.*"step":\([0-9]*\),.*"lr":\([0-9.e-]*\),.*/\1:\2/p' "$TMP/two/metrics.jsonl" | paste -sd' ' -)
# (3) validations at steps 2, 4 and 6 (every 4 x 64 images at 128 a step); the rate logged is the next update's
[ "$lrs" = "2:0.014142135 4:0.014142135 6:0.014142135" ] || fail "validation steps and rates: '$lrs'"
pass "(2, 3) rate 0.01 x sqrt(128/64) after a 3-step warmup; validations every 256 images (steps 2 4 6): $lrs"

# (4) recorded and honoured on a resume on 1 rank: the global batch becomes 64
for key in batch-per-rank lr-scaling base-batch warmup-steps; do
  h5dump -a "/config/$key" "$TMP/two/last.h5" > /dev/null 2>&1 || fail "the checkpoint lacks /config $key"
done
"$BIN" "${FM_QUICK[@]}" --limit-train 1024 --threads 1 --max-steps 8 --checkpoint-dir "$TMP/two" --resume auto \
  > "$TMP/resume.out" 2>&1 || fail "resume on 1 rank: $(cat "$TMP/resume.out")"
grep -q "^resume: global batch 64 (--batch-per-rank 64 x 1 ranks; the checkpoint's was 128)$" "$TMP/resume.out" ||
  fail "resume on 1 rank does not say the new global batch: $(head -5 "$TMP/resume.out")"
grep -q "batch 64, " "$TMP/resume.out" || fail "resume on 1 rank not at batch 64: $(head -3 "$TMP/resume.out")"
pass "(4) settings in /config; resumed on 1 rank: $(grep '^resume: global' "$TMP/resume.out")"

# refused: both batch flags at once (a usage error naming both)
set +e
out=$("$BIN" "${common[@]}" --batch-size 128 --batch-per-rank 64 --checkpoint-dir "$TMP/both" 2>&1)
code=$?
set -e
[ "$code" -eq 2 ] && echo "$out" | grep -q -- "--batch-per-rank" || fail "both batch flags: exit $code: $out"
pass "--batch-size with --batch-per-rank refused (exit 2): $out"

# the gradient allreduce in buckets overlapped with the backward (--bucket-mb): on 2 and 3 ranks the
# same parameters and optimizer state as one allreduce after the backward, bitwise (each bucket's sum has
# the reduction order of the whole), every replica identical; 0.05 MiB makes 6 buckets of ResNet-8
overlap=("${FM_QUICK[@]}" --limit-train 1024 --threads 1 --batch-size 96 --max-steps 6 --eval-every 3 --timeout 60)
for np in 2 3; do
  mpi "$np" "${overlap[@]}" --checkpoint-dir "$TMP/whole$np" > /dev/null 2>&1 || fail "$np ranks, one allreduce"
  RESNET_TRACE=1 mpi "$np" "${overlap[@]}" --bucket-mb 0.05 --checkpoint-dir "$TMP/buckets$np" > "$TMP/buckets$np.out" 2>&1 ||
    fail "$np ranks, --bucket-mb 0.05: $(tail -3 "$TMP/buckets$np.out")"
  h5diff -q "$TMP/whole$np/last.h5" "$TMP/buckets$np/last.h5" /model /model &&
    h5diff -q "$TMP/whole$np/last.h5" "$TMP/buckets$np/last.h5" /optimizer /optimizer ||
    fail "$np ranks: --bucket-mb 0.05 differs from one allreduce: $("$COMPARE_MODELS" "$TMP/buckets$np/last.h5" "$TMP/whole$np/last.h5")"
  grep -q "^replica parameters: hash [0-9a-f]* identical on every rank$" "$TMP/buckets$np.out" ||
    fail "$np ranks, --bucket-mb: replicas differ: $(grep 'replica parameters' "$TMP/buckets$np.out")"
done
pass "--bucket-mb 0.05 (overlapped, 6 buckets) = one allreduce after the backward, bitwise on 2 and 3 ranks; replicas identical"

# bench's per-step split with and without buckets on 2 ranks (scripts/bench-overlap.sh reads this line):
# the bucket count is the gradient's 271,818 floats over 0.05 MiB = 13,107 floats, rounded up (21); the
# phases, means over ranks, add up to no more than the step (the slowest rank's, barrier to barrier);
# the allreduce's least over ranks <= its mean <= its most
step_re='^step: ([0-9.]+) ms; compute ([0-9.]+), allreduce ([0-9.]+), optimizer ([0-9.]+) ms \(mean over ranks\); allreduce least ([0-9.]+), most ([0-9.]+) ms over ranks; gradient reduced (.*)$'
for bucket in 0 0.05; do
  mpi 2 bench --threads 1 --batch-size 16 --steps 2 --warmup 1 --eval-images 0 --bucket-mb "$bucket" \
    > "$TMP/bench$bucket.out" 2>&1 || fail "bench --bucket-mb $bucket: $(tail -3 "$TMP/bench$bucket.out")"
  line=$(grep '^step: ' "$TMP/bench$bucket.out") || fail "bench --bucket-mb $bucket: no step line: $(cat "$TMP/bench$bucket.out")"
  [[ "$line" =~ $step_re ]] || fail "bench --bucket-mb $bucket: step line not as expected: $line"
  how=${BASH_REMATCH[7]}
  want="in one allreduce after the backward"
  [ "$bucket" = 0 ] || want="in 21 bucket(s) of --bucket-mb 0.05 during the backward"
  [ "$how" = "$want" ] || fail "bench --bucket-mb $bucket: '$how', not '$want'"
  awk -v s="${BASH_REMATCH[1]}" -v c="${BASH_REMATCH[2]}" -v a="${BASH_REMATCH[3]}" -v o="${BASH_REMATCH[4]}" \
      -v lo="${BASH_REMATCH[5]}" -v hi="${BASH_REMATCH[6]}" \
      'BEGIN { exit !(s > 0 && c > 0 && c + a + o <= s * 1.001 + 0.02 && lo <= a + 0.005 && a <= hi + 0.005) }' ||
    fail "bench --bucket-mb $bucket: phases do not fit the step: $line"
done
pass "bench's step split on 2 ranks, one allreduce and 21 buckets: $(grep '^step: ' "$TMP/bench0.05.out")"
