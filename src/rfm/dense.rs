//! Dense helpers on faer matrices: GEMMs (symmetric products compute one triangle), column-wise
//! parallel maps and row dot products, in either [`Real`] precision. Matrices are column-major.

use faer::linalg::matmul::matmul;
use faer::linalg::matmul::triangular::{self, BlockStructure};
use faer::{Accum, Mat, MatRef, Par};
use rayon::prelude::*;

use super::real::Real;

thread_local! {
    static SEQUENTIAL: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The parallelism the GEMMs use: faer's global setting (all rayon threads by default), or
/// one thread inside [`sequential`].
pub fn par() -> Par {
    if SEQUENTIAL.with(|s| s.get()) {
        Par::Seq
    } else {
        faer::get_global_parallelism()
    }
}

/// Runs `f` with this thread's GEMMs on this thread alone. Work that is already spread over
/// the threads (a search's draws) runs better so: a parallel GEMM waits at a barrier for its
/// slowest thread, which on a shared, busy machine is often one the OS has descheduled.
pub fn sequential<R>(f: impl FnOnce() -> R) -> R {
    let before = SEQUENTIAL.with(|s| s.replace(true));
    let out = f();
    SEQUENTIAL.with(|s| s.set(before));
    out
}

/// `a b`.
pub fn mat_mul<T: Real>(a: MatRef<'_, T>, b: MatRef<'_, T>) -> Mat<T> {
    let mut out = Mat::<T>::zeros(a.nrows(), b.ncols());
    matmul(&mut out, Accum::Replace, a, b, T::ONE, par());
    out
}

/// `a b` for a product known to be symmetric: computes the lower triangle and mirrors it.
pub fn sym_mul<T: Real>(a: MatRef<'_, T>, b: MatRef<'_, T>) -> Mat<T> {
    let mut out = Mat::<T>::zeros(a.nrows(), b.ncols());
    sym_mul_add(&mut out, a, b, Accum::Replace);
    mirror_lower(&mut out);
    out
}

/// Lower triangle of `out (+)= a b` (the upper triangle is left as is).
pub fn sym_mul_add<T: Real>(out: &mut Mat<T>, a: MatRef<'_, T>, b: MatRef<'_, T>, accum: Accum) {
    triangular::matmul(
        out.as_mut(),
        BlockStructure::TriangularLower,
        accum,
        a,
        BlockStructure::Rectangular,
        b,
        BlockStructure::Rectangular,
        T::ONE,
        par(),
    );
}

/// Copies the lower triangle onto the upper one.
pub fn mirror_lower<T: Real>(m: &mut Mat<T>) {
    let n = m.nrows();
    for j in 0..n {
        for i in 0..j {
            m[(i, j)] = m[(j, i)];
        }
    }
}

/// Runs `f(j, column)` on every column of `m`, in parallel.
pub fn for_each_col<T: Real>(m: &mut Mat<T>, f: impl Fn(usize, &mut [T]) + Sync) {
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
pub fn row_dots<T: Real>(a: &Mat<T>, b: &Mat<T>) -> Vec<T> {
    let mut out = vec![T::ZERO; a.nrows()];
    for j in 0..a.ncols() {
        let (Some(ca), Some(cb)) = (a.col(j).try_as_col_major(), b.col(j).try_as_col_major())
        else {
            continue;
        };
        for ((o, x), y) in out.iter_mut().zip(ca.as_slice()).zip(cb.as_slice()) {
            *o += *x * *y;
        }
    }
    out
}

/// `out_j = <a_:j, b_:j>` (columns), in parallel.
pub fn col_dots<T: Real>(a: &Mat<T>, b: &Mat<T>) -> Vec<T> {
    (0..a.ncols())
        .into_par_iter()
        .map(
            |j| match (a.col(j).try_as_col_major(), b.col(j).try_as_col_major()) {
                (Some(ca), Some(cb)) => ca
                    .as_slice()
                    .iter()
                    .zip(cb.as_slice())
                    .map(|(x, y)| *x * *y)
                    .sum(),
                _ => T::ZERO,
            },
        )
        .collect()
}

/// Largest entry (NaN if any entry is NaN).
pub fn max_entry<T: Real>(m: &Mat<T>) -> f64 {
    let mut max = f64::NEG_INFINITY;
    for j in 0..m.ncols() {
        for i in 0..m.nrows() {
            let v = m[(i, j)].to_f64();
            if v.is_nan() {
                return f64::NAN;
            }
            max = max.max(v);
        }
    }
    max
}

/// True when every entry is finite.
pub fn all_finite<T: Real>(m: &Mat<T>) -> bool {
    (0..m.ncols()).all(|j| (0..m.nrows()).all(|i| m[(i, j)].is_finite()))
}

/// Multiplies every entry by `s`.
pub fn scale<T: Real>(m: &mut Mat<T>, s: T) {
    for_each_col(m, |_, col| col.iter_mut().for_each(|v| *v *= s));
}
