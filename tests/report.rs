//! `report`: figures redrawn from the CSVs beside them (as SVG and PNG),
//! and the exit codes (2 for bad usage or input, 1 for a failed run).
mod common;
use common::*;
use std::path::Path;

/// A predictions.csv of two (regulariser, λ) curves on five points.
fn predictions_csv(dir: &Path) {
    let mut text = String::from("x,reg,lambda,seed,prediction\n");
    for (reg, lambda) in [("l2", "0"), ("stein", "0.001")] {
        for i in 0..5 {
            let x = -6.0 + 3.0 * i as f64;
            text += &format!("{x},{reg},{lambda},0,{}\n", (x as f32).sin());
        }
    }
    std::fs::write(dir.join("predictions.csv"), text).unwrap();
}

#[test]
fn redraw_draws_each_figure_as_svg_and_png_from_its_csv() {
    let dir = tempfile::tempdir().unwrap();
    predictions_csv(dir.path());
    let comparisons = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("analysis/digits-methods/bootstrap/comparisons.csv");
    std::fs::copy(comparisons, dir.path().join("comparisons.csv")).unwrap();
    let o = run("report", &["redraw", dir.path().to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    for f in [
        "predictions.svg",
        "predictions.png",
        "forest.svg",
        "forest.png",
        "delta_vs_lambda.svg",
        "delta_vs_lambda.png",
    ] {
        assert!(stdout(&o).contains(f), "{f} not listed: {}", stdout(&o));
        assert!(dir.path().join(f).is_file(), "{f} missing");
    }
    let svg = std::fs::read_to_string(dir.path().join("predictions.svg")).unwrap();
    assert!(svg.contains("λ = 1e-3") && svg.contains("Stein (TASER) regularisation"));
    let forest = std::fs::read_to_string(dir.path().join("forest.svg")).unwrap();
    assert!(forest.contains("trades-awp") && !forest.contains("NaN"));
    assert!(files_in(dir.path()).iter().all(|f| !f.starts_with(".tmp-")));
}

#[test]
fn bad_usage_and_bad_input_exit_2_and_a_failed_drawing_exits_1() {
    let o = run("report", &["no-such-report"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));

    let dir = tempfile::tempdir().unwrap();
    let o = run("report", &["redraw", dir.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("predictions.csv") && e.contains("name a folder"),
        "{e}"
    );

    // A folder where the figure should go: the drawing fails.
    predictions_csv(dir.path());
    std::fs::create_dir(dir.path().join("predictions.svg")).unwrap();
    let o = run("report", &["redraw", dir.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("predictions.svg"), "{}", stderr(&o));
}
