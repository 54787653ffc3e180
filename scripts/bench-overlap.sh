#!/usr/bin/env bash
# The gradient allreduce overlapped with the backward (--bucket-mb), measured on two hosts joined by a
# shaped link, and the measurements scripts/scaling-model.py fits its model to. One command:
#   scripts/bench-overlap.sh [-o FILE]        (as root; a few minutes on a quiet 2-core machine)
# It makes a two-host cluster of its own (scripts/local-cluster.sh without Slurm: network namespaces, a
# veth link each into a private bridge, TCP between the hosts), shapes each host's outgoing link with
# `tc qdisc ... tbf` (netem is not in every kernel: latency comes from measured small messages), and
# removes all of it when it ends, also on an error or a signal. Three parts, records into FILE:
#   compute    1 rank, 1 thread, `bench --profile` at each per-rank batch of --compute-batches:
#              forward + backward and optimizer time per step, the backward's share of the profile
#   allreduce  build/tests/allreduce_time over each --links entry for each --ranks count, message sizes
#              --sizes (floats): median and fastest round, for the latency + bandwidth fit
#   steps      `bench` on each link for each rank count, --bucket-mb 0 and --bucket-mb B alternating in
#              every round: the step split (compute; allreduce = the exposed part; optimizer)
# then runs scripts/scaling-model.py on FILE: the table of the step splits, the fitted allreduce model,
# the model's strong/weak scaling tables and the measured points beside the model.
# Links: `shm` (every rank on one host: shared memory), `unshaped` (two hosts, veth as it is), or a tc
# rate (`10gbit`, `1gbit`, `500mbit`: two hosts, the link shaped). Ranks go round-robin in blocks over
# the hosts (4 ranks: 2 per host; shared memory within a host, TCP across), one thread each, started
# each in a session of its own (setsid, as scripts/bench-cluster.sh explains); more ranks than cores are
# oversubscribed, and the results say so.
# The shaping: tbf on each host's eth0 (its outgoing traffic), bucket = --burst-us of the rate (at least
# 16 KiB): a message shorter than that passes at the veth's own speed after a quiet moment, so small
# messages measure the TCP stack's latency and long ones the rate.
# The bucket size, 0.25 MiB (65,536 floats): ResNet-20's gradient is final from its end backwards, the
# classifier first, then one block at a time; stage 3 holds 75% of it (73,856 floats per block) and is
# final within the first third of the backward. Buckets of just under one stage-3 block start one
# allreduce per stage-3 block, so 3 of the 5 buckets (72% of the gradient) are on the wire while two
# thirds of the backward remain; five messages keep the added latency (5 x 2(p-1) alpha) small. Smaller
# buckets would start the stage-1/2 quarter earlier at more latency: --bucket-mb 0.1 tries that.
# Options (defaults in brackets):
#   -o, --out FILE         records [BUILD/bench-overlap.txt]        --build DIR      [build]
#   --links "L..."         ["shm 10gbit 1gbit"]                    --ranks "N..."   ["2 4"]
#   --bucket-mb B          the overlapped run's bucket size in MiB [0.25]
#   --scaling strong|weak|both   per-rank batch of the step runs: --global-batch / ranks, or
#                          --per-rank-batch [strong; 128 and 128]
#   --steps N --warmup N   timed and untimed bench steps [10, 2]   --rounds N       bench repeats [1]
#   --compute-batches "B..."  [8 16 32 64 128]                     --compute-steps N  [10]
#   --sizes "F..."         allreduce sizes in floats [1 256 4096 32768 131072 271818 1048576]
#   --allreduce-rounds N   at most N rounds per size (and about 2 s) [100]
#   --burst-us U           tbf bucket: U microseconds at the link's rate, at least 16 KiB [200]
#   --parts "P..."         which parts to run ["compute allreduce steps"]; records of parts not run
#                          are kept from an existing FILE, so a part can be redone alone
#   --cores C              cores per node in the model [2]        --no-model       skip the model
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
build=$ROOT/build out="" links="shm 10gbit 1gbit" ranks_list="2 4" bucket=0.25 scaling=strong
global_batch=128 per_rank_batch=128 steps=10 warmup=2 rounds=1 compute_batches="8 16 32 64 128"
compute_steps=10 sizes="1 256 4096 32768 131072 271818 1048576" ar_rounds=100 burst_us=200
parts="compute allreduce steps" cores=2 model=1

die() { echo "bench-overlap: $*" >&2; exit 1; }
usage() { sed -n "2,/^set -euo/p" "$0" | sed "\$d; s/^# \\{0,1\\}//"; exit 0; }
need_value() { [ $# -ge 2 ] || { echo "bench-overlap: $1 needs a value" >&2; exit 2; }; }
while [ $# -gt 0 ]; do
  case "$1" in
    -h | --help) usage ;;
    --no-model) model=0; shift; continue ;;
    -o | --out | --build | --links | --ranks | --bucket-mb | --scaling | --global-batch | --per-rank-batch | --steps | \
    --warmup | --rounds | --compute-batches | --compute-steps | --sizes | --allreduce-rounds | --burst-us | --parts | --cores)
      need_value "$@" ;;
    *) echo "bench-overlap: unknown option '$1' (--help lists them)" >&2; exit 2 ;;
  esac
  case "$1" in
    -o | --out) out=$2 ;;
    --build) build=$2 ;;
    --links) links=$2 ;;
    --ranks) ranks_list=$2 ;;
    --bucket-mb) bucket=$2 ;;
    --scaling) scaling=$2 ;;
    --global-batch) global_batch=$2 ;;
    --per-rank-batch) per_rank_batch=$2 ;;
    --steps) steps=$2 ;;
    --warmup) warmup=$2 ;;
    --rounds) rounds=$2 ;;
    --compute-batches) compute_batches=$2 ;;
    --compute-steps) compute_steps=$2 ;;
    --sizes) sizes=$2 ;;
    --allreduce-rounds) ar_rounds=$2 ;;
    --burst-us) burst_us=$2 ;;
    --parts) parts=$2 ;;
    --cores) cores=$2 ;;
  esac
  shift 2
done
bad() { echo "bench-overlap: $1 must be $2, not '$3'" >&2; exit 2; }
positive() { [[ "$2" =~ ^[1-9][0-9]*$ ]] || bad "$1" "a positive whole number" "$2"; }
for pair in "--steps:$steps" "--rounds:$rounds" "--compute-steps:$compute_steps" "--allreduce-rounds:$ar_rounds" \
            "--burst-us:$burst_us" "--cores:$cores" "--global-batch:$global_batch" "--per-rank-batch:$per_rank_batch"; do
  positive "${pair%%:*}" "${pair#*:}"
done
[[ "$warmup" =~ ^[0-9]+$ ]] || bad --warmup "a whole number" "$warmup"
[[ "$bucket" =~ ^[0-9]*\.?[0-9]+$ ]] && awk -v b="$bucket" 'BEGIN { exit !(b > 0) }' ||
  bad --bucket-mb "a size in MiB above 0" "$bucket"
for n in $ranks_list; do positive --ranks "$n"; done
for n in $compute_batches; do positive --compute-batches "$n"; done
for n in $sizes; do positive --sizes "$n"; done
for l in $links; do
  [[ "$l" =~ ^(shm|unshaped|[1-9][0-9]*(k|m|g)bit)$ ]] || bad --links "shm, unshaped or a rate such as 10gbit" "$l"
done
for p in $parts; do [[ "$p" =~ ^(compute|allreduce|steps)$ ]] || bad --parts "compute, allreduce or steps" "$p"; done
case "$scaling" in strong | weak | both) ;; *) bad --scaling "strong, weak or both" "$scaling" ;; esac
[ -n "$links" ] && [ -n "$ranks_list" ] && [ -n "$parts" ] || die "--links, --ranks and --parts may not be empty"
out=${out:-$build/bench-overlap.txt}
for f in "$build/resnet_mpi" "$build/tests/allreduce_time"; do
  [ -x "$f" ] || die "$f not built (meson compile -C $build)"
done
[ "$(id -u)" -eq 0 ] || die "needs root: the hosts are network namespaces and tc shapes their links"
for c in ip tc nsenter unshare setsid mpirun; do
  command -v "$c" >/dev/null || die "$c not found (apt-get install iproute2 util-linux openmpi-bin)"
done
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
has_part() { [[ " $parts " == *" $1 "* ]]; }

work=$(mktemp -d "${TMPDIR:-/tmp}/resnet-bench-overlap.XXXXXX")
export RESNET_CLUSTER_DIR=$work/cluster RESNET_CLUSTER_SLURM=0
cluster_up=0 child=""
cleanup() {
  [ -z "$child" ] || kill -TERM "$child" 2>/dev/null || true
  # stopping the cluster kills what is left on its hosts; the namespaces take their links and tc with them
  [ "$cluster_up" = 0 ] || "$ROOT/scripts/local-cluster.sh" stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 143' TERM INT HUP
records=$work/records
: > "$records"
record() { echo "$*" >> "$records"; }
note() { echo "bench-overlap: $*" >&2; }
# capture CMD...: CMD's output (stdout and stderr) into $work/out, CMD in the background: bash runs a
# trap only between foreground commands, so a signal would otherwise wait for CMD to end
capture() {
  local code=0
  "$@" > "$work/out" 2>&1 &
  child=$!
  wait "$child" || code=$?
  child=""
  return "$code"
}

# --- compute: the model's compute time per step as a function of the per-rank batch ------------------
# step_field NAME OUTPUT: the number after "NAME " in bench's step line; step_total OUTPUT: the step's ms
step_field() { sed -n "s/^step: .*[ ;]$1 \([0-9][0-9.]*\)[, ].*/\1/p" <<<"$2"; }
step_total() { sed -n 's/^step: \([0-9.]*\) ms;.*/\1/p' <<<"$1"; }
run_compute() {
  local b o backward total
  for b in $compute_batches; do
    capture "$build/resnet_mpi" bench --threads 1 --batch-size "$b" --steps "$compute_steps" --warmup "$warmup" \
      --eval-images 0 --profile || die "bench at batch $b failed: $(cat "$work/out")"
    o=$(cat "$work/out")
    # the profile's rows: "  conv 3x3/1  16->16  32x32 backward   86.01   24.9% ...": the ms after "backward"
    backward=$(awk '/^  .* backward +[0-9.]+ +[0-9.]+%/ {
                      for (i = 1; i <= NF; i++) if ($i == "backward") { s += $(i + 1); break } }
                    END { print s + 0 }' <<<"$o")
    total=$(sed -n 's/^  total (forward + backward) *\([0-9.]*\)$/\1/p' <<<"$o")
    [ -n "$(step_total "$o")" ] && [ -n "$total" ] || die "no step line or profile from bench at batch $b: $o"
    record compute "$b" "$(step_field compute "$o")" "$(step_field optimizer "$o")" \
      "$(awk -v b="$backward" -v t="$total" 'BEGIN { printf "%.4f", (t > 0 ? b / t : 0) }')"
    # batch 128 on one rank is also the 1-node, 1-rank point of both scalings
    [ "$b" != 128 ] || record step shm 1 1 128 0 "$(step_total "$o")" "$(step_field compute "$o")" \
      "$(step_field allreduce "$o")" "$(step_field least "$o")" "$(step_field optimizer "$o")"
    note "compute: batch $b: $(grep '^step: ' <<<"$o" | cut -d';' -f1-2), backward $backward of $total ms profiled"
  done
  record model params "$(sed -n 's/.*, \([0-9]*\) parameters,.*/\1/p' <<<"$o")"
}

# --- the cluster and its links ----------------------------------------------------------------------
start_cluster() {
  local env_lines
  env_lines=$("$ROOT/scripts/local-cluster.sh" start --nodes 2) || die "the two-host cluster did not start"
  cluster_up=1
  eval "$env_lines"
  read -r -a CLUSTER <<<"$RESNET_CLUSTER_MPIRUN_ARGS"
  read -r HOST1 HOST2 <<<"$RESNET_CLUSTER_HOSTS"
}
# rate_bits RATE: bits per second of a tc rate such as 10gbit
rate_bits() { awk -v r="$1" 'BEGIN { n = r + 0; u = substr(r, length(n "") + 1, 1); print n * (u == "g" ? 1e9 : u == "m" ? 1e6 : 1e3) }'; }
shape() {
  local link=$1 node burst
  for node in node1 node2; do
    "$ROOT/scripts/local-cluster.sh" on "$node" tc qdisc del dev eth0 root 2>/dev/null || true
    case "$link" in shm | unshaped) continue ;; esac
    burst=$(awk -v bits="$(rate_bits "$link")" -v us="$burst_us" 'BEGIN { b = int(bits / 8 * us / 1e6); print (b < 16384 ? 16384 : b) }')
    "$ROOT/scripts/local-cluster.sh" on "$node" tc qdisc add dev eth0 root tbf rate "$link" burst "$burst" latency 100ms ||
      die "tc could not shape node $node's link to $link (is sch_tbf in this kernel?)"
  done
}
# on_link LINK RANKS CMD...: CMD on RANKS ranks; shm: all on host 1; else the first half on host 1.
# Only for capture's background subshell: mpirun replaces it, so that the pid capture holds is mpirun's.
on_link() {
  local link=$1 np=$2 first
  shift 2
  first=$(((np + 1) / 2))
  if [ "$link" = shm ]; then
    exec mpirun "${CLUSTER[@]}" --oversubscribe --bind-to none -np "$np" --host "$HOST1:$np" --mca btl vader,self "$@"
  else
    exec mpirun "${CLUSTER[@]}" --oversubscribe --bind-to none -np "$np" --host "$HOST1:$first,$HOST2:$((np - first))" \
      --mca btl vader,tcp,self "$@"
  fi
}
hosts_of() { if [ "$1" = shm ] || [ "$2" = 1 ]; then echo 1; else echo 2; fi; }

run_allreduce() {
  local link=$1 np=$2 o
  # shellcheck disable=SC2086  # a list of sizes
  capture on_link "$link" "$np" "$build/tests/allreduce_time" "$ar_rounds" $sizes ||
    die "allreduce_time on $link, $np ranks: $(cat "$work/out")"
  o=$(cat "$work/out")
  sed -n 's/^allreduce of \([0-9]*\) floats .*: median \([0-9.]*\) ms, min \([0-9.]*\) ms.*/\1 \2 \3/p' <<<"$o" |
    while read -r floats median fastest; do record allreduce "$link" "$np" "$(hosts_of "$link" "$np")" "$floats" "$median" "$fastest"; done
  note "allreduce: $link, $np ranks: $(grep -c '^allreduce of' <<<"$o") sizes; the gradient's: $(grep "^allreduce of 271818 " <<<"$o" | sed 's/.*: //')"
}

run_step() {
  local link=$1 np=$2 per_rank=$3 b=$4 o
  capture on_link "$link" "$np" setsid --wait "$build/resnet_mpi" bench --threads 1 --batch-size $((per_rank * np)) \
    --steps "$steps" --warmup "$warmup" --eval-images 0 --bucket-mb "$b" ||
    die "bench on $link, $np ranks, --bucket-mb $b: $(cat "$work/out")"
  o=$(cat "$work/out")
  [ -n "$(step_total "$o")" ] || die "no step line from bench on $link, $np ranks: $o"
  record step "$link" "$np" "$(hosts_of "$link" "$np")" "$per_rank" "$b" "$(step_total "$o")" "$(step_field compute "$o")" \
    "$(step_field allreduce "$o")" "$(step_field least "$o")" "$(step_field optimizer "$o")"
  note "steps: $link, $np ranks x $per_rank, --bucket-mb $b: $(grep '^step: ' <<<"$o" | cut -d';' -f1-3)"
}

# --- the run ----------------------------------------------------------------------------------------
started=$SECONDS
record machine cores "$(nproc)"
record machine load "$(cut -d' ' -f1 /proc/loadavg)"
if has_part compute; then run_compute; fi
if has_part allreduce || has_part steps; then
  start_cluster
  for link in $links; do
    shape "$link"
    if has_part allreduce; then
      for np in $ranks_list; do
        if [ "$np" -gt 1 ]; then run_allreduce "$link" "$np"; fi
      done
    fi
    has_part steps || continue
    per_rank_list=""
    case "$scaling" in strong) per_rank_list=strong ;; weak) per_rank_list=weak ;; both) per_rank_list="strong weak" ;; esac
    for ((r = 1; r <= rounds; r++)); do
      for np in $ranks_list; do
        for kind in $per_rank_list; do
          per_rank=$per_rank_batch
          if [ "$kind" = strong ]; then
            [ $((global_batch % np)) -eq 0 ] || { note "skipped: global batch $global_batch over $np ranks"; continue; }
            per_rank=$((global_batch / np))
          fi
          # with and without overlap back to back, in turns, so that a change of load hits both
          if [ $(((r + np) % 2)) -eq 0 ]; then order="0 $bucket"; else order="$bucket 0"; fi
          for b in $order; do run_step "$link" "$np" "$per_rank" "$b"; done
        done
      done
    done
  done
fi
record machine load_after "$(cut -d' ' -f1 /proc/loadavg)"
record machine seconds "$((SECONDS - started))"

# records of the parts not run this time stay as they were in FILE
if [ -s "$out" ]; then
  for p in compute allreduce steps; do
    has_part "$p" && continue
    case "$p" in
      compute) grep -E '^(compute|model) |^step shm 1 1 ' "$out" >> "$records" || true ;;
      allreduce) grep '^allreduce ' "$out" >> "$records" || true ;;
      steps) grep '^step ' "$out" | grep -v '^step shm 1 1 ' >> "$records" || true ;;
    esac
  done
fi
mkdir -p "$(dirname "$out")"
{
  echo "# scripts/bench-overlap.sh $(date -u +%Y-%m-%dT%H:%M:%SZ): compute BATCH COMPUTE_MS OPTIMIZER_MS BACKWARD_SHARE |"
  echo "# allreduce LINK RANKS HOSTS FLOATS MEDIAN_MS FASTEST_MS | step LINK RANKS HOSTS BATCH_PER_RANK BUCKET_MB"
  echo "# STEP_MS COMPUTE_MS ALLREDUCE_MS ALLREDUCE_LEAST_MS OPTIMIZER_MS | model params N | machine KEY VALUE"
  cat "$records"
} > "$out.tmp"
mv "$out.tmp" "$out"
note "records in $out ($((SECONDS - started)) s)"
[ "$model" = 0 ] || /usr/bin/python3 "$ROOT/scripts/scaling-model.py" --cores "$cores" "$out"
