use super::*;
use crate::fsutil::{write_atomically, write_bytes_atomically};

fn hint() -> String {
    "rerun it".into()
}

fn failing() -> Result<()> {
    Err(Error::invalid("--eps", 1, "fails"))
}

#[test]
fn a_failed_run_keeps_its_finished_files_and_another_runs_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let parent = tmp.path().join("results");
    let (mine, other) = (parent.join("a"), parent.join("c"));
    let err = run_in(&mine, hint, || {
        // Another run finishes inside the parent this run created.
        fs::create_dir(&other).unwrap();
        fs::write(other.join("model.json"), "{}").unwrap();
        write_bytes_atomically(&mine.join("state.json"), b"done")?;
        failing()
    })
    .unwrap_err();
    assert!(other.join("model.json").is_file(), "another run's file");
    assert_eq!(fs::read(mine.join("state.json")).unwrap(), b"done");
    assert!(!mine.join(OUT_LOCK).exists());
    let text = err.to_string();
    assert!(text.starts_with("invalid --eps = 1: fails\n"), "{text}");
    assert!(
        text.contains("Kept in ") && text.contains("state.json (finished)"),
        "{text}"
    );
    assert!(text.ends_with("To continue: rerun it"), "{text}");
    assert_eq!(
        err.status(),
        crate::exit::Status::BadInput,
        "the cause's code"
    );
}

#[test]
fn a_run_that_wrote_nothing_leaves_no_folder_and_no_note() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("new/deeper");
    let err = run_in(&out, hint, || {
        assert!(out.join(OUT_LOCK).is_file(), "claimed before the work");
        failing()
    })
    .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
    assert!(!tmp.path().join("new").exists());
    // An existing folder stays, emptied of the lock only.
    fs::create_dir(tmp.path().join("old")).unwrap();
    let _ = run_in(&tmp.path().join("old"), hint, failing);
    assert!(tmp.path().join("old").is_dir());
    assert!(fs::read_dir(tmp.path().join("old"))
        .unwrap()
        .next()
        .is_none());
}

#[test]
fn a_panic_removes_the_partial_file_it_left_and_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let partial = temp_sibling(&out.join("per_sample.csv"));
    let panicked = std::panic::catch_unwind(|| {
        run_in(&out, hint, || {
            write_bytes_atomically(&out.join("attack-state.json"), b"{}")?;
            write_atomically(&out.join("per_sample.csv"), |t| {
                fs::write(t, b"index,cl").unwrap();
                panic!("libtorch went away");
            })
        })
    });
    assert!(panicked.is_err(), "the panic goes on to the binary");
    assert!(!partial.exists(), "the partial temporary file is removed");
    assert!(!tracked_writes().in_flight.contains(&partial));
    assert!(out.join("attack-state.json").is_file());
    assert!(!out.join("per_sample.csv").exists() && !out.join(OUT_LOCK).exists());
}

#[test]
fn a_second_run_on_a_held_folder_is_refused_naming_the_holder() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("eval");
    run_in(&out, hint, || {
        let err = run_in(&out, hint, || Ok(())).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, Error::OutputInUse { .. }), "{text}");
        let pid = format!("pid={}", std::process::id());
        assert!(
            text.contains(&pid) && text.contains("binary=") && text.contains("eval"),
            "{text}"
        );
        assert_eq!(err.status(), crate::exit::Status::Failed);
        Ok(())
    })
    .unwrap();
    assert!(out.is_dir() && !out.join(OUT_LOCK).exists(), "released");
}

#[test]
fn a_one_file_output_locks_only_that_file_and_names_only_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("s/a.h5"), tmp.path().join("s/b.h5"));
    let err = run_for_file(&a, hint, || {
        // Another file of the same folder can be written meanwhile.
        run_for_file(&b, hint, || write_bytes_atomically(&b, b"b"))?;
        let busy = run_for_file(&a, hint, || Ok(())).unwrap_err();
        assert!(matches!(busy, Error::OutputInUse { .. }), "{busy}");
        write_atomically(&a, |t| {
            fs::write(t, b"half").unwrap();
            failing()
        })
    })
    .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("Nothing this run wrote to") && !text.contains("b.h5"),
        "{text}"
    );
    assert!(b.is_file() && !a.exists());
    let names: Vec<_> = fs::read_dir(tmp.path().join("s")).unwrap().collect();
    assert_eq!(names.len(), 1, "only b.h5: {names:?}");
}
