//! The average gradient outer product (AGOP) of a fitted kernel predictor at its training points.
//!
//! For `f_l(z) = sum_i alpha_il K(x_i, z)` the gradient at a training point `x_j` is
//! `g_lj = sum_i alpha_il G_ij (M x_j - M x_i)` (see [`LaplaceKernel::from_cross_with_grad`]).
//! Stacking all `g_lj` as rows of `F` (n * outputs rows), the AGOP is `F'F`, optionally after
//! subtracting the mean gradient (`center_grads`). Per output,
//! `F_l = diag(w_l) XM - G' diag(a_l) XM` with `w_l = G' a_l`.
//!
//! Two equivalent forms: [`agop`] works on `XM` (`n x d`) and returns the `d x d` AGOP;
//! [`agop_dual`] works when `M = X' C X` (so `XM = E X` with `E = X X' C`, `n x n`) and returns
//! the `n x n` matrix `A` with `AGOP = X' A X`, which is cheaper when `n < d`.
//!
//! [`LaplaceKernel::from_cross_with_grad`]: super::kernel::LaplaceKernel::from_cross_with_grad

use faer::linalg::matmul::matmul;
use faer::{Accum, Mat};

use super::dense::{col, for_each_col, mat_mul, mirror_lower, par, sym_mul_add};
use super::real::Real;

/// `w = G' alpha` and, for centring, the coefficients `sum_l (w_l - v o a_l) / (n * outputs)`
/// with `v = G 1`, whose product with `XM` is the mean gradient.
fn weights<T: Real>(alpha: &Mat<T>, grad: &Mat<T>, center_grads: bool) -> (Mat<T>, Option<Mat<T>>) {
    let (n, outputs) = (alpha.nrows(), alpha.ncols());
    let mut w = Mat::<T>::zeros(n, outputs);
    matmul(
        &mut w,
        Accum::Replace,
        grad.transpose(),
        alpha,
        T::ONE,
        par(),
    );
    let mean_coef = center_grads.then(|| {
        let mut v = vec![T::ZERO; n];
        for j in 0..n {
            for (vi, &g) in v.iter_mut().zip(col(grad, j)) {
                *vi += g;
            }
        }
        let denom = T::of((n * outputs) as f64);
        Mat::<T>::from_fn(n, 1, |i, _| {
            (0..outputs)
                .map(|l| w[(i, l)] - v[i] * alpha[(i, l)])
                .sum::<T>()
                / denom
        })
    });
    (w, mean_coef)
}

/// The AGOP `F'F` (`d x d`, not normalised) of the predictor with coefficients `alpha`
/// (`n x outputs`), given `xm = X M` (`n x d`) and the gradient weights `grad` (`n x n`, rows =
/// centres, columns = evaluation points, here both the training points).
pub fn agop<T: Real>(xm: &Mat<T>, alpha: &Mat<T>, grad: &Mat<T>, center_grads: bool) -> Mat<T> {
    let (n, d) = (xm.nrows(), xm.ncols());
    let (w, mean_coef) = weights(alpha, grad, center_grads);
    let mean = mean_coef.map(|c| mat_mul(xm.transpose(), c.as_ref()));
    let mut total = Mat::<T>::zeros(d, d);
    let mut scaled = Mat::<T>::zeros(n, d);
    let mut grads = Mat::<T>::zeros(n, d);
    for l in 0..alpha.ncols() {
        let (a_l, w_l) = (col(alpha, l), col(&w, l));
        for_each_col(&mut scaled, |k, out| {
            for ((s, &a), &x) in out.iter_mut().zip(a_l).zip(col(xm, k)) {
                *s = a * x;
            }
        });
        matmul(
            &mut grads,
            Accum::Replace,
            grad.transpose(),
            &scaled,
            -T::ONE,
            par(),
        );
        for_each_col(&mut grads, |k, out| {
            let mu = mean.as_ref().map_or(T::ZERO, |m| m[(k, 0)]);
            for ((g, &wi), &x) in out.iter_mut().zip(w_l).zip(col(xm, k)) {
                *g += wi * x - mu;
            }
        });
        let accum = if l == 0 { Accum::Replace } else { Accum::Add };
        sym_mul_add(&mut total, grads.transpose(), grads.as_ref(), accum);
    }
    mirror_lower(&mut total);
    total
}

/// The `n x n` matrix `A` with `AGOP = X' A X`, when `XM = E X` (`e = None` means `E = I`,
/// i.e. `M = I`). Per output `W_l = diag(w_l) E - G' diag(a_l) E`, so `F_l = W_l X`.
pub fn agop_dual<T: Real>(
    e: Option<&Mat<T>>,
    alpha: &Mat<T>,
    grad: &Mat<T>,
    center_grads: bool,
) -> Mat<T> {
    let n = alpha.nrows();
    let (w, mean_coef) = weights(alpha, grad, center_grads);
    // Mean gradient = omega' X with omega = E' * mean_coef.
    let omega = mean_coef.map(|c| match e {
        Some(e) => mat_mul(e.transpose(), c.as_ref()),
        None => c,
    });
    let mut total = Mat::<T>::zeros(n, n);
    let mut wl = Mat::<T>::zeros(n, n);
    let mut scaled = Mat::<T>::zeros(n, n);
    for l in 0..alpha.ncols() {
        let (a_l, w_l) = (col(alpha, l), col(&w, l));
        match e {
            Some(e) => {
                for_each_col(&mut scaled, |k, out| {
                    for ((s, &a), &x) in out.iter_mut().zip(a_l).zip(col(e, k)) {
                        *s = a * x;
                    }
                });
                matmul(
                    &mut wl,
                    Accum::Replace,
                    grad.transpose(),
                    &scaled,
                    -T::ONE,
                    par(),
                );
            }
            // G' diag(a): column i of the result is column... entry (j, i) = G_ij a_i.
            None => for_each_col(&mut wl, |i, col| {
                let a = alpha[(i, l)];
                for (j, v) in col.iter_mut().enumerate() {
                    *v = -grad[(i, j)] * a;
                }
            }),
        }
        for_each_col(&mut wl, |k, out| {
            let mu = omega.as_ref().map_or(T::ZERO, |o| o[(k, 0)]);
            match e {
                Some(e) => {
                    for ((v, &wj), &x) in out.iter_mut().zip(w_l).zip(col(e, k)) {
                        *v += wj * x - mu;
                    }
                }
                // E = I: only the diagonal entry takes w.
                None => {
                    let diagonal = out[k] + (w_l[k] - mu);
                    out.iter_mut().for_each(|v| *v += -mu);
                    out[k] = diagonal;
                }
            }
        });
        let accum = if l == 0 { Accum::Replace } else { Accum::Add };
        sym_mul_add(&mut total, wl.transpose(), wl.as_ref(), accum);
    }
    mirror_lower(&mut total);
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rfm::dense::{mat_mul, row_dots};
    use crate::rfm::LaplaceKernel;

    /// With a bandwidth so small that every kernel value between distinct points is ~1e-20, the
    /// AGOP is ~1e-40: it must still be the sum over distinct pairs, not rounding left over from
    /// the self-pairs (whose true contribution is exactly zero).
    #[test]
    fn tiny_agop_is_not_self_pair_rounding() {
        let (n, d) = (40, 64);
        let mut state = 7u64;
        let x = Mat::<f64>::from_fn(n, d, |_, _| {
            state = crate::seed::splitmix64(state);
            crate::seed::unit_from_hash(state) * 20.0 - 10.0
        });
        let kernel = LaplaceKernel {
            bandwidth: 2.0,
            exponent: 1.1,
        };
        let mut gram = mat_mul(x.as_ref(), x.transpose());
        let norms = row_dots(&x, &x);
        let grad = kernel.gram_with_grad(&mut gram, &norms);
        let alpha = Mat::<f64>::from_fn(n, 1, |i, _| if i % 3 == 0 { 1.0 } else { -0.5 });
        let got = agop(&x, &alpha, &grad, false);

        // g_j = sum_{i != j} a_i G_ij (x_j - x_i), from explicit differences.
        let mut want = Mat::<f64>::zeros(d, d);
        for j in 0..n {
            let g: Vec<f64> = (0..d)
                .map(|k| {
                    (0..n)
                        .filter(|&i| i != j)
                        .map(|i| alpha[(i, 0)] * grad[(i, j)] * (x[(j, k)] - x[(i, k)]))
                        .sum()
                })
                .collect();
            for a in 0..d {
                for b in 0..d {
                    want[(a, b)] += g[a] * g[b];
                }
            }
        }
        let scale = crate::rfm::dense::max_entry(&want);
        assert!(
            scale > 0.0 && scale < 1e-20,
            "want a tiny AGOP, got {scale:e}"
        );
        let diff = (0..d)
            .flat_map(|a| (0..d).map(move |b| (a, b)))
            .map(|(a, b)| (got[(a, b)] - want[(a, b)]).abs())
            .fold(0.0, f64::max);
        assert!(
            diff <= 1e-9 * scale,
            "AGOP off by {diff:e} (scale {scale:e})"
        );
    }
}
