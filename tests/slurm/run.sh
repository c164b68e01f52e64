#!/usr/bin/env bash
# `make slurm-test`: both sbatch scripts against a real single-node Slurm
# (tests/slurm/cluster.sh: Debian's slurmctld + slurmd + munge, started
# under a temporary folder and stopped by pid whatever happens). Prints one
# row per scenario (name, expected, got, PASS/FAIL) and exits 1 if any failed.
#
# No scenario depends on the machine's speed. A signal or event is sent only
# after a positive sign that the sweep is where the scenario needs it (a
# job's first metrics.csv row: mid-work; the script's first line: started,
# ranks not yet up), on a grid that cannot finish first; every wait is
# bounded and a timeout is a failure that says what did not come. Grids
# (digits, mlp 32, PGD-5 on 50 points):
#   short    4 jobs × 40 epochs: runs that no signal interrupts;
#   long     4 jobs × 1500 epochs (~25 s on 2 idle cores): interrupted, then
#            continued to the end and compared with a run without Slurm;
#   endless  2 jobs × 100000 epochs: stopped by the scenario, never finished;
#   big      10 000 train-only toy-sin points (2 epochs): planned, submitted
#            held in 10 arrays, three tasks released and run;
#   chain    train → finetune → attack, 2 bases × 3 jobs (20 epochs each):
#            the plan's array lines as printed, bases first;
#   pair-short, pair-long  the short grid and a 500-epoch one with
#            ranks_per_job = 2 (each model step as 2 data-parallel ranks):
#            MPI and array forms, a stop mid-work and its continuation
#            (7 rows, 340 s on 2 cores with the long grid's 1500 epochs).
# The node has two GPUs as GRES (stand-in device files; the jobs run on
# --device cpu): the scripts' default GPU requests are taken, and each rank
# (srun) and array task must get its own GPU index.
# The time limit is exercised both ways: Slurm's own (--time=1 with the
# script's --signal=B:USR1@120, sent at Slurm's first time-limit check,
# ≤ 30 s in) and the same USR1 sent by `scancel -b --signal=USR1` (at a
# chosen moment: mid-work, or right after the script starts).
# On 2 cores: 5 min when mostly idle, 10–11 min at load 5–8 (25/25 each
# time, also with two extra CPU hogs); most of it is the long grid's five
# runs (27 s for the reference on 2 idle cores). With the GPU, 10 000-point
# and bases-first scenarios: 13 min (788 s) at load 4–5, 31/31.
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

bash "$root/tests/slurm/cluster.sh" install || exit 1
# A space in the runs' path: the scripts must quote every path (slurm.conf
# cannot hold one, so the cluster has its own folder).
work=$(mktemp -d "${TMPDIR:-/tmp}/taser slurm.XXXXXX")
cluster=$(mktemp -d "${TMPDIR:-/tmp}/taser-slurm-cluster.XXXXXX")
cleanup() {
  if [ -n "${SLURM_CONF:-}" ]; then
    kill_all_jobs
  fi
  bash "$root/tests/slurm/cluster.sh" stop "$cluster"
  [ "${KEEP:-0}" = 1 ] && echo "kept $work $cluster" || rm -rf "$work" "$cluster"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
bash "$root/tests/slurm/cluster.sh" start "$cluster" || exit 1
# shellcheck disable=SC1091
source "$cluster/env"
cd "$work" || exit 1

short="$work/short.toml"
cat > "$short" <<'TOML'
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
long="$work/long.toml"
sed 's/^epochs = 40/epochs = 1500/' "$short" > "$long"
endless="$work/endless.toml"
sed 's/^epochs = 40/epochs = 100000/; s/^lr = \[0.02, 0.05\]/lr = [0.05]/' "$short" > "$endless"

# --- bookkeeping -----------------------------------------------------------
rows=()
failed=0
late="" # the bounded waits of the current scenario that timed out
record() { # name expected got
  local verdict=PASS got=$3
  [ -n "$late" ] && got="$got [$late]"
  late=""
  [ "$2" = "$got" ] || { verdict=FAIL; failed=$((failed + 1)); }
  rows+=("$1|$2|$got|$verdict")
  printf '%-34s expected %-30s got %-30s %s  (%d s)\n' "$1" "$2" "$got" "$verdict" $(($(date +%s) - start))
}
# wait_for SECONDS COMMAND...: polls every $poll s until COMMAND succeeds.
poll=0.2
wait_for() {
  local until=$(($(date +%s) + $1))
  shift
  while :; do
    "$@" && return 0
    [ "$(date +%s)" -lt "$until" ] || return 1
    sleep "$poll"
  done
}
# await SECONDS WHAT COMMAND...: wait_for, and a timeout is noted in the
# scenario's row ("no WHAT in N s"), so the scenario fails and says why.
await() {
  local t=$1 what=$2
  shift 2
  wait_for "$t" "$@" && return 0
  late="${late:+$late; }no $what in $t s"
  echo "  timeout: no $what in $t s" >&2
  return 1
}

# --- Slurm queries ------------------------------------------------------------
field() { scontrol show job -o "$1" 2>/dev/null | tr ' ' '\n' | sed -n "s|^$2=||p" | head -1; }
# Jobs submitted after job id $1 (the chain a scenario started, resubmissions included).
jobs_after() { scontrol show job -o 2>/dev/null | sed -n 's/^JobId=\([0-9]*\) .*/\1/p' | awk -v a="$1" '$1 > a' | sort -u | wc -l; }
last_id() { scontrol show job -o 2>/dev/null | sed -n 's/^JobId=\([0-9]*\) .*/\1/p' | sort -n | tail -1; }
queued() { squeue -h -o %i | wc -l | tr -d ' '; }
queue_empty() { local q; q=$(squeue -h -o %i 2>/dev/null) && [ -z "$q" ]; }
# Job (or array) $1 has left the queue: ended and its script finished (a
# completing job is still listed; a requeued one is listed as pending). A
# failed query (slurmctld busy) is not taken for an empty queue.
gone() { local q; q=$(squeue -h -j "$1" -o %i 2>/dev/null) && [ -z "$q" ]; }
running() { [ "$(squeue -h -j "$1" -o %T 2>/dev/null)" = RUNNING ]; }
# Slurm counts a requeue (its own, or the script's `scontrol requeue`).
restarted() { scontrol show job -o "$1" 2>/dev/null | grep -q ' Restarts=[1-9]'; }
kill_all_jobs() {
  local ids
  mapfile -t ids < <(squeue -h -o %i 2>/dev/null)
  [ "${#ids[@]}" = 0 ] && return 0
  scancel --full --signal=KILL "${ids[@]}" 2>/dev/null
  scancel --signal=KILL "${ids[@]}" 2>/dev/null
  wait_for 30 queue_empty || echo "warning: jobs left in the queue: $(squeue -h -o '%i %T' | tr '\n' ' ')"
}
# Ends whatever a scenario left (an old script's endless chain included).
clear_queue() { wait_for "${1:-5}" queue_empty || kill_all_jobs; }

# --- signs of progress -------------------------------------------------------
# Mid-work: some job of sweep folder $1 has trained an epoch (a metrics.csv
# row) and so is now in the middle of its training.
mid_work() {
  local f
  for f in "$1"/jobs/*/train/metrics.csv; do
    [ -f "$f" ] && [ "$(wc -l < "$f")" -ge 2 ] && return 0
  done
  return 1
}
# Where sweep folder $1 stands (printed when an event is sent): jobs done,
# and the furthest epoch any job has trained.
progress() {
  local done epoch
  done=$(compgen -G "$1/jobs/*/done" | wc -l)
  epoch=$(cat "$1"/jobs/*/train/metrics.csv 2>/dev/null | cut -d, -f1 | grep -E '^[0-9]+$' | sort -n | tail -1)
  echo "  $2 at $done job(s) done, furthest epoch ${epoch:-0}"
}
in_log() { grep -qs -- "$2" "$1"; }
# The sweep's exit status as the MPI script printed it.
exit_status() { sed -n 's/.*sweep exited with status \([0-9]*\).*/\1/p' "$1" 2>/dev/null | head -1; }
# Whether the script held a stop that came before the ranks could take it.
held() { if grep -qs 'cannot take a stop yet' "$1"; then echo held; else echo "not held"; fi; }

# --- results ----------------------------------------------------------------
# The metrics of results.csv (no seconds or paths), one line per job.
metrics() {
  python3 - "$1/results.csv" <<'PY'
import csv, sys
try:
    rows = list(csv.DictReader(open(sys.argv[1])))
except OSError:
    sys.exit(0)
for r in sorted(rows, key=lambda r: r["id"]):
    keep = [k for k in r if k not in ("dir", "per_sample") and "seconds" not in k
            and "sum_share" not in k]
    print(",".join(f"{k}={r[k]}" for k in sorted(keep)))
PY
}
same_as() { # run-folder reference-folder
  if [ -z "$(metrics "$1")" ]; then echo "no results.csv"; return; fi
  if [ "$(metrics "$1")" = "$(metrics "$2")" ]; then echo "4 ok, equal"; else
    echo "$(grep -c ',ok,' "$1/results.csv" 2>/dev/null) ok, differ"; fi
}
# Continuations the script itself started (its "resubmitting"/"requeueing" lines).
by_script() { cat "$work/log/taser-sweep-$1.out" 2>/dev/null | grep -cE '^(resubmitting|requeueing)'; }
both_markers() { # folders holding both done and failed.json
  local n=0 d
  for d in "$1"/jobs/*/; do [ -e "$d/done" ] && [ -e "$d/failed.json" ] && n=$((n + 1)); done
  echo "$n"
}
# mpi|array SBATCH-OPTIONS... GRID OUT: submits the script under test.
mpi() { sbatch --parsable --output="$work/log/%x-%j.out" "${@:1:$#-2}" "$scripts/sweep-mpi.sbatch" "${@:$#-1}"; }
array() { sbatch --parsable --output="$work/log/%x-%A_%a.out" "${@:1:$#-2}" "$scripts/sweep-array.sbatch" "${@:$#-1}"; }
mkdir -p "$work/log"
export TASER_BIN="$bin"
# From the second scenario on, the options a 2-CPU node can take (the old
# defaults could not); --gpus-per-node=0 overrides a script's GPU request.
fit=(--nodes=1 --ntasks-per-node=2 --cpus-per-task=1 --gpus-per-node=0)
afit=(--cpus-per-task=1 --gpus=0)
# The GPUs Slurm gave: a folder whose `sweep` records each process's
# Slurm GPU variables (one line per rank or array task) and runs the real
# one. A rank's GPU is CUDA_VISIBLE_DEVICES[local rank mod their number]
# (the rule of `sweep run`); an array task's the one it sees.
wrap="$work/wrap"
mkdir -p "$wrap"
cat > "$wrap/sweep" <<SH
#!/usr/bin/env bash
echo "job=\${SLURM_JOB_ID:-} array=\${SLURM_ARRAY_JOB_ID:--} local=\${SLURM_LOCALID:-0} job_gpus=\${SLURM_JOB_GPUS:-} step_gpus=\${SLURM_STEP_GPUS:-} cvd=\${CUDA_VISIBLE_DEVICES:-}" >> "$wrap/gpus.log"
exec "$bin/sweep" "\$@"
SH
chmod +x "$wrap/sweep"
# gpus_of JOB: the GPU index each process of job (or array) JOB took, sorted.
gpus_of() {
  local line cvd local_id list
  grep -sE "^job=$1 |^job=[0-9]+ array=$1 " "$wrap/gpus.log" | while read -r line; do
    cvd=$(sed -n 's/.* cvd=\([^ ]*\).*/\1/p' <<<"$line")
    local_id=$(sed -n 's/.* local=\([0-9]*\).*/\1/p' <<<"$line")
    IFS=, read -ra list <<<"$cvd"
    if [ "${#list[@]}" = 0 ]; then echo none; else echo "${list[$((local_id % ${#list[@]}))]}"; fi
  done | sort | paste -sd' '
}
# An urgent 2-CPU job: preempts whatever runs in partitions main and grace.
preempt() { sbatch --parsable --partition=urgent --ntasks=2 --output=/dev/null --wrap 'sleep 2' > /dev/null; }

echo "references: the short and long grids without Slurm (mpirun -np 2)"
for g in short long; do
  timeout 600 mpirun --oversubscribe -np 2 "$bin/sweep" run "$work/$g.toml" --out "$work/ref-$g" \
    > "$work/log/ref-$g.log" 2>&1 || late="exit $? of the run (124: over 600 s)"
  record "reference, $g grid (no Slurm)" "4 ok" "$(grep -cs ',ok,' "$work/ref-$g/results.csv") ok"
done

# 5: the script's defaults (one GPU per rank) must run on this node with
# its 2 GPUs as GRES (--device cpu: they are stand-ins); each rank sees the
# job's GPUs and takes the one of its node-local rank: two ranks, two GPUs.
out="$work/srun out"
j=$(TASER_BIN="$wrap" sbatch --parsable --output="$work/log/%x-%j.out" \
      "$scripts/sweep-mpi.sbatch" "$short" "$out" --device cpu 2>"$work/log/submit.err")
if [ -n "$j" ] && await 60 "start" running "$j"; then got="runs"; else
  got="refused: $(head -c 60 "$work/log/submit.err" | tr -d '\n')"; fi
record "5 defaults (GPUs) fit the node" "runs" "$got"
[ -n "$j" ] && await 180 "end of the job" gone "$j"
record "srun: results" "4 ok, equal" "$(same_as "$out" "$work/ref-short")"
record "GRES: the ranks' GPUs, srun" "0 1" "$(gpus_of "$j")"
clear_queue

out="$work/mpirun out"
j=$(TASER_LAUNCHER=mpirun mpi "${fit[@]}" "$short" "$out")
await 180 "end of the job" gone "$j"
record "mpirun: results" "4 ok, equal" "$(same_as "$out" "$work/ref-short")"
clear_queue

# 1: a user's scancel, mid-work, ends the chain: the job leaves the queue
# (a requeue would list it as pending) and nothing else is submitted.
out="$work/cancel"
before=$(last_id)
j=$(mpi "${fit[@]}" "$endless" "$out")
await 90 "metrics row" mid_work "$out" && progress "$out" scancel
scancel "$j"
await 60 "end of the job" gone "$j"
record "1 scancel ends the chain" "1 job, 0 by script, 0 queued" \
  "$(jobs_after "$before") job, $(by_script "$j") by script, $(queued) queued"
clear_queue

# 2: scontrol requeue mid-work → exactly one continuation, Slurm's.
out="$work/requeue"
before=$(last_id)
j=$(mpi "${fit[@]}" "$long" "$out")
await 90 "metrics row" mid_work "$out" && progress "$out" "scontrol requeue" && scontrol requeue "$j"
await 30 "restart" restarted "$j"
await 300 "end of the continuation" gone "$j"
record "2 requeue: one continuation" "1 job, 1 restart, 0 by script" \
  "$(jobs_after "$before") job, $(field "$j" Restarts) restart, $(by_script "$j") by script"
record "2 requeue: results" "4 ok, equal" "$(same_as "$out" "$work/ref-long")"
record "2 requeue: done+failed dirs" "0" "$(both_markers "$out")"
clear_queue

# Submits the long grid to partition $1 into $out, preempts it mid-work and
# waits until the preemption took (a restart) and the sweep has finished.
preempted_sweep() {
  before=$(last_id)
  j=$(mpi "${fit[@]}" --partition="$1" "$long" "$out")
  await 90 "metrics row" mid_work "$out" && progress "$out" preemption && preempt
  await 60 "restart after the preemption" restarted "$j"
  await 300 "end of the continuation" gone "$j"
}
# Preemption with GraceTime 0 (PreemptMode=REQUEUE): Slurm requeues the job.
out="$work/preempt"
preempted_sweep main
# (2 jobs: the sweep and the preempting one.)
record "2 preempt GraceTime=0" "2 job, 1 restart, 0 by script" \
  "$(jobs_after "$before") job, $(field "$j" Restarts) restart, $(by_script "$j") by script"
record "2 preempt: results" "4 ok, equal" "$(same_as "$out" "$work/ref-long")"
clear_queue

# Preemption with a grace period (PreemptMode=CANCEL, GraceTime=20): the
# ranks get SIGTERM at once, stop with 3; the script requeues the job once.
out="$work/grace"
preempted_sweep grace
record "preempt GraceTime=20" "4 ok, equal, 1 by script" "$(same_as "$out" "$work/ref-long"), $(by_script "$j") by script"
clear_queue

# 3 + 4: Slurm's own time limit. With --time=1 Slurm sends the script's
# USR1 at its first time-limit check (≤ 30 s in; the endless grid is then
# mid-work whatever the machine); the ranks must stop with 3 and the
# continuation keep --time and --cpus-per-task.
out="$work/timelimit"
before=$(last_id)
j=$(mpi --nodes=1 --ntasks-per-node=1 --cpus-per-task=2 --gpus-per-node=0 --time=1 "$endless" "$out")
log="$work/log/taser-sweep-$j.out"
await 75 "exit line in the job log" in_log "$log" "exited with status" && progress "$out" "stopped by Slurm's USR1"
record "3 time limit (Slurm's), srun" "3" "$(exit_status "$log")"
# The continuation: the same job requeued, or (old scripts) a new one.
continued() { restarted "$j" || [ "$(jobs_after "$before")" -gt 1 ]; }
if await 40 "continuation" continued; then
  next=$j
  [ "$(jobs_after "$before")" -gt 1 ] && next=$(last_id)
  await 60 "start of the continuation" running "$next"
  tl=$(field "$next" TimeLimit) cpt=$(field "$next" CPUs/Task)
  scancel "$next"
else
  tl="no continuation" cpt="no continuation"
fi
record "4 continuation keeps --time" "00:01:00" "$tl"
record "4 continuation keeps -c" "2" "$cpt"
clear_queue 30

# The race: the time-limit USR1 right after the script starts, before the
# srun step (or mpirun's ranks) exist or can take a TERM. The script must
# hold it and stop the ranks once they are up (exit 3), not lose it (the
# job would run on to its kill) nor kill ranks that have no handler yet.
# $1: the launcher.
stop_at_start() {
  out="$work/stop-at-start-$1"
  j=$(TASER_LAUNCHER=$1 TASER_MAX_RESUBMITS=0 mpi "${fit[@]}" "$endless" "$out")
  log="$work/log/taser-sweep-$j.out"
  poll=0.02 await 60 "first line of the job log" in_log "$log" "(run 1)" &&
    scancel --batch --signal=USR1 "$j"
  await 90 "exit line in the job log" in_log "$log" "exited with status"
  record "3 USR1 before the ranks, $1" "3, held" "$(exit_status "$log"), $(held "$log")"
  await 60 "end of the job" gone "$j"
  clear_queue 30
}
stop_at_start srun
stop_at_start mpirun

# 3 under mpirun: the time-limit USR1 mid-work; the script must report the
# sweep's 3, not mpirun's 1.
out="$work/timelimit-mpirun"
j=$(TASER_LAUNCHER=mpirun TASER_MAX_RESUBMITS=0 mpi "${fit[@]}" "$endless" "$out")
log="$work/log/taser-sweep-$j.out"
await 90 "metrics row" mid_work "$out" && progress "$out" USR1 && scancel --batch --signal=USR1 "$j"
await 90 "exit line in the job log" in_log "$log" "exited with status"
record "3 USR1 mid-work, mpirun" "3" "$(exit_status "$log")"
clear_queue 60

# The array form: all four.
out="$work/array"
j=$(array --array=0-3 "${afit[@]}" "$short" "$out" 2>"$work/log/submit.err")
[ -z "$j" ] && echo "array refused: $(cat "$work/log/submit.err")"
await 180 "end of the array" gone "$j"
"$bin/sweep" collect "$out" > /dev/null 2>&1
record "array: results" "4 ok, equal" "$(same_as "$out" "$work/ref-short")"
clear_queue

# Jobs of two ranks (the grid's ranks_per_job = 2): each model step runs as
# 2 data-parallel ranks under a nested mpirun, inside the cores Slurm gave
# the sweep rank (MPI form: one rank with the node's 2 CPUs) or the array
# task (2 CPUs each); results.csv equals the same grid run without Slurm.
# Then a USR1 mid-work stops a 2-rank job (exit 3, no resubmission), and
# the rerun ends as the uninterrupted run without Slurm did.
for g in short long; do
  sed 's/^steps = .*/&\nranks_per_job = 2/' "$work/$g.toml" > "$work/pair-$g.toml"
  # (500 epochs for the stop: a 2-rank job still runs ~12 s on 2 cores)
  sed -i 's/^epochs = 1500$/epochs = 500/' "$work/pair-$g.toml"
  timeout 600 "$bin/sweep" run "$work/pair-$g.toml" --out "$work/ref-pair-$g" \
    > "$work/log/ref-pair-$g.log" 2>&1 || late="exit $? of the run (124: over 600 s)"
  record "reference, 2-rank $g grid" "4 ok" "$(grep -cs ',ok,' "$work/ref-pair-$g/results.csv") ok"
done
pfit=(--nodes=1 --ntasks-per-node=1 --cpus-per-task=2 --gpus-per-node=0)
out="$work/pair"
j=$(mpi "${pfit[@]}" "$work/pair-short.toml" "$out")
await 240 "end of the job" gone "$j"
record "2-rank jobs, srun: results" "4 ok, equal" "$(same_as "$out" "$work/ref-pair-short")"
if grep -qs '^# mpirun -np 2 ' "$out"/jobs/*/train.stderr.log; then got="mpirun -np 2"; else got="not seen"; fi
record "2-rank jobs: model step" "mpirun -np 2" "$got"
clear_queue
out="$work/pair-array"
j=$(array --array=0-3 --cpus-per-task=2 --gpus=0 "$work/pair-short.toml" "$out")
await 240 "end of the array" gone "$j"
"$bin/sweep" collect "$out" > /dev/null 2>&1
record "2-rank jobs, array: results" "4 ok, equal" "$(same_as "$out" "$work/ref-pair-short")"
clear_queue
out="$work/pair-stop"
j=$(TASER_MAX_RESUBMITS=0 mpi "${pfit[@]}" "$work/pair-long.toml" "$out")
log="$work/log/taser-sweep-$j.out"
await 90 "metrics row" mid_work "$out" && progress "$out" USR1 && scancel --batch --signal=USR1 "$j"
await 90 "exit line in the job log" in_log "$log" "exited with status"
record "3 USR1 mid-work, 2-rank jobs" "3" "$(exit_status "$log")"
clear_queue 60
j=$(mpi "${pfit[@]}" "$work/pair-long.toml" "$out")
await 400 "end of the continuation" gone "$j"
record "2-rank jobs continued: results" "4 ok, equal" "$(same_as "$out" "$work/ref-pair-long")"
clear_queue

# The array form preempted mid-work (GraceTime 0): Slurm requeues the
# running tasks, which continue their jobs.
out="$work/array-preempt"
j=$(array --array=0-3 "${afit[@]}" --partition=main "$long" "$out")
await 90 "metrics row" mid_work "$out" && progress "$out" preemption && preempt
await 60 "restart after the preemption" restarted "$j"
await 300 "end of the array" gone "$j"
"$bin/sweep" collect "$out" > /dev/null 2>&1
record "array preempted: results" "4 ok, equal" "$(same_as "$out" "$work/ref-long")"
clear_queue

# 1 for the array: a user's scancel of two running tasks ends both. The
# tasks ask for the script's default GPU: running together, each has its own.
out="$work/array-cancel"
j=$(TASER_BIN="$wrap" sbatch --parsable --output="$work/log/%x-%A_%a.out" --array=0-1 \
      --cpus-per-task=1 "$scripts/sweep-array.sbatch" "$endless" "$out" --device cpu)
starts() { cat "$out"/slurm/array-*.log 2>/dev/null | grep -c ' of .* → '; }
two_started() { [ "$(starts)" -ge 2 ] && mid_work "$out"; }
await 90 "two running tasks" two_started && progress "$out" scancel
record "GRES: the array tasks' GPUs" "0 1" "$(gpus_of "$j")"
scancel "$j"
await 60 "end of the array" gone "$j"
# Each task's log has one line per start: 2 tasks started once, none again.
record "1 array: scancel ends it" "2 starts, 0 queued" "$(starts) starts, $(queued) queued"
clear_queue

# The race in the array form: USR1 right after the task's script starts.
out="$work/array-stop-at-start"
j=$(TASER_MAX_RESUBMITS=0 array --array=0 "${afit[@]}" "$endless" "$out")
tlog="$out/slurm/array-0.log"
poll=0.02 await 60 "the task's first line" in_log "$tlog" " of .* → " &&
  scancel --batch --signal=USR1 "${j}_0"
await 90 "exit line in the task's log" in_log "$tlog" "exited with status"
got=$(sed -n 's/.*exited with status \([0-9]*\).*/\1/p' "$tlog" | head -1)
record "3 USR1 before run-one, array" "3, held" "$got, $(held "$work/log/taser-sweep-array-${j}_0.out")"
clear_queue 30

# Submits the job-array lines of `sweep plan` (file $1) into the queue as
# they are printed, each sbatch with --parsable, its log in $work/log and
# `--device cpu` for `sweep run-one` (the GPUs are stand-ins), plus the
# options in $2 (e.g. --hold); the job ids go to file $3, one a line.
submit_plan() {
  local lines extra=$2 ids=$3
  lines=$(sed -n '/^job-array form/,$p' "$1" | tail -n +2)
  mkdir -p "$work/plan-cwd"
  ln -sfn "$scripts" "$work/plan-cwd/slurm" # the lines name slurm/sweep-array.sbatch
  (
    cd "$work/plan-cwd" || exit 1
    # shellcheck disable=SC2086
    sbatch() { command sbatch --parsable $extra --output="$work/log/%x-%A_%a.out" "$@" --device cpu | tee -a "$ids"; }
    eval "$lines"
  ) > /dev/null
}

# A 10 000-point grid (train-only toy-sin runs): the plan prints 10 arrays
# within MaxArraySize (1001), each with its offset; all go in held, and
# three tasks (the first, the 6th of the second array, the very last) are
# released: each must run the point of its index.
big="$work/big.toml"
{
  printf 'name = "big"\nsteps = ["train"]\n[axes]\nseed = [%s]\n' "$(seq -s, 0 99)"
  printf 'lr = [%s]\n' "$(for i in $(seq 1 100); do printf '0.%04d,' "$i"; done | sed 's/,$//')"
  printf '[train]\ndataset = "toy-sin"\nmodel = "mlp"\nmlp-hidden = "8"\nepochs = 2\nthreads = 1\n'
} > "$big"
out="$work/big out"
"$bin/sweep" plan "$big" --out "$out" --gpus-per-node 2 --cpus-per-job 1 > "$work/log/big-plan.txt" 2>&1
submit_plan "$work/log/big-plan.txt" --hold "$work/big.ids"
mapfile -t ids < "$work/big.ids"
tasks=0
[ "${#ids[@]}" -gt 0 ] && tasks=$(squeue -h -r -o %i -j "$(IFS=,; echo "${ids[*]}")" | wc -l)
record "10000 points: arrays ≤ MaxArraySize" "10 arrays, 10000 tasks" "${#ids[@]} arrays, $tasks tasks"
if [ "${#ids[@]}" = 10 ]; then scontrol release "${ids[0]}_0" "${ids[1]}_5" "${ids[9]}_990"; fi
three_ran() { [ "$(grep -ls 'exited with status' "$out"/slurm/array-{0,1006,9999}.log | wc -l)" = 3 ]; }
await 150 "three released tasks' ends" three_ran
ran=$(for d in "$out"/jobs/*/; do [ -e "$d/done" ] && sed -n 's/.*"index": \([0-9]*\).*/\1/p' "$d/config.json"; done | sort -n | paste -sd' ')
record "10000 points: offsets address jobs" "0 1006 9999" "${ran:-none}"
[ "${#ids[@]}" -gt 0 ] && scancel "${ids[@]}"
clear_queue 30

# Shared bases first: the plan's array lines submit the 2 bases, then the
# 6 jobs with --dependency=afterok on them. The jobs wait (Reason
# Dependency) until every base has ended, each base trains once, and no
# task waits on a base's lock while it holds a GPU.
chain="$work/chain.toml"
cat > "$chain" <<'TOML'
name = "slurm-chain"
steps = ["train", "finetune", "attack"]

[axes]
seed = [0, 1]
finetune.alpha = [0, 1]

[train]
dataset = "digits"
model = "mlp"
mlp-hidden = "16"
epochs = 20
threads = 1

[finetune]
epochs = 20
threads = 1

[attack]
attacks = "pgd5"
eps = "0.2"
n-eval = 50
threads = 1
TOML
out="$work/bases first"
"$bin/sweep" plan "$chain" --out "$out" --gpus-per-node 2 --cpus-per-job 1 > "$work/log/chain-plan.txt" 2>&1
submit_plan "$work/log/chain-plan.txt" "" "$work/chain.ids"
mapfile -t ids < "$work/chain.ids"
dep=$(field "${ids[1]:-0}" Dependency)
for id in "${ids[@]}"; do await 240 "end of array $id" gone "$id"; done
"$bin/sweep" collect "$out" > "$work/log/chain-collect.txt" 2>&1
ok=$(sed -n 's/^ok = //p' "$work/log/chain-collect.txt")
# Slurm's times: the jobs' starts against the bases' ends (ISO, one clock).
times() { scontrol show job -o "$1" | tr ' ' '\n' | sed -n "s/^$2=//p" | sort; }
last_base_end=$(times "${ids[0]:-0}" EndTime | tail -1)
early=$(times "${ids[1]:-0}" StartTime | awk -v e="$last_base_end" '$1 < e' | wc -l)
attempts=$(for d in "$out"/jobs/*/; do grep -qs '"kind": "base"' "$d/config.json" && wc -l < "$d/attempts.log"; done | paste -sd' ')
waits=$(grep -ls 'waiting for' "$out"/slurm/*.log | wc -l)
record "bases first: jobs depend on" "afterok:BASES_*(unfulfilled)" "${dep/${ids[0]:-none}/BASES}"
record "bases first: order" "6 ok, 0 early, attempts 1 1, 0 waits" \
  "${ok:-no} ok, $early early, attempts $attempts, $waits waits"
clear_queue

# 6: smaller ones.
out="$work/nobin"
j=$(TASER_BIN="$work/no such dir" mpi "${fit[@]}" "$short" "$out")
await 60 "end of the job" gone "$j"
if grep -rqs "no such dir/sweep" "$work/log/taser-sweep-$j.out"; then got="names it"; else got="does not"; fi
record "6 missing binary named" "names it" "$got"
clear_queue

out="$work/partial-array"
j=$(sbatch --parsable --array=0 "${afit[@]}" --output=/dev/null "$scripts/sweep-array.sbatch" "$short" "$out")
await 60 "end of the array" gone "$j"
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
