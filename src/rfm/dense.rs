//! Dense helpers on faer matrices: GEMMs (symmetric products compute one triangle), column-wise
//! parallel maps and row dot products. All matrices are f64, column-major.

use faer::linalg::matmul::matmul;
use faer::linalg::matmul::triangular::{self, BlockStructure};
use faer::{Accum, Mat, MatRef, Par};
use rayon::prelude::*;

/// The parallelism the GEMMs use (faer's global setting: all rayon threads by default).
pub fn par() -> Par {
    faer::get_global_parallelism()
}

/// `a b`.
pub fn mat_mul(a: MatRef<'_, f64>, b: MatRef<'_, f64>) -> Mat<f64> {
    let mut out = Mat::<f64>::zeros(a.nrows(), b.ncols());
    matmul(&mut out, Accum::Replace, a, b, 1.0, par());
    out
}

/// `a b` for a product known to be symmetric: computes the lower triangle and mirrors it.
pub fn sym_mul(a: MatRef<'_, f64>, b: MatRef<'_, f64>) -> Mat<f64> {
    let mut out = Mat::<f64>::zeros(a.nrows(), b.ncols());
    sym_mul_add(&mut out, a, b, Accum::Replace);
    mirror_lower(&mut out);
    out
}

/// Lower triangle of `out (+)= a b` (the upper triangle is left as is).
pub fn sym_mul_add(out: &mut Mat<f64>, a: MatRef<'_, f64>, b: MatRef<'_, f64>, accum: Accum) {
    triangular::matmul(
        out.as_mut(),
        BlockStructure::TriangularLower,
        accum,
        a,
        BlockStructure::Rectangular,
        b,
        BlockStructure::Rectangular,
        1.0,
        par(),
    );
}

/// Copies the lower triangle onto the upper one.
pub fn mirror_lower(m: &mut Mat<f64>) {
    let n = m.nrows();
    for j in 0..n {
        for i in 0..j {
            m[(i, j)] = m[(j, i)];
        }
    }
}

/// Runs `f(j, column)` on every column of `m`, in parallel.
pub fn for_each_col(m: &mut Mat<f64>, f: impl Fn(usize, &mut [f64]) + Sync) {
    m.as_mut()
        .par_col_iter_mut()
        .enumerate()
        .for_each(|(j, col)| {
            if let Some(col) = col.try_as_col_major_mut() {
                f(j, col.as_slice_mut());
            }
        });
}

/// `diag(A B')` for `A`, `B` of equal shape: `out_i = <a_i, b_i>` (rows).
pub fn row_dots(a: &Mat<f64>, b: &Mat<f64>) -> Vec<f64> {
    let mut out = vec![0.0; a.nrows()];
    for j in 0..a.ncols() {
        let (Some(ca), Some(cb)) = (a.col(j).try_as_col_major(), b.col(j).try_as_col_major())
        else {
            continue;
        };
        for ((o, x), y) in out.iter_mut().zip(ca.as_slice()).zip(cb.as_slice()) {
            *o += x * y;
        }
    }
    out
}

/// `out_j = <a_:j, b_:j>` (columns), in parallel.
pub fn col_dots(a: &Mat<f64>, b: &Mat<f64>) -> Vec<f64> {
    (0..a.ncols())
        .into_par_iter()
        .map(
            |j| match (a.col(j).try_as_col_major(), b.col(j).try_as_col_major()) {
                (Some(ca), Some(cb)) => ca
                    .as_slice()
                    .iter()
                    .zip(cb.as_slice())
                    .map(|(x, y)| x * y)
                    .sum(),
                _ => 0.0,
            },
        )
        .collect()
}

/// Largest entry (NaN if any entry is NaN).
pub fn max_entry(m: &Mat<f64>) -> f64 {
    let mut max = f64::NEG_INFINITY;
    for j in 0..m.ncols() {
        for i in 0..m.nrows() {
            let v = m[(i, j)];
            if v.is_nan() {
                return f64::NAN;
            }
            max = max.max(v);
        }
    }
    max
}

/// True when every entry is finite.
pub fn all_finite(m: &Mat<f64>) -> bool {
    (0..m.ncols()).all(|j| (0..m.nrows()).all(|i| m[(i, j)].is_finite()))
}

/// Multiplies every entry by `s`.
pub fn scale(m: &mut Mat<f64>, s: f64) {
    for_each_col(m, |_, col| col.iter_mut().for_each(|v| *v *= s));
}
