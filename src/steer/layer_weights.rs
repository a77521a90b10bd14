//! Layer weights: how strongly each decoder block is steered, from the probe's per-block scores.
//!
//! Scores are min-max normalised to `s^` in [0, 1] over the blocks that have a vector (inverted
//! for `mse`, where lower is better). Then: exponential `w = s^^(1/kappa)` (kappa = 0.95 by
//! default, the paper's choice), linear `w = s^`, top-K `w = 1` for the K best blocks else 0,
//! uniform `w = 1`. Blocks without a score get weight 0 except under `uniform`; when no block
//! has a score, or all scores are equal, every rule gives 1 to every block.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use super::{Direction, SteerError};

/// The paper's exponent for exponential layer weights.
pub const DEFAULT_KAPPA: f64 = 0.95;
/// The paper's K for top-K layer weights.
pub const DEFAULT_TOP_K: usize = 16;

/// A rule turning per-block scores into per-block weights.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LayerWeights {
    /// `s^^(1/kappa)`.
    Exp { kappa: f64 },
    /// `s^`.
    Linear,
    /// 1 for the `k` best-scoring blocks, 0 elsewhere.
    TopK { k: usize },
    /// 1 everywhere.
    Uniform,
}

impl Default for LayerWeights {
    fn default() -> Self {
        LayerWeights::Exp {
            kappa: DEFAULT_KAPPA,
        }
    }
}

impl LayerWeights {
    /// Weight per block that has a vector in `dir`.
    pub fn weights(&self, dir: &Direction) -> BTreeMap<usize, f64> {
        let blocks: Vec<usize> = dir.vectors.keys().copied().collect();
        let scored: Vec<(usize, f64)> = blocks
            .iter()
            .filter_map(|l| dir.scores.get(l).map(|s| (*l, *s)))
            .collect();
        let lo = scored.iter().map(|x| x.1).fold(f64::INFINITY, f64::min);
        let hi = scored.iter().map(|x| x.1).fold(f64::NEG_INFINITY, f64::max);
        if matches!(self, LayerWeights::Uniform) || scored.is_empty() || hi - lo <= 0.0 {
            return blocks.into_iter().map(|l| (l, 1.0)).collect();
        }
        let normalised = |s: f64| {
            let x = (s - lo) / (hi - lo);
            if dir.lower_is_better() {
                1.0 - x
            } else {
                x
            }
        };
        let mut w: BTreeMap<usize, f64> = blocks.iter().map(|l| (*l, 0.0)).collect();
        match *self {
            LayerWeights::Exp { kappa } => {
                for (l, s) in scored {
                    w.insert(l, normalised(s).powf(1.0 / kappa));
                }
            }
            LayerWeights::Linear => {
                for (l, s) in scored {
                    w.insert(l, normalised(s));
                }
            }
            LayerWeights::TopK { k } => {
                let ranked: Vec<usize> = dir
                    .ranked_blocks()
                    .into_iter()
                    .filter(|l| dir.scores.contains_key(l))
                    .take(k)
                    .collect();
                for l in ranked {
                    w.insert(l, 1.0);
                }
            }
            LayerWeights::Uniform => unreachable!("handled above"),
        }
        w
    }
}

impl FromStr for LayerWeights {
    type Err = SteerError;

    /// `exp`, `exp:KAPPA`, `linear`, `uniform`, `top` or `top:K`.
    fn from_str(s: &str) -> Result<Self, SteerError> {
        let bad = || {
            SteerError::BadInput(format!(
                "layer weights `{s}`: expected exp, exp:KAPPA, linear, uniform, top or top:K"
            ))
        };
        let (name, arg) = match s.split_once(':') {
            Some((n, a)) => (n.trim(), Some(a.trim())),
            None => (s.trim(), None),
        };
        match (name, arg) {
            ("exp", None) => Ok(LayerWeights::default()),
            ("exp", Some(a)) => {
                let kappa: f64 = a.parse().map_err(|_| bad())?;
                if kappa > 0.0 && kappa.is_finite() {
                    Ok(LayerWeights::Exp { kappa })
                } else {
                    Err(bad())
                }
            }
            ("linear", None) => Ok(LayerWeights::Linear),
            ("uniform", None) => Ok(LayerWeights::Uniform),
            ("top", None) => Ok(LayerWeights::TopK { k: DEFAULT_TOP_K }),
            ("top", Some(a)) => match a.parse().map_err(|_| bad())? {
                0 => Err(SteerError::BadInput(format!(
                    "layer weights `{s}` keep no block: K must be at least 1"
                ))),
                k => Ok(LayerWeights::TopK { k }),
            },
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for LayerWeights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LayerWeights::Exp { kappa } => write!(f, "exp:{kappa}"),
            LayerWeights::Linear => write!(f, "linear"),
            LayerWeights::TopK { k } => write!(f, "top:{k}"),
            LayerWeights::Uniform => write!(f, "uniform"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::steer::direction::tests::dir;

    #[test]
    fn rules_follow_the_paper() {
        let d = dir(
            "d",
            "auc",
            &[
                (0, 0.5, vec![1.0]),
                (1, 1.0, vec![1.0]),
                (2, 0.75, vec![1.0]),
                (3, 0.9, vec![1.0]),
            ],
        );
        let exp = LayerWeights::default().weights(&d);
        assert_eq!(exp[&0], 0.0);
        assert_eq!(exp[&1], 1.0);
        assert!((exp[&2] - 0.5f64.powf(1.0 / 0.95)).abs() < 1e-12);
        let lin = LayerWeights::Linear.weights(&d);
        assert!((lin[&3] - 0.8).abs() < 1e-12);
        let top = LayerWeights::TopK { k: 2 }.weights(&d);
        assert_eq!(
            top.values().copied().collect::<Vec<_>>(),
            vec![0.0, 1.0, 0.0, 1.0]
        );
        assert!(LayerWeights::Uniform
            .weights(&d)
            .values()
            .all(|w| *w == 1.0));
        let mse = Direction {
            metric: "mse".into(),
            ..d
        };
        let lin = LayerWeights::Linear.weights(&mse);
        assert_eq!(lin[&0], 1.0);
        assert_eq!(lin[&1], 0.0);
    }

    #[test]
    fn parsing() {
        assert_eq!(
            "top:4".parse::<LayerWeights>().unwrap(),
            LayerWeights::TopK { k: 4 }
        );
        assert_eq!(
            "exp".parse::<LayerWeights>().unwrap(),
            LayerWeights::Exp { kappa: 0.95 }
        );
        assert!("exp:-1".parse::<LayerWeights>().is_err());
        assert!("cubic".parse::<LayerWeights>().is_err());
    }
}
