//! `baton train`: fit one RFM probe per decoder block of a features file (or, with `--method
//! mean-diff`, the difference-of-means baseline) and write the concept directions as a direction
//! bundle (per-block validation scores in its metadata).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use baton::probe::{DirectionBundle, FeatureSet, Labels};
use baton::rfm::baseline::{mean_difference_block, BaselineResult};
use baton::rfm::fit::{Hyper, Precision, Rfm};
use baton::rfm::io::SavedProbe;
use baton::rfm::train::{
    plan, train_block, BlockFeatures, BlockResult, ProbeKind, ProbeLabels, ProbeOptions, Tuning,
};
use baton::rfm::Metric;
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use miette::{miette, Result};

use super::output::check_output_in_new_folder;

/// Probe kind on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TaskArg {
    /// One class (--positive) against the rest.
    Binary,
    /// All classes at once (also writes the classifier).
    Multiclass,
    /// The value labels (z-scored).
    Regression,
}

/// How each block's direction is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MethodArg {
    /// Recursive Feature Machine probes (the paper's): the top eigenvector of the AGOP.
    Rfm,
    /// The difference of the class means (or the features' covariance with a value label): the
    /// usual steering baseline, to compare RFM directions with.
    MeanDiff,
}

/// Arguments of `baton train`.
#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Features file (`features/1`) from `baton features`.
    pub features: PathBuf,
    /// Where to write the direction bundle (missing folders are created).
    #[arg(long)]
    pub out: PathBuf,
    /// How directions are found.
    #[arg(long, value_enum, default_value = "rfm")]
    pub method: MethodArg,
    /// Probe kind [default: regression for value labels, binary with --positive, else multiclass].
    #[arg(long, value_enum)]
    pub task: Option<TaskArg>,
    /// Positive class of a binary probe (name or index).
    #[arg(long)]
    pub positive: Option<String>,
    /// Validation features file: used as given, with the training file used whole (no split).
    #[arg(long)]
    pub val: Option<PathBuf>,
    /// Random hyper-parameter search with N draws [default: 20 unless --reg/--bandwidth/--exponent].
    #[arg(long, value_name = "N", conflicts_with_all = ["reg", "bandwidth", "exponent", "center_grads"])]
    pub search: Option<usize>,
    /// Ridge lambda (fixed hyper-parameters) [default with fixed: 1e-3].
    #[arg(long)]
    pub reg: Option<f64>,
    /// Kernel bandwidth L (fixed hyper-parameters) [default with fixed: 10].
    #[arg(long)]
    pub bandwidth: Option<f64>,
    /// Kernel exponent q (fixed hyper-parameters) [default with fixed: 1].
    #[arg(long)]
    pub exponent: Option<f64>,
    /// Subtract the mean gradient before the AGOP (fixed hyper-parameters).
    #[arg(long)]
    pub center_grads: bool,
    /// RFM iterations (early stopping may end sooner) [default: 30].
    #[arg(long)]
    pub iters: Option<usize>,
    /// Eigen-directions to keep; component k > 1 goes to `<out>.pc<k>.safetensors`.
    #[arg(long, default_value_t = 1)]
    pub components: usize,
    /// Seed of the split and the search.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Validation metric: auc, acc or mse [default: auc for classes, mse for values].
    #[arg(long, value_parser = ["auc", "acc", "mse"])]
    pub metric: Option<String>,
    /// Only these blocks (comma-separated) [default: all in the file].
    #[arg(long, value_delimiter = ',')]
    pub layers: Option<Vec<usize>>,
    /// Where a multiclass probe's classifier goes [default: `<out>.classifier.safetensors`].
    #[arg(long)]
    pub classifier: Option<PathBuf>,
    /// Arithmetic of the fit: f32 (products, kernel and gradients in f32; the ridge solve and
    /// the scores in f64; about twice as fast) or f64 (xRFM's float64 results to rounding).
    #[arg(long, value_parser = ["f32", "f64"], default_value = "f32")]
    pub precision: String,
    /// Search among the settings of this JSON list of {reg, bandwidth, exponent, center_grads}
    /// (benchmark plumbing: gives baton and xRFM identical draws).
    #[arg(long, hide = true)]
    pub search_list: Option<PathBuf>,
}

/// Fewer validation examples than this are said: a score on them is mostly noise.
const SMALL_VALIDATION: usize = 20;

/// Runs `baton train`.
pub fn run(args: TrainArgs) -> Result<()> {
    if args.components == 0 {
        return Err(miette!("--components must be at least 1"));
    }
    if args.search == Some(0) {
        return Err(miette!("--search must be at least 1 draw"));
    }
    let out_folder = check_output_in_new_folder(&args.out)?;
    baton::rfm::keep_freed_memory();
    let classifier_folder = args
        .classifier
        .as_deref()
        .map(check_output_in_new_folder)
        .transpose()?;
    let feats = FeatureSet::read(&args.features).map_err(|e| miette!("{e}"))?;
    if args.components > feats.hidden_size {
        return Err(miette!(
            "--components {} is more than the feature width {}: the concept matrix has only {} \
             eigen-directions",
            args.components,
            feats.hidden_size,
            feats.hidden_size
        ));
    }
    let val = match &args.val {
        Some(p) => Some(FeatureSet::read(p).map_err(|e| miette!("{e}"))?),
        None => None,
    };
    let kind = probe_kind(&args, &feats)?;
    if let Some(v) = &val {
        check_val(&feats, v, &args)?;
    }
    if args.method == MethodArg::MeanDiff {
        check_mean_diff(&args, kind)?;
    }
    let tuning = match (args.search, args.reg, args.bandwidth, args.exponent) {
        (None, None, None, None) if !args.center_grads => Tuning::Search { draws: 20 },
        (Some(draws), ..) => Tuning::Search { draws },
        (None, reg, bandwidth, exponent) => Tuning::Fixed(Hyper {
            reg: reg.unwrap_or(1e-3),
            bandwidth: bandwidth.unwrap_or(10.0),
            exponent: exponent.unwrap_or(1.0),
            center_grads: args.center_grads,
        }),
    };
    if let Tuning::Fixed(h) = tuning {
        h.validate().map_err(|e| miette!("{e}"))?;
    }
    let opts = ProbeOptions {
        kind,
        tuning,
        iters: args.iters.unwrap_or(30),
        components: args.components,
        seed: args.seed,
        precision: Precision::parse(&args.precision).unwrap_or_default(),
        among: match &args.search_list {
            Some(p) => {
                let text =
                    std::fs::read_to_string(p).map_err(|e| miette!("{}: {e}", p.display()))?;
                let list: Vec<Hyper> =
                    serde_json::from_str(&text).map_err(|e| miette!("{}: {e}", p.display()))?;
                for h in &list {
                    h.validate().map_err(|e| miette!("{}: {e}", p.display()))?;
                }
                Some(list)
            }
            None => None,
        },
        metric: match args.metric.as_deref() {
            Some("auc") => Some(Metric::Auc),
            Some("acc") => Some(Metric::Accuracy),
            Some("mse") => Some(Metric::Mse),
            _ => None,
        },
    };
    let sets = plan(
        &probe_labels(&feats.labels),
        val.as_ref().map(|v| probe_labels(&v.labels)).as_ref(),
        kind,
        args.seed,
    )
    .map_err(|e| miette!("{}: {e}", args.features.display()))?;
    let metric = opts.metric_for(sets.task).map_err(|e| miette!("{e}"))?;

    let layers: Vec<usize> = match &args.layers {
        Some(ls) => {
            if let Some(l) = ls.iter().find(|l| !feats.layers.contains_key(l)) {
                return Err(miette!("{}: has no block {l}", args.features.display()));
            }
            // Trained in block order, so ties for the best block go to the lower one.
            let mut ls = ls.clone();
            ls.sort_unstable();
            ls.dedup();
            ls
        }
        None => feats.layers.keys().copied().collect(),
    };
    let bar = ProgressBar::new(layers.len() as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:>12} [{bar:30}] {pos}/{len} blocks, {elapsed} (eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message("training");
    let mut results: BTreeMap<usize, Fitted> = BTreeMap::new();
    // The best block so far (a later one only when strictly better) and its RFM predictor (a
    // multiclass probe's classifier); the other blocks' predictors are dropped as they finish:
    // each is n x d centres and a d x d matrix.
    let mut best: Option<(usize, f64)> = None;
    let mut best_model: Option<Rfm> = None;
    for &l in &layers {
        let val_block = val.as_ref().map(|v| block(v, l));
        let (r, model) = match args.method {
            MethodArg::Rfm => {
                train_block(block(&feats, l), val_block, &sets, &opts).map(|mut r| {
                    let model = r.model.take();
                    (Fitted::Rfm(Box::new(r)), model)
                })
            }
            MethodArg::MeanDiff => {
                mean_difference_block(block(&feats, l), val_block, &sets, metric)
                    .map(|m| (Fitted::MeanDiff(m), None))
            }
        }
        .map_err(|e| miette!("block {l}: {e}"))?;
        if best.is_none_or(|(_, s)| metric.better(r.score(), s)) {
            best = Some((l, r.score()));
            best_model = model;
        }
        results.insert(l, r);
        bar.inc(1);
    }
    bar.finish_and_clear();

    let target = match kind {
        ProbeKind::Binary { positive } => feats.classes[positive].clone(),
        ProbeKind::Multiclass { .. } => "all".to_string(),
        ProbeKind::Regression => "value".to_string(),
    };
    let num_layers = feats.model_blocks();
    for k in 0..args.components {
        let bundle = DirectionBundle {
            concept: feats.concept.clone(),
            target: target.clone(),
            model: feats.model.clone(),
            hidden_size: feats.hidden_size,
            num_layers,
            metric: metric.as_str().to_string(),
            pooling: feats.pooling.clone(),
            scores: results.iter().map(|(l, r)| (*l, r.score())).collect(),
            directions: results
                .iter()
                .filter_map(|(l, r)| {
                    r.direction(k)
                        .map(|d| (*l, d.iter().map(|&v| v as f32).collect()))
                })
                .collect(),
            residual_norms: feats
                .residual_norms
                .iter()
                .filter(|(l, _)| results.contains_key(l))
                .map(|(&l, &n)| (l, n))
                .collect(),
            method: match args.method {
                MethodArg::Rfm => "rfm",
                MethodArg::MeanDiff => "mean-diff",
            }
            .into(),
        };
        let path = if k == 0 {
            args.out.clone()
        } else {
            sibling(&args.out, &format!("pc{}", k + 1))
        };
        out_folder.create()?;
        bundle.write(&path).map_err(|e| miette!("{e}"))?;
    }

    let mut classifier_note = String::new();
    if let (ProbeKind::Multiclass { .. }, Some((l, _)), Some(best_rfm)) = (kind, best, best_model) {
        let path = args
            .classifier
            .clone()
            .unwrap_or_else(|| sibling(&args.out, "classifier"));
        if let Some(folder) = &classifier_folder {
            folder.create()?;
        }
        SavedProbe {
            rfm: best_rfm,
            classes: feats.classes.clone(),
            layer: l,
            model: feats.model.clone(),
            concept: feats.concept.clone(),
        }
        .write(&path)
        .map_err(|e| miette!("{e}"))?;
        classifier_note = format!(", classifier of block {l} -> {}", path.display());
    }

    let r2_head = if kind == ProbeKind::Regression {
        "  val_r2"
    } else {
        ""
    };
    match args.method {
        MethodArg::Rfm => println!(
            "block  {metric:>7}  best_iter  rounds  stopped  reg        L        q     center  eig1{r2_head}"
        ),
        MethodArg::MeanDiff => println!("block  {metric:>7}{r2_head}"),
    }
    for (l, r) in &results {
        let r2 = r.r2().map_or(String::new(), |v| format!("  {v:.4}"));
        match r {
            Fitted::Rfm(r) => {
                let h = r.hyper;
                println!(
                    "{l:>5}  {:>7.4}  {:>9}  {:>6}  {:>7}  {:<9.2e}  {:<7.3}  {:<4.2}  {:<6}  {:.3}{r2}",
                    r.score,
                    r.best_iter,
                    r.rounds,
                    if r.early_stopped { "yes" } else { "no" },
                    h.reg,
                    h.bandwidth,
                    h.exponent,
                    h.center_grads,
                    r.directions.first().map_or(0.0, |d| d.eigenvalue),
                );
            }
            Fitted::MeanDiff(m) => println!("{l:>5}  {:>7.4}{r2}", m.score),
        }
    }
    let (n_train, n_val) = (sets.train_rows.len(), sets.val_rows.len());
    if n_val < SMALL_VALIDATION {
        eprintln!(
            "warning: the scores come from only {n_val} validation examples ({n_train} to \
             train on): they are noisy, and the best block may be chance; render more clips \
             (`baton dataset --limit`, `baton learn --clips`) or give --val"
        );
    }
    if let Some((l, s)) = best {
        println!(
            "best block {l} ({metric} {s:.4}); {n_train} train / {n_val} val examples; wrote {}{classifier_note}",
            args.out.display()
        );
    }
    Ok(())
}

/// One block's fitted probe.
enum Fitted {
    Rfm(Box<BlockResult>),
    MeanDiff(BaselineResult),
}

impl Fitted {
    fn score(&self) -> f64 {
        match self {
            Fitted::Rfm(r) => r.score,
            Fitted::MeanDiff(m) => m.score,
        }
    }

    fn r2(&self) -> Option<f64> {
        match self {
            Fitted::Rfm(r) => r.r2,
            Fitted::MeanDiff(m) => m.r2,
        }
    }

    /// Direction `k` (0 = the first), if the probe has that many.
    fn direction(&self, k: usize) -> Option<&[f64]> {
        match self {
            Fitted::Rfm(r) => r.directions.get(k).map(|d| d.vector.as_slice()),
            Fitted::MeanDiff(m) => (k == 0).then_some(m.direction.as_slice()),
        }
    }
}

/// What a difference of means cannot do, refused before any work.
fn check_mean_diff(args: &TrainArgs, kind: ProbeKind) -> Result<()> {
    match kind {
        ProbeKind::Multiclass { .. } if args.task == Some(TaskArg::Multiclass) => {
            return Err(miette!(
                "--method mean-diff cannot train a multiclass probe: it needs two sides, so use \
                 --task binary with --positive CLASS, or value labels (regression)"
            ))
        }
        ProbeKind::Multiclass { .. } => {
            return Err(miette!(
                "--method mean-diff needs two sides: give --positive CLASS (binary) or train on \
                 value labels (regression)"
            ))
        }
        ProbeKind::Binary { .. } if args.metric.as_deref() == Some("mse") => {
            return Err(miette!(
                "--metric mse scores regression probes; a binary mean-diff probe is scored by \
                 auc or acc"
            ))
        }
        _ => {}
    }
    let rfm_only = [
        (args.components > 1, "--components"),
        (args.search.is_some(), "--search"),
        (args.reg.is_some(), "--reg"),
        (args.bandwidth.is_some(), "--bandwidth"),
        (args.exponent.is_some(), "--exponent"),
        (args.center_grads, "--center-grads"),
        (args.iters.is_some(), "--iters"),
        (args.search_list.is_some(), "--search-list"),
        (args.classifier.is_some(), "--classifier"),
    ];
    if let Some((_, flag)) = rfm_only.iter().find(|(given, _)| *given) {
        return Err(miette!(
            "{flag} is a setting of RFM probes; --method mean-diff has one direction per block \
             and nothing to tune"
        ));
    }
    Ok(())
}

fn block(set: &FeatureSet, l: usize) -> BlockFeatures<'_> {
    BlockFeatures {
        rows: set.layers.get(&l).map_or(&[], |v| v.as_slice()),
        d: set.hidden_size,
    }
}

fn probe_labels(labels: &Labels) -> ProbeLabels {
    match labels {
        Labels::Classes(ids) => ProbeLabels::Classes(ids.iter().map(|&i| i as usize).collect()),
        Labels::Values(v) => ProbeLabels::Values(v.iter().map(|&x| f64::from(x)).collect()),
    }
}

fn probe_kind(args: &TrainArgs, feats: &FeatureSet) -> Result<ProbeKind> {
    let task = args.task.unwrap_or(match (&feats.labels, &args.positive) {
        (Labels::Values(_), _) => TaskArg::Regression,
        (_, Some(_)) => TaskArg::Binary,
        _ => TaskArg::Multiclass,
    });
    match task {
        TaskArg::Regression => {
            if args.positive.is_some() {
                return Err(miette!("--positive makes no sense for a regression probe"));
            }
            Ok(ProbeKind::Regression)
        }
        TaskArg::Multiclass => Ok(ProbeKind::Multiclass {
            classes: feats.classes.len(),
        }),
        TaskArg::Binary => {
            let Some(p) = &args.positive else {
                return Err(miette!(
                    "a binary probe needs --positive CLASS (one of {:?})",
                    feats.classes
                ));
            };
            let positive = feats
                .classes
                .iter()
                .position(|c| c == p)
                .or_else(|| p.parse::<usize>().ok().filter(|&i| i < feats.classes.len()))
                .ok_or_else(|| {
                    miette!(
                        "--positive {p}: not a class of this file (classes: {:?})",
                        feats.classes
                    )
                })?;
            Ok(ProbeKind::Binary { positive })
        }
    }
}

fn check_val(train: &FeatureSet, val: &FeatureSet, args: &TrainArgs) -> Result<()> {
    let vp = args.val.as_deref().unwrap_or(Path::new("--val"));
    if val.hidden_size != train.hidden_size {
        return Err(miette!(
            "{}: feature width {} differs from the training file's {}",
            vp.display(),
            val.hidden_size,
            train.hidden_size
        ));
    }
    if let Some(l) = train.layers.keys().find(|l| !val.layers.contains_key(l)) {
        return Err(miette!(
            "{}: has no block {l} (the training file has)",
            vp.display()
        ));
    }
    if matches!(train.labels, Labels::Classes(_)) && val.classes != train.classes {
        return Err(miette!(
            "{}: class list {:?} differs from the training file's {:?}",
            vp.display(),
            val.classes,
            train.classes
        ));
    }
    if matches!(train.labels, Labels::Classes(_)) != matches!(val.labels, Labels::Classes(_)) {
        return Err(miette!(
            "{}: label kind (class ids vs values) differs from the training file",
            vp.display()
        ));
    }
    Ok(())
}

/// `dir/name.safetensors` -> `dir/name.<tag>.safetensors`.
fn sibling(path: &Path, tag: &str) -> PathBuf {
    let stem = path
        .file_stem()
        .map_or_else(|| "bundle".into(), |s| s.to_string_lossy().into_owned());
    path.with_file_name(format!("{stem}.{tag}.safetensors"))
}
