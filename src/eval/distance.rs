//! Distances between two sets of embedding rows: the Fréchet distance of their Gaussian fits
//! (FAD, as fadtk and pytorch-fid compute it) and the kernel distance, an unbiased MMD² with a
//! Gaussian RBF kernel (KAD, as kadtk computes it). Everything is f64 on the CPU with faer.
//!
//! Rows are embeddings (one per frame), columns dimensions. Covariances are sample covariances
//! (divided by `n - 1`, `np.cov`'s default, which fadtk uses).

use std::ops::Range;

use faer::{Mat, MatRef, Side};
use rayon::prelude::*;

use super::EvalError;
use crate::rfm::dense::{mat_mul, scale};

/// kadtk's `SCALE_FACTOR`: the MMD² is reported times 100 (kadtk multiplied by 1000 before its
/// commit e236914, "fix scale value", of February 2025, and by 100 since).
pub const KAD_SCALE: f64 = 100.0;

/// At most this many pairs are measured for the median-distance bandwidth: above it, a fixed
/// pseudo-random sample of pairs (kadtk's `subsample` option does the same), so a long reference
/// set neither holds every pairwise distance in memory nor gives a different answer per run.
pub const MEDIAN_PAIRS: usize = 4_000_000;

/// Mean and sample covariance of a set of rows.
#[derive(Debug, Clone)]
pub struct Gaussian {
    /// Mean row.
    pub mean: Vec<f64>,
    /// Sample covariance, `dim x dim`.
    pub cov: Mat<f64>,
}

impl Gaussian {
    /// Fits `rows` (at least 2).
    pub fn fit(rows: MatRef<'_, f64>) -> Result<Self, EvalError> {
        let (n, d) = (rows.nrows(), rows.ncols());
        if n < 2 {
            return Err(EvalError::TooFew(format!(
                "a covariance needs at least 2 embedding rows, got {n}"
            )));
        }
        let mean: Vec<f64> = (0..d)
            .map(|j| (0..n).map(|i| rows[(i, j)]).sum::<f64>() / n as f64)
            .collect();
        let centred = Mat::from_fn(n, d, |i, j| rows[(i, j)] - mean[j]);
        let mut cov = mat_mul(centred.transpose(), centred.as_ref());
        scale(&mut cov, 1.0 / (n - 1) as f64);
        Ok(Gaussian { mean, cov })
    }

    /// The dimension.
    pub fn dim(&self) -> usize {
        self.mean.len()
    }
}

/// A reference Gaussian with its covariance's square root worked out once, so that many
/// distances to it (one per left-out file) cost one eigen-decomposition each.
#[derive(Debug, Clone)]
pub struct FrechetReference {
    gaussian: Gaussian,
    sqrt_cov: Mat<f64>,
    trace: f64,
}

impl FrechetReference {
    /// Prepares `gaussian` as the first argument of [`FrechetReference::distance`].
    pub fn new(gaussian: Gaussian) -> Result<Self, EvalError> {
        let sqrt_cov = psd_sqrt(&gaussian.cov)?;
        let trace = (0..gaussian.dim()).map(|i| gaussian.cov[(i, i)]).sum();
        Ok(FrechetReference {
            gaussian,
            sqrt_cov,
            trace,
        })
    }

    /// The Fréchet distance `|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2))` to `other`.
    ///
    /// `S1 S2` is not symmetric, and scipy's `sqrtm` of it (fadtk, pytorch-fid) goes through a
    /// complex Schur form whose imaginary round-off has to be dropped. Instead: `S1 S2` has the
    /// eigenvalues of the symmetric positive semi-definite `M = S1^(1/2) S2 S1^(1/2)` (`AB` and
    /// `BA` share eigenvalues), so `tr (S1 S2)^(1/2) = sum sqrt(eig(M))`, taken from a real
    /// symmetric eigen-decomposition, with round-off's tiny negative eigenvalues clamped to 0.
    /// The same holds for singular covariances (fewer rows than dimensions), where scipy needs an
    /// `eps` added to the diagonals.
    pub fn distance(&self, other: &Gaussian) -> Result<f64, EvalError> {
        let d = self.gaussian.dim();
        if other.dim() != d {
            return Err(EvalError::Dims {
                reference: d,
                generated: other.dim(),
            });
        }
        let mean_term: f64 = (0..d)
            .map(|j| (self.gaussian.mean[j] - other.mean[j]).powi(2))
            .sum();
        let m = mat_mul(
            mat_mul(self.sqrt_cov.as_ref(), other.cov.as_ref()).as_ref(),
            self.sqrt_cov.as_ref(),
        );
        let m = symmetrised(&m);
        let evd = m
            .self_adjoint_eigen(Side::Lower)
            .map_err(|_| EvalError::Eigen)?;
        let s = evd.S();
        let floor = rank_floor(&(0..d).map(|i| s[i]).collect::<Vec<_>>());
        let trace_sqrt: f64 = (0..d)
            .map(|i| if s[i] > floor { s[i].sqrt() } else { 0.0 })
            .sum();
        let other_trace: f64 = (0..d).map(|i| other.cov[(i, i)]).sum();
        Ok(mean_term + self.trace + other_trace - 2.0 * trace_sqrt)
    }
}

/// `(m + m^T) / 2`: a product that is symmetric in exact arithmetic, made so in floating point
/// before the symmetric eigen-solver reads one triangle.
fn symmetrised(m: &Mat<f64>) -> Mat<f64> {
    Mat::from_fn(m.nrows(), m.ncols(), |i, j| 0.5 * (m[(i, j)] + m[(j, i)]))
}

/// Eigenvalues of a positive semi-definite matrix at or below this are round-off of a zero (the
/// numerical-rank threshold `d * eps * max |lambda|`). Their square roots would otherwise add
/// `sqrt(1e-16)`-sized terms, so a singular covariance (fewer rows than dimensions) would be
/// about 1e-7 from itself instead of 1e-15.
fn rank_floor(eigenvalues: &[f64]) -> f64 {
    let largest = eigenvalues.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    largest * eigenvalues.len() as f64 * f64::EPSILON
}

/// The symmetric square root `V sqrt(D) V^T` of a positive semi-definite matrix, eigenvalues
/// under [`rank_floor`] taken as 0.
fn psd_sqrt(a: &Mat<f64>) -> Result<Mat<f64>, EvalError> {
    let evd = symmetrised(a)
        .self_adjoint_eigen(Side::Lower)
        .map_err(|_| EvalError::Eigen)?;
    let (u, s) = (evd.U(), evd.S());
    let d = a.nrows();
    let floor = rank_floor(&(0..d).map(|i| s[i]).collect::<Vec<_>>());
    let root: Vec<f64> = (0..d)
        .map(|i| if s[i] > floor { s[i].sqrt() } else { 0.0 })
        .collect();
    let scaled = Mat::from_fn(d, d, |i, j| u[(i, j)] * root[j]);
    Ok(mat_mul(scaled.as_ref(), u.transpose()))
}

/// The Fréchet distance between the Gaussian fits of two sets of rows.
pub fn frechet_distance(a: MatRef<'_, f64>, b: MatRef<'_, f64>) -> Result<f64, EvalError> {
    FrechetReference::new(Gaussian::fit(a)?)?.distance(&Gaussian::fit(b)?)
}

/// The Fréchet distance change each group of `generated`'s rows (a file's frames) makes: the
/// distance with every row minus the distance with that group left out. Positive: the file pulls
/// the generated set away from the reference (an outlier candidate); `None` when leaving it out
/// would keep fewer than 2 rows.
pub fn frechet_leave_one_out(
    reference: &FrechetReference,
    generated: MatRef<'_, f64>,
    groups: &[Range<usize>],
) -> Result<Vec<Option<f64>>, EvalError> {
    let all = Gaussian::fit(generated)?;
    let full = reference.distance(&all)?;
    let (n, d) = (generated.nrows(), generated.ncols());
    // Sums of rows and of their outer products, centred on the full mean so that removing a
    // group's share loses no precision to large means.
    let centred = Mat::from_fn(n, d, |i, j| generated[(i, j)] - all.mean[j]);
    let total_outer = mat_mul(centred.transpose(), centred.as_ref());
    groups
        .iter()
        .map(|g| {
            let rest = n - g.len();
            if rest < 2 {
                return Ok(None);
            }
            let part = centred.as_ref().subrows(g.start, g.len());
            let sum: Vec<f64> = (0..d)
                .map(|j| (0..g.len()).map(|i| part[(i, j)]).sum::<f64>())
                .collect();
            let outer = mat_mul(part.transpose(), part);
            // The remaining rows' centred sum is -sum; their mean is the full mean minus sum/rest.
            let shift: Vec<f64> = sum.iter().map(|s| -s / rest as f64).collect();
            let cov = Mat::from_fn(d, d, |i, j| {
                let scatter = total_outer[(i, j)] - outer[(i, j)];
                (scatter - rest as f64 * shift[i] * shift[j]) / (rest - 1) as f64
            });
            let mean = (0..d).map(|j| all.mean[j] + shift[j]).collect();
            let without = reference.distance(&Gaussian { mean, cov })?;
            Ok(Some(full - without))
        })
        .collect()
}

/// The kernel distance of a generated set from a reference set.
#[derive(Debug, Clone, PartialEq)]
pub struct KernelDistance {
    /// The unbiased MMD² (unscaled).
    pub mmd2: f64,
    /// The Gaussian kernel's bandwidth `h` (`k(x, y) = exp(-|x - y|^2 / (2 h^2))`).
    pub bandwidth: f64,
    /// Per group of generated rows (a file): the MMD² of the reference against that group
    /// alone, with the same bandwidth (kadtk's `--indiv`); `None` for a group of one row, whose
    /// within-group term is undefined.
    pub per_group: Vec<Option<f64>>,
}

impl KernelDistance {
    /// The MMD² as kadtk reports it (times [`KAD_SCALE`]).
    pub fn kad(&self) -> f64 {
        self.mmd2 * KAD_SCALE
    }
}

/// Squared norm of every row.
fn row_norms(x: MatRef<'_, f64>) -> Vec<f64> {
    (0..x.nrows())
        .map(|i| (0..x.ncols()).map(|j| x[(i, j)].powi(2)).sum())
        .collect()
}

/// For every row `i` of `a`, the sum over rows `j` of `b` of `exp(-gamma |a_i - b_j|^2)`,
/// leaving out `j == i` when `same` (`a` is `b`). Worked through in blocks of `a`'s rows so the
/// kernel matrix is never held whole; each block's products are laid out `b`-rows by `a`-rows
/// so that one `a` row's products are one contiguous column.
fn kernel_row_sums(a: MatRef<'_, f64>, b: MatRef<'_, f64>, gamma: f64, same: bool) -> Vec<f64> {
    const BLOCK: usize = 1024;
    let (na, nb) = (row_norms(a), row_norms(b));
    let mut sums = vec![0.0; a.nrows()];
    for start in (0..a.nrows()).step_by(BLOCK) {
        let len = BLOCK.min(a.nrows() - start);
        let cross = mat_mul(b, a.subrows(start, len).transpose());
        sums[start..start + len]
            .par_iter_mut()
            .enumerate()
            .for_each(|(r, sum)| {
                let i = start + r;
                let Some(col) = cross.col(r).try_as_col_major() else {
                    return;
                };
                let k = |dot: f64, nbj: f64| (-gamma * (na[i] + nbj - 2.0 * dot).max(0.0)).exp();
                let col = col.as_slice();
                let all: f64 = col.iter().zip(&nb).map(|(&dot, &nbj)| k(dot, nbj)).sum();
                // The pair of a row with itself is left out by taking back exactly its term.
                *sum = if same { all - k(col[i], nb[i]) } else { all };
            });
    }
    sums
}

/// The unbiased MMD² between `reference` (m rows) and `generated` (n rows) with the Gaussian
/// kernel of bandwidth `bandwidth` (default: [`median_pairwise_distance`] of the reference):
/// `mean_{i != j} k(x_i, x_j) + mean_{i != j} k(y_i, y_j) - 2 mean k(x_i, y_j)`, as kadtk's
/// `calc_kernel_audio_distance` (without its `1e-8` added to `2 h^2`). `groups` split the
/// generated rows into files for [`KernelDistance::per_group`].
///
/// The default bandwidth comes from the reference set, as kadtk's README and the KAD paper
/// say, so that one reference gives every generated set the same kernel; kadtk's code (at
/// a17b2ea) takes the median of its second argument, the evaluation set, instead. Pass the
/// bandwidth to reproduce either.
pub fn kernel_distance(
    reference: MatRef<'_, f64>,
    generated: MatRef<'_, f64>,
    groups: &[Range<usize>],
    bandwidth: Option<f64>,
) -> Result<KernelDistance, EvalError> {
    let (m, n) = (reference.nrows(), generated.nrows());
    if m < 2 || n < 2 {
        return Err(EvalError::TooFew(format!(
            "the kernel distance needs at least 2 embedding rows per set, got {m} and {n}"
        )));
    }
    if reference.ncols() != generated.ncols() {
        return Err(EvalError::Dims {
            reference: reference.ncols(),
            generated: generated.ncols(),
        });
    }
    let bandwidth = match bandwidth {
        Some(h) => h,
        None => median_pairwise_distance(reference),
    };
    if !(bandwidth.is_finite() && bandwidth > 0.0) {
        return Err(EvalError::Invalid(format!(
            "the kernel bandwidth must be a positive number, got {bandwidth} (a reference set \
             whose embeddings are all equal has a median distance of 0: give a bandwidth)"
        )));
    }
    let gamma = 1.0 / (2.0 * bandwidth * bandwidth);
    let xx: f64 = kernel_row_sums(reference, reference, gamma, true)
        .iter()
        .sum::<f64>()
        / (m * (m - 1)) as f64;
    let yy: f64 = kernel_row_sums(generated, generated, gamma, true)
        .iter()
        .sum::<f64>()
        / (n * (n - 1)) as f64;
    let yx = kernel_row_sums(generated, reference, gamma, false);
    let xy = yx.iter().sum::<f64>() / (m * n) as f64;
    let per_group = groups
        .iter()
        .map(|g| {
            let k = g.len();
            if k < 2 {
                return None;
            }
            let part = generated.subrows(g.start, k);
            let own =
                kernel_row_sums(part, part, gamma, true).iter().sum::<f64>() / (k * (k - 1)) as f64;
            let cross = yx[g.clone()].iter().sum::<f64>() / (m * k) as f64;
            Some(xx + own - 2.0 * cross)
        })
        .collect();
    Ok(KernelDistance {
        mmd2: xx + yy - 2.0 * xy,
        bandwidth,
        per_group,
    })
}

/// The median Euclidean distance between distinct rows of `x` (kadtk's bandwidth heuristic).
/// Like `torch.median`, the lower of the two middle values when the count is even. Above
/// [`MEDIAN_PAIRS`] pairs, measured on that many pairs drawn with a fixed seed.
pub fn median_pairwise_distance(x: MatRef<'_, f64>) -> f64 {
    let (n, d) = (x.nrows(), x.ncols());
    let pairs = n * n.saturating_sub(1) / 2;
    // Rows laid out one after the other: a pair's distance reads two contiguous slices.
    let flat: Vec<f64> = (0..n)
        .flat_map(|i| (0..d).map(move |c| x[(i, c)]))
        .collect();
    let row = |i: usize| &flat[i * d..(i + 1) * d];
    let dist = |i: usize, j: usize| {
        row(i)
            .iter()
            .zip(row(j))
            .map(|(a, b)| (a - b) * (a - b))
            .sum::<f64>()
            .sqrt()
    };
    let mut d: Vec<f64> = if pairs <= MEDIAN_PAIRS {
        (0..n)
            .flat_map(|i| (i + 1..n).map(move |j| (i, j)))
            .map(|(i, j)| dist(i, j))
            .collect()
    } else {
        (0..MEDIAN_PAIRS as u64)
            .map(|k| {
                let i = (crate::seed::splitmix64(2 * k) % n as u64) as usize;
                let mut j = (crate::seed::splitmix64(2 * k + 1) % n as u64) as usize;
                if j == i {
                    j = (j + 1) % n;
                }
                dist(i, j)
            })
            .collect()
    };
    if d.is_empty() {
        return 0.0;
    }
    let mid = (d.len() - 1) / 2;
    let (_, median, _) = d.select_nth_unstable_by(mid, f64::total_cmp);
    *median
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows from a fixed pseudo-random stream, shifted by `shift`.
    fn rows(n: usize, d: usize, seed: u64, shift: f64) -> Mat<f64> {
        Mat::from_fn(n, d, |i, j| {
            let h = crate::seed::splitmix64(seed ^ ((i * d + j) as u64).wrapping_mul(0x9E37));
            crate::seed::unit_from_hash(h) * 2.0 - 1.0 + shift
        })
    }

    #[test]
    fn a_set_is_at_distance_zero_from_itself() {
        let x = rows(200, 6, 1, 0.0);
        let fd = frechet_distance(x.as_ref(), x.as_ref()).unwrap();
        assert!(fd.abs() < 1e-10, "{fd}");
        // Singular covariance (fewer rows than dimensions) too.
        let few = rows(4, 8, 2, 0.0);
        let fd = frechet_distance(few.as_ref(), few.as_ref()).unwrap();
        assert!(fd.abs() < 1e-8, "{fd}");
    }

    #[test]
    fn a_shifted_mean_adds_its_square() {
        let x = rows(300, 3, 3, 0.0);
        let y = Mat::from_fn(300, 3, |i, j| x[(i, j)] + if j == 0 { 2.0 } else { 0.0 });
        let fd = frechet_distance(x.as_ref(), y.as_ref()).unwrap();
        assert!((fd - 4.0).abs() < 1e-9, "{fd}");
    }

    #[test]
    fn kernel_distance_is_near_zero_for_one_distribution_and_grows_with_a_shift() {
        let x = rows(300, 4, 4, 0.0);
        let y = rows(300, 4, 5, 0.0);
        let same = kernel_distance(x.as_ref(), y.as_ref(), &[], None).unwrap();
        // Unbiased: zero in expectation, so only sampling noise of order 1/n remains.
        assert!(same.mmd2.abs() < 5e-3, "{}", same.mmd2);
        let far = rows(300, 4, 5, 0.5);
        let shifted = kernel_distance(x.as_ref(), far.as_ref(), &[], None).unwrap();
        assert!(shifted.mmd2 > 20.0 * same.mmd2.abs(), "{shifted:?}");
        assert_eq!(shifted.bandwidth, same.bandwidth);
    }

    #[test]
    fn leave_one_out_matches_refitting_without_the_group() {
        let x = rows(120, 3, 6, 0.0);
        let y = rows(90, 3, 7, 0.2);
        let groups = [0..30, 30..60, 60..90];
        let reference = FrechetReference::new(Gaussian::fit(x.as_ref()).unwrap()).unwrap();
        let loo = frechet_leave_one_out(&reference, y.as_ref(), &groups).unwrap();
        let full = frechet_distance(x.as_ref(), y.as_ref()).unwrap();
        for (g, got) in groups.iter().zip(loo) {
            let rest: Vec<usize> = (0..90).filter(|i| !g.contains(i)).collect();
            let without = Mat::from_fn(rest.len(), 3, |i, j| y[(rest[i], j)]);
            let want = full - frechet_distance(x.as_ref(), without.as_ref()).unwrap();
            assert!((got.unwrap() - want).abs() < 1e-10, "{got:?} vs {want}");
        }
    }

    #[test]
    fn per_group_kernel_distance_is_the_group_alone() {
        let x = rows(50, 3, 8, 0.0);
        let y = rows(40, 3, 9, 0.3);
        let all = kernel_distance(x.as_ref(), y.as_ref(), &[0..25, 25..39, 39..40], None).unwrap();
        let part = y.as_ref().subrows(25, 14);
        let alone = kernel_distance(x.as_ref(), part, &[], Some(all.bandwidth)).unwrap();
        assert!((all.per_group[1].unwrap() - alone.mmd2).abs() < 1e-12);
        assert_eq!(all.per_group[2], None);
    }

    #[test]
    fn median_is_the_lower_middle_pair_distance() {
        // Points 0, 1, 3 on a line: distances 1, 2, 3 -> 2; with 0, 1, 3, 7: 1,2,3,4,6,7 -> 3.
        let x = Mat::from_fn(3, 1, |i, _| [0.0, 1.0, 3.0][i]);
        assert_eq!(median_pairwise_distance(x.as_ref()), 2.0);
        let x = Mat::from_fn(4, 1, |i, _| [0.0, 1.0, 3.0, 7.0][i]);
        assert_eq!(median_pairwise_distance(x.as_ref()), 3.0);
    }
}
