//! The Laplace-type kernel of xRFM's `l2_high_dim`:
//! `K(x, z) = exp(-d_M(x, z)^q / L^q)` with `d_M(x, z)^2 = x'Mx - 2 x'Mz + z'Mz` (M used directly,
//! not its square root), and the weights of its input gradients.

use faer::Mat;
use rayon::prelude::*;

use super::dense::for_each_col;
use super::real::{exp_with, ln_with};
use super::simd::{multiversion, Simd};

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
        self.from_cross_on(Simd::detect(), cross, row_norms, col_norms);
    }

    /// [`from_cross`](Self::from_cross) with the loops compiled for `simd`.
    pub fn from_cross_on(
        &self,
        simd: Simd,
        cross: &mut Mat<f64>,
        row_norms: &[f64],
        col_norms: &[f64],
    ) {
        let (q, scale) = self.params();
        for_each_col(cross, |j, col| {
            kernel_col(simd, col, row_norms, col_norms[j], scale, q)
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
        self.from_cross_with_grad_on(Simd::detect(), cross, row_norms, col_norms)
    }

    /// [`from_cross_with_grad`](Self::from_cross_with_grad) with the loops compiled for `simd`.
    pub fn from_cross_with_grad_on(
        &self,
        simd: Simd,
        cross: &mut Mat<f64>,
        row_norms: &[f64],
        col_norms: &[f64],
    ) -> Mat<f64> {
        let (q, scale) = self.params();
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
                kernel_grad_col(
                    simd,
                    kcol.as_slice_mut(),
                    gcol.as_slice_mut(),
                    row_norms,
                    col_norms[j],
                    scale,
                    q,
                );
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

    /// `q` and `1 / L^q`.
    fn params(&self) -> (f64, f64) {
        (self.exponent, 1.0 / self.bandwidth.powf(self.exponent))
    }
}

/// `d^q` from the squared distance `t = d^2`, for `q != 1` (the loops take `d` itself at q = 1).
#[inline(always)]
fn dist_pow<const FMA: bool>(t: f64, q: f64) -> f64 {
    exp_with::<FMA>(q * 0.5 * ln_with::<FMA>(t))
}

/// One column of kernel values: `c <- exp(-d^q scale)` with `d^2 = a - 2c + b`.
#[inline(always)]
fn kernel_body<const FMA: bool>(col: &mut [f64], a: &[f64], b: f64, scale: f64, q: f64) {
    // Two copies of the loop, so that the common q = 1 never takes a logarithm.
    if q == 1.0 {
        for (c, &a) in col.iter_mut().zip(a) {
            let d = (a - 2.0 * *c + b).max(0.0).sqrt();
            *c = exp_with::<FMA>(-d * scale);
        }
    } else {
        for (c, &a) in col.iter_mut().zip(a) {
            let t = (a - 2.0 * *c + b).max(0.0);
            *c = exp_with::<FMA>(-dist_pow::<FMA>(t, q) * scale);
        }
    }
}

/// One column of kernel values and gradient weights (see
/// [`LaplaceKernel::from_cross_with_grad`]).
#[inline(always)]
fn kernel_grad_body<const FMA: bool>(
    kcol: &mut [f64],
    gcol: &mut [f64],
    a: &[f64],
    b: f64,
    scale: f64,
    q: f64,
) {
    // Two copies of the loop, so that the common q = 1 never takes a logarithm.
    if q == 1.0 {
        for ((c, g), &a) in kcol.iter_mut().zip(gcol.iter_mut()).zip(a) {
            (*c, *g) = kernel_and_grad::<FMA>(a - 2.0 * *c + b, scale, 1.0, true);
        }
    } else {
        for ((c, g), &a) in kcol.iter_mut().zip(gcol.iter_mut()).zip(a) {
            (*c, *g) = kernel_and_grad::<FMA>(a - 2.0 * *c + b, scale, q, false);
        }
    }
}

/// The kernel value and gradient weight at squared distance `t` (rounding may make it < 0).
#[inline(always)]
fn kernel_and_grad<const FMA: bool>(t: f64, scale: f64, q: f64, q_is_one: bool) -> (f64, f64) {
    let t = t.max(0.0);
    let d = t.sqrt();
    let dq = if q_is_one { d } else { dist_pow::<FMA>(t, q) };
    let k = exp_with::<FMA>(-dq * scale);
    let g = if d >= GRAD_EPS {
        -q * scale * k * dq / (d * d)
    } else {
        0.0
    };
    (k, g)
}

multiversion!(
    /// [`kernel_body`] compiled for `simd`.
    fn kernel_col(col: &mut [f64], a: &[f64], b: f64, scale: f64, q: f64) => kernel_body
);

multiversion!(
    /// [`kernel_grad_body`] compiled for `simd`.
    fn kernel_grad_col(
        kcol: &mut [f64],
        gcol: &mut [f64],
        a: &[f64],
        b: f64,
        scale: f64,
        q: f64,
    ) => kernel_grad_body
);

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel from its definition with the standard library's functions, in f64.
    fn reference(k: &LaplaceKernel, t: f64) -> (f64, f64) {
        let d = t.max(0.0).sqrt();
        let dq = d.powf(k.exponent);
        let scale = 1.0 / k.bandwidth.powf(k.exponent);
        let kv = (-dq * scale).exp();
        let g = if d >= GRAD_EPS {
            -k.exponent * scale * kv * dq / (d * d)
        } else {
            0.0
        };
        (kv, g)
    }

    /// Every level this CPU has against the definition: the paths that
    /// [`Simd::detect`] does not pick here are the ones another CPU class runs.
    #[test]
    fn every_simd_level_matches_the_definition() {
        let (n, m) = (37, 5);
        let a: Vec<f64> = (0..n).map(|i| 1.0 + (i % 7) as f64 * 3.25).collect();
        let b: Vec<f64> = (0..m).map(|j| 0.5 + j as f64 * 2.25).collect();
        // Cross products spanning far pairs, near pairs and exact zeros (c = (a + b) / 2).
        let cross = Mat::<f64>::from_fn(n, m, |i, j| match (i + j) % 4 {
            0 => (a[i] + b[j]) / 2.0,
            1 => (a[i] + b[j]) / 2.0 - 1e-9,
            2 => -40.0 * (i as f64 + 1.0),
            _ => 0.3 * (a[i] * b[j]).sqrt(),
        });
        for simd in Simd::available() {
            for exponent in [1.0, 0.7, 1.35] {
                let k = LaplaceKernel {
                    bandwidth: 3.0,
                    exponent,
                };
                let mut k64 = cross.clone();
                let g64 = k.from_cross_with_grad_on(simd, &mut k64, &a, &b);
                let mut plain = cross.clone();
                k.from_cross_on(simd, &mut plain, &a, &b);
                for j in 0..m {
                    for i in 0..n {
                        let t = a[i] - 2.0 * cross[(i, j)] + b[j];
                        let (kv, g) = reference(&k, t);
                        let what = format!("{simd:?} q={exponent} ({i},{j})");
                        assert!((k64[(i, j)] - kv).abs() <= 1e-12 * kv, "{what}");
                        assert_eq!(plain[(i, j)], k64[(i, j)], "{what}");
                        assert!((g64[(i, j)] - g).abs() <= 1e-12 * g.abs(), "{what}");
                    }
                }
            }
        }
    }
}
