//! Concept directions: one vector per decoder block, with the probe's per-block scores, and the
//! algebra recipes use on them (scale, add, normalise, orthogonalise, choose blocks).

use std::collections::BTreeMap;
use std::fmt;

use crate::probe::DirectionBundle;

use super::SteerError;

/// A concept direction: a vector per steered decoder block and the probe's validation score for
/// each block.
#[derive(Debug, Clone, PartialEq)]
pub struct Direction {
    /// A name for messages and printing (`notes:C#`, a file stem, or an expression).
    pub name: String,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Number of decoder blocks of the model the direction was found in.
    pub num_layers: usize,
    /// Validation metric of [`Direction::scores`]: `auc`, `acc` or `mse` (lower is better).
    pub metric: String,
    /// Validation score per block.
    pub scores: BTreeMap<usize, f64>,
    /// The vector added to each block's output (unit norm when read from a bundle).
    pub vectors: BTreeMap<usize, Vec<f32>>,
    /// Typical norm of each block's output (see [`DirectionBundle::residual_norms`]); empty for
    /// bundles trained before baton recorded it.
    pub residual_norms: BTreeMap<usize, f32>,
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
}

/// Per block: the mean of `a` and `b` where both have a value, else the one there is.
fn mean_where_both<T>(a: &BTreeMap<usize, T>, b: &BTreeMap<usize, T>) -> BTreeMap<usize, T>
where
    T: Copy + std::ops::Add<Output = T> + std::ops::Div<Output = T> + From<u8>,
{
    let mut out = a.clone();
    for (&l, &v) in b {
        out.entry(l)
            .and_modify(|x| *x = (*x + v) / T::from(2))
            .or_insert(v);
    }
    out
}

/// Longest name a direction expression keeps: a recipe scaling one direction in a loop would
/// otherwise grow its name without bound (and copy it at every step).
const MAX_NAME_LEN: usize = 160;

/// `name`, cut to [`MAX_NAME_LEN`] bytes (at a character boundary) with `...` when longer.
fn expression_name(name: String) -> String {
    if name.len() <= MAX_NAME_LEN {
        return name;
    }
    let mut end = MAX_NAME_LEN;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &name[..end])
}

/// The entries of `map` whose block is in `keep`.
fn only_blocks<T: Clone>(map: &BTreeMap<usize, T>, keep: &[usize]) -> BTreeMap<usize, T> {
    map.iter()
        .filter(|(l, _)| keep.contains(l))
        .map(|(l, v)| (*l, v.clone()))
        .collect()
}

impl Direction {
    /// Takes the directions and scores of a bundle.
    pub fn from_bundle(name: impl Into<String>, bundle: DirectionBundle) -> Self {
        Direction {
            name: name.into(),
            hidden_size: bundle.hidden_size,
            num_layers: bundle.num_layers,
            metric: bundle.metric,
            scores: bundle.scores,
            vectors: bundle.directions,
            residual_norms: bundle.residual_norms,
        }
    }

    /// True when lower scores are better (`mse`).
    pub fn lower_is_better(&self) -> bool {
        self.metric.eq_ignore_ascii_case("mse")
    }

    /// The block with the best score, if any block has a score and a vector.
    pub fn best_block(&self) -> Option<(usize, f64)> {
        let mut best: Option<(usize, f64)> = None;
        for (&l, &s) in self
            .scores
            .iter()
            .filter(|(l, _)| self.vectors.contains_key(l))
        {
            let better = match best {
                None => true,
                Some((_, b)) if self.lower_is_better() => s < b,
                Some((_, b)) => s > b,
            };
            if better {
                best = Some((l, s));
            }
        }
        best
    }

    fn check_compatible(&self, other: &Direction) -> Result<(), SteerError> {
        if self.hidden_size != other.hidden_size {
            return Err(SteerError::Mismatch(format!(
                "`{}` has width {} but `{}` has width {}",
                self.name, self.hidden_size, other.name, other.hidden_size
            )));
        }
        Ok(())
    }

    fn map_vectors(&self, name: String, f: impl Fn(usize, &[f32]) -> Vec<f32>) -> Direction {
        Direction {
            name: expression_name(name),
            vectors: self.vectors.iter().map(|(&l, v)| (l, f(l, v))).collect(),
            ..self.clone()
        }
    }

    /// Every vector multiplied by `k`.
    pub fn scale(&self, k: f64) -> Direction {
        let k32 = k as f32;
        self.map_vectors(format!("{k} * {}", self.name), |_, v| {
            v.iter().map(|x| x * k32).collect()
        })
    }

    /// Blockwise `self + k * other` over the union of both directions' blocks (a block missing
    /// from one side counts as zero there); scores and residual norms are the mean where both
    /// have one.
    fn combine(&self, other: &Direction, k: f32, op: &str) -> Result<Direction, SteerError> {
        self.check_compatible(other)?;
        let mut vectors = self.vectors.clone();
        for (&l, w) in &other.vectors {
            let v = vectors
                .entry(l)
                .or_insert_with(|| vec![0.0; self.hidden_size]);
            v.iter_mut().zip(w).for_each(|(a, b)| *a += k * b);
        }
        Ok(Direction {
            name: expression_name(format!("({} {op} {})", self.name, other.name)),
            scores: mean_where_both(&self.scores, &other.scores),
            residual_norms: mean_where_both(&self.residual_norms, &other.residual_norms),
            vectors,
            num_layers: self.num_layers.max(other.num_layers),
            ..self.clone()
        })
    }

    /// Blockwise sum (see the note on block unions in the module docs).
    pub fn add(&self, other: &Direction) -> Result<Direction, SteerError> {
        self.combine(other, 1.0, "+")
    }

    /// Blockwise difference.
    pub fn sub(&self, other: &Direction) -> Result<Direction, SteerError> {
        self.combine(other, -1.0, "-")
    }

    /// Every vector rescaled to unit norm (zero vectors stay zero).
    pub fn normalize(&self) -> Direction {
        self.map_vectors(format!("normalize({})", self.name), |_, v| {
            let n = dot(v, v).sqrt();
            if n > 0.0 {
                v.iter().map(|x| (*x as f64 / n) as f32).collect()
            } else {
                v.to_vec()
            }
        })
    }

    /// Removes, block by block, the component along `other` (Gram-Schmidt), so steering with the
    /// result leaves `other`'s concept alone. Blocks `other` lacks are unchanged.
    pub fn orthogonalize(&self, other: &Direction) -> Result<Direction, SteerError> {
        self.check_compatible(other)?;
        Ok(self.map_vectors(
            format!("orth({}, {})", self.name, other.name),
            |l, v| match other.vectors.get(&l) {
                Some(u) if dot(u, u) > 0.0 => {
                    let c = dot(v, u) / dot(u, u);
                    v.iter()
                        .zip(u)
                        .map(|(x, y)| (*x as f64 - c * *y as f64) as f32)
                        .collect()
                }
                _ => v.to_vec(),
            },
        ))
    }

    /// Cosine similarity per block both directions have.
    pub fn cosine(&self, other: &Direction) -> Result<BTreeMap<usize, f64>, SteerError> {
        self.check_compatible(other)?;
        Ok(self
            .vectors
            .iter()
            .filter_map(|(l, v)| {
                let u = other.vectors.get(l)?;
                let n = (dot(v, v) * dot(u, u)).sqrt();
                Some((*l, if n > 0.0 { dot(v, u) / n } else { 0.0 }))
            })
            .collect())
    }

    /// Keeps only the given blocks.
    pub fn blocks(&self, keep: &[usize]) -> Direction {
        Direction {
            name: expression_name(format!("{}.blocks({keep:?})", self.name)),
            vectors: only_blocks(&self.vectors, keep),
            scores: only_blocks(&self.scores, keep),
            residual_norms: only_blocks(&self.residual_norms, keep),
            ..self.clone()
        }
    }

    /// Keeps the `k` blocks with the best scores.
    pub fn top(&self, k: usize) -> Direction {
        let mut d = self.blocks(&self.ranked_blocks()[..k.min(self.vectors.len())]);
        d.name = expression_name(format!("{}.top({k})", self.name));
        d
    }

    /// Blocks that have a vector, best score first (blocks without a score last).
    pub fn ranked_blocks(&self) -> Vec<usize> {
        let mut blocks: Vec<usize> = self.vectors.keys().copied().collect();
        let key = |l: &usize| -> f64 {
            match self.scores.get(l) {
                Some(s) if self.lower_is_better() => -s,
                Some(s) => *s,
                None => f64::NEG_INFINITY,
            }
        };
        blocks.sort_by(|a, b| key(b).total_cmp(&key(a)).then(a.cmp(b)));
        blocks
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "direction {} ({} of {} blocks, width {}",
            self.name,
            self.vectors.len(),
            self.num_layers,
            self.hidden_size
        )?;
        if let Some((l, s)) = self.best_block() {
            write!(f, ", best block {l}: {} {s:.3}", self.metric)?;
        }
        write!(f, ")")
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A direction with the given (block, score, vector) entries.
    pub(crate) fn dir(name: &str, metric: &str, blocks: &[(usize, f64, Vec<f32>)]) -> Direction {
        Direction {
            name: name.into(),
            hidden_size: blocks[0].2.len(),
            num_layers: 8,
            metric: metric.into(),
            scores: blocks.iter().map(|(l, s, _)| (*l, *s)).collect(),
            vectors: blocks.iter().map(|(l, _, v)| (*l, v.clone())).collect(),
            residual_norms: BTreeMap::new(),
        }
    }

    #[test]
    fn algebra() {
        let a = dir(
            "a",
            "auc",
            &[(0, 0.6, vec![1.0, 0.0]), (1, 0.9, vec![0.6, 0.8])],
        );
        let b = dir(
            "b",
            "auc",
            &[(1, 0.7, vec![1.0, 0.0]), (2, 0.5, vec![0.0, 1.0])],
        );
        let s = a.add(&b).unwrap();
        assert_eq!(s.vectors[&1], vec![1.6, 0.8]);
        assert_eq!(s.vectors[&2], vec![0.0, 1.0]);
        assert!((s.scores[&1] - 0.8).abs() < 1e-12);
        let d = a.sub(&b).unwrap();
        assert_eq!(d.vectors[&0], vec![1.0, 0.0]);
        assert!((d.vectors[&1][0] + 0.4).abs() < 1e-6);
        let o = a.orthogonalize(&b).unwrap();
        assert!(o.vectors[&1][0].abs() < 1e-7 && (o.vectors[&1][1] - 0.8).abs() < 1e-7);
        let n = o.normalize();
        assert!((n.vectors[&1][1] - 1.0).abs() < 1e-6);
        let c = a.cosine(&b).unwrap();
        assert_eq!(c.len(), 1);
        assert!((c[&1] - 0.6).abs() < 1e-7);
        assert_eq!(a.scale(2.0).vectors[&1], vec![1.2, 1.6]);
        // Residual norms combine as the scores do.
        let with_norms = |d: &Direction, norms: &[(usize, f32)]| Direction {
            residual_norms: norms.iter().copied().collect(),
            ..d.clone()
        };
        let s = with_norms(&a, &[(0, 2.0), (1, 4.0)])
            .add(&with_norms(&b, &[(1, 6.0), (2, 8.0)]))
            .unwrap();
        assert_eq!(
            s.residual_norms,
            BTreeMap::from([(0, 2.0), (1, 5.0), (2, 8.0)])
        );
    }

    #[test]
    fn expression_names_stay_short() {
        let mut a = dir("é", "auc", &[(0, 0.6, vec![1.0])]);
        for _ in 0..1000 {
            a = a.scale(1.0);
        }
        assert!(a.name.len() <= MAX_NAME_LEN + 3, "{}", a.name.len());
        assert!(a.name.ends_with("..."));
    }

    #[test]
    fn choosing_blocks() {
        let a = dir(
            "a",
            "auc",
            &[
                (0, 0.6, vec![1.0]),
                (1, 0.9, vec![1.0]),
                (2, 0.7, vec![1.0]),
            ],
        );
        assert_eq!(a.ranked_blocks(), vec![1, 2, 0]);
        assert_eq!(
            a.top(2).vectors.keys().copied().collect::<Vec<_>>(),
            vec![1, 2]
        );
        assert_eq!(a.best_block(), Some((1, 0.9)));
        let m = Direction {
            metric: "mse".into(),
            ..a.clone()
        };
        assert_eq!(m.ranked_blocks(), vec![0, 2, 1]);
        assert_eq!(a.blocks(&[0, 2]).vectors.len(), 2);
        let normed = Direction {
            residual_norms: BTreeMap::from([(0, 1.0), (1, 2.0), (2, 3.0)]),
            ..a.clone()
        };
        assert_eq!(
            normed.top(1).residual_norms,
            BTreeMap::from([(1, 2.0)]),
            "norms of dropped blocks go with them"
        );
    }
}
