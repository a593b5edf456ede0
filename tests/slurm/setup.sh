#!/usr/bin/env bash
# Start a throwaway one-node SLURM cluster on this machine, for tests/test_slurm.py.
#
#   tests/slurm/setup.sh STATE_DIR     # prints SLURM_CONF=/etc/slurm/slurm.conf when ready
#   tests/slurm/teardown.sh STATE_DIR
#
# Installs Debian's slurm-wlm and munge when missing (needs root and apt), writes a slurm.conf
# for localhost into STATE_DIR, starts munged (if not running), slurmctld and slurmd, and waits until
# the node is idle. No accounting daemon (jobs are seen with squeue; finished jobs are also
# written to STATE_DIR/jobcomp.log), no cgroups (containers usually lack them).
# It also copies that slurm.conf to /etc/slurm/slurm.conf (see below; teardown removes it).
# Exit status: 0 ready; 3 the packages cannot be installed here; 4 /etc/slurm/slurm.conf is
# another cluster's; 1 any other failure.
set -euo pipefail

STATE=${1:?usage: setup.sh STATE_DIR}
mkdir -p "$STATE"
STATE=$(cd "$STATE" && pwd)
CTLD_PORT=${SLURMCTLD_PORT:-6817}
SLURMD_PORT=${SLURMD_PORT:-6818}

log() { echo "slurm setup: $*" >&2; }

# ---------------------------------------------------------------- packages
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null \
   || ! command -v sbatch >/dev/null; then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    log "slurm-wlm/munge missing and no root apt-get to install them"; exit 3
  fi
  log "installing slurm-wlm and munge (apt)"
  export DEBIAN_FRONTEND=noninteractive
  if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends slurm-wlm munge; } \
       >"$STATE/apt.log" 2>&1; then
    log "apt-get install failed:"; tail -5 "$STATE/apt.log" >&2; exit 3
  fi
fi

# ---------------------------------------------------------------- munge
if ! munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
  if [ ! -s /etc/munge/munge.key ]; then
    log "creating /etc/munge/munge.key"
    mkdir -p /etc/munge
    if command -v mungekey >/dev/null; then mungekey --create --force; \
    else dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null; fi
    chown munge:munge /etc/munge/munge.key 2>/dev/null || true
    chmod 0400 /etc/munge/munge.key
  fi
  install -d -o munge -g munge -m 0755 /run/munge
  install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge
  log "starting munged"
  if id munge >/dev/null 2>&1; then runuser -u munge -- /usr/sbin/munged; else /usr/sbin/munged --force; fi
  for _ in $(seq 50); do munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
  munge -n </dev/null | unmunge >/dev/null || { log "munged does not answer"; exit 1; }
fi

# ---------------------------------------------------------------- earlier clusters of this script
ETC_CONF=/etc/slurm/slurm.conf
MARK="# written by tests/slurm/setup.sh"
if [ -e "$ETC_CONF" ] && ! grep -q "^$MARK" "$ETC_CONF"; then
  log "$ETC_CONF belongs to another cluster: not replacing it"; exit 4
fi
if [ -e "$ETC_CONF" ]; then  # a cluster of ours left running (e.g. a killed test): stop it
  old_state=$(sed -n 's|^StateSaveLocation=\(.*\)/ctld$|\1|p' "$ETC_CONF")
  [ -n "$old_state" ] && "$(dirname "$0")/teardown.sh" "$old_state" >/dev/null 2>&1 || true
fi
"$(dirname "$0")/teardown.sh" "$STATE" >/dev/null 2>&1 || true

# ---------------------------------------------------------------- slurm.conf
HOST=$(hostname -s)
CPUS=$(nproc)
# slurmd drains a node that claims more memory than it has: stay under the real total
MEM=$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)
mkdir -p "$STATE/ctld" "$STATE/spool"
cat >"$STATE/slurm.conf" <<CONF
$MARK: a throwaway one-node cluster on $HOST
ClusterName=asknlearn-test
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# no cgroups, no accounting daemon
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$STATE/jobcomp.log
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
# schedule pending jobs within seconds (the defaults wait up to a minute between passes)
SchedulerParameters=sched_interval=2,bf_interval=2
MpiDefault=none
SwitchType=switch/none
PropagateResourceLimits=NONE
ReturnToService=2
# finished jobs stay visible to squeue for 5 minutes (the executor's status checks need >= 120 s)
MinJobAge=300
# a job that asks no memory gets this much per CPU (not the whole node)
DefMemPerCPU=1000
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
CONF
# The executor plugin strips SLURM_* variables (SLURM_CONF too) from the jobs it starts, so
# srun inside a job reads the compiled-in path: install the file there, unless a real
# cluster's configuration is already in place.
mkdir -p /etc/slurm
cp "$STATE/slurm.conf" "$ETC_CONF"
export SLURM_CONF="$ETC_CONF"

# ---------------------------------------------------------------- daemons
log "starting slurmctld and slurmd ($STATE)"
/usr/sbin/slurmctld -f "$SLURM_CONF" -i   # -i: ignore state left by an earlier cluster
/usr/sbin/slurmd -f "$SLURM_CONF" -N "$HOST"
for _ in $(seq 120); do
  state=$(sinfo -h -n "$HOST" -o %T 2>/dev/null || true)
  case "$state" in idle*|mixed*|allocated*) break ;; esac
  sleep 0.5
done
if ! [[ "${state:-}" =~ ^(idle|mixed|allocated) ]]; then
  log "node $HOST is not idle (state: '${state:-?}')"
  tail -20 "$STATE/slurmctld.log" "$STATE/slurmd.log" >&2 || true
  exit 1
fi
log "node $HOST is $state"
echo "SLURM_CONF=$SLURM_CONF"
