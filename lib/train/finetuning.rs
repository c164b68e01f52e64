//! Fine-tuning (TASER §3.4, eq. 26): `finetune`'s own flags, its protocol's
//! defaults (Appendix C.5), the defaults it takes from the checkpoint θ0
//! (read once), and the checks that θ0 fits the run.
use super::config::TrainConfig;
use crate::checkpoint::{self, CheckpointMeta};
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::models::ModelSpec;
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches};
use std::path::PathBuf;

/// Flags of `finetune` beyond those of `train`.
#[derive(Debug, Clone, clap::Args)]
pub struct FinetuneArgs {
    /// Checkpoint θ0 to start from; it also serves as the frozen teacher
    /// (any .safetensors of `train` with its .json beside it: model,
    /// model-best or model-last).
    #[arg(long)]
    pub from: PathBuf,
    /// Weight α of the teacher term α·KL(f_θ0(x) ‖ f_θ(x)) (TASER eq. 26).
    #[arg(long, default_value_t = 1.0)]
    pub alpha: f64,
    /// Which of the flags the checkpoint or the protocol fills in were given
    /// on the command line (set by [`parse`]; all unset: fill them all).
    #[arg(skip)]
    pub given: GivenFlags,
}

/// The flags that `finetune` fills in unless they are given: `--model`,
/// `--activation`, `--mlp-hidden` and `--dataset` from the checkpoint's
/// sidecar, `--warmup-epochs` as 10% of `--epochs`, and
/// `--lambda-warmup-steps` as the learning-rate warm-up's length in steps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GivenFlags {
    pub model: bool,
    pub activation: bool,
    pub mlp_hidden: bool,
    pub dataset: bool,
    pub warmup_epochs: bool,
    pub lambda_warmup_steps: bool,
}

impl GivenFlags {
    /// Reads which flags the command line gave (clap argument ids).
    pub fn from_matches(m: &ArgMatches) -> GivenFlags {
        let given = |id: &str| m.value_source(id) == Some(ValueSource::CommandLine);
        GivenFlags {
            model: given("model"),
            activation: given("activation"),
            mlp_hidden: given("mlp_hidden"),
            dataset: given("dataset"),
            warmup_epochs: given("warmup_epochs"),
            lambda_warmup_steps: given("lambda_warmup_steps"),
        }
    }
}

/// The fine-tuning protocol's defaults (TASER Appendix C.5) as clap
/// defaults of `train`'s flags, so `--help` shows them: 50 epochs, Adam,
/// learning rate 1e-3 → 1e-4 on a warm-up cosine, weight decay 1e-4.
pub const PROTOCOL_DEFAULTS: [(&str, &str); 6] = [
    ("epochs", "50"),
    ("optimizer", "adam"),
    ("lr", "1e-3"),
    ("lr_min", "1e-4"),
    ("weight_decay", "1e-4"),
    ("schedule", "warmup-cosine"),
];

/// Parses `finetune`'s command line into `A` (a flag struct that flattens
/// [`TrainConfig`] and [`FinetuneArgs`]) with [`PROTOCOL_DEFAULTS`], and
/// returns which defaulted flags were given. Usage errors exit as clap's do
/// (code 2).
pub fn parse<A: CommandFactory + FromArgMatches>() -> (A, GivenFlags) {
    let cmd = PROTOCOL_DEFAULTS
        .into_iter()
        .fold(A::command(), |cmd, (id, value)| {
            cmd.mut_arg(id, |a| a.default_value(value))
        });
    let matches = cmd.get_matches();
    match A::from_arg_matches(&matches) {
        Ok(args) => (args, GivenFlags::from_matches(&matches)),
        Err(e) => e.exit(),
    }
}

/// Reads θ0's sidecar (once), fills the flags `ft.given` leaves open into
/// `cfg`, and checks α. Returns the sidecar for [`check_teacher`].
///
/// Errors: the sidecar's ([`Error::MissingInput`], [`Error::CorruptInput`]);
/// [`Error::InvalidArgument`] for α < 0 or not a number.
pub fn fill_defaults(cfg: &mut TrainConfig, ft: &FinetuneArgs) -> Result<CheckpointMeta> {
    let meta = checkpoint::read_meta(&ft.from)?;
    let given = ft.given;
    if !given.model {
        cfg.model = meta.model.arch;
    }
    if !given.activation {
        cfg.activation = meta.model.activation;
    }
    if !given.mlp_hidden {
        cfg.mlp_hidden = meta.model.mlp_hidden.clone();
    }
    if !given.dataset {
        cfg.dataset = meta.dataset.parse()?;
    }
    if !given.warmup_epochs {
        cfg.warmup_epochs = 0.1 * cfg.epochs as f64;
    }
    if !(ft.alpha.is_finite() && ft.alpha >= 0.0) {
        return Err(Error::invalid("--alpha", ft.alpha, "must be ≥ 0"));
    }
    Ok(meta)
}

/// The λ ramp's length when `finetune` ramps λ over the learning-rate
/// warm-up: `--warmup-epochs` × steps per epoch, rounded.
pub fn warmup_steps(cfg: &TrainConfig, steps_per_epoch: usize) -> usize {
    (cfg.warmup_epochs * steps_per_epoch as f64).round() as usize
}

/// Checks that θ0 (its sidecar `meta`) was trained on `data` with the model
/// `spec`.
///
/// Errors: [`Error::CheckpointMismatch`] naming what differs and the flag
/// that fixes it.
pub fn check_teacher(
    meta: &CheckpointMeta,
    ft: &FinetuneArgs,
    spec: &ModelSpec,
    data: &Dataset,
) -> Result<()> {
    let mismatch = |reason: String, fix: &str| Error::CheckpointMismatch {
        path: ft.from.clone(),
        reason,
        fix: fix.into(),
    };
    if meta.dataset != data.name.to_string() {
        return Err(mismatch(
            format!("it was trained on {}, not on {}", meta.dataset, data.name),
            "pass the --dataset it was trained on, or a checkpoint of this data set",
        ));
    }
    if meta.train_fingerprint != data.train.fingerprint() {
        return Err(mismatch(
            "its training split's fingerprint differs from this one's (other data files or split seed)".into(),
            "fine-tune with the data, --seed and --val-size it was trained with",
        ));
    }
    if &meta.model != spec {
        let (reason, fix) = model_mismatch(&meta.model, spec, ft.given, data);
        return Err(mismatch(reason, &fix));
    }
    Ok(())
}

/// The refusal of a θ0 whose model `saved` differs from this run's `now`:
/// a reason that names each differing property (checkpoint → this run) and
/// a fix that names only the flags the user gave (`given`) among those that
/// differ, or the data set when the input shape or number of outputs
/// differs (those come from `data`, not from a flag).
fn model_mismatch(
    saved: &ModelSpec,
    now: &ModelSpec,
    given: GivenFlags,
    data: &Dataset,
) -> (String, String) {
    let mut diffs = Vec::new();
    let mut flags = Vec::new();
    let mut differs = |differ: bool, text: String, flag: Option<(&'static str, bool)>| {
        if differ {
            diffs.push(text);
            if let Some((flag, true)) = flag {
                flags.push(flag);
            }
        }
    };
    differs(
        saved.arch != now.arch,
        format!("model {} → {}", saved.arch, now.arch),
        Some(("--model", given.model)),
    );
    differs(
        saved.activation != now.activation,
        format!(
            "activation {} → {}",
            flag_value(saved.activation),
            flag_value(now.activation)
        ),
        Some(("--activation", given.activation)),
    );
    differs(
        saved.mlp_hidden != now.mlp_hidden,
        format!(
            "hidden widths {:?} → {:?}",
            saved.mlp_hidden, now.mlp_hidden
        ),
        Some(("--mlp-hidden", given.mlp_hidden)),
    );
    differs(
        saved.input_shape != now.input_shape,
        format!(
            "input shape {:?} → {:?} (from {})",
            saved.input_shape, now.input_shape, data.name
        ),
        None,
    );
    differs(
        saved.num_outputs != now.num_outputs,
        format!(
            "outputs (classes) {} → {} (from {})",
            saved.num_outputs, now.num_outputs, data.name
        ),
        None,
    );
    let mut fixes = Vec::new();
    if !flags.is_empty() {
        let them = if flags.len() == 1 { "it" } else { "them" };
        fixes.push(format!(
            "leave {} out (finetune takes {them} from the checkpoint) or match {them}",
            flags.join("/")
        ));
    }
    if saved.input_shape != now.input_shape || saved.num_outputs != now.num_outputs {
        fixes.push(format!(
            "use a checkpoint trained on {} (inputs {:?}, {} outputs)",
            data.name, now.input_shape, now.num_outputs
        ));
    }
    if fixes.is_empty() {
        fixes.push("fine-tune with the model flags it was trained with".into());
    }
    let reason = format!(
        "its model differs from this run's (checkpoint → this run: {})",
        diffs.join("; ")
    );
    (reason, fixes.join("; or "))
}

/// `v` as its command-line value (e.g. `relu`).
fn flag_value(v: impl clap::ValueEnum) -> String {
    v.to_possible_value()
        .map_or_else(String::new, |p| p.get_name().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Args, Command};

    #[test]
    fn only_flags_on_the_command_line_count_as_given() {
        let cmd = TrainConfig::augment_args(Command::new("finetune"));
        let m = cmd
            .try_get_matches_from(["finetune", "--model", "mlp", "--lambda-warmup-steps", "3"])
            .unwrap();
        let given = GivenFlags::from_matches(&m);
        assert_eq!(
            given,
            GivenFlags {
                model: true,
                lambda_warmup_steps: true,
                ..GivenFlags::default()
            }
        );
    }

    #[test]
    fn lambda_ramps_over_the_learning_rate_warm_up_rounded() {
        let cmd = TrainConfig::augment_args(Command::new("finetune"));
        let m = cmd
            .try_get_matches_from(["finetune", "--warmup-epochs", "0.3"])
            .unwrap();
        let cfg = <TrainConfig as clap::FromArgMatches>::from_arg_matches(&m).unwrap();
        // 0.3 epochs of 45 steps: 13.5 → 14.
        assert_eq!(warmup_steps(&cfg, 45), 14);
    }
}
