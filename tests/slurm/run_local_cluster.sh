#!/usr/bin/env bash
# A real one-node SLURM cluster on localhost (Debian's slurmctld/slurmd/munge, one fake GPU gres),
# the tiny pipeline run through workflow/profiles/slurm with Snakemake's SLURM executor, and checks:
#   * every job of the DAG went through sbatch (job ids in Snakemake's log and in slurmctld's log);
#   * the tables (sprites, smmnist: table1; fsdd: table3) equal those of a local run of the same configuration.
# Every daemon started here is stopped by PID on exit, also on failure; every wait has a hard timeout, and the
# SLURM run stops early, saying why, once no job has been queued or running and Snakemake's log has not moved
# for $STALL_S seconds (a status query that no longer sees finished jobs).
# Needs root (writes /etc/slurm/) and $S3VAE_DATA_MIRROR; run by .ci/run after the tests.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
WORK="$(mktemp -d /tmp/s3vae-slurm.XXXXXX)"
PIDS=()
cleanup() {
  local rc=$?
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  sleep 1
  for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  if [ $rc -ne 0 ]; then
    echo "--- slurmctld log (tail) ---"; tail -n 30 "$WORK/slurmctld.log" 2>/dev/null || true
    echo "--- slurmd log (tail) ---"; tail -n 30 "$WORK/slurmd.log" 2>/dev/null || true
  fi
  exit $rc
}
trap cleanup EXIT
t_start=$(date +%s)

# 1. packages (Debian) and the executor plugin (PyPI)
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  timeout 600 apt-get update -qq
  timeout 600 apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
fi
timeout 300 "$PY" -m pip install -q "snakemake-executor-plugin-slurm>=2.7.1,<3"

# 2. munge
mkdir -p "$WORK/munge" && chmod 700 "$WORK/munge"
mungekey --create --keyfile="$WORK/munge/munge.key" --force
chmod 400 "$WORK/munge/munge.key"
SOCK="$WORK/munge/munge.socket"
munged -F --force --key-file="$WORK/munge/munge.key" --socket="$SOCK" --pid-file="$WORK/munge/munged.pid" \
  --seed-file="$WORK/munge/seed" --log-file="$WORK/munge/munged.log" &
PIDS+=($!)

# 3. slurm.conf at /etc/slurm (the executor's job step clears SLURM_CONF)
mkdir -p /etc/slurm "$WORK/spool/ctld" "$WORK/spool/d"
[ -f /etc/slurm/slurm.conf ] && cp /etc/slurm/slurm.conf "$WORK/slurm.conf.orig"
cat > /etc/slurm/slurm.conf <<CONF
ClusterName=s3vae-test
SlurmctldHost=localhost
AuthType=auth/munge
AuthInfo=socket=$SOCK
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MinJobAge=300
ReturnToService=2
GresTypes=gpu
StateSaveLocation=$WORK/spool/ctld
SlurmdSpoolDir=$WORK/spool/d
SlurmctldPidFile=$WORK/slurmctld.pid
SlurmdPidFile=$WORK/slurmd.pid
SlurmctldLogFile=$WORK/slurmctld.log
SlurmdLogFile=$WORK/slurmd.log
SlurmctldDebug=info
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$(nproc) RealMemory=16000 Gres=gpu:1 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF
echo "NodeName=localhost Name=gpu File=/dev/null Count=1" > /etc/slurm/gres.conf
slurmctld -D -i &
PIDS+=($!)
slurmd -D -N localhost &
PIDS+=($!)
for i in $(seq 1 60); do
  if sinfo -h -o '%t' 2>/dev/null | grep -qE '^(idle|mix)'; then break; fi
  [ "$i" = 60 ] && { echo "error: the node did not come up"; sinfo || true; exit 1; }
  sleep 1
done
echo "cluster up: $(sinfo -h -o '%P %t %G')"

# 4. the tiny pipeline, locally and through SLURM, in two copies of the workflow
for d in local slurm; do
  mkdir -p "$WORK/$d"
  cp -r "$ROOT/Snakefile" "$ROOT/workflow" "$ROOT/config" "$WORK/$d/"
  cp "$ROOT/tests/tiny_config.yaml" "$WORK/$d/tiny.yaml"
done
SMK=("$PY" -m snakemake --configfile tiny.yaml)
(cd "$WORK/local" && timeout -s KILL 1200 "${SMK[@]}" --cores 2 > "$WORK/local.log" 2>&1)
t_slurm=$(date +%s)
# This cluster has no accounting database, so a real sacct never sees a finished job. The profile asks for
# squeue; the plugin still falls back to sacct when it cannot read MinJobAge (scontrol slow or failing), so
# here sacct answers the plugin's query (--name, "id|state" lines) from slurmctld's queue.
mkdir -p "$WORK/bin"
cat > "$WORK/bin/sacct" <<'SHIM'
#!/bin/sh
name=""
while [ $# -gt 0 ]; do case "$1" in --name) name="$2"; shift ;; --name=*) name="${1#--name=}" ;; esac; shift; done
exec squeue --states=all --noheader --format='%i|%T' ${name:+--name "$name"}
SHIM
chmod +x "$WORK/bin/sacct"
# the test cluster has one partition; threads as in the local run so that the numbers can be equal
(cd "$WORK/slurm" && PATH="$WORK/bin:$PATH" exec timeout -s KILL 2700 "${SMK[@]}" \
  --workflow-profile "$ROOT/workflow/profiles/slurm" \
  --slurm-no-account --slurm-init-seconds-before-status-checks 1 \
  --default-resources slurm_partition=debug mem_mb=1000 runtime=30 \
  --set-resources train_model:slurm_partition=debug train_judge:slurm_partition=debug \
    evaluate_model:slurm_partition=debug evaluate_verification:slurm_partition=debug \
    train_mocogan:slurm_partition=debug train_monkeynet:slurm_partition=debug train_fhvae:slurm_partition=debug \
    train_model:mem_mb=2000 train_judge:mem_mb=2000 evaluate_model:mem_mb=2000 evaluate_verification:mem_mb=2000 \
    train_mocogan:mem_mb=2000 train_monkeynet:mem_mb=2000 train_fhvae:mem_mb=2000 \
    compute_flow_labels:mem_mb=1000 compute_landmark_labels:mem_mb=1000 compute_silence_labels:mem_mb=1000 \
  --set-threads train_model=1 train_judge=1 evaluate_model=1 evaluate_verification=1 train_mocogan=1 \
    train_monkeynet=1 train_fhvae=1 --jobs 4 \
  > "$WORK/slurm.log" 2>&1) &
SMK_PID=$!
PIDS+=($SMK_PID)
"$ROOT/tests/slurm/watch_run.sh" "$SMK_PID" "$WORK/slurm.log" "${STALL_S:-300}"
wait "$SMK_PID" || { tail -n 60 "$WORK/slurm.log"; exit 1; }
t_end=$(date +%s)

# 5. checks
# every finished job but the target rule `all` (run in the main process) must have been a SLURM job
n_remote=$(grep -E 'Finished jobid: [0-9]+ \(Rule: ' "$WORK/slurm.log" | grep -vc 'Rule: all)' || true)
# a job is started by the main scheduler ("sched: Allocate JobId=N") or by the backfill scheduler
# ("sched/backfill: _start_job: Started JobId=N"); count the distinct jobs slurmctld saw complete with exit 0
n_allocated=$(grep -oE '_job_complete: JobId=[0-9]+ WEXITSTATUS 0' "$WORK/slurmctld.log" | sort -u | wc -l)
echo "jobs finished (without all): $n_remote; jobs completed with exit 0 in slurmctld: $n_allocated"
grep -E 'SLURM (run|job) ?ID|slurm jobid|jobid [0-9]+' "$WORK/slurm.log" | head -3 || true
if [ "$n_remote" -lt 10 ] || [ "$n_allocated" -ne "$n_remote" ]; then
  echo "error: expected each of the >= 10 jobs to be one SLURM allocation"; exit 1
fi
for table in sprites/table1.csv smmnist/table1.csv fsdd/table3.csv; do
  if ! cmp "$WORK/local/results/$table" "$WORK/slurm/results/$table"; then
    echo "error: $table differs between the local and the SLURM run"
    diff "$WORK/local/results/$table" "$WORK/slurm/results/$table" || true
    exit 1
  fi
done
echo "SLURM test passed: $n_remote jobs through sbatch, tables identical to the local run;" \
  "SLURM run $((t_end - t_slurm)) s, whole test $((t_end - t_start)) s"
[ -f "$WORK/slurm.conf.orig" ] && cp "$WORK/slurm.conf.orig" /etc/slurm/slurm.conf
exit 0
