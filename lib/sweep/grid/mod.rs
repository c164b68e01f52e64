//! Grid files: the TOML that declares a sweep, and its expansion into jobs.
//!
//! ```toml
//! name = "digits-demo"
//! steps = ["train", "attack"]          # or ["finetune", "attack"], ["train"], ["finetune"],
//!                                      # or ["train", "finetune", "attack"] (below)
//!
//! [scores.dsm]                         # score-precompute flags; run once, before
//! dataset = "digits"                   # the jobs whose flags say scores = "@dsm"
//! source = "dsm"
//!
//! [axes]                               # the cartesian product of these lists
//! method = ["standard", "pgd-at"]      # bare keys: flags of the model step
//! taser = [{ lambda = 0 },             # an inline table sets several flags together
//!          { lambda = 0.1, scores = "@dsm", lambda-warmup-steps = 450 }]
//! attack.eps = ["0.1", "0.2"]          # `attack.` addresses the attack step
//!
//! [train]                              # fixed flags of each step
//! epochs = 30
//! [attack]
//! attacks = "aa,pgd20"
//!
//! [[exclude]]                          # points whose parameters all match are dropped
//! method = "standard"
//! lambda = 0.1
//! ```
//!
//! `checkpoints = ["best", "last"]` (top level) makes the attack step
//! evaluate each named checkpoint of the model step, each into its own
//! folder ([`Checkpoint`]).
//!
//! `ranks_per_job = G` (top level, default 1) trains every model step as G
//! data-parallel ranks, one GPU each (the model steps get
//! `--data-parallel`; see `sweep::slot` for how they start and which GPUs
//! they take). A job of G > 1 ranks has an id of its own.
//!
//! Values become command-line flags: `key = v` gives `--key v`, `true` gives
//! a bare `--key`, `false` leaves it out, an array gives `--key v1 v2`.
//! Errors name the key and the line it is on.
//!
//! # The fine-tune protocol: `steps = ["train", "finetune", "attack"]`
//!
//! TASER App. C.2: each base model is trained once, then fine-tuned (eq. 26)
//! from its checkpoint. In this chain a bare key sets a flag of **both**
//! model steps (the base `train` and the `finetune`: e.g. `method`, `seed`),
//! `train.KEY` only the base, `finetune.KEY` only the fine-tune, and
//! `attack.KEY` the evaluations; `[train]`, `[finetune]` and `[attack]` hold
//! each step's fixed flags. An inline table may set several steps' flags at
//! once (`{ finetune = { lambda = 0.01, reg = "grad-norm" } }`, or with
//! dotted keys `{ finetune.lambda = 0.01, finetune.scores = "@dsm" }`).
//!
//! ```toml
//! steps = ["train", "finetune", "attack"]
//! [axes]
//! method = ["standard", "pgd-at"]      # base and fine-tune alike
//! seed = [0, 1, 2]
//! finetune.taser = [{ lambda = 0 },    # λ = 0: the control (same teacher, epochs)
//!   { lambda = 0.1, scores = "@dsm" }]
//! [train]
//! epochs = 200
//! [finetune]
//! epochs = 50
//! ```
//!
//! (`finetune.taser = […]` is an axis whose values address the fine-tune:
//! every key of its inline tables is a `finetune` flag.) The sweep gives
//! each distinct base (its resolved `train` flags) one `train` task, shared
//! by every fine-tune that starts from it, and sets each fine-tune's
//! `--from` to that base's checkpoint (a grid may not set `from` here).
//! Each base also gets one **baseline** evaluation (`attack` of the base
//! checkpoint as it is). results.csv has one row per baseline evaluation
//! (`stage = base`) and one per fine-tune (`stage = finetune`); the λ = 0
//! control is an ordinary value of the fine-tune's axis. A base that fails
//! marks its baseline and fine-tunes as not run, with its reason.
mod checkpoints;
mod origin;
mod ranks;
mod spelling;
mod toml;

pub use checkpoints::Checkpoint;

use crate::error::{Error, Result};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// One step of a job's chain: which binary it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Step {
    /// `train`: a model from scratch.
    Train,
    /// `finetune`: a model from a checkpoint (`from = …` in `[finetune]`,
    /// or the base model's checkpoint in the three-step chain).
    Finetune,
    /// `attack`: evaluation of the model step's checkpoint.
    Attack,
}

impl Step {
    /// The binary (and grid section) name.
    pub fn name(self) -> &'static str {
        match self {
            Step::Train => "train",
            Step::Finetune => "finetune",
            Step::Attack => "attack",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Step> {
        match s {
            "train" => Some(Step::Train),
            "finetune" => Some(Step::Finetune),
            "attack" => Some(Step::Attack),
            _ => None,
        }
    }
}

/// A flag value as written in the grid, kept in its canonical text form so
/// that ids, command lines and results.csv agree.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FlagValue {
    /// `--key value`.
    One(String),
    /// `--key v1 v2 …` (e.g. `--adam-betas 0.9 0.99`).
    Many(Vec<String>),
    /// A bare `--key` (TOML `true`).
    Switch,
    /// Left out (TOML `false`), but kept so an axis can turn a switch off.
    Off,
}

impl fmt::Display for FlagValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FlagValue::One(s) => write!(f, "{s}"),
            FlagValue::Many(v) => write!(f, "{}", v.join(" ")),
            FlagValue::Switch => write!(f, "true"),
            FlagValue::Off => write!(f, "false"),
        }
    }
}

/// Flags of one binary, sorted by name.
pub type Flags = BTreeMap<String, FlagValue>;

/// A parameter name: the step it addresses and the flag.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Param {
    /// `None`: the model step (train or finetune; both in the three-step
    /// chain); `Some(Attack)`: attack; `Some(Train)`/`Some(Finetune)`:
    /// only that model step of the three-step chain (in a two-step chain
    /// they are read as `None`).
    pub step: Option<Step>,
    /// Flag name without the leading dashes.
    pub flag: String,
}

impl fmt::Display for Param {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.step {
            None => write!(f, "{}", self.flag),
            Some(s) => write!(f, "{}.{}", s.name(), self.flag),
        }
    }
}

/// One `[[exclude]]` table: parameters with their values, each with its
/// line in the grid file (for error messages).
pub type ExcludePattern = Vec<(Param, FlagValue, usize)>;

/// One value of an axis: the parameters it sets.
pub type AxisValue = Vec<(Param, FlagValue)>;

/// An axis: a name and its values.
#[derive(Clone, Debug)]
pub struct Axis {
    /// Name as written (a flag name, or a label for table-valued axes).
    pub name: String,
    /// Values in the order written.
    pub values: Vec<AxisValue>,
}

/// A score-precompute job shared by the grid points that reference it.
#[derive(Clone, Debug)]
pub struct ScoreSpec {
    /// The name after `scores.`; jobs reference it as `"@name"`.
    pub name: String,
    /// score-precompute flags (without --out and --device, which the sweep sets).
    pub flags: Flags,
    /// Stable id from the flags.
    pub id: String,
}

/// A parsed grid file.
#[derive(Clone, Debug)]
pub struct Grid {
    /// The file it was read from.
    pub path: PathBuf,
    /// Name for logs (default: the file stem).
    pub name: String,
    /// The chain every point runs.
    pub steps: Vec<Step>,
    /// Shared score jobs by name.
    pub scores: BTreeMap<String, ScoreSpec>,
    /// The axes in the order written.
    pub axes: Vec<Axis>,
    /// Fixed flags per step.
    pub fixed: BTreeMap<Step, Flags>,
    /// Exclusion patterns: a point matching every entry of one is dropped
    /// (each entry with its line in the file, for error messages).
    pub excludes: Vec<ExcludePattern>,
    /// The checkpoints the attack step evaluates, one attack each (empty:
    /// one attack of the final weights; see [`Checkpoint`]).
    pub checkpoints: Vec<Checkpoint>,
    /// `ranks_per_job`: data-parallel ranks (one device each) of every
    /// train/finetune step (≥ 1; default 1; see `sweep::slot`).
    pub ranks_per_job: usize,
}

/// One grid point: what each step runs with.
#[derive(Clone, Debug)]
pub struct JobSpec {
    /// Position in the plan (the order of the axes' product).
    pub index: usize,
    /// Stable id: a hash of the sorted resolved flags of every step.
    pub id: String,
    /// The axes' parameters of this point (results.csv's parameter columns).
    pub params: BTreeMap<String, String>,
    /// Resolved flags per step (scores still as `@name`).
    pub flags: BTreeMap<Step, Flags>,
    /// Names of the score jobs this point needs first.
    pub needs_scores: Vec<String>,
}

/// Short stable id: the first 12 hex digits of SHA-256 of `text`.
pub fn short_hash(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    digest.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn canonical(flags: &Flags) -> String {
    flags
        .iter()
        .map(|(k, v)| format!("{k}={v}\n"))
        .collect::<String>()
}

impl Grid {
    /// Reads and checks a grid file.
    pub fn load(path: &Path) -> Result<Grid> {
        let src = std::fs::read_to_string(path).map_err(|e| Error::MissingInput {
            path: path.to_path_buf(),
            reason: e.to_string(),
            fix: "give the path of a grid file (e.g. sweeps/digits-demo.toml)".into(),
        })?;
        Grid::parse(&src, path)
    }

    /// The (first) model step of the chain (train or finetune).
    pub fn model_step(&self) -> Step {
        self.steps[0]
    }

    /// Whether the chain is the fine-tune protocol `train → finetune →
    /// attack` (shared bases, baseline evaluations, fine-tunes).
    pub fn is_chained(&self) -> bool {
        self.steps == [Step::Train, Step::Finetune, Step::Attack]
    }

    /// The steps a parameter sets: the named one, or for a bare name every
    /// model step of the chain.
    fn steps_of(&self, p: &Param) -> Vec<Step> {
        match p.step {
            Some(s) => vec![s],
            None => self
                .steps
                .iter()
                .copied()
                .filter(|s| *s != Step::Attack)
                .collect(),
        }
    }

    /// Stable id of resolved flags: a hash of `tag` and the steps' sorted
    /// flags, a score reference hashed as its score job's id (so a change
    /// of its score-precompute flags gives new jobs). Returns the id and
    /// the score jobs referenced, in order.
    pub fn flags_id(&self, tag: &str, flags: &BTreeMap<Step, Flags>) -> (String, Vec<String>) {
        let mut needs = Vec::new();
        // A job of G > 1 ranks is another run than the one-process job
        // (its sums are added in another order): its own id and folder.
        let mut text = match self.ranks_per_job {
            1 => tag.to_string(),
            g => format!("ranks_per_job={g}\n{tag}"),
        };
        for (s, f) in flags {
            text.push_str(&format!("[{}]\n", s.name()));
            for (k, v) in f {
                let shown = match v {
                    FlagValue::One(x) if x.starts_with('@') => {
                        let spec = &self.scores[&x[1..]];
                        if !needs.contains(&spec.name) {
                            needs.push(spec.name.clone());
                        }
                        format!("@{}", spec.id)
                    }
                    other => other.to_string(),
                };
                text.push_str(&format!("{k}={shown}\n"));
            }
        }
        (short_hash(&text), needs)
    }

    /// Expands the axes into jobs, dropping excluded points. Points that
    /// resolve to the same flags (e.g. two axis values that coincide) are
    /// kept once.
    pub fn jobs(&self) -> Vec<JobSpec> {
        let mut points: Vec<Vec<&AxisValue>> = vec![Vec::new()];
        for axis in &self.axes {
            let mut next = Vec::with_capacity(points.len() * axis.values.len());
            for p in &points {
                for v in &axis.values {
                    let mut q = p.clone();
                    q.push(v);
                    next.push(q);
                }
            }
            points = next;
        }
        let model = self.model_step();
        let mut jobs: Vec<JobSpec> = Vec::new();
        for point in points {
            let mut flags: BTreeMap<Step, Flags> = self
                .steps
                .iter()
                .map(|s| (*s, self.fixed.get(s).cloned().unwrap_or_default()))
                .collect();
            let mut params = BTreeMap::new();
            for (p, v) in point.iter().flat_map(|v| v.iter()) {
                for step in self.steps_of(p) {
                    flags
                        .get_mut(&step)
                        .expect("step of the chain")
                        .insert(p.flag.clone(), v.clone());
                }
                params.insert(p.to_string(), v.to_string());
            }
            let value_of = |p: &Param| flags[&p.step.unwrap_or(model)].get(&p.flag);
            if self
                .excludes
                .iter()
                .any(|pat| pat.iter().all(|(p, v, _)| value_of(p) == Some(v)))
            {
                continue;
            }
            let (id, needs) = self.flags_id(&self.checkpoints_tag(), &flags);
            if jobs.iter().any(|j| j.id == id) {
                continue;
            }
            jobs.push(JobSpec {
                index: jobs.len(),
                id,
                params,
                flags,
                needs_scores: needs,
            });
        }
        jobs
    }
}

/// Command-line arguments of a flag map, in sorted flag order.
pub fn to_args(flags: &Flags) -> Vec<String> {
    let mut out = Vec::new();
    for (k, v) in flags {
        match v {
            FlagValue::One(s) => {
                out.push(format!("--{k}"));
                out.push(s.clone());
            }
            FlagValue::Many(vs) => {
                out.push(format!("--{k}"));
                out.extend(vs.iter().cloned());
            }
            FlagValue::Switch => out.push(format!("--{k}")),
            FlagValue::Off => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Grid> {
        Grid::parse(s, Path::new("g.toml"))
    }

    const GRID: &str = r#"
steps = ["train", "attack"]
[scores.dsm]
source = "dsm"
[axes]
method = ["standard", "pgd-at"]
taser = [{ lambda = 0 }, { lambda = 0.1, scores = "@dsm" }]
attack.eps = ["0.1", "0.2"]
[train]
epochs = 1
[attack]
attacks = "pgd20"
[[exclude]]
method = "standard"
attack.eps = "0.2"
"#;

    #[test]
    fn flag_origin_finds_fixed_axis_inline_and_score_keys() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("g.toml");
        std::fs::write(&path, GRID).unwrap();
        let g = Grid::load(&path).unwrap();
        let at = |section: &str, flag: &str| g.flag_origin(section, flag);
        assert_eq!(at("attack", "attacks"), Some(("attack.attacks".into(), 12)));
        assert_eq!(at("train", "method"), Some(("axes.method".into(), 6)));
        assert_eq!(at("attack", "eps"), Some(("axes.attack.eps".into(), 8)));
        assert_eq!(at("train", "lambda"), Some(("axes.taser.lambda".into(), 7)));
        assert_eq!(
            at("scores.dsm", "source"),
            Some(("scores.dsm.source".into(), 4))
        );
        assert_eq!(at("attack", "method"), None);
    }

    #[test]
    fn expands_product_minus_exclusions() {
        let g = parse(GRID).unwrap();
        let jobs = g.jobs();
        assert_eq!(jobs.len(), 8 - 2);
        let ids: std::collections::HashSet<_> = jobs.iter().map(|j| j.id.clone()).collect();
        assert_eq!(ids.len(), jobs.len());
        let with_scores = jobs.iter().filter(|j| !j.needs_scores.is_empty()).count();
        assert_eq!(with_scores, 3);
        assert_eq!(
            jobs[0].flags[&Step::Attack]["eps"],
            FlagValue::One("0.1".into())
        );
    }

    #[test]
    fn ids_are_stable_under_reordering_and_number_spelling() {
        let a = parse(GRID).unwrap().jobs();
        let b = parse(
            &GRID
                .replace("lambda = 0.1", "lambda = 1e-1")
                .replace("[train]\nepochs = 1", "[train]\nepochs = 1\n"),
        )
        .unwrap()
        .jobs();
        let ia: Vec<_> = a.iter().map(|j| &j.id).collect();
        let ib: Vec<_> = b.iter().map(|j| &j.id).collect();
        assert_eq!(ia, ib);
    }

    #[test]
    fn errors_name_key_and_line() {
        let e = parse("[axes]\nmethod = \"standard\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2") && e.contains("axes.method"), "{e}");
        let e = parse("[train]\nepochs = 1\nout = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 3") && e.contains("train.out"), "{e}");
        let e = parse("[axes]\nmethod = [\"a\"\n").unwrap_err().to_string();
        assert!(e.contains("line"), "{e}");
        let e = parse("\n\nbogus = 1\n").unwrap_err().to_string();
        assert!(e.contains("line 3") && e.contains("bogus"), "{e}");
        let e = parse("[train]\nscores = \"@nope\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("@nope"), "{e}");
    }

    const CHAIN: &str = r#"
steps = ["train", "finetune", "attack"]
[scores.dsm]
source = "dsm"
[axes]
method = ["standard", "pgd-at"]
train.lr = [0.1]
finetune.taser = [{ lambda = 0 }, { lambda = 0.01, reg = "grad-norm", scores = "@dsm" }]
[train]
epochs = 200
[finetune]
epochs = 50
[attack]
attacks = "aa"
[[exclude]]
method = "standard"
finetune.lambda = 0.01
"#;

    #[test]
    fn the_chain_routes_bare_train_and_finetune_keys_to_their_steps() {
        let g = parse(CHAIN).unwrap();
        assert!(g.is_chained());
        let jobs = g.jobs();
        assert_eq!(jobs.len(), 3, "4 points minus one excluded");
        let one = |s: &str| FlagValue::One(s.into());
        for j in &jobs {
            let (train, ft) = (&j.flags[&Step::Train], &j.flags[&Step::Finetune]);
            // Bare keys set both model steps; `train.` and the fixed
            // tables only their own.
            assert_eq!(train["method"], ft["method"]);
            assert_eq!(train["lr"], one("0.1"));
            assert!(!ft.contains_key("lr"));
            assert_eq!((&train["epochs"], &ft["epochs"]), (&one("200"), &one("50")));
            assert!(!train.contains_key("lambda"));
        }
        // One axis value sets several fine-tune flags at once.
        let taser = jobs
            .iter()
            .find(|j| j.params.get("finetune.lambda").map(String::as_str) == Some("0.01"))
            .unwrap();
        let ft = &taser.flags[&Step::Finetune];
        assert_eq!(ft["reg"], one("grad-norm"));
        assert_eq!(ft["scores"], one("@dsm"));
        assert_eq!(taser.params["method"], "pgd-at");
        // The base id depends on the train flags only.
        let base = |j: &JobSpec| {
            let f = [(Step::Train, j.flags[&Step::Train].clone())].into();
            g.flags_id("base\n", &f).0
        };
        let pgd: Vec<_> = jobs
            .iter()
            .filter(|j| j.params["method"] == "pgd-at")
            .collect();
        assert_eq!(pgd.len(), 2);
        assert_eq!(base(pgd[0]), base(pgd[1]));
        assert_ne!(base(&jobs[0]), base(pgd[0]));
    }

    #[test]
    fn the_chain_refuses_a_from_and_two_step_chains_keep_their_keys() {
        let e = parse(&CHAIN.replace("[finetune]\n", "[finetune]\nfrom = \"m.safetensors\"\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("finetune.from") && e.contains("--from"), "{e}");
        let e = parse(&CHAIN.replace(
            "steps = [\"train\", \"finetune\", \"attack\"]",
            "steps = [\"train\", \"attack\"]",
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("[finetune] is given"), "{e}");
        // In a two-step chain `train.lr` is the model step's `lr`, as before.
        let g = parse(&GRID.replace("method = [", "train.lr = [0.1]\nmethod = [")).unwrap();
        let j = &g.jobs()[0];
        assert_eq!(j.params["lr"], "0.1");
        assert_eq!(j.flags[&Step::Train]["lr"], FlagValue::One("0.1".into()));
    }

    #[test]
    fn args_of_flags() {
        let mut f = Flags::new();
        f.insert(
            "adam-betas".into(),
            FlagValue::Many(vec!["0.9".into(), "0.99".into()]),
        );
        f.insert("nesterov".into(), FlagValue::Switch);
        f.insert("awp".into(), FlagValue::Off);
        f.insert("lr".into(), FlagValue::One("0.001".into()));
        assert_eq!(
            to_args(&f),
            ["--adam-betas", "0.9", "0.99", "--lr", "0.001", "--nesterov"]
        );
    }
}
