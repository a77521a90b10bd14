//! Validation metrics: AUC (binary, and one-vs-rest macro for multiclass), accuracy, MSE, R².
//!
//! AUC follows scikit-learn's `roc_auc_score` (Mann-Whitney statistic with tied scores counted
//! as one half), which is what xRFM reports.

use std::fmt;

/// The score that picks the best iteration and the best hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// Area under the ROC curve (one-vs-rest macro average for multiclass).
    Auc,
    /// Fraction of correctly labelled examples.
    Accuracy,
    /// Mean squared error of the raw prediction.
    Mse,
}

impl Metric {
    /// True when larger is better.
    pub fn maximize(self) -> bool {
        !matches!(self, Metric::Mse)
    }

    /// The name used in direction bundles (`auc`, `acc`, `mse`).
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Auc => "auc",
            Metric::Accuracy => "acc",
            Metric::Mse => "mse",
        }
    }

    /// True when `a` is strictly better than `b` (NaN is never better).
    pub fn better(self, a: f64, b: f64) -> bool {
        if self.maximize() {
            a > b
        } else {
            a < b
        }
    }

    /// The worst possible value, a starting point for "best so far".
    pub fn worst(self) -> f64 {
        if self.maximize() {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        }
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad` keeps width and alignment (table headers use `{metric:>7}`).
        f.pad(self.as_str())
    }
}

/// Binary AUC of `scores` against `positive` flags; 0.5 when one side is empty (undefined).
pub fn auc(scores: &[f64], positive: &[bool]) -> f64 {
    let n_pos = positive.iter().filter(|&&p| p).count();
    let n_neg = positive.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return 0.5;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    // Sum of the (tie-averaged, 1-based) ranks of the positives.
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let avg_rank = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += avg_rank * order[i..=j].iter().filter(|&&k| positive[k]).count() as f64;
        i = j + 1;
    }
    let (p, q) = (n_pos as f64, n_neg as f64);
    (rank_sum - p * (p + 1.0) / 2.0) / (p * q)
}

/// One-vs-rest macro AUC of row-major probabilities `[n, classes]` against class ids.
pub fn auc_ovr(proba: &[f64], classes: usize, labels: &[usize]) -> f64 {
    if classes == 2 {
        let scores: Vec<f64> = proba.chunks_exact(2).map(|r| r[1]).collect();
        let pos: Vec<bool> = labels.iter().map(|&l| l == 1).collect();
        return auc(&scores, &pos);
    }
    let total: f64 = (0..classes)
        .map(|c| {
            let scores: Vec<f64> = proba.chunks_exact(classes).map(|r| r[c]).collect();
            let pos: Vec<bool> = labels.iter().map(|&l| l == c).collect();
            auc(&scores, &pos)
        })
        .sum();
    total / classes as f64
}

/// Index of the largest entry of each row (the first one on ties, as `argmax` does).
pub fn argmax_rows(values: &[f64], cols: usize) -> Vec<usize> {
    values
        .chunks_exact(cols)
        .map(|r| {
            let mut best = 0;
            for (k, &v) in r.iter().enumerate() {
                if v > r[best] {
                    best = k;
                }
            }
            best
        })
        .collect()
}

/// Fraction of rows whose argmax is the label.
pub fn accuracy(proba: &[f64], classes: usize, labels: &[usize]) -> f64 {
    let hits = argmax_rows(proba, classes)
        .iter()
        .zip(labels)
        .filter(|(p, l)| p == l)
        .count();
    hits as f64 / labels.len().max(1) as f64
}

/// Mean squared error over all entries.
pub fn mse(pred: &[f64], target: &[f64]) -> f64 {
    let s: f64 = pred
        .iter()
        .zip(target)
        .map(|(p, t)| (p - t) * (p - t))
        .sum();
    s / pred.len().max(1) as f64
}

/// Coefficient of determination of a single-output regression.
pub fn r2(pred: &[f64], target: &[f64]) -> f64 {
    let mean = target.iter().sum::<f64>() / target.len().max(1) as f64;
    let ss_tot: f64 = target.iter().map(|t| (t - mean) * (t - mean)).sum();
    let ss_res: f64 = pred
        .iter()
        .zip(target)
        .map(|(p, t)| (p - t) * (p - t))
        .sum();
    if ss_tot == 0.0 {
        return 0.0;
    }
    1.0 - ss_res / ss_tot
}

/// Pearson correlation of two equally long series (0 when either is constant).
pub fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().max(1) as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        sab += (x - ma) * (y - mb);
        saa += (x - ma) * (x - ma);
        sbb += (y - mb) * (y - mb);
    }
    if saa == 0.0 || sbb == 0.0 {
        return 0.0;
    }
    sab / (saa * sbb).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_matches_sklearn_with_ties() {
        // sklearn.metrics.roc_auc_score([0, 0, 1, 1, 0, 1], [0.1, 0.4, 0.35, 0.8, 0.4, 0.4])
        // = 0.6666666666666667
        let s = [0.1, 0.4, 0.35, 0.8, 0.4, 0.4];
        let y = [false, false, true, true, false, true];
        assert!((auc(&s, &y) - 0.666_666_666_666_666_7).abs() < 1e-12);
        assert_eq!(auc(&[0.3, 0.2], &[true, true]), 0.5);
    }

    #[test]
    fn ovr_accuracy_r2_pearson() {
        // Three classes, perfectly ranked: AUC 1, accuracy 2/3 (last row is wrong by argmax).
        let p = [0.8, 0.1, 0.1, 0.1, 0.7, 0.2, 0.1, 0.5, 0.4];
        assert_eq!(accuracy(&p, 3, &[0, 1, 2]), 2.0 / 3.0);
        assert!((auc_ovr(&p, 3, &[0, 1, 2]) - 1.0).abs() < 1e-12);
        assert!(
            (r2(&[1.0, 2.0, 3.0], &[1.0, 2.0, 4.0]) - (1.0 - 1.0 / (14.0 / 3.0))).abs() < 1e-12
        );
        assert!((pearson(&[1.0, 2.0, 3.0], &[2.0, 4.0, 6.5]) - 0.9986).abs() < 1e-3);
        assert_eq!(mse(&[1.0, 3.0], &[0.0, 1.0]), 2.5);
    }

    #[test]
    fn ovr_macro_auc_and_accuracy_match_sklearn() {
        // Eight rows, three classes, imperfect ranking and tied probabilities.
        let p = [
            0.5, 0.3, 0.2, 0.2, 0.5, 0.3, 0.3, 0.3, 0.4, 0.6, 0.2, 0.2, //
            0.1, 0.2, 0.7, 0.3, 0.4, 0.3, 0.25, 0.25, 0.5, 0.4, 0.4, 0.2,
        ];
        let y = [0, 1, 2, 1, 2, 0, 0, 1];
        // sklearn 1.9.1: roc_auc_score(y, p, multi_class="ovr", average="macro")
        assert!((auc_ovr(&p, 3, &y) - 0.716_666_666_666_666_7).abs() < 1e-12);
        // accuracy_score(y, p.argmax(1)) = 0.5 (the tie [0.4, 0.4, 0.2] goes to class 0).
        assert_eq!(accuracy(&p, 3, &y), 0.5);
        // Two classes: the AUC of the second column, roc_auc_score(y2, p2[:, 1]).
        let p2 = [0.7, 0.3, 0.4, 0.6, 0.5, 0.5, 0.2, 0.8, 0.9, 0.1];
        assert!((auc_ovr(&p2, 2, &[0, 1, 0, 1, 1]) - 0.666_666_666_666_666_6).abs() < 1e-12);
    }

    #[test]
    fn r2_matches_sklearn() {
        // r2_score(y_true=[3, -0.5, 2, 7], y_pred=[2.5, 0, 2, 8])
        let r = r2(&[2.5, 0.0, 2.0, 8.0], &[3.0, -0.5, 2.0, 7.0]);
        assert!((r - 0.948_608_137_044_967_9).abs() < 1e-12, "{r}");
        // Worse than predicting the mean: r2_score([1, 2, 3], [3, 2, 1]) = -3.
        assert!((r2(&[3.0, 2.0, 1.0], &[1.0, 2.0, 3.0]) + 3.0).abs() < 1e-12);
        // Constant targets, imperfect prediction: 0, like sklearn's default (force_finite).
        assert_eq!(r2(&[1.0, 2.0], &[5.0, 5.0]), 0.0);
    }
}
