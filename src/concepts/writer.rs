//! Writing a dataset folder: render the clips in parallel, write each WAV atomically, resume an
//! interrupted run, and write the manifest last; or one shard of the clips, with other shards
//! writing the same folder at once (see [`crate::shard`]).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::progress::counter;
use rayon::prelude::*;

use super::generators::{clip_specs, ClipSpec, Concept, SpecOptions};
use super::manifest::{
    clip_file, manifest_line, DatasetInfo, CLIPS_DIR, DATASET_FORMAT, MANIFEST_FILE,
};
use super::render::Renderer;
use super::ConceptError;
use crate::audio::{read_wav_mono, write_atomic, write_wav, AudioError, SampleFormat};
use crate::files::{remove_file_if_there, temp_target};
use crate::shard::Shard;

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

/// The outcome of [`write_dataset`] and [`write_dataset_shard`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteSummary {
    /// Clips in the dataset.
    pub total: usize,
    /// Clips of this run's shard (all of them without sharding).
    pub shard_clips: usize,
    /// Clips rendered by this run.
    pub rendered: usize,
    /// Clips of this run's shard already on disk from an earlier run.
    pub already_present: usize,
    /// Clips of the dataset still missing after this run (other shards' still running or
    /// failed); 0 once the manifest is written.
    pub missing: usize,
}

impl WriteSummary {
    /// True when every clip is on disk and `manifest.jsonl` lists them.
    pub fn complete(&self) -> bool {
        self.missing == 0
    }
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

/// True when `dir` holds anything but other processes' writes in flight.
fn occupied(dir: &Path) -> Result<bool, ConceptError> {
    for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        if temp_target(&entry.file_name().to_string_lossy()).is_none() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Checks that `out` is new, empty, or a dataset made with the same options, then creates it.
///
/// Shards may start into the same new folder at once: `dataset.json` is written before
/// anything else and only by whichever comes first ([`DatasetInfo::create`]); the others
/// check their options against it.
fn prepare_folder(out: &Path, info: &DatasetInfo) -> Result<(), ConceptError> {
    let mut existing = None;
    if out.exists() {
        if !out.is_dir() {
            return Err(ConceptError::NotEmpty {
                dir: out.to_path_buf(),
            });
        }
        existing = DatasetInfo::read(out)?;
        // Read again when the folder is not empty: another shard may have made it since.
        if existing.is_none() && occupied(out)? {
            existing = DatasetInfo::read(out)?;
            if existing.is_none() {
                return Err(ConceptError::NotEmpty {
                    dir: out.to_path_buf(),
                });
            }
        }
    }
    std::fs::create_dir_all(out).map_err(io_err(out))?;
    if existing.is_none() && !info.create(out)? {
        existing = DatasetInfo::read(out)?;
    }
    if let Some(existing) = existing.filter(|e| e != info) {
        return Err(ConceptError::OtherDataset {
            dir: out.to_path_buf(),
            difference: info.difference(&existing),
        });
    }
    let clips = out.join(CLIPS_DIR);
    std::fs::create_dir_all(&clips).map_err(io_err(&clips))?;
    Ok(())
}

/// Removes temporary files an interrupted run left in `clips/` (`.NAME.wav.PID-NONCE.tmp`):
/// every one for the whole job, only those of its own clips (`mine`) for a shard, since another
/// shard's are its writes in flight.
fn remove_stale_temps(clips: &Path, mine: &[&ClipSpec], shard: Shard) -> Result<(), ConceptError> {
    let names: HashSet<String> = mine.iter().map(|s| format!("{}.wav", s.name)).collect();
    for entry in std::fs::read_dir(clips).map_err(io_err(clips))? {
        let entry = entry.map_err(io_err(clips))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if temp_target(&name).is_some_and(|t| shard.is_whole() || names.contains(t)) {
            remove_if_there(&entry.path())?;
        }
    }
    Ok(())
}

/// The manifest-line files shards leave in `out` (`manifest.shard-K-of-N.jsonl`).
fn shard_manifests(out: &Path) -> Result<Vec<PathBuf>, ConceptError> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(out).map_err(io_err(out))? {
        let entry = entry.map_err(io_err(out))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("manifest.shard-") && name.ends_with(".jsonl") {
            found.push(entry.path());
        }
    }
    found.sort();
    Ok(found)
}

/// Each clip's `is_silent` from the shards' manifest lines (by `file`). A file another run has
/// just joined and removed is skipped: its clips are read back instead.
fn silence_from_shards(out: &Path) -> Result<HashMap<String, bool>, ConceptError> {
    let mut silent = HashMap::new();
    for path in shard_manifests(out)? {
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err(&path)(e)),
        };
        for line in text.lines() {
            let Ok(serde_json::Value::Object(obj)) = serde_json::from_str(line) else {
                continue;
            };
            if let (Some(file), Some(s)) = (
                obj.get("file").and_then(|v| v.as_str()),
                obj.get("is_silent").and_then(|v| v.as_bool()),
            ) {
                silent.insert(file.to_string(), s);
            }
        }
    }
    Ok(silent)
}

/// `is_silent` of every clip of `specs` not in `known` (by index): from the shards' manifest
/// lines, else read back from its WAV file (a resume is rare; the answer must not depend on
/// whether a clip was rendered now or then).
fn fill_silence(
    out: &Path,
    specs: &[&ClipSpec],
    known: &mut HashMap<usize, bool>,
) -> Result<(), ConceptError> {
    let from_shards = silence_from_shards(out)?;
    let unknown: Vec<&&ClipSpec> = specs
        .iter()
        .filter(|s| !known.contains_key(&s.index))
        .collect();
    let found: Vec<(usize, bool)> = unknown
        .par_iter()
        .map(|spec| {
            let file = clip_file(spec);
            if let Some(&s) = from_shards.get(&file) {
                return Ok((spec.index, s));
            }
            let (samples, _) =
                read_wav_mono(&out.join(&file)).map_err(|err| ConceptError::StaleClip { err })?;
            Ok((spec.index, samples.iter().all(|&x| x == 0.0)))
        })
        .collect::<Result<_, ConceptError>>()?;
    known.extend(found);
    Ok(())
}

/// The manifest lines of `specs`, in order.
fn manifest_text(specs: &[&ClipSpec], silent: &HashMap<usize, bool>) -> String {
    let mut text = String::with_capacity(specs.len() * 256);
    for spec in specs {
        let is_silent = silent.get(&spec.index).copied().unwrap_or(false);
        text.push_str(&manifest_line(spec, is_silent));
        text.push('\n');
    }
    text
}

/// Deletes `path`; already gone is fine (another shard may have deleted it first).
fn remove_if_there(path: &Path) -> Result<(), ConceptError> {
    remove_file_if_there(path).map_err(io_err(path))
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
    write_dataset_shard(job, Shard::WHOLE, renderer, sink)
}

/// [`write_dataset`] for one shard: renders only the clips of [`Shard::range`] over the
/// dataset's fixed clip order, into a folder other shards write at the same time.
///
/// Each clip is the file a one-process run writes (every clip has its own seed). A shard that
/// finishes its clips leaves their manifest lines in `manifest.shard-K-of-N.jsonl`; whichever
/// run then finds every clip on disk writes `manifest.jsonl` from those lines (reading back the
/// clips of a shard that left none) and removes them. A run that finds its clips and the
/// manifest already there does nothing. Of shards finishing at once the one that looks last
/// sees every clip, since each looks only after writing its own; two that both see them write
/// the same bytes.
pub fn write_dataset_shard(
    job: &DatasetJob,
    shard: Shard,
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
    let all: Vec<&ClipSpec> = specs.iter().collect();
    let mine = &all[shard.range(all.len())];
    let clips_dir = job.out.join(CLIPS_DIR);
    remove_stale_temps(&clips_dir, mine, shard)?;

    let on_disk = |s: &ClipSpec| job.out.join(clip_file(s)).is_file();
    let pending: Vec<&ClipSpec> = mine.iter().copied().filter(|s| !on_disk(s)).collect();
    let already_present = mine.len() - pending.len();
    let manifest = job.out.join(MANIFEST_FILE);
    let summary = |rendered, missing| WriteSummary {
        total: specs.len(),
        shard_clips: mine.len(),
        rendered,
        already_present,
        missing,
    };
    if pending.is_empty() && manifest.is_file() && shard_manifests(&job.out)?.is_empty() {
        return Ok(summary(0, 0));
    }
    if !pending.is_empty() {
        // A manifest promises every clip is present: withdraw it until they are again.
        remove_if_there(&manifest)?;
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
    let rendered = rendered.into_inner();
    let mut silent: HashMap<usize, bool> = result?.into_iter().collect();
    if !shard.is_whole() {
        fill_silence(&job.out, mine, &mut silent)?;
        let lines = shard.file_for(&manifest);
        write_atomic(&lines, manifest_text(mine, &silent).as_bytes())?;
    }

    let missing = all.iter().filter(|s| !on_disk(s)).count();
    if missing > 0 {
        return Ok(summary(rendered, missing));
    }
    fill_silence(&job.out, &all, &mut silent)?;
    write_atomic(&manifest, manifest_text(&all, &silent).as_bytes())?;
    for lines in shard_manifests(&job.out)? {
        remove_if_there(&lines)?;
    }
    Ok(summary(rendered, 0))
}
