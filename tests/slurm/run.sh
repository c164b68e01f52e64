#!/usr/bin/env bash
# `make slurm-test`: both sbatch scripts against a real single-node Slurm
# (scripts/slurm-cluster.sh: Debian's slurmctld + slurmd + munge, started
# under a temporary folder and stopped by pid whatever happens), on a tiny
# digits grid (4 jobs: mlp, 40 epochs, PGD-5 on 50 points). Prints one row
# per scenario (name, expected, got, PASS/FAIL) and exits 1 if any failed.
#
# Environment: TASER_SLURM_SCRIPTS (folder of the sbatch scripts under test,
# default slurm/), TASER_BIN (default target/release), KEEP=1 keeps the
# temporary folder.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=$(realpath "${TASER_BIN:-$root/target/release}")
scripts=$(realpath "${TASER_SLURM_SCRIPTS:-$root/slurm}")
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
start=$(date +%s)

bash "$root/scripts/slurm-cluster.sh" install || exit 1
# A space in the runs' path: the scripts must quote every path (slurm.conf
# cannot hold one, so the cluster has its own folder).
work=$(mktemp -d "${TMPDIR:-/tmp}/taser slurm.XXXXXX")
cluster=$(mktemp -d "${TMPDIR:-/tmp}/taser-slurm-cluster.XXXXXX")
cleanup() {
  bash "$root/scripts/slurm-cluster.sh" stop "$cluster"
  [ "${KEEP:-0}" = 1 ] && echo "kept $work $cluster" || rm -rf "$work" "$cluster"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
bash "$root/scripts/slurm-cluster.sh" start "$cluster" || exit 1
# shellcheck disable=SC1091
source "$cluster/env"
cd "$work" || exit 1

grid="$work/grid.toml"
cat > "$grid" <<'TOML'
name = "slurm-test"
steps = ["train", "attack"]

[axes]
seed = [0, 1]
lr = [0.02, 0.05]

[train]
dataset = "digits"
model = "mlp"
mlp-hidden = "32"
epochs = 40
threads = 1

[attack]
attacks = "pgd5"
eps = "0.2"
n-eval = 50
threads = 1
TOML
# The time-limit scenario needs jobs that outlast Slurm's 30 s check.
long="$work/long.toml"
sed 's/^epochs = 40/epochs = 600/; s/^seed = \[0, 1\]/seed = [0]/' "$grid" > "$long"

rows=()
failed=0
record() { # name expected got
  local verdict=PASS
  [ "$2" = "$3" ] || { verdict=FAIL; failed=$((failed + 1)); }
  rows+=("$1|$2|$3|$verdict")
  printf '%-28s expected %-28s got %-28s %s\n' "$1" "$2" "$3" "$verdict"
}

field() { scontrol show job -o "$1" 2>/dev/null | tr ' ' '\n' | sed -n "s|^$2=||p" | head -1; }
# Jobs submitted after job id $1 (the chain a scenario started, resubmissions included).
jobs_after() { scontrol show job -o 2>/dev/null | sed -n 's/^JobId=\([0-9]*\) .*/\1/p' | awk -v a="$1" '$1 > a' | sort -u | wc -l; }
last_id() { scontrol show job -o 2>/dev/null | sed -n 's/^JobId=\([0-9]*\) .*/\1/p' | sort -n | tail -1; }
queue_empty() { [ -z "$(squeue -h -o %i)" ]; }
wait_for() { # seconds command...
  local t=$1; shift
  for _ in $(seq $((t * 5))); do "$@" && return 0; sleep 0.2; done
  return 1
}
wait_quiet() { wait_for "$1" queue_empty; }
# Ends whatever a scenario left (an old script's endless chain included).
clear_queue() {
  wait_quiet "${1:-5}" && return 0
  scancel --full --signal=KILL "$(squeue -h -o %i | tr '\n' ' ')" 2>/dev/null
  scancel --signal=KILL $(squeue -h -o %i) 2>/dev/null
  wait_quiet 30 || echo "warning: jobs left in the queue: $(squeue -h -o '%i %T')"
}
started() { compgen -G "$1/jobs/*/train.stdout.log" >/dev/null || compgen -G "$1/jobs/*/*.log" >/dev/null; }
running() { [ "$(squeue -h -j "$1" -o %T 2>/dev/null)" = RUNNING ]; }

# The metrics of results.csv (no seconds or paths), one line per job.
metrics() {
  python3 - "$1/results.csv" <<'PY'
import csv, sys
try:
    rows = list(csv.DictReader(open(sys.argv[1])))
except OSError:
    sys.exit(0)
for r in sorted(rows, key=lambda r: r["id"]):
    keep = [k for k in r if not k.startswith("seconds") and k not in ("dir", "per_sample") and "seconds" not in k]
    print(",".join(f"{k}={r[k]}" for k in sorted(keep)))
PY
}
same_as_reference() {
  if [ -z "$(metrics "$1")" ]; then echo "no results.csv"; return; fi
  if [ "$(metrics "$1")" = "$(metrics "$work/ref")" ]; then echo "4 ok, equal"; else
    echo "$(grep -c ',ok,' "$1/results.csv" 2>/dev/null) ok, differ"; fi
}
# Continuations the script itself started (its "resubmitting"/"requeueing" lines).
by_script() { cat "$work/log/taser-sweep-$1.out" 2>/dev/null | grep -cE '^(resubmitting|requeueing)'; }
both_markers() { # folders holding both done and failed.json
  local n=0 d
  for d in "$1"/jobs/*/; do [ -e "$d/done" ] && [ -e "$d/failed.json" ] && n=$((n + 1)); done
  echo "$n"
}
mpi() { sbatch --parsable --output="$work/log/%x-%j.out" "$@"; }
mkdir -p "$work/log"
# The time-limit signal the MPI script asks Slurm for (B:SIG@secs).
tl_signal=$(sed -n 's/^#SBATCH --signal=B:\([A-Z0-9]*\)@.*/\1/p' "$scripts/sweep-mpi.sbatch")

echo "reference: the grid without Slurm (mpirun -np 2)"
mpirun --oversubscribe -np 2 "$bin/sweep" run "$grid" --out "$work/ref" > "$work/log/ref.log" 2>&1
record "reference (no Slurm)" "4 ok" "$(grep -c ',ok,' "$work/ref/results.csv") ok"

export TASER_BIN="$bin"

# 5: the documented command line, as is, must run on this 2-CPU node.
out="$work/srun out"
j=$(mpi --nodes=1 --ntasks-per-node=2 "$scripts/sweep-mpi.sbatch" "$grid" "$out" 2>"$work/log/submit.err")
if [ -n "$j" ] && wait_for 30 running "$j"; then got="runs"; else
  got="refused: $(head -c 60 "$work/log/submit.err" | tr -d '\n')"; fi
record "5 defaults fit the node" "runs" "$got"
[ -n "$j" ] && wait_quiet 120
record "srun: results" "4 ok, equal" "$(same_as_reference "$out")"
# From here on, the options a 2-CPU node can take (the old defaults could not).
# (--gpus-per-node=0 overrides a script's GPU request; harmless otherwise.)
fit=(--nodes=1 --ntasks-per-node=2 --cpus-per-task=1 --gpus-per-node=0)
afit=(--cpus-per-task=1 --gpus=0)
clear_queue

out="$work/mpirun out"
TASER_LAUNCHER=mpirun mpi "${fit[@]}" "$scripts/sweep-mpi.sbatch" "$grid" "$out" > /dev/null
wait_quiet 120
record "mpirun: results" "4 ok, equal" "$(same_as_reference "$out")"
clear_queue

# 1: a user's scancel ends the chain.
out="$work/cancel"
before=$(last_id)
j=$(mpi "${fit[@]}" "$scripts/sweep-mpi.sbatch" "$grid" "$out")
wait_for 60 started "$out"; sleep 3
scancel "$j"
sleep 20
record "1 scancel ends the chain" "1 job, 0 by script, 0 queued" \
  "$(jobs_after "$before") job, $(by_script "$j") by script, $(squeue -h | wc -l | tr -d ' ') queued"
clear_queue

# 2: scontrol requeue (and preemption with GraceTime 0) → one continuation.
out="$work/requeue"
before=$(last_id)
j=$(mpi "${fit[@]}" "$scripts/sweep-mpi.sbatch" "$grid" "$out")
wait_for 60 started "$out"; sleep 3
scontrol requeue "$j"
sleep 3
wait_quiet 180
record "2 requeue: one continuation" "1 job, 1 restart, 0 by script" \
  "$(jobs_after "$before") job, $(field "$j" Restarts) restart, $(by_script "$j") by script"
record "2 requeue: results" "4 ok, equal" "$(same_as_reference "$out")"
record "2 requeue: done+failed dirs" "0" "$(both_markers "$out")"
clear_queue

# Submits the sweep to partition $1 into $out, preempts it once the jobs run
# (a 2-CPU job in the higher-tier partition) and waits for the queue to empty.
preempted_sweep() {
  before=$(last_id)
  j=$(mpi "${fit[@]}" --partition="$1" "$scripts/sweep-mpi.sbatch" "$grid" "$out")
  wait_for 60 started "$out"; sleep 3
  sbatch --parsable --partition=urgent --ntasks=2 --output=/dev/null --wrap 'sleep 2' > /dev/null
  sleep 5
  wait_quiet 180
}
out="$work/preempt"
preempted_sweep main
# (2 jobs: the sweep and the preempting one.)
record "2 preempt GraceTime=0" "2 job, 1 restart, 0 by script" \
  "$(jobs_after "$before") job, $(field "$j" Restarts) restart, $(by_script "$j") by script"
record "2 preempt: results" "4 ok, equal" "$(same_as_reference "$out")"
clear_queue

# Preemption with a grace period (PreemptMode=CANCEL, GraceTime=20): the
# ranks get SIGTERM at once, stop with 3; the script requeues the job once.
out="$work/grace"
preempted_sweep grace
record "preempt GraceTime=20" "4 ok, equal, 1 by script" "$(same_as_reference "$out"), $(by_script "$j") by script"
clear_queue

# 3 + 4: the time limit. --time=1 makes Slurm send the script's signal at
# its first check (≤ 30 s); the ranks must stop with 3 and the continuation
# keep --time and --cpus-per-task.
out="$work/timelimit"
before=$(last_id)
j=$(mpi --nodes=1 --ntasks-per-node=1 --cpus-per-task=2 --gpus-per-node=0 --time=1 "$scripts/sweep-mpi.sbatch" "$long" "$out")
log="$work/log/taser-sweep-$j.out"
wait_for 75 grep -q "exited with status" "$log"
got=$(sed -n 's/.*sweep exited with status \([0-9]*\).*/\1/p' "$log" | head -1)
record "3 time limit, srun: status" "3" "${got:-none}"
# The continuation: the same job requeued, or a new one.
continued() { [ "$(field "$j" Restarts)" -ge 1 ] || [ "$(jobs_after "$before")" -gt 1 ]; }
if wait_for 40 continued; then
  next=$j
  [ "$(jobs_after "$before")" -gt 1 ] && next=$(last_id)
  wait_for 60 running "$next"
  tl=$(field "$next" TimeLimit) cpt=$(field "$next" CPUs/Task)
  scancel "$next"
else
  tl="no continuation" cpt="no continuation"
fi
record "4 continuation keeps --time" "00:01:00" "$tl"
record "4 continuation keeps -c" "2" "$cpt"
clear_queue 30

# 3 under mpirun: the script must report the sweep's 3, not mpirun's 1.
out="$work/timelimit-mpirun"
j=$(TASER_LAUNCHER=mpirun TASER_MAX_RESUBMITS=0 mpi "${fit[@]}" "$scripts/sweep-mpi.sbatch" "$grid" "$out")
log="$work/log/taser-sweep-$j.out"
wait_for 60 started "$out"; sleep 3
scancel --batch --signal="$tl_signal" "$j"
wait_for 60 grep -q "exited with status" "$log"
got=$(sed -n 's/.*sweep exited with status \([0-9]*\).*/\1/p' "$log" | head -1)
record "3 time limit, mpirun: status" "3" "${got:-none}"
clear_queue 60

# The array form: all four, then a requeued task continues.
out="$work/array"
j=$(sbatch --parsable --array=0-3 "${afit[@]}" --output="$work/log/%x-%A_%a.out" \
      "$scripts/sweep-array.sbatch" "$grid" "$out" 2>"$work/log/submit.err")
[ -z "$j" ] && echo "array refused: $(cat "$work/log/submit.err")"
wait_quiet 120
"$bin/sweep" collect "$out" > /dev/null 2>&1
record "array: results" "4 ok, equal" "$(same_as_reference "$out")"
clear_queue

# The array form preempted (GraceTime 0): Slurm requeues the running tasks.
out="$work/array-preempt"
sbatch --parsable --array=0-3 "${afit[@]}" --partition=main --output="$work/log/%x-%A_%a.out" \
  "$scripts/sweep-array.sbatch" "$grid" "$out" > /dev/null
wait_for 60 started "$out"; sleep 3
sbatch --parsable --partition=urgent --ntasks=2 --output=/dev/null --wrap 'sleep 2' > /dev/null
sleep 5
wait_quiet 180
"$bin/sweep" collect "$out" > /dev/null 2>&1
record "array preempted: results" "4 ok, equal" "$(same_as_reference "$out")"
clear_queue

out="$work/array-cancel"
before=$(last_id)
j=$(sbatch --parsable --array=0-1 "${afit[@]}" --output="$work/log/%x-%A_%a.out" \
      "$scripts/sweep-array.sbatch" "$grid" "$out")
wait_for 60 started "$out"; sleep 3
scancel "$j"
sleep 20
# Each task's log has one line per start: 2 tasks started once, none again.
starts=$(cat "$out"/slurm/array-*.log 2>/dev/null | grep -c ' of .* → ')
record "1 array: scancel ends it" "2 starts, 0 queued" "$starts starts, $(squeue -h | wc -l | tr -d ' ') queued"
clear_queue

# 6: smaller ones.
out="$work/nobin"
j=$(TASER_BIN="$work/no such dir" mpi "${fit[@]}" "$scripts/sweep-mpi.sbatch" "$grid" "$out")
wait_quiet 60
if grep -rqs "no such dir/sweep" "$work/log/taser-sweep-$j.out"; then got="names it"; else got="does not"; fi
record "6 missing binary named" "names it" "$got"
clear_queue

out="$work/partial-array"
sbatch --parsable --array=0 "${afit[@]}" --output=/dev/null \
  "$scripts/sweep-array.sbatch" "$grid" "$out" > /dev/null
wait_quiet 60
got=$("$bin/sweep" collect "$out" 2>&1 | sed -n 's/^pending = //p')
record "6 collect: unstarted pending" "3" "${got:-none}"
clear_queue

if (cd "$root" && git check-ignore -q slurm-taser-sweep-12.out && git check-ignore -q slurm-taser-sweep-array-12_3.out); then
  got="ignored"; else got="not ignored"; fi
record "6 slurm-*.out git-ignored" "ignored" "$got"

echo
echo "| scenario | expected | got | verdict |"
echo "|---|---|---|---|"
for r in "${rows[@]}"; do echo "| ${r//|/ | } |"; done
echo
echo "slurm-test: $((${#rows[@]} - failed))/${#rows[@]} passed in $(($(date +%s) - start)) s"
[ "$failed" = 0 ]
