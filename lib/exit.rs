//! The one exit-code policy of every binary:
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | a computation failed (training diverged, an I/O or libtorch error, a file or output folder locked by another process, a sweep job failed) |
//! | 2 | bad usage or bad input (a flag out of its domain, a missing or corrupt input file, a checkpoint that does not match, an unwritable `--out`); clap's own usage errors exit 2 too |
//! | 3 | interrupted (a signal stopped the work; rerunning the same command continues it) |
//!
//! Binaries run their body, which returns `anyhow::Result<Status>`, through
//! [`run_main`]: it prints the error chain once, picks the code from the
//! first library [`Error`] in it, and turns a panic that carries a libtorch
//! error (tch's methods without the `f_` prefix panic on one, e.g. when
//! CUDA runs out of memory) into that error: exit 1 with its hint, never
//! Rust's exit 101 for a panic.
use crate::error::Error;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::process::ExitCode;
use std::sync::Mutex;

/// How a binary ended, as the exit-code policy sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Exit 0.
    Ok,
    /// Exit 1: a computation failed.
    Failed,
    /// Exit 2: bad usage or input.
    BadInput,
    /// Exit 3: stopped by a signal; a rerun continues.
    Interrupted,
}

impl Status {
    /// The process exit code of this status.
    pub fn code(self) -> u8 {
        match self {
            Status::Ok => 0,
            Status::Failed => 1,
            Status::BadInput => 2,
            Status::Interrupted => 3,
        }
    }
}

impl Error {
    /// The status a binary ends with when this error stops it.
    pub fn status(&self) -> Status {
        match self {
            Error::InvalidArgument { .. }
            | Error::MissingInput { .. }
            | Error::CorruptInput { .. }
            | Error::CheckpointMismatch { .. }
            | Error::GpuNotVisible { .. }
            | Error::NoMpi { .. }
            | Error::Unwritable { .. } => Status::BadInput,
            Error::AfterWrites { error, .. } => error.status(),
            Error::Interrupted { .. } => Status::Interrupted,
            Error::RankFailed { code, .. } => match code {
                2 => Status::BadInput,
                3 => Status::Interrupted,
                _ => Status::Failed,
            },
            Error::OutputFailed { .. }
            | Error::OutputInUse { .. }
            | Error::FileLocked { .. }
            | Error::Diverged { .. }
            | Error::Invariant { .. }
            | Error::Collective { .. }
            | Error::NonFinite { .. }
            | Error::Torch(_)
            | Error::Io { .. } => Status::Failed,
        }
    }
}

/// The status of an error chain: that of the first library [`Error`] in it,
/// else [`Status::Failed`].
pub fn status_of(err: &anyhow::Error) -> Status {
    err.chain()
        .find_map(|cause| cause.downcast_ref::<Error>())
        .map_or(Status::Failed, Error::status)
}

/// Ends a binary: prints `error: <chain>` on stderr for an error and maps
/// the outcome to its exit code by the policy above.
pub fn finish(result: anyhow::Result<Status>) -> ExitCode {
    match result {
        Ok(status) => ExitCode::from(status.code()),
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(status_of(&err).code())
        }
    }
}

/// The libtorch error text of the last panic that carried one, from any
/// thread (a worker's panic reaches `main` as a join error without it).
static TORCH_PANIC: Mutex<Option<String>> = Mutex::new(None);

/// The libtorch error in a panic message, if it carries one: tch unwraps a
/// `TchError::Torch("…")`, so the message holds its `Debug` form. The text
/// is unescaped and cut before libtorch's C++ stack frames.
pub fn torch_error_in(panic_message: &str) -> Option<String> {
    let start = panic_message.find("Torch(\"")? + "Torch(\"".len();
    let quoted = panic_message[start..]
        .rsplit_once("\")")
        .map_or(&panic_message[start..], |(q, _)| q);
    // Undo `Debug`'s escapes: \n, \t, \", \\ (others kept as written).
    let mut text = String::with_capacity(quoted.len());
    let mut chars = quoted.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            text.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => text.push('\n'),
            Some('t') => text.push('\t'),
            Some(other) => text.push(other),
            None => text.push('\\'),
        }
    }
    let cut = ["\nframe #", "\nException raised from"]
        .iter()
        .filter_map(|m| text.find(m))
        .min()
        .unwrap_or(text.len());
    Some(text[..cut].trim().to_string())
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}

/// Installs the panic hook of [`run_main`]: a panic carrying a libtorch
/// error is recorded quietly (the error is printed once, by [`finish`]);
/// any other panic goes to Rust's default hook.
fn install_panic_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        match torch_error_in(&panic_message(info.payload())) {
            Some(text) => {
                *TORCH_PANIC.lock().unwrap_or_else(|e| e.into_inner()) = Some(text);
            }
            None => default(info),
        }
    }));
}

/// Runs a binary's `body` and ends the process by the policy ([`finish`]).
/// A panic whose message (or that of an earlier panic in another thread)
/// carries a libtorch error ends it as [`Error::Torch`] — exit 1, the
/// error's hint on stderr; any other panic is a bug and unwinds on (exit
/// 101 with Rust's message).
pub fn run_main(body: impl FnOnce() -> anyhow::Result<Status>) -> ExitCode {
    install_panic_hook();
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(result) => finish(result),
        Err(payload) => {
            let recorded = TORCH_PANIC.lock().unwrap_or_else(|e| e.into_inner()).take();
            match torch_error_in(&panic_message(payload.as_ref())).or(recorded) {
                Some(text) => finish(Err(Error::Torch(tch::TchError::Torch(text)).into())),
                None => std::panic::resume_unwind(payload),
            }
        }
    }
}

/// The environment variable that puts a binary in argument-check mode: with
/// `TASER_CHECK_ARGS=1` its command line is parsed (clap's usage errors exit
/// 2 with clap's message and its "a similar argument exists" tip) and the
/// binary exits 0 without doing any work. `sweep` runs each step's binary
/// this way before any job starts, so a misspelt grid flag is found by the
/// binary's own parser, not by a second list of flags.
pub const CHECK_ARGS_ENV: &str = "TASER_CHECK_ARGS";

/// Parses the command line into `A` (clap's usage errors exit 2); in
/// argument-check mode ([`CHECK_ARGS_ENV`]) exits 0 once it parsed. Every
/// binary's `main` starts with it instead of `A::parse()`.
pub fn parse_args<A: clap::Parser>() -> A {
    stop_if_checking(A::parse())
}

/// Returns `parsed`, or exits 0 in argument-check mode ([`CHECK_ARGS_ENV`]):
/// for binaries that parse their command line their own way.
pub fn stop_if_checking<T>(parsed: T) -> T {
    stop_if_checking_with(parsed, |_| Ok(()))
}

/// [`stop_if_checking`] that in argument-check mode first applies `rules`
/// to the parsed flags: rules between flags that need no data or device
/// (what `--data-parallel` refuses), so `sweep` finds their refusals before
/// any job starts. A refusal is printed and exits with its code (2 for bad
/// input); outside check mode `rules` is not run here.
pub fn stop_if_checking_with<T>(parsed: T, rules: impl FnOnce(&T) -> crate::Result<()>) -> T {
    if std::env::var(CHECK_ARGS_ENV).is_ok_and(|v| v == "1") {
        let code = match rules(&parsed) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("error: {e}");
                e.status().code()
            }
        };
        std::process::exit(i32::from(code));
    }
    parsed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_input_is_two_failed_computation_is_one_through_any_context() {
        let bad =
            anyhow::Error::from(Error::invalid("--eps", 8, "too large")).context("attack failed");
        assert_eq!(status_of(&bad), Status::BadInput);
        let diverged = anyhow::Error::from(Error::Diverged {
            epoch: 3,
            detail: "loss NaN".into(),
        });
        assert_eq!(status_of(&diverged), Status::Failed);
        assert_eq!(
            status_of(&anyhow::anyhow!("not a library error")),
            Status::Failed
        );
    }

    #[test]
    fn a_sweep_without_mpi_is_bad_usage_that_names_the_array_form_and_the_mpi_build() {
        let e = || Error::NoMpi {
            command: "sweep run g.toml".into(),
        };
        assert_eq!(status_of(&anyhow::Error::from(e())), Status::BadInput);
        let text = e().to_string();
        for fix in [
            "sweep-array.sbatch",
            "sweep run-one",
            "make sweep-mpi",
            "sweep plan",
        ] {
            assert!(text.contains(fix), "{fix}: {text}");
        }
    }

    #[test]
    fn a_tch_panic_message_yields_libtorch_text_without_stack_frames() {
        let msg = "called `Result::unwrap()` on an `Err` value: Torch(\"CUDA out of memory. Tried \\\"x\\\" 2 GiB\\nException raised from malloc at c.cpp:1\\nframe #0: f\")";
        assert_eq!(
            torch_error_in(msg).as_deref(),
            Some("CUDA out of memory. Tried \"x\" 2 GiB")
        );
        assert_eq!(torch_error_in("index out of bounds: the len is 3"), None);
    }

    #[test]
    fn out_of_memory_from_libtorch_exits_1_with_the_knobs() {
        for text in [
            "CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0; 79.19 GiB total capacity)",
            "[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory",
        ] {
            let err = Error::Torch(tch::TchError::Torch(text.into()));
            let shown = format!("{err}");
            assert!(
                shown.starts_with("libtorch: ") && shown.contains(text),
                "{shown}"
            );
            for knob in [
                "--batch-size",
                "--hutchinson-probes",
                "--stein-fraction",
                "--precision bf16",
            ] {
                assert!(shown.contains(knob), "{knob}: {shown}");
            }
            assert_eq!(
                status_of(&anyhow::Error::from(err).context("train failed")),
                Status::Failed
            );
        }
        let other = Error::Torch(tch::TchError::Torch("shape mismatch".into())).to_string();
        assert!(
            other.ends_with("shape mismatch") && !other.contains("Fix"),
            "{other}"
        );
        let det = Error::Torch(tch::TchError::Torch(
            "adaptive_max_pool2d_backward_cuda does not have a deterministic implementation".into(),
        ))
        .to_string();
        assert!(det.contains("run without --deterministic"), "{det}");
    }

    #[test]
    fn codes_follow_the_table() {
        let codes: Vec<u8> = [
            Status::Ok,
            Status::Failed,
            Status::BadInput,
            Status::Interrupted,
        ]
        .iter()
        .map(|s| s.code())
        .collect();
        assert_eq!(codes, vec![0, 1, 2, 3]);
    }
}
