#!/usr/bin/env bash
# Ranks on separate hosts: a two-host cluster on this machine (scripts/local-cluster.sh: network and UTS
# namespaces on a private bridge, each host its own hostname, TCP between them, one shared filesystem,
# a real Slurm with one slurmd per host).
#   (1) 2 ranks on 2 hosts (TCP only) and 4 ranks on 2 hosts (shared memory within a host, TCP across)
#       train 20 steps to bitwise the parameters of 2 and 4 ranks on one host, replicas identical on
#       every rank; each host sees only its own ranks.
#   (2) Slurm across both hosts: jobs/train.sbatch with `sbatch -N 2 --ntasks-per-node=2` through
#       srun --mpi=pmix, preempted with USR1 after its first validation, requeues, resumes and ends with
#       the parameters of (1)'s uninterrupted 4-rank run; the same job through mpirun (orted started by
#       srun on the other node) completes with them too.
#   (3) a lost host: every process of node2 killed mid-run, and then (resumed) node2's link taken down,
#       each end the job non-zero within 60 s with last.h5 in the shared folder whole, nothing left
#       running on node2; --resume auto on one host finishes the run.
#   (4) only rank 0 writes into the checkpoint folder and the metrics log: every rank of (1)'s 4-rank
#       run runs under strace; rank 0's trace must show its writes there, the other ranks' none.
# Needs root (namespaces); where none can be made it says so and exits 77 (skipped).
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/lib.sh"
ROOT=$(cd "$(dirname "$0")/.." && pwd)
START=$SECONDS
elapsed() { echo "$((SECONDS - START))s"; }
skip() { echo "SKIP: $*"; exit 77; }

[ "$(id -u)" -eq 0 ] || skip "making hosts (network namespaces) needs root"
for c in ip nsenter unshare strace h5dump h5diff slurmctld slurmd munged sbatch srun scontrol; do
  command -v "$c" >/dev/null || fail "$c not installed (apt-get install iproute2 util-linux strace hdf5-tools slurm-wlm munge)"
done
unshare --net --uts true 2>/dev/null || skip "cannot create network namespaces here (unshare --net --uts failed)"

# --- the cluster: 2 hosts, Slurm on a port away from tests/slurm_jobs.sh's (20000-39999) -----------------
while read -r v; do unset "$v"; done < <(env | sed -n 's/^\(SLURM_[A-Z_]*\|SBATCH_[A-Z_]*\|SRUN_[A-Z_]*\|SALLOC_[A-Z_]*\)=.*/\1/p')
unset OMPI_MCA_rmaps_base_oversubscribe   # placement below is explicit
export RESNET_CLUSTER_DIR=$TMP/cluster RESNET_CLUSTER_PORT=$((40000 + (RANDOM % 4000) * 2)) RESNET_CLUSTER_CPUS=4
chmod 755 "$TMP"   # munged wants every folder above its socket searchable by all
preemptor=""
cleanup() {
  [ -z "$preemptor" ] || kill "$preemptor" 2>/dev/null || true
  "$ROOT/scripts/local-cluster.sh" stop >/dev/null 2>&1 || true
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 143' TERM INT
set +e
env_lines=$("$ROOT/scripts/local-cluster.sh" start --nodes 2)
code=$?
set -e
[ "$code" -ne 77 ] || skip "local-cluster.sh could not make hosts here"
[ "$code" -eq 0 ] || fail "the local cluster did not start (exit $code)"
eval "$env_lines"
read -r -a CLUSTER <<<"${RESNET_CLUSTER_MPIRUN_ARGS:?start printed no mpirun arguments}"
[ -f "${SLURM_CONF:-}" ] || fail "start printed no SLURM_CONF"
pass "cluster up ($(elapsed)): $(sinfo -h -N -o '%N %T' | paste -sd' ' -)"
# on_hosts MPIRUN-ARGS... CMD...: CMD under mpirun on the cluster's hosts (the hostfile of local-cluster.sh)
on_hosts() { mpirun "${CLUSTER[@]}" --bind-to none -x RESNET_TRACE "$@"; }

# placement: ranks report the host they run on; each host has only its ranks as node-local ones. Every
# address mpirun, its daemons and the ranks send to is traced: nothing may leave the cluster's subnet
# (and loopback), not even a name lookup.
K=$(sed -n 's/^K=//p' "$RESNET_CLUSTER_DIR/cluster.env")
# shellcheck disable=SC2016  # expanded by each rank's shell
placement=$(strace -f -qq --seccomp-bpf -e trace=connect,sendto,sendmsg,sendmmsg -o "$TMP/net.trace" \
  mpirun "${CLUSTER[@]}" -np 4 --map-by ppr:2:node sh -c \
  'echo "$OMPI_COMM_WORLD_RANK $(hostname) $OMPI_COMM_WORLD_LOCAL_SIZE"' | sort -n | paste -sd, -)
[ "$placement" = "0 node1 2,1 node1 2,2 node2 2,3 node2 2" ] || fail "placement of 4 ranks on 2 hosts: '$placement'"
[ "$(hostname)" != node1 ] || fail "this machine is itself called node1: the host names prove nothing"
grep -q "inet_addr(\"10\.213\.$K\." "$TMP/net.trace" || fail "the trace saw no traffic on 10.213.$K.0/24: $(head -c 400 "$TMP/net.trace")"
outside=$(grep -o 'inet_addr("[0-9.]*")\|inet_pton(AF_INET6, "[^"]*"' "$TMP/net.trace" | grep -v "\"10\.213\.$K\.\|\"127\.\|\"0\.0\.0\.0\"\|\"::1\"" | sort | uniq -c || true)
[ -z "$outside" ] || fail "mpirun sent to addresses outside the cluster: $outside"
pass "4 ranks on 2 hosts: $placement (rank host node-local-size); traffic only within 10.213.$K.0/24 and loopback"

# --- data: Fashion-MNIST with the test set cut to 100 images, so each run's final test costs little -----
data=$TMP/fm100
mkdir -p "$data"
ln -s "$FMNIST/train-images-idx3-ubyte.gz" "$FMNIST/train-labels-idx1-ubyte.gz" "$data/"
{ be32 2051; be32 100; be32 28; be32 28; first_bytes "$FMNIST/t10k-images-idx3-ubyte.gz" 16 $((100 * 784)); } > "$data/t10k-images-idx3-ubyte"
{ be32 2049; be32 100; first_bytes "$FMNIST/t10k-labels-idx1-ubyte.gz" 8 100; } > "$data/t10k-labels-idx1-ubyte"
# 384 training images (24 batches of 16: the 20 steps stay in one epoch), 128 held out for the validations
RUN=(--dataset fashion-mnist --data "$data" --val-size 128 --limit-train 384 --batch-size 16 --max-steps 20
     --eval-every 10 --progress never)
h5_step() { { h5dump -a /train/step "$1" 2>/dev/null | sed -n 's/^ *(0): *//p'; } || true; }
# same_model A B: the parameters and optimizer state of two checkpoints are bitwise equal
same_model() { h5diff -q "$1" "$2" /model /model && h5diff -q "$1" "$2" /optimizer /optimizer; }
# rank_hashes TRACE NP: the end-of-run parameter hash if all NP ranks report the same one, else nothing
rank_hashes() {
  local h
  h=$(sed -n 's/^trace: rank [0-9]* step-end params hash \([0-9a-f]*\)$/\1/p' "$1" | sort | uniq -c)
  [ "$(wc -l <<<"$h")" -eq 1 ] && grep -q "^ *$2 " <<<"$h" && awk '{ print $2 }' <<<"$h"
  return 0
}
show() { local f; for f in "$@"; do echo "--- $f" >&2; tail -n 25 "$f" >&2 || true; done; }

# --- (2) Slurm across the two hosts: submitted first, to run while (1) runs ---------------------------------
export RESNET_MPI=$BIN RESNET_CHECKPOINT_ROOT=$TMP/ck
submit() { sbatch --parsable --chdir="$TMP" "$@" | cut -d';' -f1; }
state() { { scontrol -o show job "$1" 2>/dev/null | grep -o 'JobState=[A-Z_]*' | head -n 1 | cut -d= -f2; } || true; }
field() { { scontrol -o show job "$1" 2>/dev/null | head -n 1 | grep -o " $2=[^ ]*" | head -n 1 | cut -d= -f2; } || true; }
wait_final() {
  local t s
  for ((t = 0; t < $2 * 2; t++)); do
    s=$(state "$1")
    case "$s" in COMPLETED | FAILED | CANCELLED | TIMEOUT | NODE_FAIL | OUT_OF_MEMORY | BOOT_FAIL) echo "$s"; return 0 ;; esac
    sleep 0.5
  done
  echo "TIMEOUT($s)"
}
job_fail() {
  scontrol show job "$1" >&2 || true
  show "$(field "$1" StdOut)" "$RESNET_CLUSTER_DIR/log/slurmctld.log"
  fail "job $1: $2"
}
hash_line() { sed -n 's/^replica parameters: hash \([0-9a-f]*\) identical on every rank$/\1/p' "$1" | tail -n 1; }
srun --mpi=list 2>&1 | grep -qw pmix || fail "srun has no pmix plugin (srun --mpi=list): Debian's slurm-wlm has one"
TWO_NODES=(--nodes=2 --ntasks-per-node=2 --cpus-per-task=1 --time=10)
B=$(submit --job-name=b-preempt "${TWO_NODES[@]}" "$ROOT/jobs/train.sbatch" "${RUN[@]}")
M=$(RESNET_LAUNCHER=mpirun submit --job-name=m-mpirun "${TWO_NODES[@]}" "$ROOT/jobs/train.sbatch" "${RUN[@]}")
[[ "$B" =~ ^[0-9]+$ ]] && [[ "$M" =~ ^[0-9]+$ ]] || fail "submission failed: '$B' '$M'"
# in the background: USR1 to B after its first validation (step 10), while it runs
preempt() {
  local t
  for ((t = 0; t < 1200; t++)); do
    [ -s "$TMP/ck/$B/metrics.jsonl" ] && break
    case "$(state "$B")" in RUNNING | PENDING | CONFIGURING) ;; *) break ;; esac
    sleep 0.5
  done
  [ -s "$TMP/ck/$B/metrics.jsonl" ] && [ "$(state "$B")" = RUNNING ] || { echo "no validation while running within 600 s"; return 1; }
  scancel --signal=USR1 --batch "$B" || { echo "scancel --signal=USR1 --batch refused"; return 1; }
  echo "USR1 sent" > "$TMP/preempted"
}
preempt > "$TMP/preempt.log" 2>&1 &
preemptor=$!

# --- (1) + (4): one host against two ----------------------------------------------------------------------
export RESNET_TRACE=1
# strace every rank of the 4-rank run on 2 hosts: each writes its own trace of file-changing calls
cat > "$TMP/trace-writes.sh" <<EOF
#!/bin/sh
exec strace -f -qq --seccomp-bpf -o "$TMP/strace.\$OMPI_COMM_WORLD_RANK" \\
  -e trace=open,openat,creat,rename,renameat,renameat2,unlink,unlinkat,mkdir,mkdirat,link,linkat,truncate "\$@"
EOF
chmod 755 "$TMP/trace-writes.sh"
mpi 2 "${RUN[@]}" --threads 1 --checkpoint-dir "$TMP/one2" > "$TMP/one2.out" 2>&1 || { show "$TMP/one2.out"; fail "2 ranks on one host: exit $?"; }
on_hosts --mca btl tcp,self -np 2 --map-by node "$BIN" "${RUN[@]}" --threads 1 --checkpoint-dir "$TMP/two2" \
  > "$TMP/two2.out" 2>&1 || { show "$TMP/two2.out"; fail "2 ranks on 2 hosts: exit $?"; }
mpi 4 "${RUN[@]}" --threads 1 --checkpoint-dir "$TMP/one4" > "$TMP/one4.out" 2>&1 || { show "$TMP/one4.out"; fail "4 ranks on one host: exit $?"; }
on_hosts --mca btl vader,tcp,self -np 4 --map-by ppr:2:node "$TMP/trace-writes.sh" "$BIN" "${RUN[@]}" --threads 1 \
  --checkpoint-dir "$TMP/two4" > "$TMP/two4.out" 2>&1 || { show "$TMP/two4.out"; fail "4 ranks on 2 hosts: exit $?"; }
for np in 2 4; do
  one=$(rank_hashes "$TMP/one$np.out" "$np") two=$(rank_hashes "$TMP/two$np.out" "$np")
  [ -n "$one" ] || { show "$TMP/one$np.out"; fail "$np ranks on one host: replicas differ or no hashes"; }
  [ -n "$two" ] || { show "$TMP/two$np.out"; fail "$np ranks on 2 hosts: replicas differ or no hashes"; }
  [ "$(h5_step "$TMP/two$np/last.h5")" = 20 ] || fail "$np ranks on 2 hosts: last.h5 not at step 20"
  same_model "$TMP/one$np/last.h5" "$TMP/two$np/last.h5" ||
    fail "$np ranks: final checkpoint on 2 hosts differs from one host (hashes $two / $one)"
  [ "$two" = "$one" ] || fail "$np ranks: hash $two on 2 hosts, $one on one host"
  pass "(1) $np ranks on 2 hosts = $np ranks on one host bitwise after 20 steps (h5diff /model /optimizer; every rank $two) ($(elapsed))"
done

# (4) the writes of each rank into the checkpoint folder (last.h5, best.h5, temporaries, metrics.jsonl)
ck=$TMP/two4/
writes() {
  grep -F "\"$ck" "$1" | grep -E 'O_WRONLY|O_RDWR|O_CREAT|O_TRUNC|(rename|unlink|mkdir|link|truncate|creat)[a-z0-9]*\(' || true
}
for r in 0 1 2 3; do [ -s "$TMP/strace.$r" ] || fail "(4) no strace output for rank $r"; done
w0=$(writes "$TMP/strace.0")
grep -q "O_CREAT.*metrics.jsonl\|metrics.jsonl.*O_CREAT" <<<"$w0" && grep -q 'rename.*last\.h5' <<<"$w0" ||
  fail "(4) rank 0's trace shows no write of metrics.jsonl and last.h5: the trace sees nothing: $(head -c 600 "$TMP/strace.0")"
for r in 1 2 3; do
  w=$(writes "$TMP/strace.$r")
  [ -z "$w" ] || fail "(4) rank $r wrote into the shared checkpoint folder: $w"
done
pass "(4) only rank 0 wrote into the checkpoint folder ($(wc -l <<<"$w0") calls: metrics.jsonl, temporaries, renames); ranks 1-3 (on both hosts) none"
hash4=$(rank_hashes "$TMP/one4.out" 4)
unset RESNET_TRACE

# --- (2) Slurm across the two hosts: the jobs' outcome ----------------------------------------------------
wait "$preemptor" || true
[ -s "$TMP/preempted" ] || job_fail "$B" "not preempted: $(cat "$TMP/preempt.log" 2>/dev/null)"
for j in "$B" "$M"; do
  s=$(wait_final "$j" 300)
  [ "$s" = COMPLETED ] || job_fail "$j" "state $s, expected COMPLETED"
  log=$(field "$j" StdOut)
  [ "$(field "$j" NodeList)" = "node[1-2]" ] || job_fail "$j" "ran on '$(field "$j" NodeList)', expected node[1-2]"
  grep -q "^resnet_mpi .* 4 rank(s) x 1 thread(s)" "$log" || job_fail "$j" "not 4 ranks x 1 thread (--cpus-per-task=1)"
  [ "$(h5_step "$TMP/ck/$j/last.h5")" = 20 ] || job_fail "$j" "last.h5 not at step 20"
  [ "$(hash_line "$log")" = "$hash4" ] && same_model "$TMP/ck/$j/last.h5" "$TMP/one4/last.h5" ||
    job_fail "$j" "final parameters $(hash_line "$log") differ from the uninterrupted 4-rank run's $hash4"
done
logB=$(field "$B" StdOut)
grep -q "running: srun --mpi=pmix --ntasks=4" "$logB" || job_fail "$B" "not launched with srun --mpi=pmix --ntasks=4"
[ "$(field "$B" Restarts)" = 1 ] && grep -q "requeueing job $B" "$logB" && grep -q "resuming from last.h5" "$logB" ||
  job_fail "$B" "no stop, requeue and resume"
stopped=$(sed -n 's/.*signal received: stopping at step \([0-9]*\).*/\1/p' "$logB" | head -n 1)
[ -n "$stopped" ] && [ "$stopped" -lt 20 ] || job_fail "$B" "no stop before the end (stopped at '$stopped')"
grep -q "running: mpirun -np 4 " "$(field "$M" StdOut)" || job_fail "$M" "not launched with mpirun -np 4"
pass "(2) sbatch -N 2 --ntasks-per-node=2: job $B (srun --mpi=pmix) stopped by USR1 at step $stopped, requeued, resumed, and job $M (mpirun) both COMPLETED on node[1-2] with the uninterrupted run's parameters ($hash4) ($(elapsed))"

# --- (3) a lost host -------------------------------------------------------------------------------------
# 2 hosts x 1 rank, threads left to the program: each rank is alone on its host, so it takes both cores.
# The run is cut twice: node2's processes all killed (a host that dies), then, resumed on both hosts,
# node2's link taken down (a host that drops off the network: mpirun's keepalive from
# RESNET_CLUSTER_MPIRUN_ARGS notices); each time the job must end non-zero within 60 s with last.h5 whole.
# Then one host finishes the run.
LONG=(--dataset fashion-mnist --data "$data" --val-size 128 --limit-train 384 --batch-size 16 --max-steps 12
      --eval-every 1000 --checkpoint-every 2 --progress never --checkpoint-dir "$TMP/lost")
last_traced() { { grep '^trace: step ' "$1" | tail -n 1 | awk '{ print $3 }'; } 2>/dev/null || true; }
first_traced() { { grep -m 1 '^trace: step ' "$1" | awk '{ print $3 }'; } 2>/dev/null || true; }
# lose_host NAME FAULT [ARGS...]: train on 2 hosts until 3 steps are done, then FAULT (a command); checks
# that the job ends non-zero within 60 s and leaves a whole last.h5; sets $lost_report
lose_host() {
  local name=$1 fault=$2 first="" t job code took step last
  shift 2
  RESNET_TRACE=1 on_hosts --mca btl tcp,self -np 2 --map-by node "$BIN" "${LONG[@]}" "$@" > "$TMP/$name.out" 2>&1 &
  job=$!
  for ((t = 0; t < 1800; t++)); do
    first=${first:-$(first_traced "$TMP/$name.out")}
    # three steps done: the checkpoint of an even step before them is on disk
    [ -n "$first" ] && [ "$(last_traced "$TMP/$name.out")" -ge $((first + 3)) ] && break
    kill -0 "$job" 2>/dev/null || break
    sleep 0.1
  done
  [ -n "$first" ] && [ "$(last_traced "$TMP/$name.out")" -ge $((first + 3)) ] ||
    { kill "$job" 2>/dev/null; show "$TMP/$name.out"; fail "(3) $name: training did not run 3 steps"; }
  grep -q "^resnet_mpi .* 2 rank(s) x 2 thread(s)" "$TMP/$name.out" ||
    { kill "$job"; fail "(3) a rank alone on its 2-core host should take 2 threads: $(head -n 1 "$TMP/$name.out")"; }
  local at=$SECONDS
  $fault
  while kill -0 "$job" 2>/dev/null && [ $((SECONDS - at)) -lt 120 ]; do sleep 0.2; done
  took=$((SECONDS - at))
  kill -KILL "$job" 2>/dev/null || true
  set +e
  wait "$job"
  code=$?
  set -e
  last=$(last_traced "$TMP/$name.out")
  [ "$code" -ne 0 ] || fail "(3) $name: the job ended with 0 after losing a host"
  [ "$took" -le 60 ] || { show "$TMP/$name.out"; fail "(3) $name: the job took $took s to end after losing a host (exit $code)"; }
  step=$(h5_step "$TMP/lost/last.h5")
  [ -n "$step" ] && [ "$step" -ge $((first + 1)) ] && [ "$step" -le "$last" ] ||
    fail "(3) $name: last.h5 unreadable or at step '$step' (steps $first..$last ran)"
  lost_report="steps $first..$last, exit $code after $took s, last.h5 at step $step"
}
kill_node2() { "$ROOT/scripts/local-cluster.sh" kill-node node2 2>/dev/null; }
unplug_node2() { "$ROOT/scripts/local-cluster.sh" link node2 down 2>/dev/null; }
lose_host killed kill_node2
pass "(3) node2's processes killed: $lost_report ($(elapsed))"
lose_host unplugged unplug_node2 --resume auto
# nothing of the job may be left waiting on the unplugged host either
for ((t = 0; t < 60; t++)); do
  left=$("$ROOT/scripts/local-cluster.sh" ps node2 | grep -E ' (resnet_mpi|orted)$' || true)
  [ -z "$left" ] && break
  sleep 0.5
done
[ -z "$left" ] || fail "(3) 30 s after the job ended, node2 still runs: $left"
"$ROOT/scripts/local-cluster.sh" link node2 up 2>/dev/null
pass "(3) node2's link down: $lost_report; nothing left on node2 ($(elapsed))"
mpi 1 "${LONG[@]}" --threads 2 --resume auto > "$TMP/resumed.out" 2>&1 || { show "$TMP/resumed.out"; fail "(3) --resume auto on one host: exit $?"; }
[ "$(h5_step "$TMP/lost/last.h5")" = 12 ] || fail "(3) the resumed run did not finish at step 12"
grep -q "^test accuracy: " "$TMP/resumed.out" || fail "(3) the resumed run printed no test accuracy"
pass "(3) --resume auto on one host finished the run at step 12 ($(elapsed))"

# --- stop leaves nothing behind -------------------------------------------------------------------------
"$ROOT/scripts/local-cluster.sh" stop 2>/dev/null
left=$( (ip netns list; ip -br link; ip -4 addr) | grep -E "rnm-$K-|rnm-br$K|10\.213\.$K\." || true)
[ -z "$left" ] && [ ! -e "/run/rnm-$K" ] && [ ! -e "$RESNET_CLUSTER_DIR" ] || fail "stop left: $left $(ls -d "/run/rnm-$K" "$RESNET_CLUSTER_DIR" 2>/dev/null)"
pass "stop removed the hosts, links, bridge and state of 10.213.$K.0/24"
pass "all multi-host checks in $(elapsed)"
