//! The RFM fit loop, with the semantics of xRFM 0.4.5's `RFM.fit` (least-squares solver):
//!
//! ```text
//! M = I
//! for i in 0..iters:
//!     alpha = (K_M(X, X) + lambda I)^-1 Y          kernel ridge fit
//!     s = score(predict(X_val), Y_val)             validation
//!     keep (alpha, M, i) if s is strictly better than the best so far
//!     stop early if s is worse than best / 1.1 (AUC, accuracy) or best * 1.1 (MSE)
//!     M = AGOP / max(AGOP)
//! if not stopped early: one more fit and score (round `iters`)
//! restore the best (alpha, M); concept matrix = normalised AGOP of that predictor
//! ```
//!
//! Intentional deviations: M may be held as `X' C X` (see [`super::mahalanobis`]); the ridge
//! system is solved by Cholesky (xRFM: LU via
//! `torch.linalg.solve`), falling back to LU and then, like xRFM, to 1% of the Gershgorin bound
//! added to the diagonal; the kernel matrix is computed once per round and reused for the
//! gradients (xRFM recomputes it); a training point's gradient weight against itself is exactly 0
//! (see [`LaplaceKernel::gram_with_grad`]). [`Precision::F64`] computes everything in f64;
//! [`Precision::F32`] runs the matrix products (with M, the Gram matrices, the AGOP) in f32 and
//! keeps the kernel, its gradient weights, the ridge solve, the scores and the returned model
//! in f64: kernel values span far more than f32's range (`exp(-100)` is routine for far pairs,
//! and the ranking of such values still carries the validation score).

use faer::linalg::solvers::Solve;
use faer::{Mat, MatRef, Side};

use super::dense::{all_finite, mat_mul, row_dots};
use super::kernel::LaplaceKernel;
use super::mahalanobis::{concept_matrix, Form, Geometry, Points, Rep};
use super::metrics::{self, Metric};
use super::real::Real;
use super::search::best_of;
use super::RfmError;

/// Probabilities are clamped to `[PROBA_EPS, 1 - PROBA_EPS]` and renormalised (xRFM's default).
pub const PROBA_EPS: f64 = 1e-3;

/// What the probe predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    /// One 0/1 target column.
    Binary,
    /// One-hot targets over this many classes.
    Multiclass(usize),
    /// One (z-scored) value column.
    Regression,
}

impl Task {
    /// Number of predictor outputs (target columns).
    pub fn outputs(self) -> usize {
        match self {
            Task::Multiclass(c) => c,
            _ => 1,
        }
    }

    /// The metric used to pick iterations and hyper-parameters unless told otherwise.
    pub fn default_metric(self) -> Metric {
        match self {
            Task::Binary | Task::Multiclass(_) => Metric::Auc,
            Task::Regression => Metric::Mse,
        }
    }
}

/// Kernel and ridge hyper-parameters of one fit.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Hyper {
    /// Ridge `lambda` added to the kernel diagonal.
    pub reg: f64,
    /// Kernel bandwidth `L`.
    pub bandwidth: f64,
    /// Kernel exponent `q`.
    pub exponent: f64,
    /// Subtract the mean gradient before forming the AGOP.
    pub center_grads: bool,
}

impl Hyper {
    /// The kernel these settings describe.
    pub fn kernel(&self) -> LaplaceKernel {
        LaplaceKernel {
            bandwidth: self.bandwidth,
            exponent: self.exponent,
        }
    }

    /// Checks the ranges the kernel needs.
    pub fn validate(&self) -> Result<(), RfmError> {
        let ok = self.reg.is_finite()
            && self.reg >= 0.0
            && self.bandwidth.is_finite()
            && self.bandwidth > 0.0
            && self.exponent.is_finite()
            && self.exponent > 0.0;
        if ok {
            Ok(())
        } else {
            Err(RfmError::BadHyper(format!(
                "need reg >= 0, bandwidth > 0, exponent > 0 (got reg {}, bandwidth {}, exponent {})",
                self.reg, self.bandwidth, self.exponent
            )))
        }
    }
}

/// The precision a fit computes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// Everything in f64: equal to xRFM's float64 fit up to rounding (the parity tests' mode).
    F64,
    /// The matrix products in f32 (twice the speed, half the memory traffic); the kernel, its
    /// gradient weights, the ridge solve, the scores and the returned model in f64. Agrees with
    /// [`Precision::F64`] to about 1e-3 in validation AUC (tested).
    #[default]
    F32,
}

impl Precision {
    /// Parses `f64` or `f32`.
    pub fn parse(s: &str) -> Option<Precision> {
        match s {
            "f64" => Some(Precision::F64),
            "f32" => Some(Precision::F32),
            _ => None,
        }
    }
}

/// Loop settings of [`fit`].
#[derive(Debug, Clone, Copy)]
pub struct FitConfig {
    /// Number of AGOP updates (xRFM `iters`).
    pub iters: usize,
    /// Validation metric for picking the best round and early stopping.
    pub metric: Metric,
    /// Stop when the score gets worse than the best by this factor (xRFM: 1.1).
    pub early_stop_multiplier: f64,
    /// Keep a copy of M after every update (for tests; costs `d x d` per round).
    pub record_ms: bool,
    /// Compute the concept matrix (normalised AGOP of the best predictor).
    pub concept_matrix: bool,
    /// How M is held during the loop (same results; [`Form::Auto`] picks the faster).
    pub form: Form,
    /// The precision of the loop's arithmetic.
    pub precision: Precision,
}

impl FitConfig {
    /// `iters` rounds with the task's default metric and xRFM's early stopping.
    pub fn new(iters: usize, metric: Metric) -> Self {
        FitConfig {
            iters,
            metric,
            early_stop_multiplier: 1.1,
            record_ms: false,
            concept_matrix: true,
            form: Form::Auto,
            precision: Precision::default(),
        }
    }
}

/// Inputs `x` (`n x d`) and targets `y` (`n x outputs`).
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Features, one row per example.
    pub x: Mat<f64>,
    /// Targets: 0/1 column, one-hot rows or z-scored values.
    pub y: Mat<f64>,
}

impl Dataset {
    /// Builds a dataset from row-major features and row-major targets.
    pub fn from_rows(x: &[f64], d: usize, y: &[f64], outputs: usize) -> Self {
        let n = x.len().checked_div(d).unwrap_or(0);
        Dataset {
            x: Mat::from_fn(n, d, |i, j| x[i * d + j]),
            y: Mat::from_fn(n, outputs, |i, j| y[i * outputs + j]),
        }
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.x.nrows()
    }

    /// True when there are no examples.
    pub fn is_empty(&self) -> bool {
        self.x.nrows() == 0
    }
}

/// A fitted kernel predictor: `f(z) = K_M(z, centers) alpha`.
#[derive(Debug, Clone)]
pub struct Rfm {
    /// The kernel.
    pub kernel: LaplaceKernel,
    /// The Mahalanobis matrix the predictor was fitted under (`d x d`).
    pub m: Mat<f64>,
    /// Training points (`n x d`).
    pub centers: Mat<f64>,
    /// Kernel ridge coefficients (`n x outputs`).
    pub alpha: Mat<f64>,
    /// What it predicts.
    pub task: Task,
}

impl Rfm {
    /// Raw predictions (`rows x outputs`).
    pub fn predict(&self, x: MatRef<'_, f64>) -> Mat<f64> {
        let cm = mat_mul(self.centers.as_ref(), self.m.as_ref());
        let center_norms = row_dots(&cm, &self.centers);
        predict_with(
            &self.kernel,
            x,
            &self.m,
            &self.centers,
            &center_norms,
            &self.alpha,
        )
    }

    /// Class probabilities (`rows x classes`), clamped to `[1e-3, 1 - 1e-3]` and renormalised;
    /// binary probes give two columns `[1 - p, p]`. Regression probes return the raw values.
    pub fn predict_proba(&self, x: MatRef<'_, f64>) -> Mat<f64> {
        to_proba(self.task, &self.predict(x))
    }
}

/// What [`fit`] returns.
#[derive(Debug, Clone)]
pub struct FitReport {
    /// The restored best predictor.
    pub model: Rfm,
    /// Validation score of every round, in order (the last is the final fit if not stopped).
    pub val_scores: Vec<f64>,
    /// Round of the best predictor (`iters` = the final fit after the last update).
    pub best_iter: usize,
    /// Its validation score.
    pub best_score: f64,
    /// Whether the loop stopped early.
    pub early_stopped: bool,
    /// M after every update, when [`FitConfig::record_ms`] is set.
    pub ms: Vec<Mat<f64>>,
    /// Normalised AGOP of the best predictor (its concept matrix), when asked for.
    pub concept: Option<Mat<f64>>,
    /// Rounds fitted in total (over all draws, for a search).
    pub total_rounds: usize,
}

/// Fits an RFM on `train`, scoring on `val` (see the module docs for the loop).
pub fn fit(
    train: &Dataset,
    val: &Dataset,
    task: Task,
    hyper: Hyper,
    config: &FitConfig,
) -> Result<FitReport, RfmError> {
    best_of(train, val, task, &[hyper], config).map(|(_, report)| report)
}

/// The loop's result before the best model is materialised.
pub(crate) struct LoopOutcome<T: Real> {
    alpha: Mat<f64>,
    rep: Rep<T>,
    best_iter: usize,
    pub(crate) best_score: f64,
    pub(crate) val_scores: Vec<f64>,
    early_stopped: bool,
    ms: Vec<Mat<f64>>,
}

/// Runs the rounds on `points` (the inputs of `train` and `val`, already checked with
/// [`check_inputs`]) and keeps the best `(alpha, M)` in whichever form the loop used.
pub(crate) fn fit_loop<T: Real>(
    points: &Points<T>,
    train: &Dataset,
    val: &Dataset,
    task: Task,
    hyper: Hyper,
    config: &FitConfig,
) -> Result<LoopOutcome<T>, RfmError> {
    hyper.validate()?;
    let kernel = hyper.kernel();
    let form = config.form.resolve(train.len(), train.x.ncols());
    let metric = config.metric;
    let mut rep = Rep::identity(form);
    let mut best: Option<(Mat<f64>, Rep<T>, usize)> = None;
    let mut best_score = metric.worst();
    let mut val_scores = Vec::new();
    let mut ms = Vec::new();
    let mut early_stopped = false;

    for round in 0..=config.iters {
        let is_final = round == config.iters;
        let geo = rep.geometry(points);
        let (alpha, grad) = fit_round(&kernel, &geo, hyper.reg, &train.y, !is_final)?;
        let mut vk = T::to_wide(&geo.val_cross);
        kernel.from_cross(&mut vk, &wide(&geo.val_norms), &wide(&geo.norms));
        let pred = mat_mul(vk.as_ref(), alpha.as_ref());
        let score = score(task, metric, &pred, &val.y)?;
        val_scores.push(score);
        if metric.better(score, best_score) {
            best_score = score;
            best = Some((alpha.clone(), rep.clone(), round));
        }
        if is_final {
            break;
        }
        let stop = if metric.maximize() {
            score < best_score / config.early_stop_multiplier
        } else {
            score > best_score * config.early_stop_multiplier
        };
        if stop {
            early_stopped = true;
            break;
        }
        if let Some(grad) = grad {
            let (alpha, grad) = agop_inputs::<T>(&alpha, &grad);
            rep = rep.update(points, &geo, &alpha, &grad, hyper.center_grads);
        }
        if config.record_ms {
            ms.push(T::widen(rep.materialise(&points.x)));
        }
    }

    let Some((alpha, best_rep, best_iter)) = best else {
        return Err(RfmError::NoValidScore);
    };
    Ok(LoopOutcome {
        alpha,
        rep: best_rep,
        best_iter,
        best_score,
        val_scores,
        early_stopped,
        ms,
    })
}

/// Materialises the best model and, when asked, its concept matrix.
pub(crate) fn finish<T: Real>(
    outcome: LoopOutcome<T>,
    points: &Points<T>,
    train: &Dataset,
    task: Task,
    hyper: Hyper,
    config: &FitConfig,
) -> Result<FitReport, RfmError> {
    let kernel = hyper.kernel();
    let LoopOutcome {
        alpha,
        rep: best_rep,
        best_iter,
        best_score,
        val_scores,
        early_stopped,
        ms,
    } = outcome;
    let concept = config.concept_matrix.then(|| {
        let geo = best_rep.geometry(points);
        let mut kmat = T::to_wide(&geo.cross);
        let grad = kernel.gram_with_grad(&mut kmat, &wide(&geo.norms));
        let (alpha, grad) = agop_inputs::<T>(&alpha, &grad);
        T::widen(concept_matrix(
            &best_rep,
            points,
            &geo,
            &alpha,
            &grad,
            hyper.center_grads,
        ))
    });
    let model = Rfm {
        kernel,
        m: T::widen(best_rep.materialise(&points.x)),
        centers: train.x.clone(),
        alpha,
        task,
    };
    Ok(FitReport {
        model,
        total_rounds: val_scores.len(),
        val_scores,
        best_iter,
        best_score,
        early_stopped,
        ms,
        concept,
    })
}

/// Kernel matrix, ridge solve and (when asked) gradient weights of one round, in f64.
fn fit_round<T: Real>(
    kernel: &LaplaceKernel,
    geo: &Geometry<T>,
    reg: f64,
    y: &Mat<f64>,
    with_grad: bool,
) -> Result<(Mat<f64>, Option<Mat<f64>>), RfmError> {
    let mut kmat = T::to_wide(&geo.cross);
    let norms = wide(&geo.norms);
    let grad = if with_grad {
        Some(kernel.gram_with_grad(&mut kmat, &norms))
    } else {
        kernel.from_cross(&mut kmat, &norms, &norms);
        None
    };
    Ok((ridge_solve(kmat, reg, y)?, grad))
}

/// `v` in f64.
fn wide<T: Real>(v: &[T]) -> Vec<f64> {
    v.iter().map(|x| x.to_f64()).collect()
}

/// The AGOP's inputs in precision `T`: `alpha` and the gradient weights, each scaled by a power
/// of two that brings its largest magnitude to about 1. The AGOP is quadratic in both and is
/// normalised by its largest entry, so the factors cancel exactly; they keep f32 from flushing
/// weights to zero when the kernel is tiny (a small bandwidth puts every weight below 1e-38).
fn agop_inputs<T: Real>(alpha: &Mat<f64>, grad: &Mat<f64>) -> (Mat<T>, Mat<T>) {
    fn unit_scaled<T: Real>(m: &Mat<f64>) -> Mat<T> {
        let mut max = 0.0f64;
        for col in m.col_iter() {
            for v in col.iter() {
                max = max.max(v.abs());
            }
        }
        let factor = if max.is_finite() && max > 0.0 {
            (-max.log2().round()).exp2()
        } else {
            1.0
        };
        T::narrow_scaled(m, factor)
    }
    (unit_scaled(alpha), unit_scaled(grad))
}

/// The normalised AGOP of a fitted predictor at its own training points (its concept matrix).
pub fn model_concept_matrix(model: &Rfm, center_grads: bool) -> Mat<f64> {
    let x = &model.centers;
    let points = Points::<f64>::new(x, x, Form::Primal);
    let rep = Rep::Primal(Some(model.m.clone()));
    let geo = rep.geometry(&points);
    let mut kmat = geo.cross.clone();
    let grad = model.kernel.gram_with_grad(&mut kmat, &geo.norms);
    concept_matrix(&rep, &points, &geo, &model.alpha, &grad, center_grads)
}

/// Scores raw predictions against targets with `metric`.
pub fn score(task: Task, metric: Metric, pred: &Mat<f64>, y: &Mat<f64>) -> Result<f64, RfmError> {
    match (task, metric) {
        (Task::Regression, Metric::Mse) | (_, Metric::Mse) => {
            Ok(metrics::mse(&row_major(pred), &row_major(y)))
        }
        (Task::Regression, _) => Err(RfmError::BadHyper(format!(
            "metric {metric} needs a classification task"
        ))),
        (_, Metric::Auc | Metric::Accuracy) => {
            let proba = to_proba(task, pred);
            let classes = proba.ncols();
            let labels = target_classes(task, y);
            let p = row_major(&proba);
            Ok(if metric == Metric::Auc {
                metrics::auc_ovr(&p, classes, &labels)
            } else {
                metrics::accuracy(&p, classes, &labels)
            })
        }
    }
}

/// Class ids of classification targets (xRFM: argmax of the clamped target "probabilities").
pub fn target_classes(task: Task, y: &Mat<f64>) -> Vec<usize> {
    let proba = to_proba(task, y);
    metrics::argmax_rows(&row_major(&proba), proba.ncols())
}

/// Clamped, renormalised probabilities from raw classification outputs.
pub fn to_proba(task: Task, raw: &Mat<f64>) -> Mat<f64> {
    let clamp = |v: f64| v.clamp(PROBA_EPS, 1.0 - PROBA_EPS);
    match task {
        Task::Regression => raw.clone(),
        Task::Binary => Mat::from_fn(raw.nrows(), 2, |i, j| {
            let (p0, p1) = (clamp(1.0 - raw[(i, 0)]), clamp(raw[(i, 0)]));
            if j == 0 {
                p0 / (p0 + p1)
            } else {
                p1 / (p0 + p1)
            }
        }),
        Task::Multiclass(_) => {
            let sums: Vec<f64> = (0..raw.nrows())
                .map(|i| (0..raw.ncols()).map(|j| clamp(raw[(i, j)])).sum())
                .collect();
            Mat::from_fn(raw.nrows(), raw.ncols(), |i, j| {
                clamp(raw[(i, j)]) / sums[i]
            })
        }
    }
}

pub(crate) fn check_inputs(train: &Dataset, val: &Dataset, task: Task) -> Result<(), RfmError> {
    let d = train.x.ncols();
    if val.x.ncols() != d {
        return Err(RfmError::DimMismatch {
            train: d,
            val: val.x.ncols(),
        });
    }
    if train.x.nrows() < 2 || val.x.nrows() == 0 {
        return Err(RfmError::TooFew(format!(
            "need at least 2 training and 1 validation example (got {} and {})",
            train.x.nrows(),
            val.x.nrows()
        )));
    }
    for (what, data) in [("training", train), ("validation", val)] {
        if data.y.nrows() != data.x.nrows() || data.y.ncols() != task.outputs() {
            return Err(RfmError::TooFew(format!(
                "{what} targets have shape {}x{}, expected {}x{}",
                data.y.nrows(),
                data.y.ncols(),
                data.x.nrows(),
                task.outputs()
            )));
        }
        if !all_finite(&data.x) || !all_finite(&data.y) {
            return Err(RfmError::NonFinite(format!("{what} data")));
        }
    }
    Ok(())
}

/// Solves `(K + reg I) alpha = Y`: Cholesky, else LU, else with 1% of the Gershgorin bound added.
fn ridge_solve(mut kmat: Mat<f64>, reg: f64, y: &Mat<f64>) -> Result<Mat<f64>, RfmError> {
    let n = kmat.nrows();
    for i in 0..n {
        kmat[(i, i)] += reg;
    }
    let finite = all_finite;
    if let Ok(llt) = kmat.llt(Side::Lower) {
        let alpha = llt.solve(y);
        if finite(&alpha) {
            return Ok(alpha);
        }
    }
    let alpha = kmat.partial_piv_lu().solve(y);
    if finite(&alpha) {
        return Ok(alpha);
    }
    let bound = (0..n)
        .map(|i| (0..n).map(|j| kmat[(i, j)].abs()).sum::<f64>())
        .fold(0.0, f64::max);
    for i in 0..n {
        kmat[(i, i)] += bound * 1e-2;
    }
    let alpha = kmat.partial_piv_lu().solve(y);
    if finite(&alpha) {
        Ok(alpha)
    } else {
        Err(RfmError::Solve)
    }
}

/// `K_M(x, centers) alpha`, given the centres' squared M-norms.
pub(crate) fn predict_with(
    kernel: &LaplaceKernel,
    x: MatRef<'_, f64>,
    m: &Mat<f64>,
    centers: &Mat<f64>,
    center_norms: &[f64],
    alpha: &Mat<f64>,
) -> Mat<f64> {
    let xm = mat_mul(x, m.as_ref());
    let norms = row_dots(&xm, &x.to_owned());
    let mut kmat = mat_mul(xm.as_ref(), centers.transpose());
    kernel.from_cross(&mut kmat, &norms, center_norms);
    mat_mul(kmat.as_ref(), alpha.as_ref())
}

/// Row-major copy of a matrix.
pub fn row_major(m: &Mat<f64>) -> Vec<f64> {
    let mut out = Vec::with_capacity(m.nrows() * m.ncols());
    for i in 0..m.nrows() {
        for j in 0..m.ncols() {
            out.push(m[(i, j)]);
        }
    }
    out
}
