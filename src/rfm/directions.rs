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
///
/// A concept matrix is a normalised AGOP, whose spectrum falls fast, and only a few of its
/// `d` eigenvectors are wanted: subspace iteration on a block of a few more vectors than `k`
/// finds them in `O(d^2)` work per step instead of the `O(d^3)` of a full decomposition (0.6 s
/// at d = 2,048). It stops when every wanted pair's residual `|C v - lambda v|` is below
/// `1e-10` of the largest eigenvalue; when that has not happened within [`SUBSPACE_STEPS`]
/// steps (close eigenvalues), the full decomposition answers instead.
pub fn top_directions(concept: &Mat<f64>, k: usize) -> Result<Vec<Direction>, RfmError> {
    let d = concept.nrows();
    let k = k.min(d);
    let (values, vectors) = match top_subspace(concept, k) {
        Some(found) => found,
        None => full_top(concept, k)?,
    };
    Ok(values
        .into_iter()
        .zip(vectors)
        .map(|(eigenvalue, mut v)| {
            let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-300);
            v.iter_mut().for_each(|x| *x /= norm);
            Direction {
                eigenvalue,
                vector: v,
            }
        })
        .collect())
}

/// Most subspace-iteration steps before the full decomposition takes over.
pub const SUBSPACE_STEPS: usize = 80;

/// The top `k` eigenpairs from a full decomposition.
fn full_top(concept: &Mat<f64>, k: usize) -> Result<(Vec<f64>, Vec<Vec<f64>>), RfmError> {
    let d = concept.nrows();
    let evd = concept
        .self_adjoint_eigen(Side::Lower)
        .map_err(|_| RfmError::Eigen)?;
    let (u, s) = (evd.U(), evd.S());
    // faer sorts eigenvalues in nondecreasing order.
    Ok((0..k)
        .map(|r| {
            let j = d - 1 - r;
            (s[j], (0..d).map(|i| u[(i, j)]).collect())
        })
        .unzip())
}

/// The top `k` eigenpairs by subspace iteration with Rayleigh-Ritz, or None when they have not
/// converged within [`SUBSPACE_STEPS`] (or the matrix is too small for it to pay).
fn top_subspace(c: &Mat<f64>, k: usize) -> Option<(Vec<f64>, Vec<Vec<f64>>)> {
    let d = c.nrows();
    let block = (2 * k).max(k + 8);
    if k == 0 || 4 * block > d {
        return None;
    }
    // A fixed start, so the result does not depend on anything but the matrix.
    let mut state = 0x5eed_u64;
    let start = Mat::<f64>::from_fn(d, block, |_, _| {
        state = crate::seed::splitmix64(state);
        crate::seed::unit_from_hash(state) - 0.5
    });
    let mut q = start.qr().compute_thin_Q();
    for _ in 0..SUBSPACE_STEPS {
        let z = mat_mul(c.as_ref(), q.as_ref());
        // Rayleigh-Ritz: the eigenpairs of Q'CQ give the best approximations in span(Q).
        let h = mat_mul(q.transpose(), z.as_ref());
        let h = Mat::from_fn(block, block, |i, j| 0.5 * (h[(i, j)] + h[(j, i)]));
        let evd = h.self_adjoint_eigen(Side::Lower).ok()?;
        let (w, theta) = (evd.U(), evd.S());
        let largest = theta[block - 1].abs().max(f64::MIN_POSITIVE);
        let mut values = Vec::with_capacity(k);
        let mut vectors = Vec::with_capacity(k);
        let mut converged = true;
        for r in 0..k {
            let j = block - 1 - r;
            let wj = w.col(j);
            let v = mat_mul(q.as_ref(), wj.as_mat());
            let cv = mat_mul(z.as_ref(), wj.as_mat());
            let residual = (0..d)
                .map(|i| (cv[(i, 0)] - theta[j] * v[(i, 0)]).powi(2))
                .sum::<f64>()
                .sqrt();
            converged &= residual <= 1e-10 * largest;
            values.push(theta[j]);
            vectors.push((0..d).map(|i| v[(i, 0)]).collect());
        }
        if converged {
            return Some((values, vectors));
        }
        q = z.qr().compute_thin_Q();
    }
    None
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rfm::dense::sym_mul;

    /// `U diag(values) U'` for a seeded orthonormal `U`.
    fn with_spectrum(values: &[f64]) -> Mat<f64> {
        let d = values.len();
        let mut state = 99u64;
        let raw = Mat::<f64>::from_fn(d, d, |_, _| {
            state = crate::seed::splitmix64(state);
            crate::seed::unit_from_hash(state) - 0.5
        });
        let u = raw.qr().compute_thin_Q();
        let scaled = Mat::from_fn(d, d, |i, j| u[(i, j)] * values[j]);
        sym_mul(scaled.as_ref(), u.transpose())
    }

    fn check_against_full(c: &Mat<f64>, k: usize) {
        let (want_vals, want_vecs) = full_top(c, k).unwrap();
        let got = top_directions(c, k).unwrap();
        assert_eq!(got.len(), k);
        for (r, dir) in got.iter().enumerate() {
            assert!(
                (dir.eigenvalue - want_vals[r]).abs() <= 1e-9 * want_vals[0].abs(),
                "eigenvalue {r}: {} vs {}",
                dir.eigenvalue,
                want_vals[r]
            );
            let cos: f64 = dir
                .vector
                .iter()
                .zip(&want_vecs[r])
                .map(|(a, b)| a * b)
                .sum();
            assert!(
                (cos.abs() - 1.0).abs() < 1e-8,
                "eigenvector {r}: |cos| {cos}"
            );
        }
    }

    #[test]
    fn subspace_iteration_finds_the_top_pairs_of_a_falling_spectrum() {
        // An AGOP-like spectrum: a few large eigenvalues, then a long tail.
        let values: Vec<f64> = (0..200).map(|i| 0.6f64.powi(i) + 1e-4).collect();
        let c = with_spectrum(&values);
        assert!(
            top_subspace(&c, 3).is_some(),
            "should converge on a falling spectrum"
        );
        for k in [1, 3] {
            check_against_full(&c, k);
        }
    }

    #[test]
    fn close_eigenvalues_still_give_the_right_pairs() {
        // The top two are 1e-6 apart and the rest flat: the slow case, answered either way.
        let mut values = vec![0.5; 150];
        values[0] = 1.0;
        values[1] = 1.0 - 1e-6;
        values[2] = 0.999;
        let c = with_spectrum(&values);
        check_against_full(&c, 1);
        // A rank-one matrix (a single class direction) and an all-zero one.
        let mut one = vec![0.0; 150];
        one[0] = 3.0;
        check_against_full(&with_spectrum(&one), 1);
        let zero = Mat::<f64>::zeros(150, 150);
        assert_eq!(top_directions(&zero, 1).unwrap()[0].eigenvalue, 0.0);
    }
}
