//! Output folders end to end: a failed run removes only what it wrote
//! itself and left unfinished (another run's results in a parent it
//! created stay), a failure at any write of any binary keeps every finished
//! file and says which and how to continue (the testing hook
//! `TASER_FAIL_WRITE=N` fails the N-th atomic write), a full disk at the
//! last write keeps the finished attacks, and a second run on a folder
//! that one is writing is refused, naming the holder.
mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Tiny digits runs: an mlp with one hidden layer of 32, one thread.
const TRAIN: &str =
    "--dataset digits --model mlp --mlp-hidden 32 --seed 7 --device cpu --threads 1";

fn words(line: &str) -> Vec<String> {
    line.split_whitespace().map(String::from).collect()
}

fn command(bin_name: &str, args: &[String]) -> Command {
    let mut c = Command::new(bin(bin_name));
    c.args(args).env_remove("TASER_DATA_DIR");
    c
}

/// Runs `bin_name args`, with the write-failure hook set to `fail` when
/// given.
fn run_with(bin_name: &str, args: &[String], fail: Option<&str>) -> Output {
    let mut c = command(bin_name, args);
    match fail {
        Some(spec) => c.env("TASER_FAIL_WRITE", spec),
        None => c.env_remove("TASER_FAIL_WRITE"),
    };
    c.output().expect("binary runs")
}

fn ok(bin_name: &str, args: &[String]) -> Output {
    let o = run_with(bin_name, args, None);
    assert!(o.status.success(), "{bin_name} {args:?}: {}", stderr(&o));
    o
}

/// Every file under `dir`, relative, sorted.
fn tree(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.push(p.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// No partial file (a write's temporary sibling) and no lock is left
/// anywhere under `root`.
fn assert_nothing_partial(root: &Path, what: &str) {
    let left: Vec<String> = tree(root)
        .into_iter()
        .filter(|f| f.contains(".tmp-") || f.contains("taser-lock"))
        .collect();
    assert!(left.is_empty(), "{what}: left {left:?}");
}

/// A trained checkpoint of digits (1 epoch, `seed`) in `dir`.
fn checkpoint(dir: &Path, seed: &str) -> String {
    let out = dir.join(format!("ckpt-{seed}"));
    let line = format!("{TRAIN} --epochs 1 --seed {seed} --out {}", out.display());
    ok("train", &words(&line));
    out.join("model.safetensors").display().to_string()
}

/// `args` with `--out out` appended.
fn with_out(args: &[String], out: &Path) -> Vec<String> {
    let mut v = args.to_vec();
    v.extend(["--out".into(), out.display().to_string()]);
    v
}

/// A check of a continued run: its `--out`, the files the failed run kept,
/// the failed run's stderr and the continued run's output.
type ContinueCheck<'a> = &'a dyn Fn(&Path, &[String], &str, &Output);

/// What a binary's writes are checked against: its arguments without
/// `--out`, whether its output is a folder (else one file), how to tell a
/// finished output, and what a continued run must not repeat.
struct Writer<'a> {
    bin: &'a str,
    args: Vec<String>,
    folder: bool,
    finished: &'a dyn Fn(&Path) -> bool,
    not_repeated: ContinueCheck<'a>,
}

/// Fails the N-th write of `w.bin`, N = 1, 2, … until a run has fewer
/// writes than N; after each failure checks that no partial file or lock
/// is left, that the message names every kept file and how to continue,
/// and that continuing that way finishes the run without repeating the
/// finished work. Returns the number of writes.
fn each_write_fails_in_turn(root: &Path, w: &Writer<'_>) -> usize {
    for n in 1.. {
        let out = match w.folder {
            true => root.join(format!("{}-{n}", w.bin)),
            false => root.join(format!("{}-{n}/out.h5", w.bin)),
        };
        let args = with_out(&w.args, &out);
        let o = run_with(w.bin, &args, Some(&n.to_string()));
        if o.status.success() {
            assert!(n > 1, "{}: the hook never failed a write", w.bin);
            assert!((w.finished)(&out));
            return n - 1;
        }
        let err = stderr(&o);
        let what = format!("{} failing at write {n}", w.bin);
        assert_eq!(o.status.code(), Some(1), "{what}: {err}");
        assert!(
            err.contains(&format!("injected by TASER_FAIL_WRITE={n}")),
            "{what}: {err}"
        );
        assert_nothing_partial(root, &what);
        let folder = if w.folder {
            out.clone()
        } else {
            out.parent().unwrap().to_path_buf()
        };
        let kept = tree(&folder);
        for f in &kept {
            assert!(
                err.contains(f.as_str()),
                "{what}: kept {f} is not named: {err}"
            );
        }
        if kept.is_empty() {
            assert!(!folder.exists(), "{what}: left an empty folder");
        } else {
            assert!(err.contains("(finished)"), "{what}: {err}");
        }
        assert!(
            err.contains("To continue: rerun the same command"),
            "{what}: {err}"
        );
        let mut again = args.clone();
        if err.contains("To continue: rerun the same command with --resume") {
            again.push("--resume".into());
        }
        let o = run_with(w.bin, &again, None);
        assert!(o.status.success(), "{what}, continued: {}", stderr(&o));
        assert!((w.finished)(&out), "{what}, continued");
        (w.not_repeated)(&out, &kept, &err, &o);
        assert_nothing_partial(root, &format!("{what}, continued"));
    }
    unreachable!()
}

fn nothing(_: &Path, _: &[String], _: &str, _: &Output) {}

/// A continued training run that kept a saved epoch does not start again
/// from epoch 1.
fn train_not_repeated(out: &Path, kept: &[String], _: &str, o: &Output) {
    if kept.iter().any(|k| k == "resume.safetensors") {
        assert!(
            !stdout(o).contains("epoch   1/"),
            "{}: {}",
            out.display(),
            stdout(o)
        );
    }
}

/// A continued evaluation does not repeat the attacks its message named
/// as finished.
fn attack_not_repeated(out: &Path, _: &[String], err: &str, o: &Output) {
    let Some((_, rest)) = err.split_once("finished attacks (") else {
        return;
    };
    let names = rest.split(')').next().unwrap();
    let again = stderr(o);
    for name in names.split(", ") {
        assert!(
            again.contains(&format!("{name}: already finished")),
            "{}: {name}: {again}",
            out.display()
        );
    }
}

#[test]
fn a_failure_at_any_write_of_train_finetune_and_attack_keeps_the_finished_files() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let ckpt = checkpoint(root, "7");
    let train_done =
        |o: &Path| o.join("model.json").is_file() && o.join("model.safetensors").is_file();
    let train = Writer {
        bin: "train",
        args: words(&format!("{TRAIN} --epochs 2")),
        folder: true,
        finished: &train_done,
        not_repeated: &train_not_repeated,
    };
    // resume.json, then per epoch metrics.csv and resume.safetensors, then
    // model.safetensors and model.json.
    assert_eq!(each_write_fails_in_turn(root, &train), 7);
    let finetune = Writer {
        bin: "finetune",
        args: words(&format!(
            "--from {ckpt} --epochs 1 --device cpu --threads 1"
        )),
        ..train
    };
    assert_eq!(each_write_fails_in_turn(root, &finetune), 5);
    let attack_done =
        |o: &Path| o.join("summary.csv").is_file() && o.join("per_sample.csv").is_file();
    let attack = Writer {
        bin: "attack",
        args: words(&format!(
            "--checkpoint {ckpt} --attacks pgd3,pgd5 --eps 0.2 --n-eval 20 --device cpu --threads 1"
        )),
        folder: true,
        finished: &attack_done,
        not_repeated: &attack_not_repeated,
    };
    // subset.json, the state before and after each attack, the two CSVs.
    assert_eq!(each_write_fails_in_turn(root, &attack), 6);
}

#[test]
fn a_failure_at_any_write_of_score_precompute_bootstrap_and_report_leaves_no_partial_file() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let file_done = |o: &Path| o.is_file();
    let scores = Writer {
        bin: "score-precompute",
        args: words("--dataset digits --source gaussian-std --device cpu --threads 1"),
        folder: false,
        finished: &file_done,
        not_repeated: &nothing,
    };
    assert_eq!(each_write_fails_in_turn(root, &scores), 1);
    // Two evaluations of two checkpoints on one subset, compared.
    let evals: Vec<PathBuf> = ["7", "8"]
        .iter()
        .map(|seed| {
            let eval = root.join(format!("eval-{seed}"));
            let ckpt = checkpoint(root, seed);
            let line = format!(
                "--checkpoint {ckpt} --attacks pgd3 --eps 0.2 --n-eval 30 --device cpu --threads 1"
            );
            ok("attack", &with_out(&words(&line), &eval));
            eval
        })
        .collect();
    let tables = |o: &Path| o.join("comparisons.csv").is_file() && o.join("table2.md").is_file();
    let bootstrap = Writer {
        bin: "bootstrap",
        args: words(&format!(
            "--baseline {} --treatment {} --label x --resamples 200",
            evals[0].display(),
            evals[1].display()
        )),
        folder: true,
        finished: &tables,
        not_repeated: &nothing,
    };
    let n = each_write_fails_in_turn(root, &bootstrap);
    assert!(n >= 5, "comparisons.csv, 4 tables and the figures: {n}");
    // `report redraw DIR` writes the figures into DIR, which holds the CSVs.
    let source = root.join("bootstrap-1");
    for n in 1.. {
        let args = words(&format!("redraw {}", source.display()));
        let o = run_with("report", &args, Some(&n.to_string()));
        if o.status.success() {
            assert!(n > 2, "a figure is an .svg and a .png");
            break;
        }
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert_nothing_partial(root, &format!("report redraw failing at write {n}"));
        assert!(err.contains("To continue: rerun the same command"), "{err}");
        assert!(source.join("comparisons.csv").is_file());
    }
}

/// Sends `signal` (STOP, CONT) to `child`.
fn signal(child: &Child, signal: &str) {
    let o = Command::new("kill")
        .args([format!("-{signal}"), child.id().to_string()])
        .output()
        .unwrap();
    assert!(o.status.success(), "kill -{signal}");
}

/// Spawns `bin_name args` and stops it (SIGSTOP) as soon as `ready()`
/// holds (at most 120 s).
fn spawn_stopped_when(bin_name: &str, args: &[String], ready: impl Fn() -> bool) -> Child {
    let mut child = command(bin_name, args)
        .env_remove("TASER_FAIL_WRITE")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !ready() {
        if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            let o = child.wait_with_output().unwrap();
            panic!("{bin_name} never got ready: {}", stderr(&o));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    signal(&child, "STOP");
    child
}

#[test]
fn a_failed_run_leaves_another_runs_results_in_the_parent_it_created() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results");
    let (a, c) = (results.join("A"), results.join("C"));
    // A creates results/ and diverges once its warm-up has raised the
    // learning rate far enough (the run: epoch 29 here; the epoch
    // depends on the CPU's code path, so only a finished epoch before it is
    // required); C finishes inside results/ meanwhile (A is held stopped
    // until then).
    let diverging = with_out(
        &words(
            "--dataset digits --model mlp --device cpu --threads 1 --epochs 40 --optimizer sgd \
             --lr 30 --schedule warmup-cosine --warmup-epochs 39",
        ),
        &a,
    );
    let child = spawn_stopped_when("train", &diverging, || a.is_dir());
    ok(
        "train",
        &with_out(&words(&format!("{TRAIN} --epochs 1")), &c),
    );
    signal(&child, "CONT");
    let o = child.wait_with_output().unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    let epoch: usize = err
        .split("diverged in epoch ")
        .nth(1)
        .and_then(|t| t.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("A did not diverge: {err}"));
    assert!(epoch >= 2, "A diverged before finishing an epoch: {err}");
    assert!(
        c.join("model.json").is_file() && c.join("model.safetensors").is_file(),
        "the other run's results are gone: {:?}",
        tree(dir.path())
    );
    // A's own finished epochs stay, named, with the way to continue.
    assert!(a.join("resume.safetensors").is_file(), "{:?}", tree(&a));
    for f in ["resume.safetensors", "metrics.csv", "--resume"] {
        assert!(err.contains(f), "{f}: {err}");
    }
    assert_nothing_partial(dir.path(), "train A");
}

/// Mounts a tmpfs of `size` at `dir` (root only); None where mounting is
/// not permitted.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let o = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .ok()?;
        o.status.success().then(|| Tmpfs(dir.to_path_buf()))
    }

    /// Fills the file system with one-page files until it is full, then
    /// frees `pages` of them.
    fn fill_leaving(&self, pages: usize) {
        let fill = self.0.join("fill");
        std::fs::create_dir(&fill).unwrap();
        let page = vec![1u8; 4096];
        let mut n = 0;
        while std::fs::write(fill.join(n.to_string()), &page).is_ok() {
            n += 1;
        }
        let _ = std::fs::remove_file(fill.join(n.to_string()));
        assert!(n > pages, "the tmpfs took only {n} pages");
        for k in 0..pages {
            std::fs::remove_file(fill.join((n - 1 - k).to_string())).unwrap();
        }
    }

    fn free_all(&self) {
        std::fs::remove_dir_all(self.0.join("fill")).unwrap();
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).output();
    }
}

#[test]
fn a_full_disk_at_the_last_write_keeps_the_finished_attacks_and_the_rerun_continues() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = checkpoint(dir.path(), "7");
    let line = format!(
        "--checkpoint {ckpt} --attacks pgd3,pgd5 --eps 0.2 --n-eval 60 --device cpu --threads 1"
    );
    // A real full disk where a tmpfs can be mounted (as root); elsewhere
    // the hook fails the last of the six writes the same way.
    let fs = Tmpfs::mount(&dir.path().join("fs"), "2m");
    let out = dir.path().join("fs/eval");
    let args = with_out(&words(&line), &out);
    let o = match &fs {
        Some(fs) => {
            // Each file takes a page (the folder's lock, subset.json,
            // attack-state.json and its next version while it is replaced,
            // per_sample.csv): with k pages free the run stops at some write;
            // the smallest k that lets every attack finish makes summary.csv,
            // the last write, the one that finds no page.
            let mut last = None;
            for k in 2..=6 {
                fs.fill_leaving(k);
                let o = run_with("attack", &args, None);
                assert_nothing_partial(&fs.0, &format!("{k} pages"));
                if !o.status.success() && stderr(&o).contains("summary.csv") {
                    last = Some(o);
                    break;
                }
                assert!(!o.status.success(), "{k} pages were enough for every write");
                let _ = std::fs::remove_dir_all(&out);
                fs.free_all();
            }
            last.expect("no number of free pages made summary.csv the failing write")
        }
        None => {
            eprintln!("no tmpfs (mount not permitted): the full disk is injected");
            run_with("attack", &args, Some("6"))
        }
    };
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.to_lowercase().contains("no space left on device"),
        "{err}"
    );
    assert!(err.contains("summary.csv"), "{err}");
    assert_eq!(
        tree(&out),
        ["attack-state.json", "per_sample.csv", "subset.json"],
        "the finished pieces stay, nothing partial"
    );
    for f in [
        "attack-state.json",
        "subset.json",
        "(finished)",
        "pgd3, pgd5",
    ] {
        assert!(err.contains(f), "{f}: {err}");
    }
    assert!(err.contains("To continue: rerun the same command"), "{err}");
    if let Some(fs) = &fs {
        fs.free_all();
    }
    let o = ok("attack", &args);
    let again = stderr(&o);
    for name in ["pgd3", "pgd5"] {
        assert!(
            again.contains(&format!("{name}: already finished")),
            "{again}"
        );
    }
    assert!(out.join("summary.csv").is_file());
    assert_nothing_partial(&out, "rerun");
}

#[test]
fn a_second_run_on_a_folder_being_written_is_refused_naming_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let (std_ckpt, other) = (checkpoint(dir.path(), "7"), checkpoint(dir.path(), "8"));
    let attack = |ckpt: &str, out: &Path| {
        with_out(
            &words(&format!(
                "--checkpoint {ckpt} --attacks pgd3 --eps 0.2 --n-eval 30 --device cpu --threads 1"
            )),
            out,
        )
    };
    let train = |out: &Path| with_out(&words(&format!("{TRAIN} --epochs 1")), out);
    let eval = dir.path().join("eval");
    let run = dir.path().join("run");
    for (bin_name, first, second, out) in [
        (
            "attack",
            attack(&std_ckpt, &eval),
            attack(&other, &eval),
            &eval,
        ),
        ("train", train(&run), train(&run), &run),
    ] {
        let lock = out.join(".taser-lock");
        let holder = || std::fs::read_to_string(&lock).is_ok_and(|t| t.contains("since="));
        let child = spawn_stopped_when(bin_name, &first, holder);
        let pid = format!("pid={} ", child.id());
        let o = run_with(bin_name, &second, None);
        let err = stderr(&o);
        signal(&child, "CONT");
        let first_done = child.wait_with_output().unwrap();
        assert!(first_done.status.success(), "{}", stderr(&first_done));
        assert_eq!(o.status.code(), Some(1), "{bin_name}: {err}");
        assert!(
            err.contains("is being written by another run")
                && err.contains(&pid)
                && err.contains(&format!("binary={bin_name}"))
                && err.contains(&out.display().to_string()),
            "{bin_name}: {err}"
        );
        assert!(!lock.exists(), "the first run gave its folder back");
    }
    // The first evaluation's result is whole: its checkpoint, in both files.
    let summary = std::fs::read_to_string(eval.join("summary.csv")).unwrap();
    let state = std::fs::read_to_string(eval.join("attack-state.json")).unwrap();
    assert!(
        summary.contains(&std_ckpt) && !summary.contains(&other),
        "{summary}"
    );
    assert!(
        state.contains(&std_ckpt) && !state.contains(&other),
        "{state}"
    );
    assert!(dir.path().join("run/model.json").is_file());
}

#[test]
fn a_panic_at_a_write_leaves_no_partial_file_and_names_what_was_kept() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let ckpt = checkpoint(root, "7");
    let attack = words(&format!(
        "--checkpoint {ckpt} --attacks pgd3,pgd5 --eps 0.2 --n-eval 20 --device cpu --threads 1"
    ));
    let train = words(&format!("{TRAIN} --epochs 2"));
    // The 5th write: per_sample.csv of attack, epoch 2's resume state of train.
    for (bin_name, args, kept, resume) in [
        ("attack", attack, "attack-state.json", false),
        ("train", train, "resume.safetensors", true),
    ] {
        let out = root.join(format!("{bin_name}-panic"));
        let args = with_out(&args, &out);
        let o = run_with(bin_name, &args, Some("5:panic"));
        let err = stderr(&o);
        assert_eq!(
            o.status.code(),
            Some(101),
            "a panic that is no libtorch error: {err}"
        );
        assert!(err.contains("injected by TASER_FAIL_WRITE=5"), "{err}");
        assert_nothing_partial(root, bin_name);
        assert!(out.join(kept).is_file());
        assert!(err.contains("Kept in") && err.contains(kept), "{err}");
        let mut again = args.clone();
        if resume {
            assert!(err.contains("with --resume"), "{err}");
            again.push("--resume".into());
        }
        let o = ok(bin_name, &again);
        if resume {
            assert!(!stdout(&o).contains("epoch   1/"), "{}", stdout(&o));
        } else {
            assert!(
                stderr(&o).contains("pgd5: already finished"),
                "{}",
                stderr(&o)
            );
        }
    }
}

#[test]
fn a_failure_at_any_write_of_a_sweep_or_its_jobs_keeps_the_finished_steps() {
    let dir = tempfile::tempdir().unwrap();
    let grid = dir.path().join("g.toml");
    std::fs::write(
        &grid,
        "steps = [\"train\", \"attack\"]\n[axes]\nseed = [0]\n\
         [train]\ndataset = \"digits\"\nmodel = \"mlp\"\nmlp-hidden = \"32\"\nepochs = 1\nthreads = 1\n\
         [attack]\nattacks = \"pgd3\"\neps = \"0.2\"\nn-eval = 20\nthreads = 1\n",
    )
    .unwrap();
    let sweep = |out: &Path, fail: Option<&str>| {
        let args = words(&format!(
            "run {} --out {} --device cpu",
            grid.display(),
            out.display()
        ));
        let mut c = command("sweep", &args);
        c.env("TASER_BIN_DIR", bin("sweep").parent().unwrap());
        match fail {
            // The jobs' binaries inherit it: each fails its own N-th write.
            Some(spec) => c.env("TASER_FAIL_WRITE", spec),
            None => c.env_remove("TASER_FAIL_WRITE"),
        };
        c.output().unwrap()
    };
    for n in 1.. {
        let out = dir.path().join(format!("sweep-{n}"));
        let o = sweep(&out, Some(&n.to_string()));
        if o.status.success() {
            assert!(n > 3, "config.json, a step's marker, done, results.csv");
            break;
        }
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "write {n}: {err}");
        assert!(
            err.contains(&format!("TASER_FAIL_WRITE={n}")),
            "write {n}: {err}"
        );
        assert!(err.contains("the same command"), "write {n}: {err}");
        assert_nothing_partial(&out, &format!("sweep failing at write {n}"));
        let o = sweep(&out, None);
        assert!(o.status.success(), "write {n}, rerun: {}", stderr(&o));
        let results = std::fs::read_to_string(out.join("results.csv")).unwrap();
        assert_eq!(results.lines().count(), 2, "{results}");
        assert!(results.lines().nth(1).unwrap().contains(",ok"), "{results}");
        assert_nothing_partial(&out, &format!("sweep failing at write {n}, rerun"));
    }
}
