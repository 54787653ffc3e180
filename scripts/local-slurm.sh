#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for trying the batch scripts in jobs/ and for the test
# tests/slurm_jobs.sh. It runs its own munged (own key and socket), slurmctld and slurmd; everything
# they write (config, key, state, spool, logs, pid files) lives in one folder, and nothing under /etc,
# /run or /var is touched.
#
#   scripts/local-slurm.sh start     # prints `export SLURM_CONF=...` on stdout (everything else: stderr)
#   eval "$(scripts/local-slurm.sh start)"       # ... or set SLURM_CONF in this shell in one go
#   sbatch --ntasks=2 jobs/train.sbatch --dataset fashion-mnist --epochs 1
#   squeue; sinfo; scontrol show job JOBID
#   scripts/local-slurm.sh status    # daemons, node state, queue
#   scripts/local-slurm.sh env       # prints the export line again
#   scripts/local-slurm.sh stop      # cancels jobs, stops the daemons, removes the folder
#
# Needs the Debian packages slurm-wlm and munge (scripts/test.sh installs them). Runs as root (then the
# daemons run as root and jobs may run as any user) or as an ordinary user (then jobs run as that user).
# Settings, all optional:
#   RESNET_SLURM_DIR   the folder (default /tmp/resnet-slurm)
#   RESNET_SLURM_PORT  slurmctld's port; slurmd uses the next one (default 16817, away from a real
#                      cluster's 6817/6818)
#   RESNET_SLURM_CPUS  CPUs the node offers (default: what `slurmd -C` finds). More than the machine has
#                      lets several small jobs run at once on a small machine (cores are shared then).
#   RESNET_SLURM_MEM   memory in MB the node offers (default: what `slurmd -C` finds)
#   RESNET_SLURM_WAIT  seconds to wait for the node to come up idle (default 60)
#
# What differs from a production cluster, because containers usually lack them: no cgroups (processes
# are tracked through /proc by proctrack/linuxproc, no CPU or memory confinement: task/none), no
# accounting database (sacct has no data; job states come from `scontrol show job`, kept for an hour
# by MinJobAge, and each finished job is logged to $RESNET_SLURM_DIR/log/jobcomp.txt). A requeued job
# may start again after 10 s (cred_expire) instead of the default 120 s. Job ids start from the clock
# (FirstJobId), so that a restarted cluster does not reuse the ids, logs and checkpoint folders of an
# earlier one.
set -euo pipefail

DIR=${RESNET_SLURM_DIR:-/tmp/resnet-slurm}
PORT=${RESNET_SLURM_PORT:-16817}
WAIT=${RESNET_SLURM_WAIT:-60}
SAY_AS=local-slurm
# shellcheck source=slurm-common.sh
. "$(dirname "${BASH_SOURCE[0]}")/slurm-common.sh"

usage() {
  echo "usage: $0 start|stop|status|env" >&2
  exit 2
}

print_env() { echo "export SLURM_CONF=$CONF"; }

node_state() { SLURM_CONF=$CONF sinfo -h -N -o '%T' 2>/dev/null | head -n 1; }

write_config() {
  local node cpus mem hw
  node=$(hostname -s)
  # slurmd -C prints e.g. "NodeName=vm CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ... RealMemory=24105"
  hw=$(slurmd -C 2>/dev/null | head -n 1) || true
  cpus=$(sed -n 's/.* CPUs=\([0-9]*\).*/\1/p' <<<"$hw")
  mem=$(sed -n 's/.* RealMemory=\([0-9]*\).*/\1/p' <<<"$hw")
  [ -n "$cpus" ] || cpus=$(nproc)
  [ -n "$mem" ] || mem=$(awk '/^MemTotal:/ { print int($2 / 1024) }' /proc/meminfo)
  local topology=""
  if [ -z "${RESNET_SLURM_CPUS:-}" ] && [ -z "${RESNET_SLURM_MEM:-}" ]; then
    # the machine as slurmd sees it: sockets, cores and threads included
    topology=$(sed -n 's/.*\(Boards=[0-9]* SocketsPerBoard=[0-9]* CoresPerSocket=[0-9]* ThreadsPerCore=[0-9]*\).*/\1/p' <<<"$hw")
  fi
  cpus=${RESNET_SLURM_CPUS:-$cpus}
  mem=${RESNET_SLURM_MEM:-$mem}
  [[ "$cpus" =~ ^[1-9][0-9]*$ ]] || die "bad CPU count '$cpus'"
  [[ "$mem" =~ ^[1-9][0-9]*$ ]] || die "bad memory size '$mem'"

  {
    cat <<EOF
# Written by scripts/local-slurm.sh: a one-node cluster for testing. Remove with 'local-slurm.sh stop'.
ClusterName=resnet-local
SlurmctldHost=$node(127.0.0.1)
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmdLogFile=$DIR/log/slurmd.log
EOF
    slurm_common_config "$cpus" "$mem"
    cat <<EOF
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus $topology RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
  } > "$CONF"
  say "node $node: $cpus CPUs, $mem MB"
}

start_munge() {
  local key=${RESNET_MUNGE_KEY:-$DIR/munge-key/munge.key}
  [ -n "${RESNET_MUNGE_KEY:-}" ] || make_munge_key "$key"
  start_munged "$key" RESNET_SLURM_DIR
  munge --socket="$MUNGE_SOCKET" -n | unmunge --socket="$MUNGE_SOCKET" >/dev/null ||
    { logs_tail; die "munge does not work (socket $MUNGE_SOCKET)"; }
}

start() {
  need munged munge unmunge slurmctld slurmd sinfo scontrol
  if pid_alive "$DIR/run/slurmctld.pid" && pid_alive "$DIR/run/slurmd.pid"; then
    say "already running in $DIR"
    print_env
    return 0
  fi
  # leftovers of a cluster that died: stop what is left and start clean
  [ -d "$DIR" ] && stop_daemons
  rm -rf "$DIR/state" "$DIR/spool" "$DIR/run" "$DIR/log"
  mkdir -p "$DIR"/{etc,state,spool,run,log,munge,munge-key}
  chmod 700 "$DIR/munge-key"
  write_config
  mkdir -p "$DIR/spool/$(hostname -s)"
  start_munge
  SLURM_CONF=$CONF slurmctld -c -f "$CONF" || { logs_tail; die "slurmctld did not start"; }
  SLURM_CONF=$CONF slurmd -f "$CONF" -N "$(hostname -s)" || { logs_tail; die "slurmd did not start"; }

  local state="" t
  for ((t = 0; t < WAIT * 2; t++)); do
    state=$(node_state)
    case "$state" in idle | idle~ | mixed | allocated) break ;; esac
    sleep 0.5
  done
  case "$state" in
    idle | idle~ | mixed | allocated) ;;
    *)
      logs_tail
      die "node not idle after ${WAIT}s (state '${state:-no answer}'); logs in $DIR/log" ;;
  esac
  say "up: node $(hostname -s) $state; logs in $DIR/log; run:"
  print_env
}

# stop_daemons: cancel jobs, then end the daemons this script started (by their pid files)
stop_daemons() {
  cancel_jobs
  end_daemons "$DIR/run/slurmd.pid" "$DIR/run/slurmctld.pid" "$DIR/run/munged.pid"
}

stop() {
  [ -d "$DIR" ] || { say "nothing to stop in $DIR"; return 0; }
  stop_daemons
  rm -rf "$DIR"
  say "stopped; removed $DIR"
}

status() {
  local name up=1
  for name in munged slurmctld slurmd; do
    if pid_alive "$DIR/run/$name.pid"; then
      say "$name running (pid $(cat "$DIR/run/$name.pid"))"
    else
      say "$name not running"
      up=0
    fi
  done
  [ "$up" -eq 1 ] || return 1
  SLURM_CONF=$CONF sinfo >&2
  SLURM_CONF=$CONF squeue >&2
  print_env
}

[ $# -eq 1 ] || usage
case "$1" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  env) print_env ;;
  *) usage ;;
esac
