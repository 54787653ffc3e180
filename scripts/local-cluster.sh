#!/usr/bin/env bash
# A cluster of N hosts on this one machine, for trying multi-node runs and for tests/multinode.sh.
# Each host (node1 ... nodeN) is a Linux network namespace with its own hostname (a UTS namespace) and
# one veth link into a bridge on a private subnet 10.213.K.0/24 (the bridge is 10.213.K.1, node I is
# 10.213.K.(10+I)); to Open MPI and Slurm they are separate nodes that talk TCP. The hosts share this
# machine's filesystem, which plays the cluster's shared filesystem. With Slurm (the default) it also
# runs munged and slurmctld here (the "login node") and one slurmd inside every host.
#
#   eval "$(scripts/local-cluster.sh start --nodes 2)"     # sets SLURM_CONF, RESNET_CLUSTER_*
#   mpirun $RESNET_CLUSTER_MPIRUN_ARGS -np 4 build/resnet_mpi --dataset fashion-mnist --epochs 1
#   sbatch -N 2 --ntasks-per-node=2 jobs/train.sbatch --dataset fashion-mnist --epochs 1
#   scripts/local-cluster.sh on node2 hostname           # run a command on a host
#   scripts/local-cluster.sh ps node2                    # the processes of a host: pid and name
#   scripts/local-cluster.sh kill-node node2             # kill every process of a host (a lost node)
#   scripts/local-cluster.sh link node2 down|up          # unplug / replug a host's network
#   scripts/local-cluster.sh status                      # hosts, daemons, node states, queue
#   scripts/local-cluster.sh stop                        # cancel jobs, stop daemons, remove it all
#
# Needs root (namespaces, links), iproute2, util-linux (unshare, nsenter) and, for Slurm, slurm-wlm and
# munge. Where namespaces cannot be made, `start` says so and exits 77. Nothing outside 10.213.K.0/24 is
# ever addressed: the hosts have no default route. Every name it creates starts with "rnm-" and carries
# K: bridge rnm-brK, namespaces rnm-K-nodeI (in /run/netns), links rnm-K-nI, UTS files in /run/rnm-K.
# Settings, all optional:
#   RESNET_CLUSTER_DIR    state folder every host sees: config, hostfile, rsh agent, Slurm state and logs
#                         (default /tmp/resnet-cluster)
#   RESNET_CLUSTER_NET    K, the subnet's third number, 1..254 (default: the first one not in use)
#   RESNET_CLUSTER_PORT   slurmctld's port (default 16917; the slurmds use the next one inside their hosts)
#   RESNET_CLUSTER_CPUS   CPUs each host offers Slurm (default: this machine's); more than the machine
#                         has lets several small jobs share the real cores
#   RESNET_CLUSTER_MEM    memory in MB each host offers (default: this machine's / N)
#   RESNET_CLUSTER_SLURM  0: hosts and mpirun only, no Slurm daemons (default 1)
#   RESNET_CLUSTER_WAIT   seconds to wait for the Slurm nodes to come up idle (default 60)
# Slurm runs as in scripts/local-slurm.sh (the settings both share: scripts/slurm-common.sh): no cgroups
# (proctrack/linuxproc, task/none), no accounting database, requeued jobs may start again after 10 s, job
# ids from the clock.
set -euo pipefail

DIR=${RESNET_CLUSTER_DIR:-/tmp/resnet-cluster}
PORT=${RESNET_CLUSTER_PORT:-16917}
WAIT=${RESNET_CLUSTER_WAIT:-60}
STATE=$DIR/cluster.env
K="" NODES=0 SLURM=1   # read from $STATE once the cluster exists
SAY_AS=local-cluster
# shellcheck source=slurm-common.sh
. "$(dirname "${BASH_SOURCE[0]}")/slurm-common.sh"

unsupported() { say "cannot make hosts here: $*"; exit 77; }

usage() {
  echo "usage: $0 start [--nodes N] | stop | status | env | on NODE CMD... | ps NODE | kill-node NODE | link NODE up|down" >&2
  exit 2
}

# --- names ---------------------------------------------------------------------------------------------
bridge() { echo "rnm-br$K"; }
netns() { echo "rnm-$K-$1"; }
uts_file() { echo "/run/rnm-$K/$1.uts"; }
host_link() { echo "rnm-$K-n${1#node}"; }
node_addr() { echo "10.213.$K.$((10 + ${1#node}))"; }
subnet() { echo "10.213.$K.0/24"; }
node_list() { local i; for ((i = 1; i <= NODES; i++)); do echo "node$i"; done; }

load_state() {
  [ -s "$STATE" ] || return 1
  K=$(sed -n 's/^K=//p' "$STATE") NODES=$(sed -n 's/^NODES=//p' "$STATE") SLURM=$(sed -n 's/^SLURM=//p' "$STATE")
  [[ "$K" =~ ^[0-9]+$ ]] && [[ "$NODES" =~ ^[0-9]+$ ]] || die "$STATE is damaged"
}

valid_node() {
  [[ "$1" =~ ^node[0-9]+$ ]] && [ "${1#node}" -ge 1 ] && [ "${1#node}" -le "$NODES" ] ||
    die "no host '$1' (hosts: $(node_list | paste -sd' ' -))"
}

# on NODE CMD...: run CMD inside the host's network and UTS namespaces (same filesystem, same user)
on() {
  local node=$1
  shift
  nsenter --net="/run/netns/$(netns "$node")" --uts="$(uts_file "$node")" -- "$@"
}

# pids_of NODE: every process in the host's network namespace
pids_of() {
  local ino p
  ino=$(stat -L -c %i "/run/netns/$(netns "$1")" 2>/dev/null) || return 0
  for p in /proc/[0-9]*; do
    [ "$(stat -L -c %i "$p/ns/net" 2>/dev/null)" = "$ino" ] && echo "${p#/proc/}"
  done
  return 0
}

kill_node() {
  local pids
  pids=$(pids_of "$1" | xargs)
  [ -n "$pids" ] || return 0
  # shellcheck disable=SC2086  # a list of pids
  kill -KILL $pids 2>/dev/null || true
  say "$1: killed $(wc -w <<<"$pids") process(es)"
}

print_env() {
  local mca
  # keepalive: a host that drops off the network is declared lost after 10 + 3 x 5 s of silence on
  # mpirun's link to it (Open MPI's default is 300 + 9 x 20 s), and the job ends instead of hanging
  mca="--mca plm_rsh_agent $DIR/bin/rsh --mca plm_rsh_no_tree_spawn 1 --mca oob_tcp_if_include $(subnet)"
  mca+=" --mca btl_tcp_if_include $(subnet) --mca oob_tcp_keepalive_time 10 --mca oob_tcp_keepalive_intvl 5"
  mca+=" --mca oob_tcp_keepalive_probes 3"
  echo "export RESNET_CLUSTER_DIR=$DIR"
  echo "export RESNET_CLUSTER_HOSTFILE=$DIR/hostfile"
  echo "export RESNET_CLUSTER_HOSTS='$(for n in $(node_list); do node_addr "$n"; done | paste -sd' ' -)'"
  echo "export RESNET_CLUSTER_MPIRUN_ARGS='--hostfile $DIR/hostfile $mca'"
  [ "$SLURM" = 1 ] && echo "export SLURM_CONF=$CONF"
  return 0
}

# --- the hosts -----------------------------------------------------------------------------------------
# claim_net: pick K (the first free one unless given) and create its bridge; creating the bridge is the
# claim, so two clusters started at once cannot take the same K
claim_net() {
  local k first=1 last=254
  if [ -n "${RESNET_CLUSTER_NET:-}" ]; then
    [[ "$RESNET_CLUSTER_NET" =~ ^[0-9]+$ ]] && [ "$RESNET_CLUSTER_NET" -ge 1 ] && [ "$RESNET_CLUSTER_NET" -le 254 ] ||
      die "RESNET_CLUSTER_NET must be 1..254, not '$RESNET_CLUSTER_NET'"
    first=$RESNET_CLUSTER_NET last=$RESNET_CLUSTER_NET
  fi
  for ((k = first; k <= last; k++)); do
    # a subnet this machine already reaches some other way is not ours to take
    ip -4 addr show | grep -q "inet 10\.213\.$k\." && continue
    ip -4 route show | grep -q "^10\.213\.$k\.\|^10\.213\.0\.0\|^10\.0\.0\.0/8" && continue
    ip netns list 2>/dev/null | grep -q "^rnm-$k-" && continue
    if ip link add "rnm-br$k" type bridge 2>/dev/null; then
      K=$k
      return 0
    fi
  done
  die "no free subnet 10.213.K.0/24 (K ${first}..${last}): stop other clusters, or set RESNET_CLUSTER_NET"
}

make_hosts() {
  local br node ns link peer
  br=$(bridge)
  # no IPv6 on the bridge and in the hosts: no router solicitations, nothing but our IPv4 subnet
  sysctl -qw "net.ipv6.conf.$br.disable_ipv6=1" 2>/dev/null || true
  ip addr add "10.213.$K.1/24" dev "$br"
  ip link set "$br" up
  mkdir -p "/run/rnm-$K"
  for node in $(node_list); do
    ns=$(netns "$node") link=$(host_link "$node") peer="rnm-$K-p${node#node}"
    ip netns add "$ns"
    touch "$(uts_file "$node")"
    unshare --uts="$(uts_file "$node")" hostname "$node"
    ip link add "$link" type veth peer name "$peer"
    ip link set "$peer" netns "$ns"
    ip link set "$link" master "$br"
    ip link set "$link" up
    on "$node" sh -c "sysctl -qw net.ipv6.conf.all.disable_ipv6=1 2>/dev/null; ip link set lo up &&
      ip link set $peer name eth0 && ip addr add $(node_addr "$node")/24 dev eth0 && ip link set eth0 up"
  done
}

write_tools() {
  local node slots=$1
  mkdir -p "$DIR/bin"
  : > "$DIR/hostfile"
  # hosts by address: mpirun looks a host name up (in DNS, here the machine's resolver), an address not
  for node in $(node_list); do echo "$(node_addr "$node") slots=$slots" >> "$DIR/hostfile"; done
  # mpirun's "ssh": enter the named host's namespaces and run the command line there
  cat > "$DIR/bin/rsh" <<EOF
#!/bin/sh
# Written by scripts/local-cluster.sh: mpirun's remote shell (--mca plm_rsh_agent) for cluster $K.
# usage: rsh [options] HOST COMMAND...   (HOST: nodeI or its address 10.213.$K.(10+I))
while [ \$# -gt 0 ]; do case "\$1" in -*) shift ;; *) break ;; esac; done
name=\$1 host=\$1
shift
case "\$host" in
  10.213.$K.[1-9][0-9]*) n=\${host#10.213.$K.}; host=node\$((n - 10)) ;;
esac
case "\$host" in node[0-9]*) ;; *) echo "rsh: unknown host '\$name'" >&2; exit 255 ;; esac
[ -e "/run/netns/rnm-$K-\$host" ] || { echo "rsh: unknown host '\$name'" >&2; exit 255; }
exec nsenter --net="/run/netns/rnm-$K-\$host" --uts="/run/rnm-$K/\$host.uts" -- /bin/sh -c "\$*"
EOF
  chmod 755 "$DIR/bin/rsh"
}

remove_hosts() {
  local node
  for node in $(node_list); do
    kill_node "$node"
  done
  # killed processes leave their namespace only once they are gone
  sleep 0.2
  for node in $(node_list); do
    ip link del "$(host_link "$node")" 2>/dev/null || true
    ip netns del "$(netns "$node")" 2>/dev/null || true
    umount "$(uts_file "$node")" 2>/dev/null || true
  done
  ip link del "$(bridge)" 2>/dev/null || true
  rm -rf "/run/rnm-$K"
}

# --- Slurm ---------------------------------------------------------------------------------------------
write_slurm_config() {
  local cpus=$1 mem=$2 node
  {
    cat <<EOF
# Written by scripts/local-cluster.sh: a $NODES-host cluster for testing. Remove with 'local-cluster.sh stop'.
ClusterName=resnet-nodes$K
SlurmctldHost=$(hostname -s)(10.213.$K.1)
# each host's own temporary folder: srun --mpi=pmix makes spmix_appdir_<uid>_<job>.<step> in it on every
# node of a step, and one folder for all would clash ("File exists") since the hosts share /tmp
TmpFS=$DIR/tmp/%n
SlurmdPidFile=$DIR/run/slurmd-%n.pid
SlurmdLogFile=$DIR/log/slurmd-%n.log
EOF
    slurm_common_config "$cpus" "$mem"
    echo "PartitionName=debug Nodes=node[1-$NODES] Default=YES MaxTime=INFINITE State=UP"
    for node in $(node_list); do
      echo "NodeName=$node NodeAddr=$(node_addr "$node") CPUs=$cpus RealMemory=$mem State=UNKNOWN"
    done
  } > "$CONF"
}

node_states() { SLURM_CONF=$CONF sinfo -h -N -o '%N %T' 2>/dev/null | sort -u; }

start_slurm() {
  local cpus=$1 mem=$2 node t states bad
  need slurmctld slurmd munged sinfo
  mkdir -p "$DIR"/{etc,state,spool,run,log,munge,munge-key}
  chmod 700 "$DIR/munge-key"
  write_slurm_config "$cpus" "$mem"
  make_munge_key "$DIR/munge-key/munge.key"
  start_munged "$DIR/munge-key/munge.key" RESNET_CLUSTER_DIR
  SLURM_CONF=$CONF slurmctld -c -f "$CONF" || { logs_tail; die "slurmctld did not start"; }
  for node in $(node_list); do
    mkdir -p "$DIR/spool/$node" "$DIR/tmp/$node"
    chmod 1777 "$DIR/tmp/$node"
    on "$node" env SLURM_CONF="$CONF" slurmd -f "$CONF" -N "$node" || { logs_tail; die "slurmd on $node did not start"; }
  done
  for ((t = 0; t < WAIT * 2; t++)); do
    states=$(node_states)
    bad=$(awk '$2 !~ /^(idle|mixed|allocated)/' <<<"$states")
    [ -n "$states" ] && [ "$(wc -l <<<"$states")" -eq "$NODES" ] && [ -z "$bad" ] && return 0
    sleep 0.5
  done
  logs_tail
  die "Slurm nodes not idle after ${WAIT}s: $(echo "$states" | paste -sd' ' -); logs in $DIR/log"
}

stop_slurm() {
  [ -f "$CONF" ] || return 0
  cancel_jobs
  end_daemons "$DIR"/run/slurmd-*.pid "$DIR/run/slurmctld.pid" "$DIR/run/munged.pid"
}

# --- commands ------------------------------------------------------------------------------------------
start() {
  local c cpus mem
  for c in ip nsenter unshare sysctl; do command -v "$c" >/dev/null || die "$c not found (apt-get install iproute2 util-linux procps)"; done
  [ "$(id -u)" -eq 0 ] || unsupported "needs root for network namespaces"
  if load_state; then
    if [ -e "/run/netns/$(netns node1)" ] && { [ "$SLURM" = 0 ] || pid_alive "$DIR/run/slurmctld.pid"; }; then
      say "already running in $DIR ($NODES hosts on $(subnet))"
      print_env
      return 0
    fi
    say "removing the remains of an earlier cluster in $DIR"
    stop >/dev/null 2>&1 || true
  fi
  # can this machine make a namespace at all? (a container without CAP_SYS_ADMIN cannot)
  unshare --net --uts true 2>/dev/null || unsupported "unshare --net --uts failed (no CAP_SYS_ADMIN?)"
  NODES=$1 SLURM=${RESNET_CLUSTER_SLURM:-1}
  cpus=${RESNET_CLUSTER_CPUS:-$(nproc)}
  mem=${RESNET_CLUSTER_MEM:-$(awk -v n="$NODES" '/^MemTotal:/ { print int($2 / 1024 / n) }' /proc/meminfo)}
  [[ "$cpus" =~ ^[1-9][0-9]*$ ]] || die "bad CPU count '$cpus'"
  [[ "$mem" =~ ^[1-9][0-9]*$ ]] || die "bad memory size '$mem'"
  # the folder is wiped: refuse one that holds anything but a cluster of ours
  if [ -d "$DIR" ] && [ -n "$(ls -A "$DIR")" ] && [ ! -f "$STATE" ]; then
    die "$DIR exists and is not a cluster folder: remove it or set RESNET_CLUSTER_DIR"
  fi
  rm -rf "$DIR"
  mkdir -p "$DIR"
  claim_net
  printf 'K=%s\nNODES=%s\nSLURM=%s\n' "$K" "$NODES" "$SLURM" > "$STATE"
  # from here on, a failure removes what was made
  trap 'say "start failed: removing what was made"; stop >/dev/null 2>&1' EXIT
  make_hosts || die "could not make the hosts"
  write_tools "$cpus"
  [ "$SLURM" = 1 ] && start_slurm "$cpus" "$mem"
  trap - EXIT
  say "up: $NODES hosts ($(node_list | paste -sd' ' -)) on $(subnet), $cpus CPUs each$([ "$SLURM" = 1 ] && echo ", Slurm on port $PORT"); state in $DIR"
  print_env
}

stop() {
  load_state || { K=${RESNET_CLUSTER_NET:-}; }
  [ -n "$K" ] || { say "nothing to stop in $DIR"; return 0; }
  [ "$NODES" -gt 0 ] || NODES=$(ip netns list 2>/dev/null | sed -n "s/^rnm-$K-node\([0-9]*\).*/\1/p" | sort -n | tail -n 1)
  NODES=${NODES:-0}
  stop_slurm
  remove_hosts
  [ -f "$STATE" ] && rm -rf "$DIR"
  say "stopped; removed the hosts of 10.213.$K.0/24 and $DIR"
}

status() {
  load_state || { say "no cluster in $DIR"; return 1; }
  local node up=0
  for node in $(node_list); do
    if [ -e "/run/netns/$(netns "$node")" ]; then
      say "$node $(node_addr "$node"): link $(on "$node" cat /sys/class/net/eth0/operstate 2>/dev/null || echo gone), $(pids_of "$node" | wc -l) process(es)"
      up=$((up + 1))
    else
      say "$node: gone"
    fi
  done
  if [ "$SLURM" = 1 ]; then
    pid_alive "$DIR/run/slurmctld.pid" && say "slurmctld running" || say "slurmctld not running"
    SLURM_CONF=$CONF sinfo -N >&2 2>/dev/null || true
    SLURM_CONF=$CONF squeue >&2 2>/dev/null || true
  fi
  [ "$up" -eq "$NODES" ] || return 1
  print_env
}

[ $# -ge 1 ] || usage
cmd=$1
shift
case "$cmd" in
  start)
    nodes=2
    while [ $# -gt 0 ]; do
      case "$1" in
        --nodes) [ $# -ge 2 ] || usage; nodes=$2; shift 2 ;;
        --nodes=*) nodes=${1#--nodes=}; shift ;;
        *) usage ;;
      esac
    done
    [[ "$nodes" =~ ^[1-9][0-9]?$ ]] || die "--nodes must be 1..99, not '$nodes'"
    start "$nodes" ;;
  stop) [ $# -eq 0 ] || usage; stop ;;
  status) [ $# -eq 0 ] || usage; status ;;
  env) load_state || die "no cluster in $DIR"; print_env ;;
  on)
    [ $# -ge 2 ] || usage
    load_state || die "no cluster in $DIR"
    valid_node "$1"
    on "$@" ;;
  ps)
    [ $# -eq 1 ] || usage
    load_state || die "no cluster in $DIR"
    valid_node "$1"
    for p in $(pids_of "$1"); do echo "$p $(cat "/proc/$p/comm" 2>/dev/null)"; done ;;
  kill-node)
    [ $# -eq 1 ] || usage
    load_state || die "no cluster in $DIR"
    valid_node "$1"
    kill_node "$1" ;;
  link)
    [ $# -eq 2 ] || usage
    load_state || die "no cluster in $DIR"
    valid_node "$1"
    case "$2" in up | down) ip link set "$(host_link "$1")" "$2" ;; *) usage ;; esac
    say "$1: link $2" ;;
  *) usage ;;
esac
