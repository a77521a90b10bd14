//! The per-block probe pipeline behind `baton train`: choose rows and targets once (split or
//! explicit validation set), then for every decoder block fit an RFM (fixed hyper-parameters or a
//! random search) and take its concept directions.

use faer::Mat;

use super::data::{balance_one_vs_rest, split_by_group, zscore_stats};
use super::directions::{align_sign, top_directions, Direction};
use super::fit::{Dataset, FitConfig, Hyper, Precision, Rfm, Task};
use super::search::{search, search_among, SearchSpace};
use super::{fit, Metric, RfmError};

/// Labels of a feature set.
#[derive(Debug, Clone, PartialEq)]
pub enum ProbeLabels {
    /// Class ids (indices into the class list).
    Classes(Vec<usize>),
    /// Regression targets.
    Values(Vec<f64>),
}

/// What kind of probe to train.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeKind {
    /// This class against the rest.
    Binary {
        /// Class id of the positive class.
        positive: usize,
    },
    /// All classes at once, over this many classes.
    Multiclass {
        /// Number of classes (width of the one-hot targets).
        classes: usize,
    },
    /// The (z-scored) value.
    Regression,
}

/// How hyper-parameters are chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Tuning {
    /// Random search with this many draws.
    Search {
        /// Number of draws.
        draws: usize,
    },
    /// Given hyper-parameters.
    Fixed(Hyper),
}

/// Settings shared by every block.
#[derive(Debug, Clone)]
pub struct ProbeOptions {
    /// Probe kind.
    pub kind: ProbeKind,
    /// Hyper-parameter choice.
    pub tuning: Tuning,
    /// RFM iterations.
    pub iters: usize,
    /// Number of eigen-directions to keep.
    pub components: usize,
    /// Seed of the split and the search.
    pub seed: u64,
    /// Validation metric (default: AUC for classification, MSE for regression).
    pub metric: Option<Metric>,
    /// The fit's arithmetic.
    pub precision: Precision,
    /// Search among exactly these settings instead of `tuning` (benchmarks use it to give
    /// baton and xRFM the same draws).
    pub among: Option<Vec<Hyper>>,
}

impl ProbeOptions {
    /// The metric that picks rounds and hyper-parameters for `task`.
    pub fn metric_for(&self, task: Task) -> Result<Metric, RfmError> {
        match (self.metric, task) {
            (None, t) => Ok(t.default_metric()),
            (Some(Metric::Auc | Metric::Accuracy), Task::Regression) => Err(RfmError::BadHyper(
                "AUC and accuracy need a classification probe; use mse for regression".into(),
            )),
            (Some(m), _) => Ok(m),
        }
    }
}

/// Rows and targets of the training and validation sets, shared by all blocks.
#[derive(Debug, Clone)]
pub struct ProbeSets {
    /// The task the targets encode.
    pub task: Task,
    /// Rows of the training features.
    pub train_rows: Vec<usize>,
    /// Training targets (`rows x outputs`).
    pub train_y: Mat<f64>,
    /// Rows of the validation features (of the validation file when one is given).
    pub val_rows: Vec<usize>,
    /// Validation targets.
    pub val_y: Mat<f64>,
    /// Held-out rows of the training file (empty with an explicit validation file).
    pub test_rows: Vec<usize>,
    /// Mean and standard deviation used to z-score regression targets.
    pub zscore: Option<(f64, f64)>,
}

/// Chooses rows and builds targets. Without `val` labels: 70/15/15 per class (binary probes first
/// balanced one-vs-rest, as the paper does); with them, both sets are used exactly as given.
pub fn plan(
    train: &ProbeLabels,
    val: Option<&ProbeLabels>,
    kind: ProbeKind,
    seed: u64,
) -> Result<ProbeSets, RfmError> {
    let (task, train_t) = targets(train, kind)?;
    let (train_rows, val_rows, test_rows, val_t) = match val {
        Some(v) => {
            let (_, val_t) = targets(v, kind)?;
            let all = |n: usize| (0..n).collect::<Vec<_>>();
            (all(train_t.len()), all(val_t.len()), Vec::new(), val_t)
        }
        None => {
            let (rows, groups): (Vec<usize>, Vec<usize>) = match (kind, train) {
                (ProbeKind::Binary { positive }, ProbeLabels::Classes(ids)) => {
                    balance_one_vs_rest(ids, positive, seed)?
                }
                (_, ProbeLabels::Classes(ids)) => ((0..ids.len()).collect(), ids.clone()),
                (_, ProbeLabels::Values(v)) => ((0..v.len()).collect(), vec![0; v.len()]),
            };
            let split = split_by_group(&groups, seed)?;
            let pick = |part: &[usize]| part.iter().map(|&k| rows[k]).collect::<Vec<_>>();
            (
                pick(&split.train),
                pick(&split.val),
                pick(&split.test),
                train_t.clone(),
            )
        }
    };
    let mut train_vals: Vec<Vec<f64>> = train_rows.iter().map(|&r| train_t[r].clone()).collect();
    let mut val_vals: Vec<Vec<f64>> = val_rows.iter().map(|&r| val_t[r].clone()).collect();
    let zscore = if task == Task::Regression {
        let flat: Vec<f64> = train_vals.iter().map(|v| v[0]).collect();
        let (mean, std) = zscore_stats(&flat)?;
        for v in train_vals.iter_mut().chain(val_vals.iter_mut()) {
            v[0] = (v[0] - mean) / std;
        }
        Some((mean, std))
    } else {
        let classes = |vals: &[Vec<f64>]| {
            let mut seen: Vec<usize> = vals.iter().map(|v| argmax(v)).collect();
            seen.sort_unstable();
            seen.dedup();
            seen.len()
        };
        if classes(&train_vals) < 2 {
            return Err(RfmError::TooFew(
                "only one class is present in the training data".into(),
            ));
        }
        None
    };
    let outputs = task.outputs();
    let to_mat = |vals: &[Vec<f64>]| Mat::from_fn(vals.len(), outputs, |i, j| vals[i][j]);
    Ok(ProbeSets {
        task,
        train_y: to_mat(&train_vals),
        val_y: to_mat(&val_vals),
        train_rows,
        val_rows,
        test_rows,
        zscore,
    })
}

fn argmax(v: &[f64]) -> usize {
    if v.len() == 1 {
        return usize::from(v[0] > 0.5);
    }
    let mut best = 0;
    for (k, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = k;
        }
    }
    best
}

/// Target rows (`outputs` values each) for every example.
fn targets(labels: &ProbeLabels, kind: ProbeKind) -> Result<(Task, Vec<Vec<f64>>), RfmError> {
    match (kind, labels) {
        (ProbeKind::Binary { positive }, ProbeLabels::Classes(ids)) => Ok((
            Task::Binary,
            ids.iter()
                .map(|&c| vec![f64::from(u8::from(c == positive))])
                .collect(),
        )),
        (ProbeKind::Multiclass { classes }, ProbeLabels::Classes(ids)) => {
            if classes < 2 {
                return Err(RfmError::TooFew(
                    "a multiclass probe needs at least 2 classes".into(),
                ));
            }
            Ok((
                Task::Multiclass(classes),
                ids.iter()
                    .map(|&c| (0..classes).map(|k| f64::from(u8::from(k == c))).collect())
                    .collect(),
            ))
        }
        (ProbeKind::Regression, ProbeLabels::Values(v)) => {
            Ok((Task::Regression, v.iter().map(|&x| vec![x]).collect()))
        }
        (ProbeKind::Regression, ProbeLabels::Classes(_)) => Err(RfmError::BadHyper(
            "regression needs value labels (f32), but the features file has class labels".into(),
        )),
        (_, ProbeLabels::Values(_)) => Err(RfmError::BadHyper(
            "classification needs class labels (i64), but the features file has value labels"
                .into(),
        )),
    }
}

/// Row-major `[n, d]` f32 features of one block.
#[derive(Debug, Clone, Copy)]
pub struct BlockFeatures<'a> {
    /// The values.
    pub rows: &'a [f32],
    /// Width.
    pub d: usize,
}

impl BlockFeatures<'_> {
    /// The given rows as an f64 matrix.
    fn gather(&self, rows: &[usize]) -> Result<Mat<f64>, RfmError> {
        let d = self.d;
        let needed = rows.iter().max().map_or(0, |&r| (r + 1) * d);
        if self.rows.len() < needed {
            return Err(RfmError::TooFew(format!(
                "features hold {} values, row {} of width {d} is missing",
                self.rows.len(),
                needed / d.max(1) - 1
            )));
        }
        let m = Mat::from_fn(rows.len(), d, |i, j| f64::from(self.rows[rows[i] * d + j]));
        let bad = rows
            .iter()
            .any(|&r| self.rows[r * d..(r + 1) * d].iter().any(|v| !v.is_finite()));
        if bad {
            return Err(RfmError::NonFinite("features".into()));
        }
        Ok(m)
    }
}

/// What one block's probe produced.
#[derive(Debug, Clone)]
pub struct BlockResult {
    /// Best validation score.
    pub score: f64,
    /// Hyper-parameters used.
    pub hyper: Hyper,
    /// Validation R² of a regression probe (the paper's tempo figure).
    pub r2: Option<f64>,
    /// Round of the best predictor.
    pub best_iter: usize,
    /// Rounds fitted in total (over all draws of a search).
    pub rounds: usize,
    /// Whether the RFM loop stopped early.
    pub early_stopped: bool,
    /// Top eigen-directions of the concept matrix, sign-aligned for binary and regression.
    pub directions: Vec<Direction>,
    /// The fitted predictor; `None` once a caller has taken it (`baton train` keeps only the
    /// best block's, so a 24-block run holds one predictor, not 24).
    pub model: Option<Rfm>,
}

/// The training rows of `train` and the validation rows of `val` (the validation file's block;
/// `None`: the training file's held-out rows), after checking that their widths agree.
pub fn split_rows(
    train: BlockFeatures<'_>,
    val: Option<BlockFeatures<'_>>,
    sets: &ProbeSets,
) -> Result<(Mat<f64>, Mat<f64>), RfmError> {
    let val_feats = val.unwrap_or(train);
    if val_feats.d != train.d {
        return Err(RfmError::DimMismatch {
            train: train.d,
            val: val_feats.d,
        });
    }
    Ok((
        train.gather(&sets.train_rows)?,
        val_feats.gather(&sets.val_rows)?,
    ))
}

/// Trains the probe of one block. `val` is the validation file's block (None: same as `train`).
pub fn train_block(
    train: BlockFeatures<'_>,
    val: Option<BlockFeatures<'_>>,
    sets: &ProbeSets,
    opts: &ProbeOptions,
) -> Result<BlockResult, RfmError> {
    let (x, xv) = split_rows(train, val, sets)?;
    if (1..x.nrows()).all(|i| (0..x.ncols()).all(|j| x[(i, j)] == x[(0, j)])) {
        // RFM would still "find" a direction: an arbitrary axis of an all-zero concept matrix
        // (AUC 0.5, eigenvalue 0), written as if it meant something. The baseline refuses too.
        return Err(RfmError::TooFew(
            "every training clip has the same features here: there is no direction to find \
             (were the clips all the same sound?)"
                .into(),
        ));
    }
    let train_set = Dataset {
        x,
        y: sets.train_y.clone(),
    };
    let val_set = Dataset {
        x: xv,
        y: sets.val_y.clone(),
    };
    let config = FitConfig {
        precision: opts.precision,
        ..FitConfig::new(opts.iters, opts.metric_for(sets.task)?)
    };
    let (hyper, report) = match &opts.among {
        Some(list) => search_among(&train_set, &val_set, sets.task, list, &config)?,
        None => match opts.tuning {
            Tuning::Fixed(h) => (h, fit::fit(&train_set, &val_set, sets.task, h, &config)?),
            Tuning::Search { draws } => search(
                &train_set,
                &val_set,
                sets.task,
                &SearchSpace::default(),
                draws,
                opts.seed,
                &config,
            )?,
        },
    };
    let concept = report.concept.as_ref().ok_or(RfmError::Eigen)?;
    let mut directions = top_directions(concept, opts.components.max(1))?;
    if sets.task.outputs() == 1 {
        let y: Vec<f64> = (0..train_set.y.nrows())
            .map(|i| train_set.y[(i, 0)])
            .collect();
        for dir in &mut directions {
            align_sign(&mut dir.vector, &train_set.x, &y);
        }
    }
    let r2 = (sets.task == Task::Regression).then(|| {
        let pred = report.model.predict(val_set.x.as_ref());
        let col = |m: &Mat<f64>| (0..m.nrows()).map(|i| m[(i, 0)]).collect::<Vec<_>>();
        super::metrics::r2(&col(&pred), &col(&val_set.y))
    });
    Ok(BlockResult {
        rounds: report.total_rounds,
        score: report.best_score,
        r2,
        hyper,
        best_iter: report.best_iter,
        early_stopped: report.early_stopped,
        directions,
        model: Some(report.model),
    })
}
