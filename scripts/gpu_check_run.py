"""gpu-check's steps as child processes: each under a time limit, its output
in logs/NAME.log, its peak memory measured, its row in the one table.

Peak memory of a step (the table's last column, MiB):
- CPU: the child's peak resident set (ru_maxrss of os.wait4, which covers
  the child and the descendants it waited for);
- CUDA: the most GPU memory nvidia-smi listed for the child's process tree
  (--query-compute-apps, sampled every 0.2 s). That is what the process
  holds on the device: the CUDA context plus what libtorch's caching
  allocator has reserved, which it keeps until the process ends, so the
  sampled maximum is the step's peak up to the allocations of its last 0.2 s.
  Where nvidia-smi's process ids are not this namespace's (containers), it
  falls back to the device's memory.used above its level before the step.
"""
import json
import os
import signal
import subprocess
import sys
import time
from collections import namedtuple

Result = namedtuple("Result", "ok seconds rc peak")
COLUMNS = ["step", "seconds", "status", "suite ms/step", "PyTorch ms/step", "suite / PyTorch",
           "× alone", "paper", "peak MiB"]


def nvidia_smi(*query):
    """Rows of an nvidia-smi CSV query (no header, no units); [] without nvidia-smi."""
    try:
        r = subprocess.run(["nvidia-smi", *query, "--format=csv,noheader,nounits"],
                           capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [[c.strip() for c in l.split(",")] for l in r.stdout.splitlines() if l.strip()]


def gpu_selector(device):
    """nvidia-smi's -i value for cuda:N (CUDA_VISIBLE_DEVICES maps N to an index or UUID)."""
    n = int(device.split(":")[1])
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    return visible[n] if n < len(visible) else str(n)


def descendants(pid):
    """pid and every process below it (from /proc)."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = open(f"/proc/{entry}/stat").read()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    tree, todo = set(), [pid]
    while todo:
        p = todo.pop()
        tree.add(p)
        todo.extend(children.get(p, []))
    return tree


class GpuSampler:
    """The peak GPU memory (MiB) of one process tree, sampled with nvidia-smi."""

    def __init__(self, device):
        self.selector = gpu_selector(device)
        self.base = self.device_used()
        self.own = 0
        self.device_peak = 0

    def device_used(self):
        rows = nvidia_smi("--query-gpu=memory.used", "-i", self.selector)
        return int(rows[0][0]) if rows and rows[0][0].isdigit() else 0

    def sample(self, pid):
        tree = descendants(pid)
        apps = nvidia_smi("--query-compute-apps=pid,used_memory")
        mine = sum(int(m) for p, m in apps if p.isdigit() and m.isdigit() and int(p) in tree)
        self.own = max(self.own, mine)
        self.device_peak = max(self.device_peak, self.device_used() - self.base)

    def peak(self):
        return self.own if self.own > 0 else max(self.device_peak, 0)


class Runner:
    """Runs the steps and keeps the table's rows."""

    def __init__(self, out, device, timeout, env):
        self.out, self.device, self.timeout, self.env = out, device, timeout, env
        self.rows, self.failed, self.started = [], False, time.time()

    def since_start(self):
        return time.time() - self.started

    def add(self, step, seconds=None, status="", *cells, peak=None):
        """One row: step, seconds, status, then the bench cells, then peak MiB."""
        secs = "" if seconds is None else f"{seconds:.1f}"
        cells = list(cells) + [""] * (5 - len(cells))
        mem = "" if peak is None else f"{peak:.0f}"
        self.rows.append([step, secs, status] + cells + [mem])
        if status.startswith("FAILED"):
            self.failed = True

    def run_record(self, bin_dir, run):
        """RUN's record as `report run` prints it (sidecar and per-epoch log,
        read through the suite's run-folder layout); None when it cannot."""
        try:
            p = subprocess.run([f"{bin_dir}/report", "run", run], capture_output=True, text=True,
                               env=self.env, timeout=60)
            return json.loads(p.stdout) if p.returncode == 0 else None
        except (OSError, subprocess.TimeoutExpired, ValueError):
            return None

    def final_weights(self, bin_dir, run):
        """The path of RUN's final checkpoint from its record; None without one."""
        return ((self.run_record(bin_dir, run) or {}).get("weights") or {}).get("final")

    def run(self, name, log, cmd, env=None):
        """Runs `cmd` (output in logs/LOG.log) under the step time limit."""
        print(f"gpu-check: {name}", file=sys.stderr)
        path = os.path.join(self.out, "logs", f"{log}.log")
        gpu = GpuSampler(self.device) if self.device.startswith("cuda") else None
        t0 = time.time()
        with open(path, "w") as f:
            try:
                p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env or self.env,
                                     start_new_session=True)
            except OSError as e:
                f.write(f"gpu-check: cannot start {cmd[0]}: {e}\n")
                return Result(False, time.time() - t0, 127, None)
            rc, usage = self.wait(p, gpu, t0)
        peak = gpu.peak() if gpu else usage.ru_maxrss / 1024 if usage else None
        return Result(rc == 0, time.time() - t0, rc, peak)

    def wait(self, p, gpu, t0):
        """(exit status, rusage) of `p`; killed (124) past the time limit."""
        while True:
            pid, status, usage = os.wait4(p.pid, os.WNOHANG)
            if pid == p.pid:
                p.returncode = os.waitstatus_to_exitcode(status)
                return p.returncode, usage
            if time.time() - t0 > self.timeout:
                self.kill(p)
                _, _, usage = os.wait4(p.pid, 0)
                p.returncode = 124
                return 124, usage
            if gpu:
                gpu.sample(p.pid)
            time.sleep(0.2)

    @staticmethod
    def kill(p):
        """SIGTERM to the step's process group, SIGKILL 5 s later if it lingers."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(p.pid, sig)
            except ProcessLookupError:
                return
            for _ in range(25):
                if os.waitid(os.P_PID, p.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT):
                    return
                time.sleep(0.2)

    def step(self, name, log, cmd, env=None):
        """Runs `cmd` and adds its row (ok, or FAILED with the exit status and log)."""
        res = self.run(name, log, cmd, env)
        status = "ok" if res.ok else \
            f"FAILED ({'over --step-timeout' if res.rc == 124 else f'exit {res.rc}'}, logs/{log}.log)"
        if not res.ok:
            tail = open(os.path.join(self.out, "logs", f"{log}.log"), errors="replace").read()
            print("\n".join(tail.splitlines()[-5:]), file=sys.stderr)
        self.add(name, res.seconds, status, peak=res.peak)
        return res

    def table(self):
        lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
        lines += ["| " + " | ".join(r) + " |" for r in self.rows]
        return "\n".join(lines)
