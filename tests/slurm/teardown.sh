#!/usr/bin/env bash
# Stop the cluster tests/slurm/setup.sh started in STATE_DIR (slurmd, then slurmctld; munged
# is left running: it is harmless and may be shared) and remove its /etc/slurm/slurm.conf.
set -uo pipefail
STATE=${1:?usage: teardown.sh STATE_DIR}
for daemon in slurmd slurmctld; do
  pidfile="$STATE/$daemon.pid"
  [ -s "$pidfile" ] || continue
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
  fi
  rm -f "$pidfile"
done
# the copy setup.sh installed (never another cluster's file)
if [ -f /etc/slurm/slurm.conf ] && grep -q "^# written by tests/slurm/setup.sh" /etc/slurm/slurm.conf \
   && grep -q "^StateSaveLocation=$STATE/ctld$" /etc/slurm/slurm.conf; then
  rm -f /etc/slurm/slurm.conf
fi
echo "slurm teardown: stopped the daemons of $STATE" >&2
