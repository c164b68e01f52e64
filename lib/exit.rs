//! The one exit-code policy of every binary:
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | a computation failed (training diverged, an I/O or libtorch error, a file locked by another process, a sweep job failed) |
//! | 2 | bad usage or bad input (a flag out of its domain, a missing or corrupt input file, a checkpoint that does not match, an unwritable `--out`); clap's own usage errors exit 2 too |
//! | 3 | interrupted (a signal stopped the work; rerunning the same command continues it) |
//!
//! Binaries return `anyhow::Result<Status>` from their body and hand it to
//! [`finish`], which prints the error chain once and picks the code from the
//! first library [`Error`] in it.
use crate::error::Error;
use std::process::ExitCode;

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
            | Error::Unwritable { .. } => Status::BadInput,
            Error::OutputFailed { .. }
            | Error::FileLocked { .. }
            | Error::Diverged { .. }
            | Error::Invariant { .. }
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
    if std::env::var(CHECK_ARGS_ENV).is_ok_and(|v| v == "1") {
        std::process::exit(0);
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
