//! The difference-of-means direction: the usual steering baseline, for comparing RFM directions
//! with (`baton train --method mean-diff`).
//!
//! - Binary probes: the mean of the positive training rows minus the mean of the others.
//! - Regression probes: the covariance of the features with the z-scored target, `X_c' y`.
//!
//! The direction is unit norm, with the sign RFM directions get (+strength means "more
//! concept"). It is scored on the validation rows as a probe: the AUC (or accuracy, with the
//! threshold half-way between the two class means) of the projections, or the MSE and R² of the
//! least-squares line from the projection to the z-scored target.

use faer::Mat;

use super::directions::align_sign;
use super::fit::Task;
use super::metrics::{auc, mse, r2};
use super::train::{split_rows, BlockFeatures, ProbeSets};
use super::{Metric, RfmError};

/// The direction of one block and its validation score.
#[derive(Debug, Clone)]
pub struct BaselineResult {
    /// Validation score under the requested metric.
    pub score: f64,
    /// Validation R² (regression).
    pub r2: Option<f64>,
    /// Unit-norm direction.
    pub direction: Vec<f64>,
}

/// Fits the difference-of-means direction of one block (`val`: the validation file's block, or
/// `None` for the training file's held-out rows).
pub fn mean_difference_block(
    train: BlockFeatures<'_>,
    val: Option<BlockFeatures<'_>>,
    sets: &ProbeSets,
    metric: Metric,
) -> Result<BaselineResult, RfmError> {
    let (x, xv) = split_rows(train, val, sets)?;
    let y = column(&sets.train_y);
    let yv = column(&sets.val_y);
    let d = x.ncols();
    let mut direction = match sets.task {
        Task::Binary => {
            let positive = |i: usize| y[i] > 0.5;
            let mean_of = |want: bool| -> Result<Vec<f64>, RfmError> {
                let rows: Vec<usize> = (0..x.nrows()).filter(|&i| positive(i) == want).collect();
                if rows.is_empty() {
                    return Err(RfmError::TooFew(format!(
                        "the training rows hold no {} examples",
                        if want { "positive" } else { "negative" }
                    )));
                }
                Ok((0..d)
                    .map(|j| rows.iter().map(|&i| x[(i, j)]).sum::<f64>() / rows.len() as f64)
                    .collect())
            };
            let (pos, neg) = (mean_of(true)?, mean_of(false)?);
            pos.iter().zip(&neg).map(|(p, n)| p - n).collect::<Vec<_>>()
        }
        Task::Regression => {
            let means: Vec<f64> = (0..d)
                .map(|j| (0..x.nrows()).map(|i| x[(i, j)]).sum::<f64>() / x.nrows() as f64)
                .collect();
            (0..d)
                .map(|j| {
                    (0..x.nrows())
                        .map(|i| (x[(i, j)] - means[j]) * y[i])
                        .sum::<f64>()
                })
                .collect()
        }
        Task::Multiclass(_) => {
            return Err(RfmError::BadHyper(
                "a difference of means needs two sides: give --positive CLASS (binary) or value \
                 labels (regression)"
                    .into(),
            ))
        }
    };
    let norm = direction.iter().map(|v| v * v).sum::<f64>().sqrt();
    if !(norm > 0.0 && norm.is_finite()) {
        return Err(RfmError::TooFew(
            "the two sides have the same mean features: there is no direction between them".into(),
        ));
    }
    direction.iter_mut().for_each(|v| *v /= norm);
    align_sign(&mut direction, &x, &y);

    let project = |m: &Mat<f64>| -> Vec<f64> {
        (0..m.nrows())
            .map(|i| (0..d).map(|j| m[(i, j)] * direction[j]).sum())
            .collect()
    };
    let (p, pv) = (project(&x), project(&xv));
    let (score, r2) = match (sets.task, metric) {
        (Task::Binary, Metric::Auc) => (auc(&pv, &positives(&yv)), None),
        (Task::Binary, Metric::Accuracy) => {
            let side = |want: bool| {
                let s: Vec<f64> = (0..p.len())
                    .filter(|&i| (y[i] > 0.5) == want)
                    .map(|i| p[i])
                    .collect();
                s.iter().sum::<f64>() / s.len().max(1) as f64
            };
            let threshold = (side(true) + side(false)) / 2.0;
            let right = pv
                .iter()
                .zip(&yv)
                .filter(|(s, t)| (**s > threshold) == (**t > 0.5))
                .count();
            (right as f64 / pv.len().max(1) as f64, None)
        }
        (Task::Regression, Metric::Mse) => {
            let (slope, intercept) = least_squares(&p, &y);
            let pred: Vec<f64> = pv.iter().map(|s| slope * s + intercept).collect();
            (mse(&pred, &yv), Some(r2(&pred, &yv)))
        }
        (task, metric) => {
            return Err(RfmError::BadHyper(format!(
                "a {task:?} difference-of-means probe cannot be scored with {metric:?}"
            )))
        }
    };
    Ok(BaselineResult {
        score,
        r2,
        direction,
    })
}

fn column(m: &Mat<f64>) -> Vec<f64> {
    (0..m.nrows()).map(|i| m[(i, 0)]).collect()
}

fn positives(y: &[f64]) -> Vec<bool> {
    y.iter().map(|&v| v > 0.5).collect()
}

/// Slope and intercept of the least-squares line from `x` to `y`.
fn least_squares(x: &[f64], y: &[f64]) -> (f64, f64) {
    let n = x.len().max(1) as f64;
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let sxy: f64 = x.iter().zip(y).map(|(a, b)| (a - mx) * (b - my)).sum();
    let sxx: f64 = x.iter().map(|a| (a - mx) * (a - mx)).sum();
    let slope = if sxx > 0.0 { sxy / sxx } else { 0.0 };
    (slope, my - slope * mx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rfm::train::{plan, ProbeKind, ProbeLabels};

    /// Rows of width 3 whose first feature carries the label; the others are noise.
    fn planted(n: usize) -> (Vec<f32>, Vec<usize>) {
        let mut rows = Vec::new();
        let mut labels = Vec::new();
        for i in 0..n {
            let c = i % 2;
            let noise = |k: usize| (((i * 7 + k * 13) % 11) as f32 - 5.0) / 10.0;
            rows.extend([c as f32 * 2.0 + noise(0) * 0.1, noise(1), noise(2)]);
            labels.push(c);
        }
        (rows, labels)
    }

    #[test]
    fn binary_direction_is_the_normalised_mean_difference() {
        let (rows, labels) = planted(200);
        let sets = plan(
            &ProbeLabels::Classes(labels),
            None,
            ProbeKind::Binary { positive: 1 },
            0,
        )
        .unwrap();
        let feats = BlockFeatures { rows: &rows, d: 3 };
        let r = mean_difference_block(feats, None, &sets, Metric::Auc).unwrap();
        // By hand over the training rows.
        let mut sums = [[0f64; 3]; 2];
        let mut counts = [0f64; 2];
        for (&i, t) in sets.train_rows.iter().zip(column(&sets.train_y)) {
            let c = (t > 0.5) as usize;
            counts[c] += 1.0;
            for j in 0..3 {
                sums[c][j] += rows[i * 3 + j] as f64;
            }
        }
        let diff: Vec<f64> = (0..3)
            .map(|j| sums[1][j] / counts[1] - sums[0][j] / counts[0])
            .collect();
        let n = diff.iter().map(|v| v * v).sum::<f64>().sqrt();
        for (got, want) in r.direction.iter().zip(&diff) {
            assert!((got - want / n).abs() < 1e-12, "{got} vs {}", want / n);
        }
        assert!(r.direction[0] > 0.9, "{:?}", r.direction);
        assert!(r.score > 0.99, "{}", r.score);
        let acc = mean_difference_block(feats, None, &sets, Metric::Accuracy).unwrap();
        assert!(acc.score > 0.95, "{}", acc.score);
        // Multiclass has no two sides.
        let multi = plan(
            &ProbeLabels::Classes((0..200).map(|i| i % 3).collect()),
            None,
            ProbeKind::Multiclass { classes: 3 },
            0,
        )
        .unwrap();
        let err = mean_difference_block(feats, None, &multi, Metric::Auc).unwrap_err();
        assert!(err.to_string().contains("--positive"), "{err}");
    }

    #[test]
    fn regression_direction_follows_the_target() {
        // Feature 1 is the target, feature 0 anti-correlated noise-free, feature 2 noise.
        let n = 120;
        let values: Vec<f64> = (0..n).map(|i| 60.0 + (i * 37 % 100) as f64).collect();
        let rows: Vec<f32> = values
            .iter()
            .enumerate()
            .flat_map(|(i, v)| [(-v / 10.0) as f32, (*v / 5.0) as f32, ((i * 7 % 5) as f32)])
            .collect();
        let sets = plan(&ProbeLabels::Values(values), None, ProbeKind::Regression, 0).unwrap();
        let r = mean_difference_block(
            BlockFeatures { rows: &rows, d: 3 },
            None,
            &sets,
            Metric::Mse,
        )
        .unwrap();
        assert!(
            r.direction[1] > 0.8 && r.direction[0] < -0.4,
            "{:?}",
            r.direction
        );
        assert!(r.r2.unwrap() > 0.99 && r.score < 0.01, "{r:?}");
    }
}
