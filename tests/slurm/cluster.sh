#!/usr/bin/env bash
# A throw-away single-node Slurm cluster under one folder, for tests:
#   tests/slurm/cluster.sh start DIR   # writes DIR/env (source it), starts munged, slurmctld, slurmd
#   tests/slurm/cluster.sh stop DIR    # stops the daemons it started (by their pids in DIR), only those
# DIR must not contain spaces (slurm.conf cannot quote them).
# Needs Debian's slurmctld, slurmd, slurm-client and munge (tests/slurm/cluster.sh install, as root).
# The node has this machine's CPUs and two GPUs as generic resources (GRES, Gres=gpu:2, with
# stand-in device files: Slurm hands out their indices as on a GPU node; nothing runs on them).
# Partitions: `main` (default, preemptable: PreemptMode=REQUEUE, GraceTime=0), `grace`
# (preemptable with GraceTime=20 s, PreemptMode=CANCEL) and `urgent` (higher PriorityTier,
# preempts both). MaxJobCount=20000 (each array task counts; the default 10 000 would not take a
# 10 000-point grid beside the finished jobs Slurm still lists). Ports 16817/16818 and a private munge socket keep it apart
# from any system Slurm.
set -euo pipefail

cmd=${1:?usage: cluster.sh install | start DIR | stop DIR}

pids_of() { cat "$1"/pids/*.pid 2>/dev/null || true; }

stop() {
  local dir=$1 p
  [ -d "$dir/pids" ] || return 0
  for name in slurmd slurmctld munged; do
    p=$(cat "$dir/pids/$name.pid" 2>/dev/null || true)
    [ -n "$p" ] && kill -TERM "$p" 2>/dev/null || true
  done
  for _ in $(seq 50); do
    local alive=0
    for p in $(pids_of "$dir"); do kill -0 "$p" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for p in $(pids_of "$dir"); do kill -KILL "$p" 2>/dev/null || true; done
  rm -f "$dir"/pids/*.pid
}

case "$cmd" in
  install)
    have() { command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null && command -v munged >/dev/null; }
    have && exit 0
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        slurmctld slurmd slurm-client munge >/dev/null
    else
      echo "Slurm is missing: install slurmctld slurmd slurm-client munge (Debian packages; needs root)" >&2
      exit 1
    fi ;;
  start)
    dir=$(realpath -m "${2:?usage: cluster.sh start DIR}")
    mkdir -p "$dir"/{state,spool,log,pids,munge}
    chmod 700 "$dir/munge"
    host=$(hostname -s)
    cpus=$(nproc)
    dd if=/dev/urandom bs=1 count=1024 of="$dir/munge/munge.key" status=none
    chmod 400 "$dir/munge/munge.key"
    cat > "$dir/slurm.conf" <<CONF
ClusterName=tasertest
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=16817
SlurmdPort=16818
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.socket,cred_expire=10
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/log/slurmctld.pidfile
SlurmdPidFile=$dir/log/slurmd.pidfile
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1
GresTypes=gpu
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
KillWait=15
MinJobAge=600
MaxJobCount=20000
InactiveLimit=0
SlurmdTimeout=60
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus Gres=gpu:2 State=UNKNOWN
PartitionName=main Nodes=$host Default=YES MaxTime=INFINITE State=UP PriorityTier=1 PreemptMode=REQUEUE GraceTime=0
PartitionName=grace Nodes=$host MaxTime=INFINITE State=UP PriorityTier=1 PreemptMode=CANCEL GraceTime=20
PartitionName=urgent Nodes=$host MaxTime=INFINITE State=UP PriorityTier=2 PreemptMode=OFF
CONF
    # Two GPUs as generic resources (gres.conf beside slurm.conf). Slurm
    # gives out GPU indices (SLURM_JOB_GPUS, CUDA_VISIBLE_DEVICES,
    # SLURM_STEP_GPUS) only for GPUs with device files, and slurmd takes
    # only character or block devices: the stand-ins are /dev/null's and
    # /dev/zero's (1:3, 1:5), made here. The jobs run on --device cpu.
    mkdir -p "$dir/dev"
    for i in 0 1; do
      [ -c "$dir/dev/gpu$i" ] || mknod "$dir/dev/gpu$i" c 1 $((3 + 2 * i))
    done
    echo "Name=gpu File=$dir/dev/gpu[0-1]" > "$dir/gres.conf"
    printf 'export SLURM_CONF=%q\n' "$dir/slurm.conf" > "$dir/env"
    export SLURM_CONF=$dir/slurm.conf
    munged -F -f --socket="$dir/munge/munge.socket" --key-file="$dir/munge/munge.key" \
      --pid-file="$dir/munge/munged.pid" --log-file="$dir/log/munged.log" \
      --seed-file="$dir/munge/seed" >/dev/null 2>&1 &
    echo $! > "$dir/pids/munged.pid"
    for _ in $(seq 50); do [ -S "$dir/munge/munge.socket" ] && break; sleep 0.1; done
    slurmctld -D -i -f "$SLURM_CONF" >"$dir/log/slurmctld.out" 2>&1 &
    echo $! > "$dir/pids/slurmctld.pid"
    slurmd -D -f "$SLURM_CONF" -N "$host" >"$dir/log/slurmd.out" 2>&1 &
    echo $! > "$dir/pids/slurmd.pid"
    for _ in $(seq 100); do
      if sinfo -h -N -o %t 2>/dev/null | grep -qx idle; then exit 0; fi
      sleep 0.2
    done
    echo "slurm cluster: the node did not come up in 20 s; logs in $dir/log" >&2
    tail -5 "$dir"/log/*.log >&2 || true
    stop "$dir"
    exit 1 ;;
  stop) stop "$(realpath -m "${2:?usage: cluster.sh stop DIR}")" ;;
  *) echo "usage: cluster.sh install | start DIR | stop DIR" >&2; exit 2 ;;
esac
