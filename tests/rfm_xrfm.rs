//! baton's RFM against xRFM 0.4.5 on the fixtures written by tests/reference/xrfm_reference.py:
//! M after every update, the best model's AGOP and validation predictions within 1e-3 relative,
//! top eigenvectors with |cosine| >= 0.999 (signed, for binary and regression), the same
//! validation scores, best round and early-stopping decision; with M held explicitly (primal)
//! and as `X' C X` (dual).

use std::collections::HashMap;
use std::path::PathBuf;

use baton::rfm::directions::{align_sign, top_directions};
use baton::rfm::fit::{fit, Dataset, FitConfig, Hyper, Precision, Task};
use baton::rfm::mahalanobis::Form;
use baton::rfm::Metric;
use faer::Mat;
use safetensors::SafeTensors;

struct Case {
    tensors: HashMap<String, (Vec<usize>, Vec<f64>)>,
    meta: HashMap<String, String>,
}

fn load(name: &str) -> Case {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(format!("tests/fixtures/rfm-{name}.safetensors"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
    let meta = header.metadata().clone().unwrap_or_default();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let tensors = st
        .tensors()
        .into_iter()
        .map(|(k, t)| {
            let v = t
                .data()
                .chunks_exact(4)
                .map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                .collect();
            (k, (t.shape().to_vec(), v))
        })
        .collect();
    Case { tensors, meta }
}

impl Case {
    fn mat(&self, name: &str) -> Mat<f64> {
        let (shape, v) = &self.tensors[name];
        let cols = shape[1];
        Mat::from_fn(shape[0], cols, |i, j| v[i * cols + j])
    }
    fn num(&self, key: &str) -> f64 {
        self.meta[key].parse().unwrap()
    }
}

/// max |a - b| / max |b|
fn rel(a: &Mat<f64>, b: &Mat<f64>) -> f64 {
    assert_eq!((a.nrows(), a.ncols()), (b.nrows(), b.ncols()));
    let (mut diff, mut scale) = (0.0f64, 0.0f64);
    for j in 0..b.ncols() {
        for i in 0..b.nrows() {
            diff = diff.max((a[(i, j)] - b[(i, j)]).abs());
            scale = scale.max(b[(i, j)].abs());
        }
    }
    diff / scale
}

fn check(name: &str, form: Form) {
    let case = load(name);
    let task = match case.meta["task"].as_str() {
        "binary" => Task::Binary,
        "multiclass" => Task::Multiclass(case.tensors["y_train"].0[1]),
        _ => Task::Regression,
    };
    let metric = match case.meta["metric"].as_str() {
        "auc" => Metric::Auc,
        "accuracy" => Metric::Accuracy,
        _ => Metric::Mse,
    };
    let hyper = Hyper {
        reg: case.num("reg"),
        bandwidth: case.num("bandwidth"),
        exponent: case.num("exponent"),
        center_grads: case.meta["center_grads"] == "true",
    };
    let train = Dataset {
        x: case.mat("x_train"),
        y: case.mat("y_train"),
    };
    let val = Dataset {
        x: case.mat("x_val"),
        y: case.mat("y_val"),
    };
    let config = FitConfig {
        record_ms: true,
        form,
        precision: Precision::F64,
        ..FitConfig::new(case.num("iters") as usize, metric)
    };
    let report = fit(&train, &val, task, hyper, &config).unwrap();

    let want_scores: Vec<f64> = serde_json::from_str(&case.meta["val_scores"]).unwrap();
    assert_eq!(
        report.val_scores.len(),
        want_scores.len(),
        "{name}: number of rounds scored"
    );
    for (i, (got, want)) in report.val_scores.iter().zip(&want_scores).enumerate() {
        assert!(
            (got - want).abs() <= 1e-6 * want.abs().max(1.0),
            "{name}: round {i} score {got} vs xrfm {want}"
        );
    }
    assert_eq!(
        report.best_iter,
        case.num("best_iter") as usize,
        "{name}: best round"
    );
    assert_eq!(
        report.early_stopped,
        case.meta["early_stopped"] == "true",
        "{name}: early stopping"
    );
    assert_eq!(
        report.ms.len(),
        case.num("rounds") as usize,
        "{name}: number of M updates"
    );
    for (i, m) in report.ms.iter().enumerate() {
        let r = rel(m, &case.mat(&format!("m.{i}")));
        assert!(r < 1e-3, "{name}: M after update {i} differs by {r:.2e}");
    }
    let concept = report.concept.as_ref().unwrap();
    let r = rel(concept, &case.mat("agop"));
    assert!(r < 1e-3, "{name}: best model's AGOP differs by {r:.2e}");
    let r = rel(&report.model.predict(val.x.as_ref()), &case.mat("pred"));
    assert!(r < 1e-3, "{name}: predictions differ by {r:.2e}");
    if task != Task::Regression {
        let r = rel(
            &report.model.predict_proba(val.x.as_ref()),
            &case.mat("proba"),
        );
        assert!(r < 1e-3, "{name}: probabilities differ by {r:.2e}");
    }

    // Eigenvectors: compare those whose eigenvalue is separated from its neighbours.
    let eigvals: Vec<f64> = serde_json::from_str(&case.meta["eigvals"]).unwrap();
    let want = case.mat("eigvecs");
    let mut dirs = top_directions(concept, want.nrows()).unwrap();
    let y: Vec<f64> = (0..train.y.nrows()).map(|i| train.y[(i, 0)]).collect();
    let mut compared = 0;
    for (k, dir) in dirs.iter_mut().enumerate() {
        let gap = |j: usize| (eigvals[k] - eigvals[j]).abs() / eigvals[0];
        let isolated =
            (k == 0 || gap(k - 1) > 1e-2) && (k + 1 >= eigvals.len() || gap(k + 1) > 1e-2);
        if !isolated {
            continue;
        }
        assert!(
            (dir.eigenvalue - eigvals[k]).abs() < 1e-3 * eigvals[0],
            "{name}: eigenvalue {k}"
        );
        let signed = task.outputs() == 1;
        if signed {
            align_sign(&mut dir.vector, &train.x, &y);
        }
        let cos: f64 = dir
            .vector
            .iter()
            .enumerate()
            .map(|(i, v)| v * want[(k, i)])
            .sum();
        let cos = if signed { cos } else { cos.abs() };
        assert!(cos >= 0.999, "{name}: eigenvector {k} cosine {cos}");
        compared += 1;
    }
    assert!(compared >= 1, "{name}: no isolated eigenvector to compare");
    eprintln!(
        "{name} {form:?}: rounds {} best {} early_stopped {} | worst M rel {:.1e} | agop rel {:.1e} | {compared} eigenvectors",
        report.ms.len(),
        report.best_iter,
        report.early_stopped,
        report.ms.iter().enumerate().map(|(i, m)| rel(m, &case.mat(&format!("m.{i}")))).fold(0.0, f64::max),
        rel(concept, &case.mat("agop")),
    );
}

#[test]
fn binary_matches_xrfm() {
    check("binary", Form::Primal);
    check("binary", Form::Dual);
}

#[test]
fn binary_early_stop_matches_xrfm() {
    check("binary-es", Form::Primal);
    check("binary-es", Form::Dual);
}

#[test]
fn multiclass_matches_xrfm() {
    check("multiclass", Form::Primal);
    check("multiclass", Form::Dual);
}

#[test]
fn regression_matches_xrfm() {
    check("regression", Form::Primal);
    check("regression", Form::Dual);
}
