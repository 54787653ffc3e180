# shellcheck shell=bash
# What scripts/local-slurm.sh and scripts/local-cluster.sh share (sourced by both, not run): the Slurm
# settings of a cluster for testing, munged with a key of its own, the logs, and stopping jobs and daemons.
# The sourcing script sets DIR (the cluster's folder), PORT (slurmctld's port; slurmd uses the next one)
# and SAY_AS (the name its messages start with).

CONF=$DIR/etc/slurm.conf
MUNGE_SOCKET=$DIR/munge/munge.socket.2

say() { echo "$SAY_AS: $*" >&2; }
die() { say "error: $*"; exit 1; }

# pid_alive FILE: the pid in FILE names a running process
pid_alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

need() {
  local c
  for c in "$@"; do
    command -v "$c" >/dev/null 2>&1 || die "$c not found (apt-get install slurm-wlm munge)"
  done
}

logs_tail() {
  local f
  for f in "$DIR"/log/*.log; do
    [ -f "$f" ] && { echo "--- $f" >&2; tail -n 15 "$f" >&2; }
  done
  return 0
}

# slurm_common_config CPUS MEM: prints the slurm.conf lines of every cluster these scripts make (CPUS and
# MEM per node), and makes the empty plugstack.conf they name; the caller adds the cluster's name and
# host, slurmd's pid and log files, the nodes and the partition
slurm_common_config() {
  local cpus=$1 mem=$2 user
  user=$(id -un)
  cat <<EOF
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=$user
SlurmdUser=$user
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCKET,cred_expire=10
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/%n
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmctldDebug=info
SlurmdDebug=info
PlugStackConfig=$DIR/etc/plugstack.conf
MailProg=/bin/true
# no cgroups in most containers: track processes through /proc, no confinement
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/log/jobcomp.txt
SwitchType=switch/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$((mem / cpus))
PreemptType=preempt/none
PreemptMode=OFF
JobRequeue=1
ReturnToService=2
# keep finished jobs visible to scontrol for an hour (there is no accounting database)
MinJobAge=3600
# job ids from the clock: a restarted cluster does not hand out the ids (and with them the log files and
# checkpoint folders, which jobs/train.sbatch resumes from) of an earlier one
FirstJobId=$(( $(date +%s) % 50000000 + 1 ))
KillWait=30
InactiveLimit=0
SlurmdTimeout=300
SlurmctldTimeout=120
SlurmdParameters=config_overrides
EOF
  : > "$DIR/etc/plugstack.conf"
}

# make_munge_key FILE: a key of our own where FILE has none, not /etc/munge/munge.key: this cluster
# talks to nobody else
make_munge_key() {
  [ -s "$1" ] && return 0
  mungekey --create --keyfile="$1" 2>/dev/null || dd if=/dev/urandom of="$1" bs=1 count=1024 status=none
  chmod 600 "$1"
}

# start_munged KEY SETTING: munged on $MUNGE_SOCKET with KEY; SETTING is the variable that moves $DIR
start_munged() {
  local key=$1 setting=$2 up
  # munged insists on a socket folder everyone may enter and a key only its owner may read
  chmod 755 "$DIR" "$DIR/munge"
  up=$(dirname "$DIR")
  while [ "$up" != / ]; do
    [ "$(( 0$(stat -c %a "$up") & 1 ))" -eq 1 ] ||
      die "munged needs every folder above its socket searchable by all: chmod o+x $up (or set $setting)"
    up=$(dirname "$up")
  done
  munged --socket="$MUNGE_SOCKET" --key-file="$key" --pid-file="$DIR/run/munged.pid" \
    --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/munged.seed" ||
    { logs_tail; die "munged did not start"; }
}

# cancel_jobs: cancel every job and give them 10 s to end (while slurmctld runs)
cancel_jobs() {
  pid_alive "$DIR/run/slurmctld.pid" || return 0
  SLURM_CONF=$CONF scancel --full --quiet --partition=debug 2>/dev/null || true
  local t
  for ((t = 0; t < 20; t++)); do
    [ -z "$(SLURM_CONF=$CONF squeue -h -t R,CG 2>/dev/null)" ] && break
    sleep 0.5
  done
  return 0
}

# end_daemons PIDFILE...: SIGTERM to all at once (each takes a few seconds to save its state), then
# SIGKILL to whatever is left after 10 s
end_daemons() {
  local f p t pids=() names=() i
  for f in "$@"; do
    pid_alive "$f" || continue
    p=$(cat "$f")
    kill "$p" 2>/dev/null && pids+=("$p") && names+=("$(basename "$f" .pid)")
  done
  for i in "${!pids[@]}"; do
    p=${pids[$i]}
    for ((t = 0; t < 40; t++)); do
      kill -0 "$p" 2>/dev/null || break
      sleep 0.25
    done
    if kill -0 "$p" 2>/dev/null; then
      say "${names[$i]} ($p) did not stop on SIGTERM: killing it"
      kill -KILL "$p" 2>/dev/null || true
    fi
  done
  return 0
}
