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
        for ((o, x), y) in out.iter_mut().zip(col(a, j)).zip(col(b, j)) {
            *o += *x * *y;
        }
    }
    out
}

/// `out_j = <a_:j, b_:j>` (columns), in parallel.
pub fn col_dots<T: Real>(a: &Mat<T>, b: &Mat<T>) -> Vec<T> {
    (0..a.ncols())
        .into_par_iter()
        .map(|j| col(a, j).iter().zip(col(b, j)).map(|(x, y)| *x * *y).sum())
        .collect()
}

/// Column `j` of `m` as a slice: an owned [`Mat`] keeps each column contiguous, and loops over
/// slices vectorise where indexing entry by entry (with its bounds checks) does not.
pub fn col<T: Real>(m: &Mat<T>, j: usize) -> &[T] {
    m.col(j)
        .try_as_col_major()
        .expect("an owned Mat's columns are contiguous")
        .as_slice()
}

/// [`col`], to write.
pub fn col_mut<T: Real>(m: &mut Mat<T>, j: usize) -> &mut [T] {
    m.col_mut(j)
        .try_as_col_major_mut()
        .expect("an owned Mat's columns are contiguous")
        .as_slice_mut()
}

/// Largest entry (NaN if any entry is NaN). Kept in `MAX_LANES` running maxima and NaN flags
/// per position in a column so the loop vectorises: entry by entry, with an exit at the first
/// NaN, it took 4-5 % of a search's time (perf, d = 1,024) for one pass over M per round.
pub fn max_entry<T: Real>(m: &Mat<T>) -> f64 {
    let mut max = [T::of(f64::NEG_INFINITY); MAX_LANES];
    let mut nan = [false; MAX_LANES];
    let mut take = |l: usize, v: T| {
        nan[l] |= v.to_f64().is_nan();
        if v > max[l] {
            max[l] = v;
        }
    };
    for j in 0..m.ncols() {
        let mut chunks = col(m, j).chunks_exact(MAX_LANES);
        for c in &mut chunks {
            for (l, &v) in c.iter().enumerate() {
                take(l, v);
            }
        }
        for &v in chunks.remainder() {
            take(0, v);
        }
    }
    if nan.iter().any(|&n| n) {
        return f64::NAN;
    }
    max.iter()
        .fold(f64::NEG_INFINITY, |acc, v| acc.max(v.to_f64()))
}

/// Independent running maxima in [`max_entry`].
const MAX_LANES: usize = 8;

/// True when every entry is finite.
pub fn all_finite<T: Real>(m: &Mat<T>) -> bool {
    (0..m.ncols()).all(|j| (0..m.nrows()).all(|i| m[(i, j)].is_finite()))
}

/// Multiplies every entry by `s`.
pub fn scale<T: Real>(m: &mut Mat<T>, s: T) {
    for_each_col(m, |_, col| col.iter_mut().for_each(|v| *v *= s));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_entry_finds_the_largest_and_any_nan() {
        // Columns of 13 (a whole group of lanes and a remainder), the largest in each place.
        for (rows, cols) in [(13, 5), (1, 1), (8, 3), (3, 2)] {
            for at in 0..rows * cols {
                let m = Mat::<f32>::from_fn(rows, cols, |i, j| {
                    if i + j * rows == at {
                        7.5
                    } else {
                        -(((i * 31 + j * 17) % 11) as f32)
                    }
                });
                assert_eq!(max_entry(&m), 7.5, "{rows}x{cols} at {at}");
                let mut with_nan = m.clone();
                with_nan[(at % rows, at / rows)] = f32::NAN;
                assert!(max_entry(&with_nan).is_nan(), "{rows}x{cols} NaN at {at}");
            }
        }
        let all_negative = Mat::<f64>::from_fn(4, 4, |i, j| -1.0 - (i + j) as f64);
        assert_eq!(max_entry(&all_negative), -1.0);
    }
}
