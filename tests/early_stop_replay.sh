#!/usr/bin/env bash
# scripts/early-stop-replay.py replays the program's early-stopping rule over a metrics log: on runs that
# stop early (--patience 1, a check every step), the step it says the followed series stops at is the
# step the program stopped at (without --ema: val_acc; with --ema: val_acc_ema, the series the program
# follows), and its best is the program's best. Resuming a run that stopped early takes no step unless
# --early-stop off.
source "$(dirname "$0")/lib.sh"
here=$(cd "$(dirname "$0")" && pwd)
replay() { python3 "$here/../scripts/early-stop-replay.py" "$@"; }
common=("${FM_QUICK[@]}" --limit-train 1024 --batch-size 64 --eval-every 1 --patience 1 --lr 0.01 --max-steps 40
        --threads 2)
for case in "0 val_acc" "0.5 val_acc_ema"; do
  read -r ema series <<< "$case"
  out=$("$BIN" "${common[@]}" --ema "$ema" --checkpoint-dir "$TMP/ck$ema") || fail "--ema $ema run"
  line=$(grep '^stopped: ' <<<"$out") || fail "--ema $ema: no stop line: $out"
  grep -q '^stopped: early-stop after' <<<"$line" || fail "--ema $ema: the run did not stop early: $line"
  steps=$(sed -n 's/^stopped: early-stop after \([0-9]*\) steps.*/\1/p' <<<"$line")
  best=$(sed -n 's/.*best validation accuracy[^:]*: \([0-9.]*\) at step \([0-9]*\).*/\1 \2/p' <<<"$line")
  json=$(replay "$TMP/ck$ema/metrics.jsonl" --patience 1 --json) || fail "replay"
  got=$(python3 -c 'import json,sys; s=json.loads(sys.argv[1])[sys.argv[2]]; print(s["would_stop_step"], "%.4f" % s["best"], s["best_step"])' "$json" "$series")
  [ "$got" = "$steps $best" ] || fail "--ema $ema: replay of $series says '$got', the run '$steps $best'"
  pass "--ema $ema: replaying $series stops at step $steps with best $best, as the run did"
  [ "$ema" = 0 ] && stopped_at=$steps
done
# resuming a run that stopped early (a requeued job, a script run twice) takes no step; --early-stop off
# trains on
out=$("$BIN" "${common[@]}" --ema 0 --checkpoint-dir "$TMP/ck0" --resume auto) || fail "resume of the stopped run"
grep -q "^stopped: early-stop after $stopped_at steps" <<<"$out" || fail "resume: $(grep '^stopped' <<<"$out")"
grep -q "^resume: this run stopped early at step $stopped_at, so no step is taken" <<<"$out" ||
  fail "resume: no line saying why no step is taken"
grep -q "no training step in this run" <<<"$out" || fail "resume: the performance report: $(tail -n 3 <<<"$out")"
[ "$(h5dump -a /train/step "$TMP/ck0/last.h5" | sed -n 's/^ *(0): *//p')" = "$stopped_at" ] ||
  fail "resume: last.h5 moved on from step $stopped_at"
pass "resuming the stopped run takes no step (still step $stopped_at)"
cp -r "$TMP/ck0" "$TMP/ck0-patience"
out=$("$BIN" "${common[@]}" --ema 0 --checkpoint-dir "$TMP/ck0" --resume auto --early-stop off) ||
  fail "resume with --early-stop off"
grep -q "^stopped: max-steps after 40 steps" <<<"$out" || fail "--early-stop off: $(grep '^stopped' <<<"$out")"
pass "--early-stop off trains the stopped run on to --max-steps 40"
# the stopped run's count of checks without a rise is 2 (above patience 1): a patience of 2 trains on
out=$("$BIN" "${common[@]}" --ema 0 --checkpoint-dir "$TMP/ck0-patience" --resume auto --patience 2) ||
  fail "resume with --patience 2"
taken=$(sed -n 's/^stopped: [a-z-]* after \([0-9]*\) steps.*/\1/p' <<<"$out")
! grep -q "^resume: this run stopped early" <<<"$out" && [ -n "$taken" ] && [ "$taken" -gt "$stopped_at" ] ||
  fail "--patience 2: $(grep '^resume\|^stopped' <<<"$out")"
pass "a larger --patience trains the stopped run on: $(grep '^stopped' <<<"$out")"
# a tie counts as no rise (the seed's `<=`): 0.5, 0.6, 0.6, 0.6 with patience 1 stops at the fourth check
for i in 1 2 3 4; do
  printf '{"step":%d,"epoch":1,"val_acc":%s}\n' "$i" "$( [ "$i" -eq 1 ] && echo 0.5 || echo 0.6)"
done > "$TMP/ties.jsonl"
got=$(replay "$TMP/ties.jsonl" --patience 1 --json |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["val_acc"]["would_stop_step"])')
[ "$got" = 4 ] || fail "ties: the replay stops at '$got', the seed's rule at step 4"
pass "a tie counts as no rise: stops at step 4"
# a resumed run's log: the continuation abandoned at the resume (steps 3-4 logged before a crash, the
# run resumed from step 2's checkpoint) is dropped, as is a torn last line: the replay sees the
# uninterrupted run's 4 checks 0.5, 0.6, 0.5, 0.4 (patience 1: stops at step 4), not 7
{ printf '{"step":1,"epoch":1,"val_acc":0.5}\n{"step":2,"epoch":1,"val_acc":0.6}\n'
  printf '{"step":3,"epoch":1,"val_acc":0.3}\n{"step":4,"epoch":1,"val_acc":0.2}\n'
  printf '{"event":"resume","from_step":2,"epoch":1,"time_s":1.0}\n'
  printf '{"step":3,"epoch":1,"val_acc":0.5}\n{"step":4,"epoch":1,"val_acc":0.4}\n{"step":5,"ep'; } > "$TMP/resumed.jsonl"
got=$(replay "$TMP/resumed.jsonl" --patience 1 --json 2>/dev/null |
  python3 -c 'import json,sys; s=json.load(sys.stdin)["val_acc"]; print(s["would_stop_step"], s["checks"], s["best"])')
[ "$got" = "4 4 0.6" ] || fail "resumed log: the replay says '$got' (stop step, checks, best), not '4 4 0.6'"
pass "a resumed run's log: the abandoned continuation and a torn line are left out"
set +e
err=$(replay "$TMP/none.jsonl" 2>&1); code=$?
set -e
[ "$code" -eq 1 ] && [ "$(wc -l <<<"$err")" -eq 1 ] || fail "missing log: exit $code: $err"
pass "a missing log: one line, exit 1"
