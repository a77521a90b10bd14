//! RFM behaviour that needs no reference implementation: the planted feature subspace is
//! recovered, `baton train` writes a usable bundle, and bad input gives one clear error each.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use baton::probe::{DirectionBundle, FeatureSet, Labels};
use baton::rfm::directions::top_directions;
use baton::rfm::fit::{fit, Dataset, FitConfig, Hyper, Task};
use baton::rfm::Metric;
use faer::Mat;
use rand::rngs::StdRng;
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};

/// Rows of N(0, I) in d dimensions; label 1 when `x0 + 0.8 * x1^2` (two planted coordinates,
/// rotated by a fixed orthogonal-ish mix) is above its median.
fn planted(n: usize, d: usize, seed: u64) -> (Vec<f64>, Vec<f64>, [Vec<f64>; 2]) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut gauss = || -> f64 { StandardNormal.sample(&mut rng) };
    // Two orthonormal planted directions.
    let mut u0: Vec<f64> = (0..d).map(|_| gauss()).collect();
    let n0 = u0.iter().map(|v| v * v).sum::<f64>().sqrt();
    u0.iter_mut().for_each(|v| *v /= n0);
    let mut u1: Vec<f64> = (0..d).map(|_| gauss()).collect();
    let dot: f64 = u0.iter().zip(&u1).map(|(a, b)| a * b).sum();
    u1.iter_mut().zip(&u0).for_each(|(b, a)| *b -= dot * a);
    let n1 = u1.iter().map(|v| v * v).sum::<f64>().sqrt();
    u1.iter_mut().for_each(|v| *v /= n1);
    let x: Vec<f64> = (0..n * d).map(|_| gauss()).collect();
    let score: Vec<f64> = (0..n)
        .map(|i| {
            let row = &x[i * d..(i + 1) * d];
            let s0: f64 = row.iter().zip(&u0).map(|(a, b)| a * b).sum();
            let s1: f64 = row.iter().zip(&u1).map(|(a, b)| a * b).sum();
            s0 + 0.8 * s1 * s1
        })
        .collect();
    let mut sorted = score.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[n / 2];
    let y = score
        .iter()
        .map(|&s| f64::from(u8::from(s > median)))
        .collect();
    (x, y, [u0, u1])
}

#[test]
fn planted_subspace_is_recovered() {
    let d = 24;
    let (x, y, planted_dirs) = planted(500, d, 11);
    let train = Dataset::from_rows(&x[..400 * d], d, &y[..400], 1);
    let val = Dataset::from_rows(&x[400 * d..], d, &y[400..], 1);
    let hyper = Hyper {
        reg: 1e-3,
        bandwidth: 10.0,
        exponent: 1.0,
        center_grads: false,
    };
    let report = fit(
        &train,
        &val,
        Task::Binary,
        hyper,
        &FitConfig::new(5, Metric::Auc),
    )
    .unwrap();
    assert!(report.best_score > 0.8, "val AUC {}", report.best_score);
    let dirs = top_directions(report.concept.as_ref().unwrap(), 2).unwrap();
    // Each planted direction lies (almost) in the span of the top two eigenvectors.
    for u in &planted_dirs {
        let captured: f64 = dirs
            .iter()
            .map(|dir| {
                dir.vector
                    .iter()
                    .zip(u)
                    .map(|(a, b)| a * b)
                    .sum::<f64>()
                    .powi(2)
            })
            .sum();
        assert!(
            captured > 0.9,
            "planted direction only {captured:.3} inside the top-2 span"
        );
    }
    // And a random direction is not.
    let e0: f64 = dirs.iter().map(|dir| dir.vector[d - 1].powi(2)).sum();
    assert!(e0 < 0.2, "{e0}");
}

/// Decoder blocks of the (pretend) model behind the test features files.
const MODEL_BLOCKS: usize = 6;

/// Writes a features file: block 0 holds noise, block 2 holds `x`; the residual norms also name
/// a block without features (5), which bundles must not take.
fn features(path: &Path, x: &[f32], n: usize, d: usize, labels: Labels, classes: &[&str]) {
    let noise: Vec<f32> = x
        .iter()
        .enumerate()
        .map(|(i, _)| ((i * 7919 % 1000) as f32 / 500.0) - 1.0)
        .collect();
    FeatureSet {
        concept: "planted".into(),
        model: "test".into(),
        pooling: "mean".into(),
        classes: classes.iter().map(|s| s.to_string()).collect(),
        n,
        hidden_size: d,
        num_layers: Some(MODEL_BLOCKS),
        layers: BTreeMap::from([(0, noise), (2, x.to_vec())]),
        labels,
        residual_norms: BTreeMap::from([(0, 4.5), (2, 7.25), (5, 1.0)]),
    }
    .write(path)
    .unwrap();
}

/// Writes `n` planted binary rows of width `d` (classes "low", "high") to `path`; returns the
/// f32 features.
fn planted_features(path: &Path, n: usize, d: usize, seed: u64) -> Vec<f32> {
    let (x, y, _) = planted(n, d, seed);
    let xf: Vec<f32> = x.iter().map(|&v| v as f32).collect();
    let ids: Vec<i64> = y.iter().map(|&v| v as i64).collect();
    features(path, &xf, n, d, Labels::Classes(ids), &["low", "high"]);
    xf
}

/// `baton train FEATS --out OUT EXTRA...`.
fn train(feats: &Path, out: &Path, extra: &[&str]) -> (bool, String) {
    let (feats, out) = (feats.to_str().unwrap(), out.to_str().unwrap());
    let mut args = vec!["train", feats, "--out", out];
    args.extend(extra);
    baton(&args)
}

fn baton(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(args)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &*String::from_utf8_lossy(&out.stderr);
    assert!(!text.contains("panicked"), "{text}");
    // miette wraps long messages: compare on single-spaced text.
    let text = text
        .replace('│', " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    (out.status.success(), text)
}

#[test]
fn train_cli_writes_bundle_and_classifier() {
    let dir = tempfile::tempdir().unwrap();
    let d = 16;
    let feats = dir.path().join("f.safetensors");
    let xf = planted_features(&feats, 240, d, 5);
    let out = dir.path().join("b.safetensors");
    let (ok, text) = train(
        &feats,
        &out,
        &[
            "--positive",
            "high",
            "--search",
            "3",
            "--iters",
            "4",
            "--components",
            "2",
        ],
    );
    assert!(ok, "{text}");
    let b = DirectionBundle::read(&out).unwrap();
    assert_eq!(
        (b.metric.as_str(), b.target.as_str(), b.hidden_size),
        ("auc", "high", d)
    );
    assert!(
        b.scores[&2] > 0.75 && b.scores[&2] > b.scores[&0],
        "{:?}",
        b.scores
    );
    let norm: f32 = b.directions[&2].iter().map(|v| v * v).sum();
    assert!((norm - 1.0).abs() < 1e-4);
    // The features' residual norms of the trained blocks go with every component.
    let norms = BTreeMap::from([(0, 4.5), (2, 7.25)]);
    assert_eq!(b.residual_norms, norms);
    let pc2 = DirectionBundle::read(&dir.path().join("b.pc2.safetensors")).unwrap();
    assert_eq!(pc2.residual_norms, norms);

    // Multiclass with fixed hyper-parameters also writes the classifier.
    let ids: Vec<i64> = (0..240).map(|i| (i % 3) as i64).collect();
    let mut xm = xf.clone();
    for (i, row) in xm.chunks_mut(d).enumerate() {
        row[i % 3] += 3.0;
    }
    features(&feats, &xm, 240, d, Labels::Classes(ids), &["a", "b", "c"]);
    let (ok, text) = train(
        &feats,
        &out,
        &["--reg", "1e-2", "--bandwidth", "5", "--iters", "3"],
    );
    assert!(ok, "{text}");
    let probe =
        baton::rfm::io::SavedProbe::read(&dir.path().join("b.classifier.safetensors")).unwrap();
    assert_eq!((probe.layer, probe.classes.len()), (2, 3));
    // Its predictor is block 2's (only the best block's is kept): its centres are block 2's rows.
    let c = &probe.rfm.centers;
    assert!((0..c.nrows()).all(|i| {
        xm.chunks(d)
            .any(|row| (0..d).all(|j| (c[(i, j)] - f64::from(row[j])).abs() < 1e-6))
    }));
    let x0 = Mat::from_fn(3, d, |i, j| f64::from(xm[i * d + j]));
    let labels =
        baton::rfm::fit::target_classes(probe.rfm.task, &probe.rfm.predict_proba(x0.as_ref()));
    assert_eq!(labels, vec![0, 1, 2]);

    // Regression on a value read off the planted direction: positive sign, R² in the table.
    let values: Vec<f32> = xf.chunks(d).map(|r| 60.0 + 20.0 * r[3]).collect();
    features(&feats, &xf, 240, d, Labels::Values(values.clone()), &[]);
    let (ok, text) = train(
        &feats,
        &out,
        &["--search", "4", "--iters", "3", "--layers", "2"],
    );
    assert!(ok, "{text}");
    assert!(text.contains("val_r2"), "{text}");
    let b = DirectionBundle::read(&out).unwrap();
    assert_eq!((b.metric.as_str(), b.directions.len()), ("mse", 1));
    assert!(
        b.directions[&2][3] > 0.9,
        "direction {:?}",
        b.directions[&2]
    );
}

#[test]
fn bad_input_gives_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let d = 8;
    let ids: Vec<i64> = (0..60).map(|i| (i % 2) as i64).collect();
    let mut x: Vec<f32> = (0..60 * d)
        .map(|i| ((i * 37 % 101) as f32) / 50.0)
        .collect();
    features(
        Path::new(&p("ok.safetensors")),
        &x,
        60,
        d,
        Labels::Classes(ids.clone()),
        &["a", "b"],
    );
    let run = |feats: &str, extra: &[&str]| {
        let out = p("out.safetensors");
        let mut args = vec![
            "train",
            feats,
            "--out",
            out.as_str(),
            "--search",
            "2",
            "--iters",
            "2",
        ];
        args.extend_from_slice(extra);
        let (ok, text) = baton(&args);
        assert!(!ok, "expected failure: {text}");
        assert!(!Path::new(&out).exists(), "no bundle on failure");
        text
    };

    x[5] = f32::NAN;
    features(
        Path::new(&p("nan.safetensors")),
        &x,
        60,
        d,
        Labels::Classes(ids.clone()),
        &["a", "b"],
    );
    assert!(run(&p("nan.safetensors"), &["--positive", "a"]).contains("non-finite"));

    features(
        Path::new(&p("one.safetensors")),
        &x[d..],
        59,
        d,
        Labels::Classes(vec![0; 59]),
        &["a", "b"],
    );
    assert!(run(&p("one.safetensors"), &["--positive", "a"]).contains("only one class"));

    let narrow: Vec<f32> = (0..60 * 4).map(|i| i as f32).collect();
    features(
        Path::new(&p("narrow.safetensors")),
        &narrow,
        60,
        4,
        Labels::Classes(ids.clone()),
        &["a", "b"],
    );
    let text = run(
        &p("ok.safetensors"),
        &["--positive", "a", "--val", &p("narrow.safetensors")],
    );
    assert!(text.contains("width 4 differs"), "{text}");

    DirectionBundle {
        concept: "c".into(),
        target: "t".into(),
        model: "m".into(),
        hidden_size: 2,
        num_layers: 1,
        metric: "auc".into(),
        pooling: "mean".into(),
        scores: BTreeMap::new(),
        directions: BTreeMap::from([(0, vec![1.0, 0.0])]),
        residual_norms: Default::default(),
        method: "rfm".into(),
    }
    .write(Path::new(&p("bundle.safetensors")))
    .unwrap();
    assert!(run(&p("bundle.safetensors"), &[]).contains("direction/1"));

    let few: Vec<i64> = vec![0, 0, 0, 0, 1, 1];
    features(
        Path::new(&p("few.safetensors")),
        &x[..6 * d],
        6,
        d,
        Labels::Classes(few),
        &["a", "b"],
    );
    assert!(run(&p("few.safetensors"), &[]).contains("at least 3 per class"));

    assert!(run(&p("ok.safetensors"), &["--positive", "zebra"]).contains("not a class"));
    assert!(run(&p("ok.safetensors"), &["--task", "regression"]).contains("value labels"));
}

#[test]
fn bundle_num_layers_is_the_model_block_count() {
    let dir = tempfile::tempdir().unwrap();
    let d = 8;
    let feats = dir.path().join("f.safetensors");
    planted_features(&feats, 90, d, 3);
    let out = dir.path().join("b.safetensors");
    let train = || {
        let (ok, text) = train(
            &feats,
            &out,
            &[
                "--positive",
                "high",
                "--reg",
                "1e-2",
                "--iters",
                "2",
                "--components",
                "2",
            ],
        );
        assert!(ok, "{text}");
    };
    // The file holds blocks 0 and 2 of a 6-block model.
    train();
    assert_eq!(
        DirectionBundle::read(&out).unwrap().num_layers,
        MODEL_BLOCKS
    );
    let pc2 = dir.path().join("b.pc2.safetensors");
    assert_eq!(
        DirectionBundle::read(&pc2).unwrap().num_layers,
        MODEL_BLOCKS
    );

    // Files written before `num_layers` was recorded: one past the largest block held.
    let mut old = FeatureSet::read(&feats).unwrap();
    old.num_layers = None;
    old.write(&feats).unwrap();
    train();
    assert_eq!(DirectionBundle::read(&out).unwrap().num_layers, 3);
}

#[test]
fn val_file_and_training_file_are_used_whole() {
    let dir = tempfile::tempdir().unwrap();
    let d = 6;
    let make = |name: &str, n: usize, seed: u64| {
        let path = dir.path().join(name);
        planted_features(&path, n, d, seed);
        path
    };
    let (train, val) = (
        make("train.safetensors", 61, 1),
        make("val.safetensors", 37, 2),
    );
    let out = dir.path().join("b.safetensors");
    for task in [&["--positive", "high"][..], &["--task", "multiclass"][..]] {
        let mut args = vec![
            "train",
            train.to_str().unwrap(),
            "--val",
            val.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--reg",
            "1e-2",
            "--iters",
            "2",
        ];
        args.extend_from_slice(task);
        let (ok, text) = baton(&args);
        assert!(ok, "{text}");
        // No balancing, no split: all 61 training rows, all 37 validation rows.
        assert!(text.contains("61 train / 37 val examples"), "{text}");
    }
}

#[test]
fn binary_direction_points_towards_the_positive_class() {
    let dir = tempfile::tempdir().unwrap();
    let (n, d) = (160, 8);
    let mut rng = StdRng::seed_from_u64(21);
    let x: Vec<f32> = (0..n * d)
        .map(|_| StandardNormal.sample(&mut rng))
        .collect();
    // Class "up" when the projection on a fixed mixed direction is positive.
    let u = [0.6f32, -0.5, 0.0, 0.4, 0.0, 0.0, -0.3, 0.37];
    let along = |row: &[f32]| -> f32 { row.iter().zip(&u).map(|(a, b)| a * b).sum() };
    let ids: Vec<i64> = x.chunks(d).map(|r| i64::from(along(r) > 0.0)).collect();
    let feats = dir.path().join("f.safetensors");
    features(
        &feats,
        &x,
        n,
        d,
        Labels::Classes(ids.clone()),
        &["down", "up"],
    );
    let out = dir.path().join("b.safetensors");
    for (positive, id) in [("up", 1), ("down", 0)] {
        let (ok, text) = train(
            &feats,
            &out,
            &[
                "--positive",
                positive,
                "--reg",
                "1e-3",
                "--iters",
                "3",
                "--layers",
                "2",
            ],
        );
        assert!(ok, "{text}");
        let dirn = &DirectionBundle::read(&out).unwrap().directions[&2];
        let proj: Vec<f64> = x
            .chunks(d)
            .map(|r| f64::from(r.iter().zip(dirn).map(|(a, b)| a * b).sum::<f32>()))
            .collect();
        let is_pos: Vec<f64> = ids.iter().map(|&c| f64::from(u8::from(c == id))).collect();
        let r = baton::rfm::metrics::pearson(&proj, &is_pos);
        assert!(r > 0.5, "--positive {positive}: correlation {r}");
        let mean = |want: f64| {
            let (s, c) = proj
                .iter()
                .zip(&is_pos)
                .filter(|(_, &p)| p == want)
                .fold((0.0, 0.0), |(s, c), (v, _)| (s + v, c + 1.0));
            s / c
        };
        assert!(mean(1.0) > mean(0.0), "--positive {positive}");
    }
}

#[test]
fn bad_settings_fail_before_any_training() {
    let dir = tempfile::tempdir().unwrap();
    let d = 8;
    let feats = dir.path().join("f.safetensors");
    planted_features(&feats, 60, d, 4);
    let feats = feats.to_str().unwrap();
    let good_out = dir.path().join("b.safetensors");
    let good_out = good_out.to_str().unwrap();
    let fails = |extra: &[&str], out: &str| {
        let mut args = vec!["train", feats, "--out", out, "--positive", "high"];
        args.extend_from_slice(extra);
        let (ok, text) = baton(&args);
        assert!(!ok, "expected failure: {text}");
        // Nothing was trained: no score table.
        assert!(!text.contains("best_iter"), "{text}");
        assert!(!Path::new(good_out).exists(), "no bundle");
        text
    };
    let text = fails(&["--components", "9"], good_out);
    assert!(
        text.contains("--components 9 is more than the feature width 8"),
        "{text}"
    );
    assert!(fails(&["--components", "0"], good_out).contains("at least 1"));
    let text = fails(&["--search", "0"], good_out);
    assert!(text.contains("--search must be at least 1 draw"), "{text}");

    // a missing folder is made once the bundle is ready, but a file in the way is refused
    let blocked = dir.path().join("file");
    std::fs::write(&blocked, b"").unwrap();
    let text = fails(&[], blocked.join("b.safetensors").to_str().unwrap());
    assert!(text.contains("not a folder"), "{text}");
    assert!(fails(&[], dir.path().to_str().unwrap()).contains("it is a folder"));

    // A read-only folder is refused up front (even for root, who could write there).
    let ro = dir.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    let mut perms = std::fs::metadata(&ro).unwrap().permissions();
    perms.set_readonly(true);
    std::fs::set_permissions(&ro, perms.clone()).unwrap();
    let text = fails(&[], ro.join("b.safetensors").to_str().unwrap());
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&ro, perms).unwrap();
    assert!(text.contains("read-only"), "{text}");
}

#[test]
fn mean_diff_method_writes_the_normalised_difference_of_class_means() {
    let dir = tempfile::tempdir().unwrap();
    let d = 16;
    let (train, val) = (
        dir.path().join("train.safetensors"),
        dir.path().join("val.safetensors"),
    );
    // One planted concept, split into a training and a validation file.
    let (xs, ys, _) = planted(500, d, 3);
    let xs: Vec<f32> = xs.iter().map(|&v| v as f32).collect();
    let ids: Vec<i64> = ys.iter().map(|&v| v as i64).collect();
    let x = xs[..300 * d].to_vec();
    let classes = ["low", "high"];
    features(
        &train,
        &x,
        300,
        d,
        Labels::Classes(ids[..300].to_vec()),
        &classes,
    );
    let (xv, yv) = (&xs[300 * d..], ids[300..].to_vec());
    features(&val, xv, 200, d, Labels::Classes(yv), &classes);
    let out = dir.path().join("md.safetensors");
    let (t, v, o) = (
        train.to_str().unwrap(),
        val.to_str().unwrap(),
        out.to_str().unwrap(),
    );
    let (ok, text) = baton(&[
        "train",
        t,
        "--val",
        v,
        "--out",
        o,
        "--positive",
        "high",
        "--method",
        "mean-diff",
    ]);
    assert!(ok, "{text}");
    assert!(text.contains("300 train / 200 val examples"), "{text}");
    let b = DirectionBundle::read(&out).unwrap();
    assert_eq!((b.metric.as_str(), b.method.as_str()), ("auc", "mean-diff"));
    assert_eq!(b.residual_norms, BTreeMap::from([(0, 4.5), (2, 7.25)]));
    // With a validation file the whole training file is used: the difference of its class
    // means, at block 2 (where the features are).
    let FeatureSet {
        labels: Labels::Classes(ids),
        ..
    } = FeatureSet::read(&train).unwrap()
    else {
        panic!("classes")
    };
    let mut sums = [vec![0f64; d], vec![0f64; d]];
    let mut counts = [0f64; 2];
    for (row, &c) in x.chunks_exact(d).zip(&ids) {
        counts[c as usize] += 1.0;
        sums[c as usize]
            .iter_mut()
            .zip(row)
            .for_each(|(s, v)| *s += *v as f64);
    }
    let diff: Vec<f64> = (0..d)
        .map(|j| sums[1][j] / counts[1] - sums[0][j] / counts[0])
        .collect();
    let n = diff.iter().map(|v| v * v).sum::<f64>().sqrt();
    for (got, want) in b.directions[&2].iter().zip(&diff) {
        assert!(
            (*got as f64 - want / n).abs() < 1e-5,
            "{got} vs {}",
            want / n
        );
    }
    // The planted label is partly quadratic: the linear baseline's projection separates it less
    // well than the RFM probe's predictor does (measured: AUC .905 against .949), and far better
    // than the noise block.
    let rfm_out = dir.path().join("rfm.safetensors");
    let (ok, text) = baton(&[
        "train",
        t,
        "--val",
        v,
        "--out",
        rfm_out.to_str().unwrap(),
        "--positive",
        "high",
        "--search",
        "4",
    ]);
    assert!(ok, "{text}");
    let rfm = DirectionBundle::read(&rfm_out).unwrap();
    println!(
        "val AUC at block 2: mean-diff {:.3}, RFM {:.3}",
        b.scores[&2], rfm.scores[&2]
    );
    assert!(
        b.scores[&2] > 0.6 && b.scores[&2] > b.scores[&0] + 0.1,
        "{:?}",
        b.scores
    );
    assert!(
        rfm.scores[&2] > b.scores[&2],
        "{:?} vs {:?}",
        rfm.scores,
        b.scores
    );

    // What a difference of means cannot do is refused up front, leaving the bundle as it was.
    let before = std::fs::read(&out).unwrap();
    for (extra, want) in [
        (
            &["--task", "multiclass"][..],
            "cannot train a multiclass probe",
        ),
        (&[][..], "needs two sides: give --positive"),
        (
            &["--positive", "high", "--components", "2"][..],
            "--components is a setting of RFM",
        ),
        (
            &["--positive", "high", "--search", "3"][..],
            "--search is a setting of RFM",
        ),
        (
            &["--positive", "high", "--iters", "3"][..],
            "--iters is a setting of RFM",
        ),
        (
            &["--positive", "high", "--metric", "mse"][..],
            "scored by auc or acc",
        ),
    ] {
        let mut args = vec!["train", t, "--out", o, "--method", "mean-diff"];
        args.extend_from_slice(extra);
        let (ok, text) = baton(&args);
        assert!(!ok && text.contains(want), "{extra:?}: {text}");
    }
    assert!(
        std::fs::read(&out).unwrap() == before,
        "a refused run touched the bundle"
    );
}

#[test]
fn identical_features_are_refused_not_turned_into_an_arbitrary_direction() {
    let dir = tempfile::tempdir().unwrap();
    let (n, d) = (40, 8);
    let feats = dir.path().join("same.safetensors");
    let ids: Vec<i64> = (0..n).map(|i| (i % 2) as i64).collect();
    features(
        &feats,
        &vec![0.25; n * d],
        n,
        d,
        Labels::Classes(ids),
        &["low", "high"],
    );
    let out = dir.path().join("out.safetensors");
    for (method, extra) in [("rfm", &["--search", "2"][..]), ("mean-diff", &[][..])] {
        let mut args = vec!["--positive", "high", "--method", method];
        args.extend(extra);
        let (ok, text) = train(&feats, &out, &args);
        assert!(!ok, "{method}: {text}");
        assert!(text.contains("same"), "{method}: {text}");
        assert!(!out.exists(), "{method} wrote a bundle");
    }
}

/// The f32 fit (matrix products in f32; kernel, solve and scores in f64) against the f64 one
/// on the same data: validation scores within 0.005 in every round, and the same top direction
/// (|cos| >= 0.99). Both forms of M (primal: n > d; dual: n < d), the plain and a fractional
/// exponent, centred gradients, and small bandwidths; at L = 0.05 every kernel value between
/// distinct points is below 1e-100, so every gradient weight is far below f32's smallest number
/// and must be rescaled before it is narrowed: each M must still be finite with largest entry 1
/// (the scores there are chance level in both precisions and are not compared).
#[test]
fn f32_fits_agree_with_f64() {
    use baton::rfm::dense::max_entry;
    use baton::rfm::fit::Precision;
    use baton::rfm::mahalanobis::Form;
    let cases = [
        // (d, form, bandwidth, exponent, center_grads)
        (96, Form::Primal, 10.0, 1.0, false),
        (96, Form::Primal, 6.0, 1.25, true),
        (640, Form::Dual, 20.0, 1.0, false),
        (96, Form::Primal, 0.2, 1.0, false),
        (96, Form::Primal, 0.05, 1.0, false),
    ];
    for (d, form, bandwidth, exponent, center_grads) in cases {
        let (x, y, _) = planted(500, d, 3);
        let train = Dataset::from_rows(&x[..400 * d], d, &y[..400], 1);
        let val = Dataset::from_rows(&x[400 * d..], d, &y[400..], 1);
        let hyper = Hyper {
            reg: 1e-3,
            bandwidth,
            exponent,
            center_grads,
        };
        let run = |precision| {
            let config = FitConfig {
                form,
                precision,
                record_ms: true,
                ..FitConfig::new(6, Metric::Auc)
            };
            fit(&train, &val, Task::Binary, hyper, &config).unwrap()
        };
        let (wide, narrow) = (run(Precision::F64), run(Precision::F32));
        let what = format!("d {d} {form:?} L {bandwidth} q {exponent} centred {center_grads}");
        assert!(!narrow.ms.is_empty(), "{what}: no update recorded");
        for (i, m) in narrow.ms.iter().enumerate() {
            let max = max_entry(m);
            assert!(
                (max - 1.0).abs() < 1e-5,
                "{what}: M after update {i} has largest entry {max}"
            );
        }
        if bandwidth < 0.1 {
            continue;
        }
        for (i, (a, b)) in wide.val_scores.iter().zip(&narrow.val_scores).enumerate() {
            assert!(
                (a - b).abs() <= 0.005,
                "{what}: round {i} AUC {a} (f64) vs {b} (f32)"
            );
        }
        let top = |r: &baton::rfm::FitReport| {
            top_directions(r.concept.as_ref().unwrap(), 1).unwrap()[0]
                .vector
                .clone()
        };
        let (u, v) = (top(&wide), top(&narrow));
        let cos: f64 = u.iter().zip(&v).map(|(a, b)| a * b).sum();
        assert!(cos.abs() >= 0.99, "{what}: top directions' |cos| {cos}");
    }
}
