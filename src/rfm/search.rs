//! Seeded random hyper-parameter search: `lambda ~ logU(1e-5, 10)`, `L ~ logU(1, 100)`,
//! `q ~ U(0.7, 1.4)`, `center_grads ~ {on, off}`; the best draw by validation score wins.
//!
//! Draws are made up front from one seeded generator, so the result does not depend on thread
//! scheduling; the fits run in parallel over draws.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;

use super::fit::{finish, fit_loop, Dataset, FitConfig, FitReport, Hyper, LoopOutcome, Task};
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
    let results: Vec<Result<LoopOutcome, RfmError>> = hypers
        .par_iter()
        .map(|h| fit_loop(train, val, task, *h, &quick))
        .collect();
    let mut best: Option<(Hyper, LoopOutcome)> = None;
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
    let mut report = finish(outcome, train, task, hyper, &quick)?;
    report.total_rounds = total_rounds;
    Ok((hyper, report))
}
