#!/usr/bin/env bash
# A single-node Slurm cluster on 127.0.0.1 for `make test-slurm`: Debian's slurm-wlm daemons
# (slurmctld + slurmd) and a munge daemon of its own, all configured and kept under one state folder,
# so nothing of the system's own Slurm or munge set-up is used or changed.
#
#   tests/slurm/cluster.sh start [STATE]   # prints `export SLURM_CONF=...` once the node is idle
#   tests/slurm/cluster.sh stop [STATE]
#
# Needs root (slurmd starts jobs as their user) and the packages slurmctld, slurmd, slurm-client, munge
# (apt-get install slurmctld slurmd slurm-client munge). STATE defaults to /tmp/harness-slurm.
set -euo pipefail
action=${1:?usage: cluster.sh start|stop [STATE]}
state=${2:-/tmp/harness-slurm}
conf=$state/slurm.conf

stop() {
  for daemon in slurmd slurmctld munged; do
    if [[ -f $state/$daemon.pid ]]; then
      local pid
      pid=$(cat "$state/$daemon.pid")
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 20); do  # slurmctld saves its state before it exits; a restart needs its port
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.5
      done
      rm -f "$state/$daemon.pid"
    fi
  done
}

start() {
  for tool in munged mungekey slurmctld slurmd sinfo; do
    command -v "$tool" >/dev/null || { echo "cluster.sh: $tool not found; install: apt-get install slurmctld slurmd slurm-client munge" >&2; exit 2; }
  done
  [[ $(id -u) == 0 ]] || { echo "cluster.sh: slurmd needs root" >&2; exit 2; }
  stop
  mkdir -p "$state"/{munge,ctld,spool,log}
  chmod 700 "$state/munge"
  [[ -f $state/munge/munge.key ]] || mungekey --create --keyfile="$state/munge/munge.key"
  munged --key-file="$state/munge/munge.key" --socket="$state/munge/munge.socket" \
         --pid-file="$state/munged.pid" --log-file="$state/log/munged.log" --seed-file="$state/munge/seed" --force
  local host memory
  host=$(hostname -s)
  memory=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 8 / 10 ))
  cat > "$conf" <<CONF
ClusterName=harness
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
AuthInfo=socket=$state/munge/munge.socket
CredType=cred/munge
StateSaveLocation=$state/ctld
SlurmdSpoolDir=$state/spool
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd.pid
SlurmctldLogFile=$state/log/slurmctld.log
SlurmdLogFile=$state/log/slurmd.log
SlurmctldPort=16817
SlurmdPort=16818
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
NodeName=$host NodeAddr=127.0.0.1 CPUs=$(nproc) RealMemory=$memory State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
  export SLURM_CONF=$conf
  slurmctld -f "$conf"
  slurmd -f "$conf"
  for _ in $(seq 60); do
    if sinfo -h -o %t 2>/dev/null | grep -qx idle; then
      echo "export SLURM_CONF=$conf"
      return 0
    fi
    sleep 1
  done
  echo "cluster.sh: the node did not come up; logs in $state/log" >&2
  stop
  exit 1
}

case $action in
  start) start ;;
  stop) stop ;;
  *) echo "cluster.sh: unknown action '$action'; valid: start, stop" >&2; exit 2 ;;
esac
