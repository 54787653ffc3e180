#!/usr/bin/env bash
# Two ranks on one host against one rank on each of two hosts (scripts/local-cluster.sh: TCP between
# the hosts, shared memory within one), in alternating rounds, medians at the end:
#  - the gradient allreduce alone (build/tests/allreduce_time: a barrier, then the 1.09 MB allreduce of
#    the seed ResNet-20's gradient; median and fastest of 200 rounds: on a loaded machine the fastest is
#    the transport's own cost, the median adds the waits for the scheduler);
#  - the training step (`resnet_mpi bench`: images/s, and the allreduce's share of a step, which includes
#    waiting for the slower rank).
# Needs root (namespaces); makes its own cluster (no Slurm) and removes it.
#   scripts/bench-cluster.sh [--rounds N] [--build DIR] [--allreduce-only] [-- BENCH OPTIONS]
#   (default: 3 rounds, build/, bench --threads 1 --batch-size 128 --steps 20 --warmup 3)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
rounds=3 build=$ROOT/build only_allreduce=0
bench_opts=(--threads 1 --batch-size 128 --steps 20 --warmup 3)
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    --build) build=$2; shift 2 ;;
    --allreduce-only) only_allreduce=1; shift ;;
    --) shift; bench_opts=("$@"); break ;;
    *) echo "usage: $0 [--rounds N] [--build DIR] [--allreduce-only] [-- BENCH OPTIONS]" >&2; exit 2 ;;
  esac
done
[[ "$rounds" =~ ^[1-9][0-9]*$ ]] || { echo "bench-cluster: --rounds must be a positive number" >&2; exit 2; }
for f in "$build/resnet_mpi" "$build/tests/allreduce_time"; do
  [ -x "$f" ] || { echo "bench-cluster: $f not built (meson compile -C $build)" >&2; exit 1; }
done
if [ "$(id -u)" -eq 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi

work=$(mktemp -d "${TMPDIR:-/tmp}/resnet-bench-cluster.XXXXXX")
export RESNET_CLUSTER_DIR=$work/cluster RESNET_CLUSTER_SLURM=0
trap '"$ROOT/scripts/local-cluster.sh" stop >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
trap 'exit 143' TERM INT
eval "$("$ROOT/scripts/local-cluster.sh" start --nodes 2)"
read -r -a cluster <<<"$RESNET_CLUSTER_MPIRUN_ARGS"
read -r node1 node2 <<<"$RESNET_CLUSTER_HOSTS"

# the two placements, both started the same way (mpirun into the hosts)
# run PLACEMENT CMD...: CMD on 2 ranks
run() {
  local where=$1
  shift
  case "$where" in
    one_host) mpirun "${cluster[@]}" --bind-to none -np 2 --host "$node1:2" --mca btl vader,self "$@" ;;
    two_hosts) mpirun "${cluster[@]}" --bind-to none -np 2 --host "$node1:1,$node2:1" --mca btl tcp,self "$@" ;;
  esac
}
median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

: > "$work/results"
for ((r = 1; r <= rounds; r++)); do
  for placement in one_host two_hosts; do
    ar=$(run "$placement" "$build/tests/allreduce_time" 200)
    b="train: 0 images/s, 0 ms/step (allreduce 0%)"
    # each rank in a session of its own: Linux's autogroup scheduling (sched_autogroup_enabled) shares
    # the CPU between sessions first, and ranks started by one mpirun daemon share its session, so on a
    # loaded machine one rank on each of two hosts (two daemons) would get more CPU than two ranks on one
    # host (measured here: 1.6x the images/s without this)
    [ "$only_allreduce" = 1 ] || b=$(run "$placement" setsid --wait "$build/resnet_mpi" bench "${bench_opts[@]}")
    ms=$(sed -n 's/.*median \([0-9.]*\) ms, min \([0-9.]*\) ms.*/\1 \2/p' <<<"$ar")
    ips=$(sed -n 's/^train: \([0-9.]*\) images\/s, \([0-9.]*\) ms\/step.*allreduce \([0-9.]*\)%.*/\1 \2 \3/p' <<<"$b")
    [ -n "$ms" ] && [ -n "$ips" ] || { echo "bench-cluster: no numbers from $placement: $ar $b" >&2; exit 1; }
    read -r img step share <<<"$ips"
    read -r med low <<<"$ms"
    echo "$placement $med $low $img $step $share" >> "$work/results"
    printf 'round %d %-9s allreduce %7.3f ms (fastest %.3f)' "$r" "$placement" "$med" "$low"
    [ "$only_allreduce" = 1 ] || printf ' | bench %7.1f img/s, %7.1f ms/step, allreduce %4.1f%% = %6.2f ms/step' \
      "$img" "$step" "$share" "$(awk -v a="$step" -v b="$share" 'BEGIN { print a * b / 100 }')"
    echo
  done
done
echo "medians over $rounds round(s) (load average $(cut -d' ' -f1-3 /proc/loadavg)):"
for placement in one_host two_hosts; do
  col() { awk -v p="$placement" -v c="$1" '$1 == p { print $c }' "$work/results" | median; }
  printf '  %-9s allreduce alone %.3f ms (fastest %.3f)' "$placement" "$(col 2)" "$(col 3)"
  [ "$only_allreduce" = 1 ] || printf '; bench %.1f img/s, %.1f ms/step, allreduce %.1f%% of a step' "$(col 4)" "$(col 5)" "$(col 6)"
  echo
done
