//! The Laplace-type kernel of xRFM's `l2_high_dim`:
//! `K(x, z) = exp(-d_M(x, z)^q / L^q)` with `d_M(x, z)^2 = x'Mx - 2 x'Mz + z'Mz` (M used directly,
//! not its square root), and the weights of its input gradients.

use faer::Mat;
use rayon::prelude::*;

use super::dense::for_each_col;

/// Distances below this count as zero in the gradient: the `d^(q-2)` factor blows up there, and
/// xRFM masks those pairs out ("very important for numerical stability").
pub const GRAD_EPS: f64 = 1e-10;

/// Bandwidth `L` and exponent `q` of the kernel.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LaplaceKernel {
    /// Length scale `L` (> 0).
    pub bandwidth: f64,
    /// Exponent `q` on the distance (> 0; 1 is the plain Laplace kernel).
    pub exponent: f64,
}

impl LaplaceKernel {
    /// Turns the cross products `c_ij = x_i' M z_j` into kernel values in place, given the squared
    /// M-norms of the rows (`a_i = x_i' M x_i`) and of the columns (`b_j = z_j' M z_j`).
    pub fn from_cross(&self, cross: &mut Mat<f64>, row_norms: &[f64], col_norms: &[f64]) {
        let q = self.exponent;
        let scale = 1.0 / self.bandwidth.powf(q);
        for_each_col(cross, |j, col| {
            let b = col_norms[j];
            for (c, &a) in col.iter_mut().zip(row_norms) {
                let d = (a - 2.0 * *c + b).max(0.0).sqrt();
                *c = (-pow(d, q) * scale).exp();
            }
        });
    }

    /// Like [`from_cross`](Self::from_cross), and also returns the gradient weights
    /// `G_ij = -(q / L^q) K_ij d_ij^(q-2)` (0 where `d_ij < GRAD_EPS`), so that the gradient of
    /// `f = sum_i a_i K(x_i, .)` at `z_j` is `sum_i a_i G_ij (M z_j - M x_i)`.
    pub fn from_cross_with_grad(
        &self,
        cross: &mut Mat<f64>,
        row_norms: &[f64],
        col_norms: &[f64],
    ) -> Mat<f64> {
        let q = self.exponent;
        let scale = 1.0 / self.bandwidth.powf(q);
        let mut grad = Mat::<f64>::zeros(cross.nrows(), cross.ncols());
        grad.as_mut()
            .par_col_iter_mut()
            .zip(cross.as_mut().par_col_iter_mut())
            .enumerate()
            .for_each(|(j, (gcol, kcol))| {
                let (Some(gcol), Some(kcol)) =
                    (gcol.try_as_col_major_mut(), kcol.try_as_col_major_mut())
                else {
                    return;
                };
                let b = col_norms[j];
                for ((g, c), &a) in gcol
                    .as_slice_mut()
                    .iter_mut()
                    .zip(kcol.as_slice_mut())
                    .zip(row_norms)
                {
                    let d = (a - 2.0 * *c + b).max(0.0).sqrt();
                    let dq = pow(d, q);
                    let k = (-dq * scale).exp();
                    *c = k;
                    *g = if d >= GRAD_EPS {
                        -q * scale * k * dq / (d * d)
                    } else {
                        0.0
                    };
                }
            });
        grad
    }

    /// [`from_cross_with_grad`](Self::from_cross_with_grad) for a point set against itself
    /// (`gram` = `x_i' M x_j`, `norms` its diagonal). A self-pair's distance is exactly zero, but
    /// `a - 2c + a` can round to ~1e-13, whose square root passes the tiny-distance mask; its
    /// huge gradient weight then multiplies `M x_j - M x_j`, which the factorised AGOP only
    /// cancels to rounding. When the true AGOP is tiny (a small bandwidth) that residue dominated
    /// it, so self-pairs get weight 0 here, their exact value.
    pub fn gram_with_grad(&self, gram: &mut Mat<f64>, norms: &[f64]) -> Mat<f64> {
        let mut grad = self.from_cross_with_grad(gram, norms, norms);
        for i in 0..grad.nrows().min(grad.ncols()) {
            grad[(i, i)] = 0.0;
        }
        grad
    }
}

fn pow(d: f64, q: f64) -> f64 {
    if q == 1.0 {
        d
    } else {
        d.powf(q)
    }
}
