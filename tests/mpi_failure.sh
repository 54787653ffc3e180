#!/usr/bin/env bash
# No rank is left waiting: a failing rank ends the job quickly, and a signal to one rank stops them all
# at the same step with a checkpoint and exit 75.
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/lib.sh"
common=("${FM_QUICK[@]}" --limit-train 4096 --batch-size 32 --eval-every 1000 --threads 1 --quiet)

# 1. rank 1 fails at step 3 of a long run: the job must end non-zero within 30 s
start=$(date +%s)
set +e
RESNET_FAULT_STEP=3 RESNET_FAULT_RANK=1 timeout 60 "${MPIRUN[@]}" -np 2 "$BIN" "${common[@]}" --epochs 50 \
  --checkpoint-dir "$TMP/f" > "$TMP/fault.out" 2>&1
code=$?
set -e
took=$(( $(date +%s) - start ))
[ "$code" -ne 0 ] && [ "$code" -ne 124 ] || fail "fault: exit code $code (124 = hung)"
[ "$took" -le 30 ] || fail "fault: took $took s"
grep -q "rank 1: injected fault at step 3" "$TMP/fault.out" || fail "fault: no message naming the rank: $(cat "$TMP/fault.out")"
pass "failing rank ended the job in $took s with exit $code"

# 2. SIGUSR1 to one rank (not rank 0) stops both at the same step, writes last.h5, exits 75
RESNET_TRACE=1 "${MPIRUN[@]}" -np 2 "$BIN" "${common[@]}" --epochs 50 --checkpoint-dir "$TMP/sig" \
  > "$TMP/sig.out" 2> "$TMP/sig.err" &
job=$!
for _ in $(seq 1 600); do
  grep -q "trace: step 5 " "$TMP/sig.err" 2>/dev/null && break
  sleep 0.1
done
grep -q "trace: step 5 " "$TMP/sig.err" || { kill "$job"; fail "signal: training did not start"; }
pids=$(pgrep -f -- "--checkpoint-dir $TMP/sig" | while read -r p; do
  [ "$(cat /proc/"$p"/comm 2>/dev/null)" = resnet_mpi ] && echo "$p"; done)
[ "$(echo "$pids" | wc -w)" -eq 2 ] || { kill "$job"; fail "signal: expected 2 rank processes, got '$pids'"; }
kill -USR1 "$(echo "$pids" | tail -n 1)"
set +e
wait "$job"
code=$?
set -e
[ "$code" -eq 75 ] || fail "signal: exit $code, expected 75: $(cat "$TMP/sig.err")"
steps=$(sed -n 's/^trace: rank [0-9] stopped at step \([0-9]*\)$/\1/p' "$TMP/sig.err" | sort -u)
[ "$(echo "$steps" | wc -l)" -eq 1 ] && [ "$(sed -n 's/^trace: rank [0-9] stopped/x/p' "$TMP/sig.err" | wc -l)" -eq 2 ] ||
  fail "signal: ranks stopped at different steps: $steps"
[ -s "$TMP/sig/last.h5" ] || fail "signal: no checkpoint"
pass "signal to one rank: both stopped at step $steps, exit 75, checkpoint written"
