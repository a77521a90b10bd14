//! Recursive Feature Machines: the probe that finds concept directions.
//!
//! An RFM alternates a kernel ridge fit under a Mahalanobis metric `M` with `M <- AGOP / max`,
//! the average gradient outer product of the fitted predictor; the top eigenvectors of the best
//! predictor's AGOP are the concept directions. Same semantics as xRFM 0.4.5's single-leaf `RFM`
//! with kernel `l2_high_dim` and the least-squares solver (checked against it by
//! `tests/rfm_xrfm.rs`, fixtures from `tests/reference/xrfm_reference.py`).
//!
//! - [`kernel`]: `K(x, z) = exp(-d_M(x, z)^q / L^q)` and its gradient weights;
//! - [`agop`]: the AGOP of a fitted predictor;
//! - [`mahalanobis`]: M held as `d x d` or as `X' C X` (faster when n < d);
//! - [`dense`]: GEMM and column helpers on faer matrices;
//! - [`real`]: the two working precisions and the kernel's branch-free `exp`/`ln`;
//! - [`simd`]: the instruction set the kernel's loops run with (AVX-512, AVX2 or baseline);
//! - [`fit`](mod@fit): the iteration loop with validation scoring, early stopping and best-model restore;
//! - [`metrics`]: AUC, accuracy, MSE, R², Pearson;
//! - [`search`](mod@search): seeded random hyper-parameter search;
//! - [`directions`]: top-k eigenvectors of the concept matrix with a label-aligned sign;
//! - [`data`]: splits, targets and z-scoring;
//! - [`train`]: the per-block probe pipeline behind `baton train`;
//! - [`baseline`]: the difference-of-means direction RFM directions are compared with;
//! - [`io`]: saving a fitted classifier so it can label audio later.
//!
//! Computed on the CPU with faer (both cores through rayon), in f32 with the ridge solve and the
//! scores in f64 by default, or wholly in f64 ([`Precision`]), which is what the parity tests
//! compare with xRFM's float64.

pub mod agop;
pub mod baseline;
pub mod data;
pub mod dense;
pub mod directions;
pub mod fit;
pub mod io;
pub mod kernel;
pub mod mahalanobis;
pub mod metrics;
pub mod real;
pub mod search;
pub mod simd;
pub mod train;

pub use directions::top_directions;
pub use fit::{fit, Dataset, FitConfig, FitReport, Hyper, Precision, Rfm, Task};
pub use kernel::LaplaceKernel;
pub use metrics::Metric;
pub use search::{search, SearchSpace};

/// Errors of RFM fitting and probe training.
#[derive(Debug, thiserror::Error)]
pub enum RfmError {
    /// NaN or infinite values in the inputs.
    #[error("non-finite values (NaN or inf) in the {0}")]
    NonFinite(String),
    /// Train and validation widths differ.
    #[error("feature width differs: training has d = {train}, validation has d = {val}")]
    DimMismatch {
        /// Training width.
        train: usize,
        /// Validation width.
        val: usize,
    },
    /// Not enough examples (or classes) to fit and score.
    #[error("not enough data: {0}")]
    TooFew(String),
    /// Hyper-parameters out of range, or a metric that does not fit the task.
    #[error("invalid setting: {0}")]
    BadHyper(String),
    /// The ridge system could not be solved even with extra regularisation.
    #[error("the kernel ridge system could not be solved (try a larger --reg)")]
    Solve,
    /// Every round scored NaN.
    #[error("no round produced a finite validation score")]
    NoValidScore,
    /// The eigendecomposition of the concept matrix failed.
    #[error("eigendecomposition of the concept matrix failed")]
    Eigen,
    /// A classifier file that is not readable or not valid safetensors.
    #[error(transparent)]
    Format(#[from] crate::files::FormatError),
    /// A classifier file whose contents do not fit together.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: std::path::PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// Asks glibc to keep freed memory in the heap instead of returning it to the system.
///
/// Every fit round allocates and frees about ten `n x n` / `n x d` buffers of several MiB. By
/// default glibc hands such blocks back to the kernel on free, so each round pays for fresh
/// zeroed pages again (page faults, most of them on the thread that runs the serial steps).
/// Measured on `baton train` (n = 1,158, d = 1,024, 30 rounds, 2 cores): 5.3 s without, 4.6 s
/// with. Process-wide, so only the `train` verb calls it; a no-op off glibc.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning parameters; it is safe to call at any time.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_TOP_PAD, 256 << 20);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
    }
}
