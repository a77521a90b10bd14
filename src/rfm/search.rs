//! Seeded random hyper-parameter search: `lambda ~ logU(1e-5, 10)`, `L ~ logU(1, 100)`,
//! `q ~ U(0.7, 1.4)`, `center_grads ~ {on, off}`; the best draw by validation score wins.
//!
//! Draws are made up front from one seeded generator, so the result does not depend on thread
//! scheduling; the fits run in parallel over draws.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;

use super::dense::sequential;
use super::fit::{
    check_inputs, finish, fit_loop, Dataset, FitConfig, FitReport, Hyper, LoopOutcome, Precision,
    Task,
};
use super::mahalanobis::Points;
use super::real::Real;
use super::RfmError;

/// Ranges of the random search.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SearchSpace {
    /// Ridge range, sampled log-uniformly.
    pub reg: (f64, f64),
    /// Bandwidth range, sampled log-uniformly.
    pub bandwidth: (f64, f64),
    /// Exponent range, sampled uniformly.
    pub exponent: (f64, f64),
}

impl Default for SearchSpace {
    fn default() -> Self {
        SearchSpace {
            reg: (1e-5, 10.0),
            bandwidth: (1.0, 100.0),
            exponent: (0.7, 1.4),
        }
    }
}

impl SearchSpace {
    /// `draws` hyper-parameter settings from a generator seeded with `seed`.
    pub fn draw(&self, draws: usize, seed: u64) -> Vec<Hyper> {
        let mut rng = StdRng::seed_from_u64(seed);
        let log_uniform = |rng: &mut StdRng, (lo, hi): (f64, f64)| {
            (lo.ln() + rng.random::<f64>() * (hi.ln() - lo.ln())).exp()
        };
        (0..draws)
            .map(|_| {
                let reg = log_uniform(&mut rng, self.reg);
                let bandwidth = log_uniform(&mut rng, self.bandwidth);
                let exponent =
                    self.exponent.0 + rng.random::<f64>() * (self.exponent.1 - self.exponent.0);
                let center_grads = rng.random::<bool>();
                Hyper {
                    reg,
                    bandwidth,
                    exponent,
                    center_grads,
                }
            })
            .collect()
    }
}

/// Fits `draws` seeded random settings and returns the best one (ties go to the earlier draw)
/// with its report, including its concept matrix when `config.concept_matrix` is set.
pub fn search(
    train: &Dataset,
    val: &Dataset,
    task: Task,
    space: &SearchSpace,
    draws: usize,
    seed: u64,
    config: &FitConfig,
) -> Result<(Hyper, FitReport), RfmError> {
    search_among(train, val, task, &space.draw(draws.max(1), seed), config)
}

/// Fits every given setting (in parallel) and returns the best, like [`search`].
pub fn search_among(
    train: &Dataset,
    val: &Dataset,
    task: Task,
    hypers: &[Hyper],
    config: &FitConfig,
) -> Result<(Hyper, FitReport), RfmError> {
    if hypers.is_empty() {
        return Err(RfmError::BadHyper(
            "the search needs at least one setting".into(),
        ));
    }
    let quick = FitConfig {
        record_ms: false,
        ..*config
    };
    best_of(train, val, task, hypers, &quick)
}

/// Fits every setting of `hypers` (one or more) and returns the best with its report: what
/// [`search_among`] and [`fit`](super::fit::fit) share.
pub(crate) fn best_of(
    train: &Dataset,
    val: &Dataset,
    task: Task,
    hypers: &[Hyper],
    config: &FitConfig,
) -> Result<(Hyper, FitReport), RfmError> {
    check_inputs(train, val, task)?;
    match config.precision {
        Precision::F64 => best_in::<f64>(train, val, task, hypers, config),
        Precision::F32 => best_in::<f32>(train, val, task, hypers, config),
    }
}

/// [`best_of`] in precision `T`: the draws share one [`Points`], so the geometry under `M = I`
/// that every draw starts from is computed once.
fn best_in<T: Real>(
    train: &Dataset,
    val: &Dataset,
    task: Task,
    hypers: &[Hyper],
    config: &FitConfig,
) -> Result<(Hyper, FitReport), RfmError> {
    let form = config.form.resolve(train.len(), train.x.ncols());
    let points = Points::<T>::new(&train.x, &val.x, form);
    // The shared start with every thread; then one draw per thread, each on its own.
    points.prepare();
    let parallel_draws = hypers.len() >= rayon::current_num_threads();
    let results: Vec<Result<LoopOutcome<T>, RfmError>> = hypers
        .par_iter()
        .map(|h| {
            let fit = || fit_loop(&points, train, val, task, *h, config);
            if parallel_draws {
                sequential(fit)
            } else {
                fit()
            }
        })
        .collect();
    let mut best: Option<(Hyper, LoopOutcome<T>)> = None;
    let mut first_err = None;
    let mut total_rounds = 0;
    for (h, r) in hypers.iter().zip(results) {
        match r {
            Ok(rep) => {
                total_rounds += rep.val_scores.len();
                let better = match &best {
                    None => true,
                    Some((_, b)) => config.metric.better(rep.best_score, b.best_score),
                };
                if better {
                    best = Some((*h, rep));
                }
            }
            // Bad inputs fail every draw the same way: report the first.
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    let Some((hyper, outcome)) = best else {
        return Err(first_err.unwrap_or(RfmError::NoValidScore));
    };
    // Only the winner's model and concept matrix are materialised.
    let mut report = finish(outcome, &points, train, task, hyper, config)?;
    report.total_rounds = total_rounds;
    Ok((hyper, report))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rfm::fit::fit;
    use crate::rfm::Metric;

    #[test]
    fn same_seed_same_draws_other_seed_other_draws() {
        let space = SearchSpace::default();
        assert_eq!(space.draw(8, 42), space.draw(8, 42));
        // A longer run starts with the same draws (one generator, drawn in order).
        assert_eq!(space.draw(3, 42)[..], space.draw(8, 42)[..3]);
        let (a, b) = (space.draw(8, 42), space.draw(8, 43));
        assert!(a.iter().zip(&b).all(|(x, y)| x != y), "{a:?} vs {b:?}");
    }

    #[test]
    fn draws_stay_in_the_documented_ranges() {
        let draws = SearchSpace::default().draw(400, 7);
        for h in &draws {
            assert!((1e-5..=10.0).contains(&h.reg), "{h:?}");
            assert!((1.0..=100.0).contains(&h.bandwidth), "{h:?}");
            assert!((0.7..=1.4).contains(&h.exponent), "{h:?}");
        }
        assert!(draws.iter().any(|h| h.center_grads));
        assert!(draws.iter().any(|h| !h.center_grads));
        // Log-uniform: about half the ridge draws below the geometric middle sqrt(1e-5 * 10).
        let low = draws.iter().filter(|h| h.reg < 1e-2).count();
        assert!((140..260).contains(&low), "{low} of 400 below 1e-2");
    }

    /// 40 training and 20 validation rows of a noisy nonlinear regression in 3 dimensions.
    fn data() -> (Dataset, Dataset) {
        let mut rng = StdRng::seed_from_u64(5);
        let mut set = |n: usize| {
            let x: Vec<f64> = (0..n * 3)
                .map(|_| rng.random::<f64>() * 2.0 - 1.0)
                .collect();
            let y: Vec<f64> = x
                .chunks(3)
                .map(|r| r[0] + r[1] * r[1] + 0.3 * (rng.random::<f64>() - 0.5))
                .collect();
            Dataset::from_rows(&x, 3, &y, 1)
        };
        (set(40), set(20))
    }

    #[test]
    fn the_best_draw_by_validation_score_is_returned() {
        let (train, val) = data();
        let config = FitConfig::new(2, Metric::Mse);
        let mut hypers = SearchSpace::default().draw(5, 1);
        // Scored one by one, outside the search.
        let score = |h: &Hyper| {
            fit(&train, &val, Task::Regression, *h, &config)
                .unwrap()
                .best_score
        };
        hypers.sort_by(|a, b| score(b).total_cmp(&score(a)));
        // Worst first, best in the middle: neither "first" nor "last" can pass by luck.
        let best = hypers.pop().unwrap();
        hypers.insert(2, best);
        let scores: Vec<f64> = hypers.iter().map(score).collect();
        assert!(scores
            .iter()
            .enumerate()
            .all(|(i, &s)| i == 2 || s > scores[2]));

        let (chosen, report) =
            search_among(&train, &val, Task::Regression, &hypers, &config).unwrap();
        assert_eq!(chosen, best);
        assert!((report.best_score - scores[2]).abs() < 1e-12);
        assert!(report.concept.is_some());

        // `search` returns the best of its own seeded draws.
        let draws = SearchSpace::default().draw(4, 9);
        let (chosen, report) = search(
            &train,
            &val,
            Task::Regression,
            &SearchSpace::default(),
            4,
            9,
            &config,
        )
        .unwrap();
        let best = draws.iter().map(score).fold(f64::INFINITY, f64::min);
        assert!(draws.contains(&chosen));
        assert!((report.best_score - best).abs() < 1e-12);
    }
}
