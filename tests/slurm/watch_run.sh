#!/usr/bin/env bash
# watch_run.sh PID LOG [STALL_S]: wait while process PID (Snakemake driving SLURM) runs; once no SLURM job has
# been queued or running and LOG has not grown for STALL_S seconds (default 300), say so, stop PID and its
# children, cancel this user's jobs and exit 1 (a status query that no longer sees finished jobs would
# otherwise keep Snakemake waiting until the hard timeout). Exit 0 when PID ends by itself.
set -uo pipefail
pid=$1 log=$2 stall=${3:-300} poll=${POLL_S:-10}
last_move=$(date +%s) last_size=-1
while kill -0 "$pid" 2>/dev/null; do
  sleep "$poll"
  size=$(stat -c %s "$log" 2>/dev/null || echo 0)
  live=$( (squeue -h -t PENDING,RUNNING,CONFIGURING,COMPLETING -o '%i' 2>/dev/null || true) | wc -l)
  if [ "$size" != "$last_size" ] || [ "$live" -gt 0 ]; then last_move=$(date +%s) last_size=$size; fi
  if [ $(( $(date +%s) - last_move )) -ge "$stall" ]; then
    echo "error: the SLURM run stalled: no job queued or running and no new line in $log for $stall s," \
      "so Snakemake's job status queries no longer see finished jobs (workflow/profiles/slurm:" \
      "slurm-status-command; docs/troubleshooting.md). slurmctld's queue:"
    squeue -h -t all -o '%i %j %T' 2>/dev/null || true
    tail -n 30 "$log" 2>/dev/null || true
    pkill -TERM -P "$pid" 2>/dev/null; kill -TERM "$pid" 2>/dev/null; sleep 5
    pkill -KILL -P "$pid" 2>/dev/null; kill -KILL "$pid" 2>/dev/null
    timeout 10 scancel -u "$(id -un)" 2>/dev/null
    exit 1
  fi
done
exit 0
