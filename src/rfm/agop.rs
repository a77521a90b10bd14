//! The average gradient outer product (AGOP) of a fitted kernel predictor at its training points.
//!
//! For `f_l(z) = sum_i alpha_il K(x_i, z)` the gradient at a training point `x_j` is
//! `g_lj = sum_i alpha_il G_ij (M x_j - M x_i)` (see [`LaplaceKernel::from_cross_with_grad`]).
//! Stacking all `g_lj` as rows of `F` (n * outputs rows), the AGOP is `F'F`, optionally after
//! subtracting the mean gradient (`center_grads`). Per output, `F_l = diag(w_l) XM - G' diag(a_l) XM`
//! with `w_l = G' a_l`: one `n x n` by `n x d` GEMM, then `F_l' F_l` accumulates the `d x d` AGOP.
//!
//! [`LaplaceKernel::from_cross_with_grad`]: super::kernel::LaplaceKernel::from_cross_with_grad

use faer::linalg::matmul::matmul;
use faer::{Accum, Col, Mat};

use super::kernel::{for_each_col, par};

/// The AGOP `F'F` (not normalised) of the predictor with coefficients `alpha` (`n x outputs`),
/// given `xm = X M` (`n x d`) and the gradient weights `grad` (`n x n`, rows = centres, columns =
/// evaluation points, here both the training points).
pub fn agop(xm: &Mat<f64>, alpha: &Mat<f64>, grad: &Mat<f64>, center_grads: bool) -> Mat<f64> {
    let (n, d) = (xm.nrows(), xm.ncols());
    let outputs = alpha.ncols();
    // w_l = G' a_l for every output at once.
    let mut w = Mat::<f64>::zeros(n, outputs);
    matmul(&mut w, Accum::Replace, grad.transpose(), alpha, 1.0, par());

    // Mean gradient over all n * outputs rows: colsum(F_l) = (w_l - v o a_l)' XM with v = G 1.
    let mean = if center_grads {
        let mut v = vec![0.0; n];
        for j in 0..n {
            for (i, vi) in v.iter_mut().enumerate() {
                *vi += grad[(i, j)];
            }
        }
        let coef = Mat::<f64>::from_fn(n, 1, |i, _| {
            (0..outputs).map(|l| w[(i, l)] - v[i] * alpha[(i, l)]).sum::<f64>()
        });
        let mut mean = Mat::<f64>::zeros(d, 1);
        matmul(&mut mean, Accum::Replace, xm.transpose(), &coef, 1.0 / (n * outputs) as f64, par());
        Some(Col::<f64>::from_fn(d, |k| mean[(k, 0)]))
    } else {
        None
    };

    let mut total = Mat::<f64>::zeros(d, d);
    let mut scaled = Mat::<f64>::zeros(n, d);
    let mut grads = Mat::<f64>::zeros(n, d);
    for l in 0..outputs {
        // scaled = diag(a_l) XM
        for_each_col(&mut scaled, |k, col| {
            for (i, s) in col.iter_mut().enumerate() {
                *s = alpha[(i, l)] * xm[(i, k)];
            }
        });
        matmul(&mut grads, Accum::Replace, grad.transpose(), &scaled, -1.0, par());
        for_each_col(&mut grads, |k, col| {
            let mu = mean.as_ref().map_or(0.0, |m| m[k]);
            for (i, g) in col.iter_mut().enumerate() {
                *g += w[(i, l)] * xm[(i, k)] - mu;
            }
        });
        matmul(&mut total, Accum::Add, grads.transpose(), &grads, 1.0, par());
    }
    total
}

/// Divides by the largest entry, as xRFM does (`M / (M.max() + 1e-30)`).
pub fn normalise(mut agop: Mat<f64>) -> Mat<f64> {
    let mut max = f64::NEG_INFINITY;
    for j in 0..agop.ncols() {
        for i in 0..agop.nrows() {
            max = max.max(agop[(i, j)]);
        }
    }
    let scale = 1.0 / (max + 1e-30);
    for_each_col(&mut agop, |_, col| col.iter_mut().for_each(|v| *v *= scale));
    agop
}
