//! Writing a dataset folder: render the clips in parallel, write each WAV atomically, resume an
//! interrupted run, and write the manifest last.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::progress::counter;
use rayon::prelude::*;

use super::generators::{clip_specs, Concept, SpecOptions};
use super::manifest::{
    clip_file, manifest_line, DatasetInfo, CLIPS_DIR, DATASET_FORMAT, INFO_FILE, MANIFEST_FILE,
};
use super::render::Renderer;
use super::ConceptError;
use crate::audio::{read_wav_mono, write_atomic, write_wav, AudioError, SampleFormat};

/// Where rendered clips go. The dataset writer calls it from several threads.
///
/// [`WavFiles`] is the real one; tests substitute a sink that fails part-way, as a full disk
/// would.
pub trait ClipSink: Sync {
    /// Stores one clip at `path` so that the path holds either nothing or the whole file.
    fn write_clip(
        &self,
        path: &Path,
        samples: &[f32],
        sample_rate: u32,
        format: SampleFormat,
    ) -> Result<(), AudioError>;
}

/// Writes clips as WAV files through a temporary file and a rename.
#[derive(Debug, Clone, Copy, Default)]
pub struct WavFiles;

impl ClipSink for WavFiles {
    fn write_clip(
        &self,
        path: &Path,
        samples: &[f32],
        sample_rate: u32,
        format: SampleFormat,
    ) -> Result<(), AudioError> {
        write_wav(path, samples, sample_rate, format)
    }
}

/// What to write where.
#[derive(Debug, Clone)]
pub struct DatasetJob {
    /// The dataset folder.
    pub out: PathBuf,
    /// The concept.
    pub concept: Concept,
    /// Which clips.
    pub options: SpecOptions,
    /// WAV sample encoding.
    pub format: SampleFormat,
    /// Show a progress bar on stderr.
    pub progress: bool,
}

/// The outcome of [`write_dataset`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteSummary {
    /// Clips in the dataset.
    pub total: usize,
    /// Clips rendered by this run.
    pub rendered: usize,
    /// Clips already on disk from an earlier run.
    pub already_present: usize,
}

/// True when every sample, as written in `format`, is zero (SynTheory's `is_silent`: notes
/// below or above the SoundFont's range render nothing).
fn is_silent(samples: &[f32], format: SampleFormat) -> bool {
    match format {
        SampleFormat::Float32 => samples.iter().all(|&x| x == 0.0),
        SampleFormat::Pcm16 => samples
            .iter()
            .all(|&x| (x.clamp(-1.0, 1.0) * i16::MAX as f32).round() == 0.0),
    }
}

/// The `sample_format` name in `dataset.json`.
pub(crate) fn format_name(format: SampleFormat) -> &'static str {
    match format {
        SampleFormat::Float32 => "f32",
        SampleFormat::Pcm16 => "pcm16",
    }
}

/// Wraps an I/O error with the path it concerns.
pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ConceptError + '_ {
    move |err| ConceptError::Io {
        path: path.to_path_buf(),
        err,
    }
}

/// Checks that `out` is new, empty, or a dataset made with the same options, then creates it.
fn prepare_folder(out: &Path, info: &DatasetInfo) -> Result<(), ConceptError> {
    if out.exists() {
        if !out.is_dir() {
            return Err(ConceptError::NotEmpty {
                dir: out.to_path_buf(),
            });
        }
        match DatasetInfo::read(out)? {
            Some(existing) if existing != *info => {
                return Err(ConceptError::OtherDataset {
                    dir: out.to_path_buf(),
                    difference: info.difference(&existing),
                })
            }
            Some(_) => {}
            None => {
                let mut entries = std::fs::read_dir(out).map_err(io_err(out))?;
                if entries.next().is_some() {
                    return Err(ConceptError::NotEmpty {
                        dir: out.to_path_buf(),
                    });
                }
            }
        }
    }
    let clips = out.join(CLIPS_DIR);
    std::fs::create_dir_all(&clips).map_err(io_err(&clips))?;
    if !out.join(INFO_FILE).exists() {
        info.write(out)?;
    }
    Ok(())
}

/// Removes temporary files an interrupted run left in `clips/` (`.NAME.wav.PID.tmp`).
fn remove_stale_temps(clips: &Path) -> Result<(), ConceptError> {
    for entry in std::fs::read_dir(clips).map_err(io_err(clips))? {
        let entry = entry.map_err(io_err(clips))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') && name.ends_with(".tmp") {
            let path = entry.path();
            std::fs::remove_file(&path).map_err(io_err(&path))?;
        }
    }
    Ok(())
}

/// Renders a concept dataset into `job.out`: `dataset.json`, `clips/*.wav`, `manifest.jsonl`.
///
/// Clips already on disk are kept (each was written whole, by rename), so an interrupted run
/// resumes where it stopped; the manifest is written last, so a folder with a manifest is
/// complete. Same options and seed, same bytes. A folder holding another dataset, or unrelated
/// files, is refused.
pub fn write_dataset(
    job: &DatasetJob,
    renderer: &Renderer,
    sink: &dyn ClipSink,
) -> Result<WriteSummary, ConceptError> {
    let specs = clip_specs(job.concept, &job.options)?;
    let info = DatasetInfo {
        format: DATASET_FORMAT.into(),
        concept: job.concept.name().into(),
        programs: if job.concept.uses_instruments() {
            job.options.instruments.programs()
        } else {
            Vec::new()
        },
        limit: job.options.limit,
        seed: job.options.seed,
        sample_rate: renderer.sample_rate(),
        sample_format: format_name(job.format).into(),
        synth: renderer.synth_name().into(),
        clips: specs.len(),
        imported_from: None,
    };
    prepare_folder(&job.out, &info)?;
    let clips_dir = job.out.join(CLIPS_DIR);
    remove_stale_temps(&clips_dir)?;

    let pending: Vec<_> = specs
        .iter()
        .filter(|s| !job.out.join(clip_file(s)).is_file())
        .collect();
    let already_present = specs.len() - pending.len();
    if !pending.is_empty() {
        // A manifest promises every clip is present: withdraw it until they are again.
        let manifest = job.out.join(MANIFEST_FILE);
        if manifest.exists() {
            std::fs::remove_file(&manifest).map_err(io_err(&manifest))?;
        }
    }

    let bar = counter(
        pending.len(),
        "clips",
        job.concept.name().into(),
        job.progress,
    );
    let rendered = AtomicUsize::new(0);
    let result: Result<Vec<(usize, bool)>, ConceptError> = pending
        .par_iter()
        .map(|spec| {
            let samples = renderer.render(spec)?;
            let path = job.out.join(clip_file(spec));
            sink.write_clip(&path, &samples, renderer.sample_rate(), job.format)
                .map_err(|err| ConceptError::WriteClip {
                    name: spec.name.clone(),
                    err,
                })?;
            rendered.fetch_add(1, Ordering::Relaxed);
            bar.inc(1);
            Ok((spec.index, is_silent(&samples, job.format)))
        })
        .collect();
    bar.finish_and_clear();
    let mut silent: HashMap<usize, bool> = result?.into_iter().collect();
    // Clips from an earlier run: read them back (a resume is rare; the answer must not depend on
    // whether a clip was rendered now or then).
    for spec in &specs {
        if let Entry::Vacant(slot) = silent.entry(spec.index) {
            let (samples, _) = read_wav_mono(&job.out.join(clip_file(spec)))
                .map_err(|err| ConceptError::StaleClip { err })?;
            slot.insert(samples.iter().all(|&x| x == 0.0));
        }
    }

    let mut manifest = String::with_capacity(specs.len() * 256);
    for spec in &specs {
        let is_silent = silent.get(&spec.index).copied().unwrap_or(false);
        manifest.push_str(&manifest_line(spec, is_silent));
        manifest.push('\n');
    }
    write_atomic(&job.out.join(MANIFEST_FILE), manifest.as_bytes())?;
    Ok(WriteSummary {
        total: specs.len(),
        rendered: rendered.into_inner(),
        already_present,
    })
}
