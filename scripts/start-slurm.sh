#!/usr/bin/env bash
# Installs Slurm and munge from Debian's packages (if absent) and starts a single-node cluster on loopback:
# munged, slurmctld and slurmd, one partition `debug` holding this machine's CPUs. Used by .ci/run for the
# test that submits a grid through `harness slurm --submit`. Prints the partition name.
set -euo pipefail
DIR=${SLURM_TEST_DIR:-/tmp/harness-slurm}
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null) >&2
fi
HOST=$(hostname -s)
CPUS=$(nproc)
MEM=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 / 2 ))
mkdir -p "$DIR/state" "$DIR/spool" "$DIR/log" /run/munge /var/log/munge /var/lib/munge
if ! pgrep -x munged >/dev/null; then
  [ -s /etc/munge/munge.key ] || mungekey --create >/dev/null 2>&1 || \
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 2>/dev/null
  chown -R munge:munge /etc/munge /run/munge /var/log/munge /var/lib/munge 2>/dev/null || true
  chmod 400 /etc/munge/munge.key
  runuser -u munge -- munged >&2
fi
cat > /etc/slurm/slurm.conf <<CONF
ClusterName=harness
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
ReturnToService=2
SlurmdParameters=config_overrides
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
CONF
if ! scontrol ping 2>/dev/null | grep -q "is UP"; then
  slurmctld >&2
fi
if ! pgrep -x slurmd >/dev/null; then
  slurmd >&2
fi
for _ in $(seq 60); do
  if sinfo -h -o %T 2>/dev/null | grep -qE "^(idle|mixed|allocated)"; then
    echo debug
    exit 0
  fi
  scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true
  sleep 1
done
echo "slurm did not come up; see $DIR/log" >&2
sinfo >&2 || true
exit 1
