#!/usr/bin/env bash
# The stall watchdog: a rank that stops arriving at the collectives (SIGSTOP at a random moment; rank 0
# blocked in a checkpoint write) ends the job within --timeout + 10 s with exit 3 and one line naming
# that rank, and last.h5 stays whole. A healthy run under the same short timeout finishes normally.
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/lib.sh"
TIMEOUT=8
# a checkpoint every 3 steps and a validation every 16: the stop can fall into either
common=("${FM_QUICK[@]}" --limit-train 4096 --batch-size 48 --eval-every 16 --checkpoint-every 3 --threads 1
        --quiet --timeout "$TIMEOUT")
seed=${RESNET_WATCHDOG_SEED:-$(date +%s)}
RANDOM=$seed
echo "seed $seed (RESNET_WATCHDOG_SEED=$seed repeats this run)"

# ranks_of DIR: "pid rank" of each process of the job writing to DIR
ranks_of() {
  local p
  for p in $(pgrep -f -- "--checkpoint-dir $1"); do
    [ "$(cat /proc/"$p"/comm 2>/dev/null)" = resnet_mpi ] || continue
    echo "$p $(tr '\0' '\n' < /proc/"$p"/environ | sed -n 's/^OMPI_COMM_WORLD_RANK=//p')"
  done
}
# wait_for FILE PATTERN SECONDS
wait_for() {
  local _
  for _ in $(seq 1 $(($3 * 10))); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
  return 1
}
# finish NAME JOB STARTED: waits for the job, checks how it ended and what it said
finish() {
  local name=$1 job=$2 started=$3 victim=$4 code took
  set +e
  wait "$job"
  code=$?
  set -e
  took=$(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  [ "$code" -eq 3 ] || fail "$name: exit $code, expected 3: $(grep -v trace "$TMP/$name.err")"
  awk -v t="$took" -v l=$((TIMEOUT + 10)) 'BEGIN { exit !(t <= l) }' || fail "$name: took $took s (limit $((TIMEOUT + 10)) s)"
  grep -q "stalled: .*not arrived: rank $victim (no answer" "$TMP/$name.err" ||
    fail "$name: no line naming rank $victim: $(grep -v trace "$TMP/$name.err")"
  # one rank reports and aborts: two aborts at once corrupt mpirun's buffers (ORTE_ERROR_LOG, exit 139)
  [ "$(grep -c "stalled:" "$TMP/$name.err")" -eq 1 ] || fail "$name: not exactly one rank reported: $(grep "stalled:" "$TMP/$name.err")"
  ! grep -q ORTE_ERROR_LOG "$TMP/$name.err" || fail "$name: mpirun reported an error: $(cat "$TMP/$name.err")"
  [ -z "$(ranks_of "$TMP/$name")" ] || fail "$name: processes left behind: $(ranks_of "$TMP/$name")"
  [ -f "$TMP/$name/last.h5" ] || fail "$name: no last.h5"
  "$BIN" eval --checkpoint "$TMP/$name/last.h5" --dataset fashion-mnist --data "$FM_DIR" --json >/dev/null ||
    fail "$name: last.h5 does not load"
  pass "$name: ended $took s after the stall (exit 3), named rank $victim, last.h5 loads: $(grep -m1 "stalled:" "$TMP/$name.err")"
}

# 1. SIGSTOP one of 3 ranks, chosen at random, at a random moment of training
victim=$((RANDOM % 3))
at_step=$((4 + RANDOM % 20))
RESNET_TRACE=1 "${MPIRUN[@]}" -np 3 "$BIN" "${common[@]}" --epochs 50 --checkpoint-dir "$TMP/stop" \
  > "$TMP/stop.out" 2> "$TMP/stop.err" &
job=$!
wait_for "$TMP/stop.err" "trace: step $at_step " 120 || { kill "$job"; fail "stop: training did not reach step $at_step"; }
sleep "$(awk -v r="$RANDOM" 'BEGIN { printf "%.2f", r / 32768 }')"
pid=$(ranks_of "$TMP/stop" | awk -v r="$victim" '$2 == r { print $1 }')
[ -n "$pid" ] || { kill "$job"; fail "stop: no process for rank $victim: $(ranks_of "$TMP/stop")"; }
kill -STOP "$pid"
finish stop "$job" "$(date +%s.%N)" "$victim"

# 2. rank 0 blocks for good inside a checkpoint write (a hung file system), after the first checkpoint
# (step 3) is written, so that there is a last.h5 to keep whole
RESNET_FAULT_HANG_STEP=$((4 + RANDOM % 10)) "${MPIRUN[@]}" -np 3 "$BIN" "${common[@]}" --epochs 50 \
  --checkpoint-dir "$TMP/hang" > "$TMP/hang.out" 2> "$TMP/hang.err" &
job=$!
wait_for "$TMP/hang.err" "hanging in the checkpoint write" 120 || { kill "$job"; fail "hang: rank 0 never hung"; }
finish hang "$job" "$(date +%s.%N)" 0

# 3. the same short timeout does not fire on a healthy run: every collective, validation and checkpoint
# write completes in time
"${MPIRUN[@]}" -np 3 "$BIN" "${common[@]}" --max-steps 20 --checkpoint-dir "$TMP/healthy" > /dev/null 2> "$TMP/healthy.err" ||
  fail "healthy run failed: $(cat "$TMP/healthy.err")"
! grep -q "stalled" "$TMP/healthy.err" || fail "healthy run reported a stall: $(cat "$TMP/healthy.err")"
pass "healthy run under --timeout $TIMEOUT: finished, no stall reported"
