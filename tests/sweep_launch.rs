//! `sweep plan`'s launch lines, read by bash: every form (srun, salloc …
//! mpirun, sbatch, the job array) requests GPUs and CPUs per job, every
//! path stays one argument (spaces, non-ASCII letters), large grids go in
//! as arrays within MaxArraySize with offsets, and shared bases come
//! first; `sweep run-one --kind base` runs a base by its index.
mod common;
use common::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A `train → finetune → attack` grid with two bases (seeds 0, 1), each
/// shared by a baseline and two fine-tunes: 2 bases, 6 jobs.
fn chain_grid(path: &Path, epochs: usize) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let text = format!(
        r#"name = "launch"
steps = ["train", "finetune", "attack"]

[axes]
seed = [0, 1]
finetune.alpha = [0, 1]

[train]
dataset = "digits"
model = "mlp"
mlp-hidden = "16"
epochs = {epochs}
threads = 1

[finetune]
epochs = {epochs}
threads = 1

[attack]
attacks = "pgd5"
eps = "0.2"
n-eval = 20
threads = 1
"#
    );
    fs::write(path, text).unwrap();
}

/// A `train`-only grid of `seeds` × `lrs` points on toy-sin.
fn toy_grid(path: &Path, seeds: usize, lrs: usize) {
    let list = |n: usize, f: &dyn Fn(usize) -> String| (0..n).map(f).collect::<Vec<_>>().join(", ");
    let text = format!(
        "name = \"big\"\nsteps = [\"train\"]\n\n[axes]\nseed = [{}]\nlr = [{}]\n\n\
         [train]\ndataset = \"toy-sin\"\nmodel = \"mlp\"\nmlp-hidden = \"8\"\nepochs = 2\nthreads = 1\n",
        list(seeds, &|i| i.to_string()),
        list(lrs, &|i| format!("0.{:04}", i + 1)),
    );
    fs::write(path, text).unwrap();
}

fn plan(args: &[&str]) -> String {
    let o = Command::new(bin("sweep"))
        .arg("plan")
        .args(args)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    stdout(&o)
}

/// The plan's launch lines (after `launch on …`), without headers.
fn launch_lines(plan: &str) -> Vec<String> {
    let tail = &plan[plan.find("\nlaunch on").expect("launch lines")..];
    tail.lines()
        .filter(|l| l.starts_with("  "))
        .map(|l| l.trim().to_string())
        .collect()
}

/// Runs `lines` in bash with srun, salloc, sbatch and mpirun replaced by
/// functions that record their argv (sbatch also prints a job id, 4242,
/// for the lines that keep it): the argv of each call, in order.
fn argv_in_bash(dir: &Path, lines: &[String]) -> Vec<Vec<String>> {
    let log = dir.join("argv.log");
    let _ = fs::remove_file(&log);
    let script = format!(
        "record() {{ printf '%s\\0' \"$@\" >> {log:?}; printf '\\n' >> {log:?}; }}\n\
         srun() {{ record srun \"$@\"; }}\nsalloc() {{ record salloc \"$@\"; }}\n\
         mpirun() {{ record mpirun \"$@\"; }}\nsbatch() {{ record sbatch \"$@\"; echo 4242; }}\n\
         set -e\n{}\n",
        lines.join("\n")
    );
    let o = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{script}\n{}", stderr(&o));
    fs::read_to_string(&log)
        .unwrap()
        .split('\n')
        .filter(|c| !c.is_empty())
        .map(|c| {
            c.split('\0')
                .filter(|a| !a.is_empty())
                .map(String::from)
                .collect()
        })
        .collect()
}

fn has(argv: &[String], want: &str) -> bool {
    argv.iter().any(|a| a == want)
}

#[test]
fn each_printed_form_requests_gpus_and_cpus_and_bash_keeps_every_path_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let grid: PathBuf = tmp.path().join("grïd dir").join("ä b.toml");
    chain_grid(&grid, 1);
    let out = "runs/ö x";
    let g = grid.display().to_string();
    let text = plan(&[
        &g,
        "--out",
        out,
        "--nodes",
        "2",
        "--gpus-per-node",
        "4",
        "--cpus-per-job",
        "6",
    ]);
    assert!(
        text.contains("launch on 2 node(s) × 4 GPU(s) = 8 rank(s), 1 GPU and 6 CPU(s) each"),
        "{text}"
    );
    let calls = argv_in_bash(tmp.path(), &launch_lines(&text));
    let names: Vec<&str> = calls.iter().map(|c| c[0].as_str()).collect();
    // srun, salloc (… mpirun), the MPI sbatch, the bases' array, the jobs' array.
    assert_eq!(
        names,
        ["srun", "salloc", "sbatch", "sbatch", "sbatch"],
        "{calls:?}"
    );
    for c in &calls {
        assert!(has(c, &g), "the grid path is one argument: {c:?}");
        assert!(has(c, out), "the output folder is one argument: {c:?}");
        assert!(has(c, "--cpus-per-task=6"), "CPUs requested: {c:?}");
    }
    let (srun, salloc, mpi, bases, jobs) = (&calls[0], &calls[1], &calls[2], &calls[3], &calls[4]);
    for c in [srun, salloc, mpi] {
        assert!(
            has(c, "--nodes=2") && has(c, "--ntasks-per-node=4"),
            "{c:?}"
        );
        assert!(has(c, "--gpus-per-node=4"), "GPUs requested: {c:?}");
    }
    assert!(has(srun, "--mpi=pmix"), "{srun:?}");
    let mpirun = salloc.iter().position(|a| a == "mpirun").expect("mpirun");
    assert_eq!(salloc[mpirun + 1..mpirun + 3], ["-np", "8"], "{salloc:?}");
    assert!(has(salloc, "OMP_NUM_THREADS=6"), "{salloc:?}");
    assert!(has(mpi, "slurm/sweep-mpi.sbatch"), "{mpi:?}");
    for c in [bases, jobs] {
        assert!(has(c, "slurm/sweep-array.sbatch"), "{c:?}");
        assert!(has(c, "--gpus=1"), "one GPU per array task: {c:?}");
    }
    // Bases first (their id kept), the jobs after them.
    assert!(
        has(bases, "--parsable") && has(bases, "--array=0-1%8"),
        "{bases:?}"
    );
    assert_eq!(bases[bases.len() - 2..], ["--kind", "base"], "{bases:?}");
    assert!(has(jobs, "--array=0-5%8"), "{jobs:?}");
    assert!(has(jobs, "--dependency=afterok:4242"), "{jobs:?}");
    assert!(!has(jobs, "--kind"), "{jobs:?}");

    // CPU-only jobs: no GPU asked for, the scripts' default GPU overridden.
    let text = plan(&[
        &g,
        "--out",
        out,
        "--gpus-per-job",
        "0",
        "--cpus-per-job",
        "2",
    ]);
    let calls = argv_in_bash(tmp.path(), &launch_lines(&text));
    for c in &calls {
        assert!(has(c, "--cpus-per-task=2"), "{c:?}");
        let gpus: Vec<&String> = c.iter().filter(|a| a.starts_with("--gpus")).collect();
        match c
            .iter()
            .find(|a| a.ends_with(".sbatch"))
            .map(String::as_str)
        {
            Some("slurm/sweep-mpi.sbatch") => assert_eq!(gpus, ["--gpus-per-node=0"]),
            Some(_) => assert_eq!(gpus, ["--gpus=0"]),
            None => assert!(gpus.is_empty(), "{c:?}"),
        }
    }
    let o = Command::new(bin("sweep"))
        .args(["plan", &g, "--gpus-per-job", "2"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--gpus-per-job"), "{}", stderr(&o));
}

#[test]
fn a_ten_thousand_point_grid_goes_in_as_arrays_within_max_array_size() {
    let tmp = tempfile::tempdir().unwrap();
    let grid = tmp.path().join("big.toml");
    toy_grid(&grid, 100, 100);
    let g = grid.display().to_string();
    let text = plan(&[&g, "--gpus-per-node", "2"]);
    assert!(text.contains("0 score task(s), 10000 job(s)"), "{text}");
    let calls = argv_in_bash(tmp.path(), &launch_lines(&text));
    let arrays: Vec<&Vec<String>> = calls
        .iter()
        .filter(|c| has(c, &g) && has(c, "slurm/sweep-array.sbatch"))
        .collect();
    assert_eq!(arrays.len(), 10, "{text}");
    let mut covered = Vec::new();
    for c in &arrays {
        let spec = c.iter().find_map(|a| a.strip_prefix("--array=0-")).unwrap();
        let (last, at_once) = spec.split_once('%').unwrap();
        let last: usize = last.parse().unwrap();
        assert!(last <= 1000, "within MaxArraySize 1001: {c:?}");
        assert_eq!(at_once, "2");
        let offset = match c.iter().position(|a| a == "--offset") {
            Some(i) => c[i + 1].parse::<usize>().unwrap(),
            None => 0,
        };
        covered.extend(offset..=offset + last);
    }
    assert_eq!(covered, (0..10_000).collect::<Vec<_>>(), "each index once");
    // A smaller limit, as a site may set it.
    let text = plan(&[&g, "--max-array-size", "4000"]);
    let n = launch_lines(&text)
        .iter()
        .filter(|l| l.contains("--array=0-3999%1") || l.contains("--array=0-1999%1"))
        .count();
    assert_eq!(n, 3, "{text}");
}

#[test]
fn run_one_runs_a_base_by_its_index_and_the_jobs_after_it_reuse_it() {
    let tmp = tempfile::tempdir().unwrap();
    let grid = tmp.path().join("chain.toml");
    chain_grid(&grid, 1);
    let out = tmp.path().join("out");
    let run_one = |args: &[&str]| {
        Command::new(bin("sweep"))
            .args(["run-one", &grid.display().to_string(), "--out"])
            .arg(&out)
            .args(["--device", "cpu"])
            .args(args)
            .env_remove("SLURM_ARRAY_TASK_ID")
            .output()
            .unwrap()
    };
    let o = run_one(&["--kind", "base", "--index", "2"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("2 task(s) of kind base"),
        "{}",
        stderr(&o)
    );
    let o = run_one(&["--kind", "base", "--index", "1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = plan(&[
        &grid.display().to_string(),
        "--out",
        &out.display().to_string(),
    ]);
    let base = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("1 base:"))
        .and_then(|l| l.split_whitespace().next())
        .expect("base 1 in the plan")
        .to_string();
    let jobs = out.join("jobs");
    assert!(jobs.join(&base).join("done").is_file(), "base 1 finished");
    let done: Vec<String> = files_in(&jobs)
        .into_iter()
        .filter(|d| jobs.join(d).join("done").is_file())
        .collect();
    assert_eq!(done, std::slice::from_ref(&base), "only the base ran");
    // Job 3, the first of base 1 (the plan lists jobs 3..5 after it), runs
    // without training the base again.
    let o = run_one(&["--index", "3"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let attempts = fs::read_to_string(jobs.join(&base).join("attempts.log")).unwrap();
    assert_eq!(attempts.lines().count(), 1, "{attempts}");
    assert!(attempts.contains("array-base-index=1"), "{attempts}");
}

#[test]
fn each_array_waits_only_for_the_shared_tasks_it_needs() {
    // table2: one score set (for the fine-tunes), 18 bases (no score set).
    let tmp = tempfile::tempdir().unwrap();
    let grid = Path::new(env!("CARGO_MANIFEST_DIR")).join("sweeps/table2.toml");
    let text = plan(&[&grid.display().to_string(), "--gpus-per-node", "4"]);
    let calls = argv_in_bash(tmp.path(), &launch_lines(&text));
    let arrays: Vec<&Vec<String>> = calls
        .iter()
        .filter(|c| has(c, "slurm/sweep-array.sbatch"))
        .collect();
    assert_eq!(arrays.len(), 3, "{text}");
    let dep = |c: &Vec<String>| {
        c.iter()
            .find_map(|a| a.strip_prefix("--dependency="))
            .map(String::from)
    };
    assert!(
        has(arrays[0], "score") && dep(arrays[0]).is_none(),
        "{:?}",
        arrays[0]
    );
    assert!(
        has(arrays[1], "base") && dep(arrays[1]).is_none(),
        "{:?}",
        arrays[1]
    );
    assert!(has(arrays[1], "--array=0-17%4"), "{:?}", arrays[1]);
    assert_eq!(dep(arrays[2]).as_deref(), Some("afterok:4242:4242"));
    assert!(has(arrays[2], "--array=0-53%4"), "{:?}", arrays[2]);
}
