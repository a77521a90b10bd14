//! Probe data preparation: the paper's 70/15/15 per-class split (balanced one-vs-rest for binary
//! probes), targets for each task, and z-scoring of regression targets.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use super::RfmError;

/// Row indices of the train / validation / test parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// Training rows.
    pub train: Vec<usize>,
    /// Validation rows.
    pub val: Vec<usize>,
    /// Held-out test rows.
    pub test: Vec<usize>,
}

/// Fractions of each class (or group) that go to validation and test; the rest trains.
pub const VAL_FRACTION: f64 = 0.15;
/// See [`VAL_FRACTION`].
pub const TEST_FRACTION: f64 = 0.15;

/// Splits every group 70/15/15 after a seeded shuffle. `groups[i]` is the group of row `i`
/// (class id; use one group for regression). Each group needs at least 3 rows.
pub fn split_by_group(groups: &[usize], seed: u64) -> Result<Split, RfmError> {
    let n_groups = groups.iter().copied().max().map_or(0, |m| m + 1);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut split = Split {
        train: Vec::new(),
        val: Vec::new(),
        test: Vec::new(),
    };
    for g in 0..n_groups {
        let mut rows: Vec<usize> = (0..groups.len()).filter(|&i| groups[i] == g).collect();
        if rows.is_empty() {
            continue;
        }
        if rows.len() < 3 {
            return Err(RfmError::TooFew(format!(
                "class {g} has {} example(s); the 70/15/15 split needs at least 3 per class \
                 (render more clips, e.g. a larger `baton dataset --limit`, or give --val)",
                rows.len()
            )));
        }
        rows.shuffle(&mut rng);
        let n_val = ((rows.len() as f64 * VAL_FRACTION).round() as usize).max(1);
        let n_test = ((rows.len() as f64 * TEST_FRACTION).round() as usize).max(1);
        split.val.extend_from_slice(&rows[..n_val]);
        split.test.extend_from_slice(&rows[n_val..n_val + n_test]);
        split.train.extend_from_slice(&rows[n_val + n_test..]);
    }
    for part in [&mut split.train, &mut split.val, &mut split.test] {
        part.sort_unstable();
    }
    Ok(split)
}

/// The paper's binary probe set: every row of class `positive` plus as many random other rows
/// (all of them when there are fewer). Returns the chosen rows and their 0/1 labels.
pub fn balance_one_vs_rest(
    classes: &[usize],
    positive: usize,
    seed: u64,
) -> Result<(Vec<usize>, Vec<usize>), RfmError> {
    let pos: Vec<usize> = (0..classes.len())
        .filter(|&i| classes[i] == positive)
        .collect();
    let mut neg: Vec<usize> = (0..classes.len())
        .filter(|&i| classes[i] != positive)
        .collect();
    if pos.is_empty() || neg.is_empty() {
        return Err(RfmError::TooFew(
            "a binary probe needs examples of the positive class and of the rest (only one class is present)"
                .into(),
        ));
    }
    let mut rng = StdRng::seed_from_u64(seed ^ 0x9e37_79b9_7f4a_7c15);
    neg.shuffle(&mut rng);
    neg.truncate(pos.len());
    let mut rows: Vec<(usize, usize)> = pos
        .iter()
        .map(|&i| (i, 1))
        .chain(neg.iter().map(|&i| (i, 0)))
        .collect();
    rows.sort_unstable();
    Ok(rows.into_iter().unzip())
}

/// Mean and standard deviation (population) of regression targets.
pub fn zscore_stats(values: &[f64]) -> Result<(f64, f64), RfmError> {
    if values.iter().any(|v| !v.is_finite()) {
        return Err(RfmError::NonFinite("regression labels".into()));
    }
    let n = values.len().max(1) as f64;
    let mean = values.iter().sum::<f64>() / n;
    let std = (values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n).sqrt();
    if std == 0.0 || !std.is_finite() {
        return Err(RfmError::TooFew(
            "regression targets are all equal (nothing to learn)".into(),
        ));
    }
    Ok((mean, std))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_per_class_and_disjoint() {
        let groups: Vec<usize> = (0..60).map(|i| i % 3).collect();
        let s = split_by_group(&groups, 7).unwrap();
        assert_eq!((s.train.len(), s.val.len(), s.test.len()), (42, 9, 9));
        for g in 0..3 {
            assert_eq!(s.val.iter().filter(|&&i| groups[i] == g).count(), 3);
        }
        let mut all: Vec<usize> = [s.train, s.val, s.test].concat();
        all.sort_unstable();
        assert_eq!(all, (0..60).collect::<Vec<_>>());
        assert!(split_by_group(&[0, 0, 1], 1)
            .unwrap_err()
            .to_string()
            .contains("at least 3"));
    }

    #[test]
    fn one_vs_rest_is_balanced() {
        let classes: Vec<usize> = (0..120).map(|i| i % 12).collect();
        let (rows, labels) = balance_one_vs_rest(&classes, 5, 3).unwrap();
        assert_eq!(rows.len(), 20);
        assert_eq!(labels.iter().sum::<usize>(), 10);
        assert!(balance_one_vs_rest(&[2, 2, 2], 2, 0).is_err());
    }
}
