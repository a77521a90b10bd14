//! A dataset of the user's own recordings: one sub-folder per class, each WAV file mixed to mono,
//! resampled to the model's rate and cut into clips, written as the same `dataset.json`,
//! `clips/*.wav` and `manifest.jsonl` that `baton dataset` writes for a synthetic concept, so
//! `baton features` and `baton train` take it unchanged.
//!
//! The MusicRFM paper trains its probes on synthetic audio only; this lets a probe (and its
//! direction) come from real recordings: a singer's voice, a drum kit, a mood.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use super::generators::{Concept, Label};
use super::manifest::{DatasetInfo, CLIPS_DIR, DATASET_FORMAT, MANIFEST_FILE};
use super::render::check_rate;
use super::writer::{format_name, io_err};
use super::ConceptError;
use crate::audio::{read_wav_at, windows, write_atomic, write_wav, AudioError, SampleFormat};
use crate::progress::counter;

/// Shortest stretch of audio kept as a clip, seconds (a shorter file is skipped).
pub const MIN_CLIP_SECONDS: f64 = 1.0;

/// Longest clip, seconds: longer clips cost quadratic attention for little gain.
pub const MAX_CLIP_SECONDS: f64 = 30.0;

/// A clip whose loudest sample is below this (-80 dBFS) is silence, and is left out: it would
/// teach a probe nothing about its class.
const SILENCE: f32 = 1e-4;

/// What to import, and how.
#[derive(Debug, Clone)]
pub struct ImportJob {
    /// The folder holding one sub-folder of WAV files per class.
    pub from: PathBuf,
    /// The dataset folder to create (new, or an empty folder).
    pub out: PathBuf,
    /// The concept's name (`mood`, `my_voice`): written to every manifest line.
    pub concept: String,
    /// Clip length, seconds: longer files are cut into clips this long.
    pub clip_seconds: f64,
    /// Rate of the written clips (the model's).
    pub sample_rate: u32,
    /// Sample format of the written clips.
    pub format: SampleFormat,
    /// Show a progress bar.
    pub progress: bool,
}

/// What an import wrote and what it left out.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ImportSummary {
    /// Clips written per class, in class order.
    pub classes: Vec<(String, usize)>,
    /// WAV files read.
    pub files: usize,
    /// Of those, files at another rate than the clips'.
    pub resampled: usize,
    /// Files shorter than [`MIN_CLIP_SECONDS`], skipped.
    pub too_short: Vec<PathBuf>,
    /// Clips left out as silence.
    pub silent: usize,
    /// Files that are not WAV, or lie outside the class folders, skipped.
    pub ignored: Vec<PathBuf>,
    /// WAV files that cannot be read (damaged, cut short, not really WAV), skipped, with why.
    pub unreadable: Vec<(PathBuf, String)>,
}

impl ImportSummary {
    /// Clips written in all.
    pub fn clips(&self) -> usize {
        self.classes.iter().map(|(_, n)| n).sum()
    }
}

/// Imports `job.from` into a new dataset folder `job.out`. The dataset is built in a hidden
/// folder beside `out` and moved into place at the end, so a failed import leaves nothing
/// behind.
pub fn import_folder(job: &ImportJob) -> Result<ImportSummary, ConceptError> {
    let bad = |why: String| ConceptError::Import {
        path: job.from.clone(),
        why,
    };
    check_name(&job.concept).map_err(&bad)?;
    if !(MIN_CLIP_SECONDS..=MAX_CLIP_SECONDS).contains(&job.clip_seconds) {
        return Err(bad(format!(
            "clip length {} s is out of range ({MIN_CLIP_SECONDS}..={MAX_CLIP_SECONDS})",
            job.clip_seconds
        )));
    }
    check_rate(job.sample_rate)?;
    let mut summary = ImportSummary::default();
    let classes = class_folders(&job.from, &mut summary.ignored)?;
    check_classes(&job.concept, &classes).map_err(&bad)?;
    check_out(&job.out)?;
    let (parent, name) = resolve_out(&job.out)?;
    let out = parent.join(&name);
    if let Ok(from) = job.from.canonicalize() {
        if out.starts_with(&from) {
            return Err(bad(format!(
                "--out {} is inside the folder being imported; its clips would become a class \
                 of the next import",
                job.out.display()
            )));
        }
    }

    let staging = parent.join(format!(".{name}.baton-import"));
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(io_err(&staging))?;
    }
    let result = write_into(job, &classes, &staging, &mut summary)
        .and_then(|()| move_into_place(&staging, &out));
    if let Err(e) = result {
        // Best effort: the error being reported matters more than a failed clean-up.
        let _ = std::fs::remove_dir_all(&staging);
        return Err(e);
    }
    Ok(summary)
}

/// `out` as its canonical parent folder and its own name, so the staging folder lands beside it
/// even for `.` or a path ending in `..`.
fn resolve_out(out: &Path) -> Result<(PathBuf, String), ConceptError> {
    let full = if out.exists() {
        out.canonicalize().map_err(io_err(out))?
    } else {
        let parent = crate::files::folder_of(out);
        let parent = parent.canonicalize().map_err(io_err(parent))?;
        match out.file_name() {
            Some(name) => parent.join(name),
            None => parent,
        }
    };
    match (full.parent(), full.file_name()) {
        (Some(parent), Some(name)) => Ok((parent.to_path_buf(), name.to_string_lossy().into())),
        _ => Err(ConceptError::Import {
            path: out.to_path_buf(),
            why: "cannot be a dataset folder (choose a folder with a name)".into(),
        }),
    }
}

/// Puts the finished dataset at `out`: a rename, or, when `out` exists (an empty folder, maybe
/// the working folder itself), a move of each entry into it.
fn move_into_place(staging: &Path, out: &Path) -> Result<(), ConceptError> {
    if !out.exists() {
        return std::fs::rename(staging, out).map_err(io_err(out));
    }
    for entry in std::fs::read_dir(staging).map_err(io_err(staging))? {
        let entry = entry.map_err(io_err(staging))?;
        let to = out.join(entry.file_name());
        std::fs::rename(entry.path(), &to).map_err(io_err(&to))?;
    }
    std::fs::remove_dir(staging).map_err(io_err(staging))
}

/// A concept name becomes part of file names and library paths (`mood:calm`): letters, digits,
/// `_` and `-` only.
fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "concept name `{name}` must be letters, digits, `_` or `-` (it names the dataset)"
        ))
    }
}

/// The class folders of `from` (sorted by name) with their WAV files (sorted by path, found at
/// any depth). Other files are noted in `ignored`.
fn class_folders(
    from: &Path,
    ignored: &mut Vec<PathBuf>,
) -> Result<Vec<(String, Vec<PathBuf>)>, ConceptError> {
    let bad = |why: String| ConceptError::Import {
        path: from.to_path_buf(),
        why,
    };
    if !from.is_dir() {
        return Err(bad(
            "is not a folder (expected one sub-folder of WAV files per class)".into(),
        ));
    }
    let mut classes = BTreeMap::new();
    let mut top_level_wavs = 0;
    for entry in sorted_entries(from)? {
        if entry.is_dir() {
            let name = entry
                .file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| bad(format!("folder name {:?} is not UTF-8", entry)))?
                .to_string();
            let mut files = Vec::new();
            wav_files(&entry, &mut files, ignored)?;
            if files.is_empty() {
                return Err(bad(format!("class folder `{name}` holds no .wav files")));
            }
            classes.insert(name, files);
        } else {
            top_level_wavs += usize::from(is_wav(&entry));
            ignored.push(entry);
        }
    }
    if classes.len() < 2 {
        let loose = if top_level_wavs > 0 {
            format!(
                "; the {top_level_wavs} .wav file(s) directly in it belong to no class: move \
                 them into class folders"
            )
        } else {
            String::new()
        };
        return Err(bad(format!(
            "found {} class folder(s); a probe needs at least two (one sub-folder of WAV files \
             per class, e.g. `calm/` and `tense/`){loose}",
            classes.len()
        )));
    }
    Ok(classes.into_iter().collect())
}

/// The visible entries of a folder, sorted (hidden files such as `.DS_Store` are skipped).
fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, ConceptError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        if !entry.file_name().to_string_lossy().starts_with('.') {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

fn wav_files(
    dir: &Path,
    files: &mut Vec<PathBuf>,
    ignored: &mut Vec<PathBuf>,
) -> Result<(), ConceptError> {
    for path in sorted_entries(dir)? {
        if path.is_dir() {
            wav_files(&path, files, ignored)?;
        } else if is_wav(&path) {
            files.push(path);
        } else {
            ignored.push(path);
        }
    }
    Ok(())
}

fn is_wav(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("wav"))
}

/// A dataset named after a built-in concept must use that concept's classes, since `baton
/// features` labels it with them.
fn check_classes(concept: &str, classes: &[(String, Vec<PathBuf>)]) -> Result<(), String> {
    let Some(known) = Concept::from_name(concept) else {
        return Ok(());
    };
    let allowed = known.classes();
    match classes.iter().find(|(c, _)| !allowed.contains(c)) {
        None => Ok(()),
        Some((c, _)) if allowed.is_empty() => Err(format!(
            "`{concept}` is baton's {known} concept, whose labels are numbers; class folder \
             `{c}` needs a concept name of its own"
        )),
        Some((c, _)) => Err(format!(
            "`{concept}` is baton's {known} concept, and `{c}` is not one of its classes ({}); \
             rename the folder or choose another concept name",
            allowed.join(", ")
        )),
    }
}

/// `out` must be new or an empty folder: an import is quick to redo, so it never merges.
fn check_out(out: &Path) -> Result<(), ConceptError> {
    if DatasetInfo::read(out).ok().flatten().is_some() {
        return Err(ConceptError::Import {
            path: out.to_path_buf(),
            why: "holds a dataset already; an import never adds to one: choose a new or empty \
                  --out folder (or delete this one)"
                .into(),
        });
    }
    let empty = match std::fs::read_dir(out) {
        Ok(mut entries) => entries.next().is_none(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => !out.exists(),
        Err(_) => false,
    };
    if empty {
        Ok(())
    } else {
        Err(ConceptError::NotEmpty {
            dir: out.to_path_buf(),
        })
    }
}

/// A file-name-safe version of `text`, at most 40 characters.
fn file_safe(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(40)
        .collect()
}

fn write_into(
    job: &ImportJob,
    classes: &[(String, Vec<PathBuf>)],
    dir: &Path,
    summary: &mut ImportSummary,
) -> Result<(), ConceptError> {
    let clips_dir = dir.join(CLIPS_DIR);
    std::fs::create_dir_all(&clips_dir).map_err(io_err(&clips_dir))?;
    let total: usize = classes.iter().map(|(_, f)| f.len()).sum();
    let bar = counter(total, "files", job.concept.clone(), job.progress);
    let rate = job.sample_rate as f64;
    let clip_len = (job.clip_seconds * rate).round() as usize;
    let min_len = (MIN_CLIP_SECONDS * rate).round() as usize;
    let mut manifest = String::new();
    let mut index = 0usize;
    for (class, files) in classes {
        let mut written = 0;
        for path in files {
            let (audio, own_rate) = match read_wav_at(path, job.sample_rate) {
                Ok(read) => read,
                Err(AudioError::Empty { .. }) => {
                    summary.too_short.push(path.clone());
                    continue;
                }
                Err(AudioError::Read { source, .. }) => {
                    summary.unreadable.push((path.clone(), source.to_string()));
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            summary.files += 1;
            if own_rate != job.sample_rate {
                summary.resampled += 1;
            }
            bar.inc(1);
            if audio.len() < min_len {
                summary.too_short.push(path.clone());
                continue;
            }
            let source = path.strip_prefix(&job.from).unwrap_or(path);
            let stem = path
                .file_stem()
                .map(|s| file_safe(&s.to_string_lossy()))
                .unwrap_or_default();
            let mut spans = windows(audio.len(), Some(clip_len), clip_len);
            // The last window ends at the file's end and overlaps the one before it: keep it only
            // when it brings at least half a clip of audio not already taken.
            if let [.., before, last] = &spans[..] {
                if last.start < before.end && last.end - before.end < clip_len / 2 {
                    spans.pop();
                }
            }
            for span in spans {
                let clip = &audio[span.clone()];
                if clip.iter().all(|x| x.abs() < SILENCE) {
                    summary.silent += 1;
                    continue;
                }
                let file = format!("{CLIPS_DIR}/{index:05}_{}_{stem}.wav", file_safe(class));
                write_wav(&dir.join(&file), clip, job.sample_rate, job.format).map_err(|err| {
                    ConceptError::WriteClip {
                        name: file.clone(),
                        err,
                    }
                })?;
                let mut line = Map::new();
                line.insert("file".into(), Value::String(file));
                line.insert("concept".into(), Value::String(job.concept.clone()));
                line.insert("label".into(), Label::Class(class.clone()).to_json());
                line.insert("index".into(), index.into());
                line.insert("source".into(), json!(source.to_string_lossy()));
                line.insert("start_s".into(), json!(span.start as f64 / rate));
                line.insert("seconds".into(), json!(clip.len() as f64 / rate));
                manifest.push_str(&Value::Object(line).to_string());
                manifest.push('\n');
                index += 1;
                written += 1;
            }
        }
        summary.classes.push((class.clone(), written));
    }
    bar.finish_and_clear();
    if let Some((class, _)) = summary.classes.iter().find(|(_, n)| *n == 0) {
        return Err(ConceptError::Import {
            path: job.from.join(class),
            why: format!("no clip of at least {MIN_CLIP_SECONDS} s of sound in class `{class}`"),
        });
    }
    let info = DatasetInfo {
        format: DATASET_FORMAT.into(),
        concept: job.concept.clone(),
        programs: Vec::new(),
        limit: None,
        seed: 0,
        sample_rate: job.sample_rate,
        sample_format: format_name(job.format).into(),
        synth: "none".into(),
        clips: index,
        imported_from: Some(job.from.to_string_lossy().into_owned()),
    };
    info.write(dir)?;
    write_atomic(&dir.join(MANIFEST_FILE), manifest.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_classes_are_checked() {
        assert!(check_name("my_voice-2").is_ok());
        for bad in ["", "a b", "mood/calm", "é"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        let folders = |names: &[&str]| -> Vec<(String, Vec<PathBuf>)> {
            names.iter().map(|n| (n.to_string(), Vec::new())).collect()
        };
        assert!(check_classes("mood", &folders(&["calm", "tense"])).is_ok());
        // aliases of built-in concepts are free names
        assert!(check_classes("tempo", &folders(&["slow", "fast"])).is_ok());
        assert!(check_classes("instruments", &folders(&["guitar", "piano"])).is_ok());
        assert!(check_classes("chords", &folders(&["major", "minor"])).is_ok());
        let err = check_classes("chords", &folders(&["major", "sus4"])).expect_err("sus4");
        assert!(
            err.contains("sus4") && err.contains("major, minor, aug, dim"),
            "{err}"
        );
        let err = check_classes("tempos", &folders(&["slow", "fast"])).expect_err("numbers");
        assert!(err.contains("numbers"), "{err}");
    }

    #[test]
    fn file_names_are_safe_and_short() {
        assert_eq!(file_safe("Take 1 (final).wav"), "Take_1__final__wav");
        assert_eq!(file_safe(&"x".repeat(99)).len(), 40);
    }
}
