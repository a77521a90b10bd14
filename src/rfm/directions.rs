//! Concept directions: the top eigenvectors of a concept matrix (the best predictor's AGOP),
//! unit norm, with the sign chosen so that `+direction` means "more of the concept".

use faer::{Mat, Side};

use super::dense::mat_mul;
use super::metrics::pearson;
use super::RfmError;

/// One eigen-direction of a concept matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct Direction {
    /// Its eigenvalue (the concept matrix is normalised to a largest entry of 1).
    pub eigenvalue: f64,
    /// Unit-norm eigenvector.
    pub vector: Vec<f64>,
}

/// The `k` eigenvectors of the symmetric `concept` matrix with the largest eigenvalues, largest
/// first. Their signs are arbitrary until [`align_sign`] fixes them.
pub fn top_directions(concept: &Mat<f64>, k: usize) -> Result<Vec<Direction>, RfmError> {
    let d = concept.nrows();
    let evd = concept
        .self_adjoint_eigen(Side::Lower)
        .map_err(|_| RfmError::Eigen)?;
    let (u, s) = (evd.U(), evd.S());
    // faer sorts eigenvalues in nondecreasing order.
    Ok((0..k.min(d))
        .map(|r| {
            let j = d - 1 - r;
            let mut v: Vec<f64> = (0..d).map(|i| u[(i, j)]).collect();
            let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-300);
            v.iter_mut().for_each(|x| *x /= norm);
            Direction {
                eigenvalue: s[j],
                vector: v,
            }
        })
        .collect())
}

/// Flips `direction` so that the Pearson correlation between `targets` and the projections
/// `x @ direction` is positive (binary 0/1 labels or regression values); returns that correlation.
pub fn align_sign(direction: &mut [f64], x: &Mat<f64>, targets: &[f64]) -> f64 {
    let v = Mat::from_fn(direction.len(), 1, |i, _| direction[i]);
    let proj = mat_mul(x.as_ref(), v.as_ref());
    let proj: Vec<f64> = (0..proj.nrows()).map(|i| proj[(i, 0)]).collect();
    let r = pearson(targets, &proj);
    if r < 0.0 {
        direction.iter_mut().for_each(|x| *x = -*x);
    }
    r.abs()
}
