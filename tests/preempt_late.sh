#!/usr/bin/env bash
# A preemption (SIGUSR1) at the end of a run, at exact moments (RESNET_FAULT_SIGNAL_AT: rank 0 or 1
# sends itself the signal as it begins that part of the run), must neither lose a step nor add one:
#   - during the last step: exit 75 with last.h5 at the last step; --resume auto then takes no step
#     more, runs the final test and ends 0 with the uninterrupted run's model;
#   - after the last step's status reduction (the last validation, a checkpoint write, the end of
#     training, the final test): the run finishes (exit 0) as if no signal had come, and says so;
#   - --resume auto on a finished --max-steps run takes no step more.
# 2 ranks, ResNet-8, 20 steps of 16 images: each run takes a second or two.
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/lib.sh"
command -v h5dump >/dev/null && command -v h5diff >/dev/null || fail "h5dump and h5diff not installed (apt-get install hdf5-tools)"
# 384 records at batch 16: 24 steps an epoch, so --max-steps 20 ends mid-epoch; validation at 10 and 20
common=("${FM_QUICK[@]}" --limit-train 384 --batch-size 16 --max-steps 20 --eval-every 10 --threads 1)
h5_step() { { h5dump -a /train/step "$1" 2>/dev/null | sed -n 's/^ *(0): *//p'; } || true; }
same_run() {
  h5diff -q "$1" "$2" /model /model && h5diff -q "$1" "$2" /optimizer /optimizer &&
    h5diff -q "$1" "$2" /history/step /history/step
}
test_line() { grep '^test accuracy:' "$1" | tail -n 1 || true; }
# run NAME [ENV=VALUE...]: 2 ranks into $TMP/NAME (resumed when it exists); sets $code, output in $TMP/NAME.N.out
runs=0
run() {
  local name=$1
  shift
  runs=$((runs + 1))
  out=$TMP/$name.$runs.out
  set +e
  env "$@" "${MPIRUN[@]}" -np 2 "$BIN" "${common[@]}" --checkpoint-dir "$TMP/$name" --resume auto > "$out" 2>&1
  code=$?
  set -e
}
show() { echo "--- $1" >&2; tail -n 30 "$1" >&2; }

run ref
[ "$code" -eq 0 ] && [ "$(h5_step "$TMP/ref/last.h5")" = 20 ] || { show "$out"; fail "uninterrupted run: exit $code"; }
ref_test=$(test_line "$out")
[ -n "$ref_test" ] || fail "uninterrupted run printed no test accuracy"

# --- during the last step: stop there, and the resumed run only finishes --------------------------------
run last RESNET_FAULT_SIGNAL_AT="step 20" RESNET_FAULT_RANK=1
[ "$code" -eq 75 ] || { show "$out"; fail "signal in the last step: exit $code, expected 75"; }
grep -q "signal received: stopping at step 20$" "$out" || { show "$out"; fail "signal in the last step: no stop at step 20"; }
[ "$(h5_step "$TMP/last/last.h5")" = 20 ] || fail "signal in the last step: last.h5 at step '$(h5_step "$TMP/last/last.h5")'"
run last RESNET_FAULT_SIGNAL_AT="step 20" RESNET_FAULT_RANK=1
[ "$code" -eq 0 ] || { show "$out"; fail "resumed after a stop in the last step: exit $code"; }
step=$(h5_step "$TMP/last/last.h5")
[ "$step" = 20 ] || { show "$out"; fail "resumed after a stop in the last step: last.h5 at step $step, expected 20 (a step past --max-steps)"; }
grep -q "^stopped: max-steps after 20 steps" "$out" || { show "$out"; fail "resumed run: no 'stopped: max-steps after 20 steps'"; }
same_run "$TMP/last/last.h5" "$TMP/ref/last.h5" || fail "stop in the last step + resume: model, optimizer or history differ from the uninterrupted run"
[ "$(test_line "$out")" = "$ref_test" ] || fail "stop in the last step + resume: '$(test_line "$out")', uninterrupted '$ref_test'"
pass "signal in the last step (rank 1): exit 75 at step 20; --resume auto took no step, exit 0, the uninterrupted run's model, history and $ref_test"

# --- after the last step's status reduction: the run finishes ---------------------------------------------
for at in "validation at step 20" "checkpoint at step 20" "end of training" "final test"; do
  name=${at// /-}
  run "$name" RESNET_FAULT_SIGNAL_AT="$at"
  [ "$code" -eq 0 ] || { show "$out"; fail "signal at '$at': exit $code, expected 0 (training was complete)"; }
  grep -q "signal received after the last step: training is complete" "$out" ||
    { show "$out"; fail "signal at '$at': not received, or not reported"; }
  ! grep -q "stopping at step" "$out" || fail "signal at '$at': the run stopped"
  [ "$(h5_step "$TMP/$name/last.h5")" = 20 ] || fail "signal at '$at': last.h5 at step '$(h5_step "$TMP/$name/last.h5")'"
  same_run "$TMP/$name/last.h5" "$TMP/ref/last.h5" || fail "signal at '$at': model, optimizer or history differ"
  [ "$(test_line "$out")" = "$ref_test" ] || fail "signal at '$at': '$(test_line "$out")', uninterrupted '$ref_test'"
  pass "signal at '$at': exit 0, last.h5 at step 20, the uninterrupted run's model and test accuracy"
done

# --- a finished run resumed again: nothing more to do ------------------------------------------------------
run ref
[ "$code" -eq 0 ] || { show "$out"; fail "--resume auto on the finished run: exit $code"; }
step=$(h5_step "$TMP/ref/last.h5")
[ "$step" = 20 ] && grep -q "^stopped: max-steps after 20 steps" "$out" ||
  { show "$out"; fail "--resume auto on a run finished at --max-steps 20 went on to step $step"; }
pass "--resume auto on a run finished at --max-steps 20: no step taken, last.h5 still at step 20"
