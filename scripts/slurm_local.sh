#!/usr/bin/env bash
# A single-node Slurm cluster on this machine, for the integration test of `attnbench run --executor slurm`
# (tests/engine/test_engine_slurm.py) and for trying the cluster path without a cluster.
#
#   bash scripts/slurm_local.sh            # install (Debian: slurm-wlm, munge) if missing, configure, start
#   bash scripts/slurm_local.sh --stop     # stop the daemons this script started
#   eval "$(bash scripts/slurm_local.sh --env)"   # export SLURM_CONF for sbatch/squeue/scancel in this shell
#
# What it does: writes $ATTNBENCH_SLURM_DIR/slurm.conf (default /tmp/attnbench-slurm) describing one node (this
# host, all its CPUs and memory, no GPUs) in one partition `debug`, without accounting (no slurmdbd); starts
# munged (the authentication daemon Slurm requires), then slurmctld and slurmd, and waits until the node accepts
# jobs. It is idempotent: daemons already answering are left running. Needs root (it starts system daemons).
# The configuration is not written to /etc/slurm, so a real Slurm installation on the machine is not touched;
# every Slurm command must see SLURM_CONF (the --env line above; the test sets it itself).
set -euo pipefail

DIR=${ATTNBENCH_SLURM_DIR:-/tmp/attnbench-slurm}
CONF=$DIR/slurm.conf
CTLD_PORT=${ATTNBENCH_SLURM_PORT:-6817}
SLURMD_PORT=$((CTLD_PORT + 1))
export SLURM_CONF=$CONF

if [ "${1:-}" = "--env" ]; then
    echo "export SLURM_CONF=$CONF"
    exit 0
fi

stop_pidfile() {
    local f=$1
    if [ -s "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null; then
        kill "$(cat "$f")" && echo "[slurm_local] stopped $(basename "$f" .pid)"
    fi
}

if [ "${1:-}" = "--stop" ]; then
    stop_pidfile "$DIR/slurmd.pid"
    stop_pidfile "$DIR/slurmctld.pid"
    stop_pidfile "$DIR/munged.pid"
    exit 0
fi

if [ "$(id -u)" != 0 ]; then
    echo "[slurm_local] needs root (it starts munged, slurmctld and slurmd)" >&2
    exit 1
fi

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    if ! command -v apt-get >/dev/null; then
        echo "[slurm_local] slurmctld/munged missing and no apt-get to install slurm-wlm and munge" >&2
        exit 1
    fi
    echo "[slurm_local] installing slurm-wlm and munge"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq slurm-wlm munge >/dev/null
fi

# every CPU of the machine: GNU nproc lowers its answer to OMP_NUM_THREADS, which test runs set to 1, and a
# one-CPU node leaves a two-task job pending forever (reason PartitionConfig)
CPUS=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)
if scontrol ping 2>/dev/null | grep -q "is UP" && sinfo -h -o %T 2>/dev/null | grep -qE "idle|mixed|alloc"; then
    if grep -q "CPUs=$CPUS " "$CONF" 2>/dev/null; then
        echo "[slurm_local] already running (SLURM_CONF=$CONF)"
        exit 0
    fi
    echo "[slurm_local] running with another CPU count than this machine's $CPUS: restarting"
fi

mkdir -p "$DIR/ctld" "$DIR/spool" "$DIR/log" /run/munge
NODE=$(hostname -s)
MEM_MB=$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.8}' /proc/meminfo)

# munge: the key is made by the package; the daemon runs as the munge user
if [ ! -s /etc/munge/munge.key ]; then
    mungekey --create >/dev/null 2>&1 || dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
fi
chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge 2>/dev/null || true
chmod 0700 /etc/munge && chmod 0600 /etc/munge/munge.key
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    runuser -u munge -- munged --force
    pgrep -n -x munged >"$DIR/munged.pid" || true   # for --stop
    for _ in $(seq 20); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.25; done
fi

cat >"$CONF" <<EOF
# Written by scripts/slurm_local.sh: one node ($NODE), one partition, no accounting.
ClusterName=attnbench-local
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$DIR/ctld
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
MinJobAge=300
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF

stop_pidfile "$DIR/slurmd.pid"
stop_pidfile "$DIR/slurmctld.pid"
sleep 0.5
slurmctld -c -f "$CONF"   # -c: a clean start (no jobs from an older state)
slurmd -f "$CONF"

for _ in $(seq 60); do
    if sinfo -h -o %T 2>/dev/null | grep -qE "idle|mixed|alloc"; then
        echo "[slurm_local] up: node $NODE, $CPUS CPUs, ${MEM_MB} MB, partition debug (SLURM_CONF=$CONF)"
        exit 0
    fi
    scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true
    sleep 0.5
done
echo "[slurm_local] the node did not come up; see $DIR/log/slurmctld.log and $DIR/log/slurmd.log" >&2
sinfo >&2 || true
exit 1
