#!/usr/bin/env bash
# A throwaway Slurm cluster on this machine, for tests and trying `python -m pipeline submit` (run as root).
#
#   slurm/local_cluster.sh start [--nodes 1|2] [--dir DIR]   # prints: export SLURM_CONF=DIR/slurm.conf
#   slurm/local_cluster.sh status [--dir DIR]
#   slurm/local_cluster.sh stop [--dir DIR]
#
# munge (with /etc/munge/munge.key, created if missing), one slurmctld and one slurmd per node (n1, n2 on ports
# 17001/17002 of 127.0.0.1, 2 CPUs each), state, spool, logs and pid files under DIR (default
# /tmp/slurm-local). Node names must resolve (Lightning takes MASTER_ADDR from SLURM_NODELIST): "127.0.0.1 n1"
# and "127.0.0.1 n2" are added to /etc/hosts if missing. JobRequeue=1; a requeued job waits only
# cred_expire=10 s (default 120 s) and the scheduler looks every 2 s (default 60 s), so it restarts in ~15 s.
# `stop` ends the daemons by the pids in their pid files, never by name; munged only if this script started it.
set -euo pipefail

cmd="${1:-}"
shift || true
NODES=2
DIR=/tmp/slurm-local
while [ $# -gt 0 ]; do
  case "$1" in
    --nodes) NODES="$2"; shift 2 ;;
    --dir) DIR="$2"; shift 2 ;;
    *) echo "error: unknown argument $1" >&2; exit 2 ;;
  esac
done
case "$NODES" in 1|2) ;; *) echo "error: --nodes must be 1 or 2" >&2; exit 2 ;; esac
CONF="$DIR/slurm.conf"
export SLURM_CONF="$CONF"

need() { command -v "$1" >/dev/null 2>&1 || { echo "error: $1 not found (apt-get install -y slurmctld slurmd slurm-client munge)" >&2; exit 1; }; }

stop_pidfile() {  # stop_pidfile FILE: TERM the process named in FILE, wait up to 10 s, then KILL
  local f="$1" pid
  [ -f "$f" ] || return 0
  pid="$(cat "$f" 2>/dev/null || true)"
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

start_munge() {
  if [ ! -s /etc/munge/munge.key ]; then
    mkdir -p /etc/munge
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
  fi
  chown munge:munge /etc/munge/munge.key
  chmod 400 /etc/munge/munge.key
  if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    return 0  # already running (ours from an earlier start, or the system's)
  fi
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge
  rm -f /run/munge/munged.pid
  runuser -u munge -- munged --pid-file=/run/munge/munged.pid
  for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
  cp /run/munge/munged.pid "$DIR/munged.pid"  # ours: `stop` ends it
}

add_hosts() {
  local n
  for n in $(seq "$NODES"); do
    grep -Eq "^[^#]*[[:space:]]n$n([[:space:]]|\$)" /etc/hosts || echo "127.0.0.1 n$n" >> /etc/hosts
  done
}

write_conf() {
  local host n
  host="$(hostname -s)"
  mkdir -p "$DIR/state" "$DIR/log"
  cat > "$CONF" <<EOF
ClusterName=local
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=16817
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=cred_expire=10
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/builtin
SchedulerParameters=sched_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
JobRequeue=1
KillWait=5
MinJobAge=600
InactiveLimit=0
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/%n
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd-%n.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd-%n.log
EOF
  for n in $(seq "$NODES"); do
    mkdir -p "$DIR/spool/n$n"
    echo "NodeName=n$n NodeHostname=$host NodeAddr=127.0.0.1 Port=$((17000 + n)) CPUs=2 State=UNKNOWN" >> "$CONF"
  done
  echo "PartitionName=debug Nodes=n[1-$NODES] Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO" >> "$CONF"
  echo "$NODES" > "$DIR/nodes"
}

wait_idle() {
  local want="$1" idle
  for _ in $(seq 150); do
    idle="$(sinfo -h -N -o '%N %t' 2>/dev/null | grep -c ' idle' || true)"
    [ "$idle" -ge "$want" ] && return 0
    sleep 0.2
  done
  echo "error: nodes did not come up; see $DIR/log" >&2
  sinfo -N >&2 || true
  return 1
}

case "$cmd" in
  start)
    need slurmctld; need slurmd; need sbatch; need munged
    if [ -f "$DIR/slurmctld.pid" ] && kill -0 "$(cat "$DIR/slurmctld.pid")" 2>/dev/null; then
      echo "error: a cluster already runs from $DIR (slurm/local_cluster.sh stop --dir $DIR)" >&2; exit 1
    fi
    mkdir -p "$DIR"
    start_munge
    add_hosts
    write_conf
    slurmctld -c -f "$CONF"
    for n in $(seq "$NODES"); do slurmd -N "n$n" -f "$CONF" 2>>"$DIR/log/slurmd-start.log"; done
    wait_idle "$NODES"
    echo "export SLURM_CONF=$CONF"
    ;;
  stop)
    for f in "$DIR"/slurmd-*.pid; do [ -e "$f" ] && stop_pidfile "$f"; done
    stop_pidfile "$DIR/slurmctld.pid"
    stop_pidfile "$DIR/munged.pid"  # only there when this script started munged
    echo "stopped the cluster in $DIR"
    ;;
  status)
    if [ -f "$DIR/slurmctld.pid" ] && kill -0 "$(cat "$DIR/slurmctld.pid")" 2>/dev/null; then
      echo "export SLURM_CONF=$CONF"
      sinfo -N
      squeue
    else
      echo "no cluster running from $DIR"; exit 1
    fi
    ;;
  *)
    echo "usage: $0 start|stop|status [--nodes 1|2] [--dir DIR]" >&2; exit 2 ;;
esac
