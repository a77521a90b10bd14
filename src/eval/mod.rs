//! Metrics on generated audio as a whole: the Fréchet audio distance (FAD) and the kernel audio
//! distance (KAD) between a folder of reference WAVs and a folder of generated ones, measured in
//! an [`embed::Embedding`], with each generated file's share for finding outliers; and [`clap`],
//! which scores how well a clip matches a text.
//!
//! - [`embed`]: the embeddings (`encodec`, one row per codec frame; `clap`, one row per 10 s
//!   window) and WAV files to rows;
//! - [`distance`]: the Fréchet distance, the unbiased kernel MMD² and the per-file shares, on
//!   plain faer matrices.
//!
//! ```no_run
//! use baton::eval::{audio_distances, embed::{Embedder, Embedding}, wav_files};
//! use candle_core::Device;
//! use std::path::Path;
//!
//! let embedder = Embedder::load(Embedding::Encodec, "facebook/musicgen-small", &Device::Cpu)?;
//! let reference = embedder.embed_files(&wav_files(Path::new("real"))?, &mut || {})?;
//! let generated = embedder.embed_files(&wav_files(Path::new("gen"))?, &mut || {})?;
//! let report = audio_distances(Embedding::Encodec, &reference, &generated, None)?;
//! println!("FAD {:.4}  KAD {:.4}", report.fad, report.kad);
//! # Ok::<(), baton::eval::EvalError>(())
//! ```

pub mod clap;
pub mod distance;
pub mod embed;

use std::ops::Range;
use std::path::{Path, PathBuf};

use faer::Mat;
use serde::Serialize;

use self::clap::ClapError;
use crate::audio::AudioError;
use crate::model::ModelError;
use distance::{FrechetReference, Gaussian, KAD_SCALE};
use embed::{Embedding, FileEmbedding};

/// Errors of the audio distances.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// The CLAP model cannot be loaded.
    #[error("CLAP model {model}: {source}")]
    Clap {
        /// The hub id or folder asked for.
        model: String,
        /// What went wrong.
        source: ClapError,
    },
    /// A folder that cannot be listed or holds no WAV files.
    #[error("{path}: {message}")]
    Folder { path: PathBuf, message: String },
    /// A file that cannot be embedded.
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    /// Too few embedding rows for a covariance or an unbiased kernel mean.
    #[error("{0}")]
    TooFew(String),
    /// The two sets' embeddings differ in dimension.
    #[error(
        "the reference embeddings have {reference} dimensions but the generated ones {generated}"
    )]
    Dims { reference: usize, generated: usize },
    /// The symmetric eigen-solver did not converge.
    #[error("eigen-decomposition failed (non-finite embeddings?)")]
    Eigen,
    /// Bad input from the caller.
    #[error("{0}")]
    Invalid(String),
    /// Reading a WAV file failed.
    #[error(transparent)]
    Audio(#[from] AudioError),
    /// Loading or running the embedding model failed.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// The WAV files directly in `dir` (not in sub-folders), sorted; hidden files are skipped.
/// Refuses a folder that does not exist, is empty, or holds no `.wav` file.
pub fn wav_files(dir: &Path) -> Result<Vec<PathBuf>, EvalError> {
    let folder = |message: String| EvalError::Folder {
        path: dir.to_path_buf(),
        message,
    };
    if !dir.is_dir() {
        return Err(folder("no such folder".into()));
    }
    let entries = std::fs::read_dir(dir).map_err(|e| folder(format!("cannot list: {e}")))?;
    let mut all = 0;
    let mut wavs = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| folder(format!("cannot list: {e}")))?;
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        all += 1;
        let path = entry.path();
        let is_wav = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("wav"));
        if is_wav && path.is_file() {
            wavs.push(path);
        }
    }
    if all == 0 {
        return Err(folder("the folder is empty".into()));
    }
    if wavs.is_empty() {
        return Err(folder(format!(
            "no .wav files among its {all} entries (sub-folders are not searched)"
        )));
    }
    wavs.sort();
    Ok(wavs)
}

/// How many files and embedding rows one set has.
#[derive(Debug, Clone, Serialize)]
pub struct SetSize {
    /// WAV files.
    pub files: usize,
    /// Embedding rows (codec frames, or CLAP windows) over all files.
    pub rows: usize,
}

/// One generated file's share of the distances.
#[derive(Debug, Clone, Serialize)]
pub struct FileShare {
    /// The file.
    pub path: PathBuf,
    /// Its embedding rows.
    pub rows: usize,
    /// FAD with every file minus FAD without this one: how much it adds (null when leaving it
    /// out would keep fewer than 2 rows).
    pub fad_leave_one_out: Option<f64>,
    /// KAD (same scale and bandwidth) of the reference set against this file alone (kadtk's
    /// `--indiv`; null for a file of one row).
    pub kad_alone: Option<f64>,
}

/// FAD and KAD between a reference and a generated set, with each generated file's share.
#[derive(Debug, Clone, Serialize)]
pub struct AudioDistances {
    /// The embedding measured in.
    pub embedding: String,
    /// Embedding dimensions.
    pub dim: usize,
    /// The reference set's size.
    pub reference: SetSize,
    /// The generated set's size.
    pub generated: SetSize,
    /// The Fréchet distance between the Gaussian fits of all rows of each set.
    pub fad: f64,
    /// The unbiased MMD² times `kad_scale` (kadtk's scale).
    pub kad: f64,
    /// The unbiased MMD² itself.
    pub kad_mmd2: f64,
    /// The factor `kad` is `kad_mmd2` times.
    pub kad_scale: f64,
    /// The Gaussian kernel's bandwidth (median pairwise distance of the reference rows unless
    /// given).
    pub kad_bandwidth: f64,
    /// Per generated file, in the order given.
    pub files: Vec<FileShare>,
}

/// All rows of `files` stacked, and the row range each file holds; refuses sets whose files
/// differ in dimension.
fn stack(files: &[FileEmbedding]) -> Result<(Mat<f64>, Vec<Range<usize>>), EvalError> {
    let dim = files.first().map_or(0, |f| f.rows.ncols());
    if let Some(f) = files.iter().find(|f| f.rows.ncols() != dim) {
        return Err(EvalError::File {
            path: f.path.clone(),
            message: format!(
                "embeddings of {} dimensions, other files have {dim}",
                f.rows.ncols()
            ),
        });
    }
    let mut ranges = Vec::with_capacity(files.len());
    let mut start = 0;
    for f in files {
        ranges.push(start..start + f.rows.nrows());
        start += f.rows.nrows();
    }
    let mut all = Mat::zeros(start, dim);
    for (f, r) in files.iter().zip(&ranges) {
        all.as_mut()
            .subrows_mut(r.start, r.len())
            .copy_from(&f.rows);
    }
    Ok((all, ranges))
}

/// FAD and KAD of `generated` against `reference` (every row of every file pooled), with the
/// kernel bandwidth `bandwidth` or the reference's median pairwise distance.
pub fn audio_distances(
    embedding: Embedding,
    reference: &[FileEmbedding],
    generated: &[FileEmbedding],
    bandwidth: Option<f64>,
) -> Result<AudioDistances, EvalError> {
    let (x, _) = stack(reference)?;
    let (y, groups) = stack(generated)?;
    for (set, m) in [("reference", &x), ("generated", &y)] {
        if m.nrows() < 2 {
            return Err(EvalError::TooFew(format!(
                "the {set} set has {} embedding rows: the distances need at least 2 (more \
                 files, or longer ones)",
                m.nrows()
            )));
        }
    }
    if x.ncols() != y.ncols() {
        return Err(EvalError::Dims {
            reference: x.ncols(),
            generated: y.ncols(),
        });
    }
    let frechet = FrechetReference::new(Gaussian::fit(x.as_ref())?)?;
    let fad = frechet.distance(&Gaussian::fit(y.as_ref())?)?;
    let loo = distance::frechet_leave_one_out(&frechet, y.as_ref(), &groups)?;
    let kernel = distance::kernel_distance(x.as_ref(), y.as_ref(), &groups, bandwidth)?;
    let files = generated
        .iter()
        .zip(loo)
        .zip(&kernel.per_group)
        .map(|((f, fad_leave_one_out), kad)| FileShare {
            path: f.path.clone(),
            rows: f.rows.nrows(),
            fad_leave_one_out,
            kad_alone: kad.map(|k| k * KAD_SCALE),
        })
        .collect();
    Ok(AudioDistances {
        embedding: embedding.name().to_string(),
        dim: x.ncols(),
        reference: SetSize {
            files: reference.len(),
            rows: x.nrows(),
        },
        generated: SetSize {
            files: generated.len(),
            rows: y.nrows(),
        },
        fad,
        kad: kernel.kad(),
        kad_mmd2: kernel.mmd2,
        kad_scale: KAD_SCALE,
        kad_bandwidth: kernel.bandwidth,
        files,
    })
}
