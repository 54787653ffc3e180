#!/usr/bin/env bash
# The batch scripts in jobs/ against real Slurm daemons: a one-node cluster (scripts/local-slurm.sh)
# runs, at the same time,
#   (a) jobs/train.sbatch on 2 ranks (srun --mpi=pmix when available): COMPLETED, checkpoint, log lines;
#   (b) the same run preempted: `scancel --signal=USR1 --batch` after its first validation makes it
#       checkpoint, requeue itself and resume (mpirun launcher); it ends COMPLETED at the same step, with
#       the same validation history and bit for bit the same final model as (a);
#   (c) jobs/sweep.sbatch as a 2-task array, jobs/summary.sbatch after it (afterok) and jobs/eval.sbatch
#       on (a)'s best.h5 (afterok): all COMPLETED, with a table and JSON;
#   (d) a rank that fails (RESNET_FAULT_STEP): the job ends FAILED long before its time limit;
#   (f) a late preemption: (a)'s run, with room for a second epoch but --max-steps at (a)'s end, gets
#       USR1 in its last step (RESNET_FAULT_SIGNAL_AT) and a second USR1 while the script requeues it;
#       it requeues, the resumed run takes no step more, and it ends COMPLETED with (a)'s final model;
#   (e) shellcheck is clean on jobs/*.sbatch and scripts/*.sh.
# The test set is cut to its first $FM_TEST images (lib.sh) (a copy in $TMP) so that each run's final test stays short.
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/lib.sh"
ROOT=$(cd "$(dirname "$0")/.." && pwd)
START=$SECONDS
elapsed() { echo "$((SECONDS - START))s"; }

# --- (e) shellcheck ---------------------------------------------------------------------------------------
command -v shellcheck >/dev/null || fail "shellcheck not installed (apt-get install shellcheck)"
(cd "$ROOT" && shellcheck jobs/*.sbatch scripts/*.sh) || fail "shellcheck found problems"
pass "(e) shellcheck clean on jobs/*.sbatch and scripts/*.sh"

for c in slurmctld slurmd munged sbatch scontrol h5dump; do
  command -v "$c" >/dev/null || fail "$c not installed (apt-get install slurm-wlm munge hdf5-tools)"
done

# --- the cluster ---------------------------------------------------------------------------------------
# nothing from a Slurm job this test may itself run in
while read -r v; do unset "$v"; done < <(env | sed -n 's/^\(SLURM_[A-Z_]*\|SBATCH_[A-Z_]*\|SRUN_[A-Z_]*\|SALLOC_[A-Z_]*\)=.*/\1/p')
export RESNET_SLURM_DIR=$TMP/slurm
chmod 755 "$TMP"   # munged wants every folder above its socket searchable by all
export RESNET_SLURM_PORT=$((20000 + (RANDOM % 10000) * 2))
# 8 CPUs on a small machine so that all the jobs run at once (they share the real cores)
export RESNET_SLURM_CPUS=8
cleanup() {
  "$ROOT/scripts/local-slurm.sh" stop >/dev/null 2>&1 || true
  rm -rf "$TMP"
}
trap cleanup EXIT
env_line=$("$ROOT/scripts/local-slurm.sh" start) || fail "the local cluster did not start"
eval "$env_line"
[ -f "${SLURM_CONF:-}" ] || fail "start printed no SLURM_CONF: '$env_line'"
"$ROOT/scripts/local-slurm.sh" status 2>/dev/null | grep -q "SLURM_CONF=$SLURM_CONF" || fail "status does not report the cluster"
pass "cluster up ($(elapsed)): $(sinfo -h -N -o '%N %T %c CPUs')"

# --- data: lib.sh's copy of Fashion-MNIST with the test set cut short -------------------------------
data=$FM_DIR

# --- helpers -------------------------------------------------------------------------------------------
export RESNET_MPI=$BIN RESNET_CHECKPOINT_ROOT=$TMP/ck
JOBS=$ROOT/jobs
submit() { sbatch --parsable --chdir="$TMP" "$@" | cut -d';' -f1; }

# states JOB: the state of each of the job's records (one per array task)
states() { { scontrol -o show job "$1" 2>/dev/null | grep -o 'JobState=[A-Z_]*' | cut -d= -f2 | tr '\n' ' '; } || true; }
field() { { scontrol -o show job "$1" 2>/dev/null | head -n 1 | grep -o " $2=[^ ]*" | head -n 1 | cut -d= -f2; } || true; }
is_final() {
  case "$1" in COMPLETED | FAILED | CANCELLED | TIMEOUT | NODE_FAIL | OUT_OF_MEMORY | BOOT_FAIL | DEADLINE) return 0 ;; esac
  return 1
}
# wait_final JOB SECONDS: wait until every record of JOB is in a final state; prints the states
wait_final() {
  local job=$1 limit=$2 t s all
  for ((t = 0; t < limit * 2; t++)); do
    s=$(states "$job")
    [ -n "$s" ] || { echo "GONE"; return 0; }
    all=1
    for x in $s; do is_final "$x" || all=0; done
    [ "$all" -eq 1 ] && { echo "$s" | xargs; return 0; }
    sleep 0.5
  done
  echo "TIMEOUT($s)" | xargs
}
# log_of JOB: its output file
log_of() { field "$1" StdOut; }
# job_fail JOB MESSAGE: fail, showing the job and its log
job_fail() {
  echo "--- scontrol show job $1" >&2
  scontrol show job "$1" >&2 || true
  local f
  for f in $(scontrol -o show job "$1" 2>/dev/null | grep -o 'StdOut=[^ ]*' | cut -d= -f2 | sort -u); do
    echo "--- $f" >&2
    tail -n 40 "$f" >&2 || true
  done
  echo "--- slurmctld.log" >&2
  tail -n 20 "$RESNET_SLURM_DIR/log/slurmctld.log" >&2 || true
  fail "job $1: $2"
}
h5_step() { { h5dump -a /train/step "$1" 2>/dev/null | sed -n 's/^ *(0): *//p'; } || true; }
h5_history() { { h5dump -y -w 0 -d /history/step "$1" 2>/dev/null | sed -n '/DATA {/,/}/p' | sed '1d;$d' | tr -d ' \n'; } || true; }
metrics_steps() { { sed -n 's/.*"step": *\([0-9]*\).*/\1/p' "$1" | paste -sd, -; } || true; }
hash_line() { grep '^replica parameters: hash' "$1" | tail -n 1 || true; }
test_line() { grep '^test accuracy:' "$1" | tail -n 1 || true; }

# --- submissions: everything at once -------------------------------------------------------------------
TRAIN=("${FM_QUICK[@]}" --data "$data" --limit-train 2048 --batch-size 64 --epochs 1 --eval-every 10)
ONE_NODE=(--nodes=1 --ntasks=2 --ntasks-per-node=2 --cpus-per-task=1)
# (a) and (d) through mpirun inside the allocation (without the test suite's blanket oversubscription
# setting); (b), (c) through the default: srun --mpi=pmix where Slurm has PMIx
mpirun_submit() { (unset OMPI_MCA_rmaps_base_oversubscribe; RESNET_LAUNCHER=mpirun submit "$@"); }
A=$(mpirun_submit --job-name=a-train "${ONE_NODE[@]}" --time=10 "$JOBS/train.sbatch" "${TRAIN[@]}")
B=$(submit --job-name=b-preempt "${ONE_NODE[@]}" --time=10 "$JOBS/train.sbatch" "${TRAIN[@]}")
D=$(mpirun_submit --job-name=d-fault "${ONE_NODE[@]}" --time=5 --export=ALL,RESNET_FAULT_STEP=3,RESNET_FAULT_RANK=1 \
      "$JOBS/train.sbatch" "${TRAIN[@]}")
# (f): the scontrol that jobs/train.sbatch calls to requeue sends the script a second USR1 first, and
# requeues only if the script survives it (as if the signal had come just before the call)
mkdir -p "$TMP/late-bin"
cat > "$TMP/late-bin/scontrol" <<EOF
#!/usr/bin/env bash
if [ "\${1:-}" = requeue ] && mkdir "$TMP/late-usr1.\${SLURM_JOB_ID:?}" 2>/dev/null; then
  kill -USR1 "\$PPID"
  sleep 0.5
  kill -0 "\$PPID" 2>/dev/null || exit 1
fi
exec $(command -v scontrol) "\$@"
EOF
chmod 755 "$TMP/late-bin/scontrol"
F=$(PATH=$TMP/late-bin:$PATH RESNET_FAULT_SIGNAL_AT="step 32" submit --job-name=f-late "${ONE_NODE[@]}" --time=10 \
      "$JOBS/train.sbatch" "${TRAIN[@]}" --epochs 2 --max-steps 32)
default_launcher=mpirun
srun --mpi=list 2>&1 | grep -w pmix >/dev/null && default_launcher=srun
SWEEP=("${FM_QUICK[@]}" --data "$data" --limit-train 512 --batch-size 64 --epochs 1 --eval-every 4)
S=$(submit --job-name=c-sweep --array=0-1 --nodes=1 --ntasks=1 --ntasks-per-node=1 --time=10 "$JOBS/sweep.sbatch" "${SWEEP[@]}")
M=$(submit --job-name=c-summary --dependency="afterok:$S" "$JOBS/summary.sbatch" "$S" --data "$data")
E=$(submit --job-name=c-eval --dependency="afterok:$A" "$JOBS/eval.sbatch" "$TMP/ck/$A/best.h5" --data "$data")
for j in A B D F S M E; do [[ "${!j}" =~ ^[0-9]+$ ]] || fail "submission of $j failed: '${!j}'"; done
echo "submitted ($(elapsed)): train $A, preempt $B, fault $D, late preempt $F, sweep $S, summary $M, eval $E"

# --- (b) part 1: preempt B after its first validation --------------------------------------------------
for ((t = 0; t < 240; t++)); do
  [ -s "$TMP/ck/$B/metrics.jsonl" ] && break
  is_final "$(states "$B" | xargs)" && break
  sleep 0.5
done
[ -s "$TMP/ck/$B/metrics.jsonl" ] || job_fail "$B" "no validation within 120 s"
[ "$(states "$B" | xargs)" = RUNNING ] || job_fail "$B" "not running after its first validation"
scancel --signal=USR1 --batch "$B" || job_fail "$B" "scancel --signal=USR1 --batch refused"
echo "preempted $B at $(elapsed) after step $(metrics_steps "$TMP/ck/$B/metrics.jsonl")"

# --- (d) the failing rank ------------------------------------------------------------------------------
s=$(wait_final "$D" 120)
[ "$s" = FAILED ] || job_fail "$D" "state $s, expected FAILED"
run=$(field "$D" RunTime)
secs=$(awk -F: '{ print ($1 * 3600) + ($2 * 60) + $3 }' <<<"${run#*-}")
[ "$secs" -le 90 ] || job_fail "$D" "ran $run before failing (limit 5 min)"
code=$(field "$D" ExitCode)
[ "${code%%:*}" -ne 0 ] || job_fail "$D" "exit code $code"
grep -q "injected fault at step 3" "$(log_of "$D")" || job_fail "$D" "no message naming the fault"
pass "(d) failing rank: job $D (mpirun) FAILED after $run (limit 5 min), exit code $code ($(elapsed))"

# --- (a) the plain run -----------------------------------------------------------------------------------
s=$(wait_final "$A" 240)
[ "$s" = COMPLETED ] || job_fail "$A" "state $s, expected COMPLETED"
logA=$(log_of "$A")
grep -q '^\[epoch 1, batch 10\]: running train cross entropy: [0-9.]* | validation accuracy: [0-9.]*' "$logA" ||
  job_fail "$A" "no training lines in $logA"
[ -n "$(test_line "$logA")" ] || job_fail "$A" "no test accuracy line"
grep -q "running: mpirun -np 2 " "$logA" || job_fail "$A" "not launched with mpirun -np 2"
ckA=$TMP/ck/$A
[ -s "$ckA/last.h5" ] && [ -s "$ckA/best.h5" ] || job_fail "$A" "no checkpoints in $ckA"
stepA=$(h5_step "$ckA/last.h5")
[ "$stepA" = 32 ] || job_fail "$A" "last.h5 at step '$stepA', expected 32"
pass "(a) job $A COMPLETED ($(elapsed)): $(grep -o 'running: [a-z]*' "$logA"), last.h5 at step $stepA, $(test_line "$logA")"

# --- (b) part 2: the preempted run resumed and finished like (a) ---------------------------------------
s=$(wait_final "$B" 240)
[ "$s" = COMPLETED ] || job_fail "$B" "state $s, expected COMPLETED"
logB=$(log_of "$B")
restarts=$(field "$B" Restarts)
[ "$restarts" = 1 ] || job_fail "$B" "Restarts=$restarts, expected 1"
grep -q "received SIGUSR1" "$logB" && grep -q "program exited with 75" "$logB" && grep -q "requeueing job $B" "$logB" ||
  job_fail "$B" "no stop-and-requeue in the log"
grep -q "running: $default_launcher " "$logB" || job_fail "$B" "not launched with $default_launcher"
grep -q "restart count 1" "$logB" && grep -q "resuming from last.h5" "$logB" || job_fail "$B" "the second run did not resume"
stopped=$(sed -n 's/.*signal received: stopping at step \([0-9]*\).*/\1/p' "$logB" | head -n 1)
[ -n "$stopped" ] && [ "$stopped" -lt 32 ] || job_fail "$B" "no stop before the end (stopped at '$stopped')"
ckB=$TMP/ck/$B
stepB=$(h5_step "$ckB/last.h5")
[ "$stepB" = "$stepA" ] || job_fail "$B" "final step $stepB, uninterrupted run $stepA"
histA=$(h5_history "$ckA/last.h5") histB=$(h5_history "$ckB/last.h5")
[ -n "$histA" ] && [ "$histB" = "$histA" ] || job_fail "$B" "/history/step '$histB', uninterrupted run '$histA'"
mA=$(metrics_steps "$ckA/metrics.jsonl") mB=$(metrics_steps "$ckB/metrics.jsonl")
[ "$mB" = "$mA" ] || job_fail "$B" "metrics steps '$mB', uninterrupted run '$mA'"
[ "$(tr , '\n' <<<"$mB" | sort -n | uniq | paste -sd, -)" = "$mB" ] || job_fail "$B" "metrics steps repeat: $mB"
[ -n "$(hash_line "$logA")" ] && [ "$(hash_line "$logB")" = "$(hash_line "$logA")" ] ||
  job_fail "$B" "final parameters differ: '$(hash_line "$logB")' vs '$(hash_line "$logA")'"
[ "$(test_line "$logB")" = "$(test_line "$logA")" ] || job_fail "$B" "'$(test_line "$logB")' vs '$(test_line "$logA")'"
pass "(b) job $B ($default_launcher) stopped at step $stopped, requeued, resumed, COMPLETED ($(elapsed)): step $stepB, history $histB, same parameters and test accuracy as $A"

# --- (f) the late preemption: stopped in its last step, requeued through a second USR1, finished ------
s=$(wait_final "$F" 240)
[ "$s" = COMPLETED ] || job_fail "$F" "state $s, expected COMPLETED"
logF=$(log_of "$F")
[ "$(field "$F" Restarts)" = 1 ] || job_fail "$F" "Restarts=$(field "$F" Restarts), expected 1"
exits=$(sed -n 's/^train.sbatch: program exited with //p' "$logF" | paste -sd, -)
[ "$exits" = 75,0 ] || job_fail "$F" "program exits '$exits', expected 75 (stopped) then 0"
grep -q "signal received: stopping at step 32$" "$logF" || job_fail "$F" "no stop in the last step (32)"
grep -q "received SIGUSR1 after the program ended" "$logF" && grep -q "requeueing job $F" "$logF" ||
  job_fail "$F" "the second USR1 was not survived and noted, or no requeue"
grep -q "^stopped: max-steps after 32 steps" "$logF" || job_fail "$F" "the resumed run did not end at step 32"
ckF=$TMP/ck/$F
stepF=$(h5_step "$ckF/last.h5")
[ "$stepF" = "$stepA" ] || job_fail "$F" "final step $stepF, uninterrupted run $stepA"
[ "$(h5_history "$ckF/last.h5")" = "$(h5_history "$ckA/last.h5")" ] || job_fail "$F" "/history/step differs from $A's"
[ "$(hash_line "$logF")" = "$(hash_line "$logA")" ] ||
  job_fail "$F" "final parameters differ: '$(hash_line "$logF")' vs '$(hash_line "$logA")'"
[ "$(test_line "$logF")" = "$(test_line "$logA")" ] || job_fail "$F" "'$(test_line "$logF")' vs '$(test_line "$logA")'"
pass "(f) job $F: USR1 in its last step and again during the requeue: exits $exits, requeued, resumed without a step more, COMPLETED at step $stepF with $A's parameters and test accuracy ($(elapsed))"

# --- (c) the array, its summary and the eval job -------------------------------------------------------
s=$(wait_final "$S" 180)
[ "$s" = "COMPLETED COMPLETED" ] || job_fail "$S" "array states '$s', expected 2 x COMPLETED"
for task in 0 1; do
  [ -s "$TMP/ck/${S}_$task/last.h5" ] && [ -s "$TMP/ck/${S}_$task/sweep.env" ] || job_fail "$S" "task $task: no checkpoint or sweep.env"
  [ -s "$TMP/resnet-sweep-${S}_$task.out" ] || [ -s "$TMP/c-sweep-${S}_$task.out" ] || job_fail "$S" "task $task: no %A_%a log"
done
lrs=$(sed -n 's/^lr=//p' "$TMP/ck/${S}_0/sweep.env" "$TMP/ck/${S}_1/sweep.env" | sort -u | wc -l)
[ "$lrs" -eq 2 ] || job_fail "$S" "the two tasks did not get different learning rates"
s=$(wait_final "$M" 120)
[ "$s" = COMPLETED ] || job_fail "$M" "state $s, expected COMPLETED"
logM=$(log_of "$M")
rows=$(grep -cE '^[01] +[0-9.e-]+ +[0-9]+ +[0-9]+ +0\.[0-9]+ +0\.[0-9]+ ' "$logM" || true)
[ "$rows" -eq 2 ] || job_fail "$M" "expected 2 table rows with numbers, got $rows"
s=$(wait_final "$E" 120)
[ "$s" = COMPLETED ] || job_fail "$E" "state $s, expected COMPLETED"
logE=$(log_of "$E")
json=$(grep '^{"split":"test"' "$logE" | tail -n 1)
acc=$(sed -n 's/.*"accuracy":\([0-9.]*\).*/\1/p' <<<"$json")
[ -n "$acc" ] && awk -v a="$acc" 'BEGIN { exit !(a > 0.2 && a <= 1) }' || job_fail "$E" "no test accuracy in JSON: '$json'"
grep -q "^test accuracy: " "$logE" || job_fail "$E" "no human-readable report"
pass "(c) array $S: 2 tasks COMPLETED; summary $M:"
sed -n '/^task /,/^best:/p' "$logM"
pass "(c) eval $E COMPLETED: test accuracy $acc (JSON) of $A's best.h5 ($(elapsed))"
pass "all Slurm job checks in $(elapsed)"
