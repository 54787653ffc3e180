#!/usr/bin/env bash
# Crash safety: SIGKILL the trainer at random moments, many times, including during checkpoint writes
# (one every step). After every kill last.h5 opens, passes eval, and is never older than the previous
# successful write.
source "$(dirname "$0")/lib.sh"
ROUNDS=${RESNET_CRASH_ROUNDS:-12}
ck="$TMP/ck"
args=("${FM_QUICK[@]}" --limit-train 2048 --batch-size 32 --eval-every 16 --checkpoint-every 1 --threads 1 --quiet
      --epochs 1000 --checkpoint-dir "$ck" --resume auto)
step_of() { h5dump -a /train/step "$1" 2>/dev/null | sed -n 's/^ *(0): \([0-9]*\)$/\1/p'; }
last=0
RANDOM=42
startup=""
for round in $(seq 1 "$ROUNDS"); do
  "$BIN" "${args[@]}" >/dev/null 2>&1 &
  pid=$!
  if [ -z "$startup" ]; then
    # the first round measures how long start-up takes on this machine (to the first checkpoint)
    t0=$(date +%s.%N)
    for _ in $(seq 1 1200); do [ -f "$ck/last.h5" ] && break; sleep 0.05; done
    [ -f "$ck/last.h5" ] || fail "no checkpoint within 60 s"
    startup=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')
    echo "start-up to the first checkpoint: $startup s"
  fi
  # kill at a random moment from late start-up to a few seconds of training (writes every step)
  sleep "$(awk -v s="$startup" -v r=$RANDOM 'BEGIN { printf "%.2f", 0.7 * s + 3 * r / 32768 }')"
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  step=$(step_of "$ck/last.h5")
  [ -n "$step" ] || fail "round $round: last.h5 does not open: $(h5dump -H "$ck/last.h5" 2>&1 | head -3)"
  [ "$step" -ge "$last" ] || fail "round $round: last.h5 went back from step $last to $step"
  "$BIN" eval --checkpoint "$ck/last.h5" --split val --json >/dev/null || fail "round $round: eval of last.h5 failed"
  echo "round $round: last.h5 at step $step, evaluates"
  last=$step
done
[ "$last" -gt 0 ] || fail "no checkpoint was ever written"
leftovers=$(find "$ck" -name '.*.tmp.*' | wc -l)
[ "$leftovers" -le 1 ] || fail "$leftovers temporary files left behind: a new run must remove stale ones"
pass "$ROUNDS kills: last.h5 always whole, never older, reached step $last"
