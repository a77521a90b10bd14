//! A dataset folder's description files: `dataset.json` (the options that made it, checked on
//! resume) and `manifest.jsonl` (one object per clip: file, concept, label, every label field,
//! program, seed), written only when every clip is on disk. While shards of one dataset run,
//! each leaves the manifest lines of its own clips in `manifest.shard-K-of-N.jsonl`, which the
//! run that writes the manifest joins and removes.

use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::generators::{ClipSpec, Label};
use super::ConceptError;

/// File name of the options record.
pub const INFO_FILE: &str = "dataset.json";
/// File name of the clip list.
pub const MANIFEST_FILE: &str = "manifest.jsonl";
/// Sub-folder holding the WAV files.
pub const CLIPS_DIR: &str = "clips";
/// Format tag of `dataset.json`.
pub const DATASET_FORMAT: &str = "dataset/1";

/// What made a dataset folder: compared field by field when a run resumes into it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetInfo {
    /// Always [`DATASET_FORMAT`].
    #[serde(rename = "baton.format")]
    pub format: String,
    /// Concept name.
    pub concept: String,
    /// GM programs of the tonal concepts (empty for click concepts).
    pub programs: Vec<u8>,
    /// `--limit`, if any.
    pub limit: Option<usize>,
    /// `--seed`.
    pub seed: u64,
    /// Sample rate of every clip, Hz.
    pub sample_rate: u32,
    /// `f32` or `pcm16`.
    pub sample_format: String,
    /// SoundFont file name, or `builtin`.
    pub synth: String,
    /// Number of clips.
    pub clips: usize,
    /// The folder of recordings the clips were cut from (`baton dataset NAME --from`); absent
    /// for a synthesized concept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imported_from: Option<String>,
}

impl DatasetInfo {
    /// Reads `dir/dataset.json`; `Ok(None)` when absent.
    pub fn read(dir: &Path) -> Result<Option<Self>, ConceptError> {
        let path = dir.join(INFO_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(ConceptError::Io { path, err: e }),
        };
        let info: Self = serde_json::from_str(&text).map_err(|e| ConceptError::Manifest {
            path: path.clone(),
            why: e.to_string(),
        })?;
        if info.format != DATASET_FORMAT {
            return Err(ConceptError::Manifest {
                path,
                why: format!("unsupported format `{}`", info.format),
            });
        }
        Ok(Some(info))
    }

    /// Writes `dir/dataset.json` atomically (pretty JSON, ending in a newline).
    pub fn write(&self, dir: &Path) -> Result<(), ConceptError> {
        crate::audio::write_atomic(&dir.join(INFO_FILE), self.text(dir)?.as_bytes())?;
        Ok(())
    }

    /// Writes `dir/dataset.json` as [`DatasetInfo::write`] does unless the file exists; returns
    /// whether this call created it. Of shards starting at once into a new folder exactly one
    /// creates it, and the others compare their options with it.
    pub fn create(&self, dir: &Path) -> Result<bool, ConceptError> {
        let path = dir.join(INFO_FILE);
        crate::files::write_new(&path, self.text(dir)?.as_bytes())
            .map_err(|err| ConceptError::Io { path, err })
    }

    fn text(&self, dir: &Path) -> Result<String, ConceptError> {
        let mut text = serde_json::to_string_pretty(self).map_err(|e| ConceptError::Manifest {
            path: dir.join(INFO_FILE),
            why: e.to_string(),
        })?;
        text.push('\n');
        Ok(text)
    }

    /// The fields that differ from `other`, as `key: ours vs theirs`, comma-separated.
    pub fn difference(&self, other: &Self) -> String {
        let (Ok(Value::Object(a)), Ok(Value::Object(b))) =
            (serde_json::to_value(self), serde_json::to_value(other))
        else {
            return String::from("unreadable options");
        };
        a.iter()
            .filter(|(k, v)| b.get(*k) != Some(v))
            .map(|(k, v)| {
                let theirs = b.get(k).cloned().unwrap_or(Value::Null);
                format!("{k}: {} vs {}", short(v), short(&theirs))
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A value as JSON, cut to 40 characters (not bytes: file names may be any UTF-8).
fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 40 {
        format!("{}...", s.chars().take(37).collect::<String>())
    } else {
        s
    }
}

/// One clip of a dataset, as read back from `manifest.jsonl`.
///
/// Only `file`, `concept` and `label` are required, so a manifest written by hand (or by
/// `baton dataset NAME --from FOLDER`) for clips of any concept reads too.
#[derive(Debug, Clone, PartialEq)]
pub struct ManifestEntry {
    /// Path relative to the dataset folder (`clips/NAME.wav`).
    pub file: String,
    /// The concept's name: one of [`super::Concept`]'s, or any other for a dataset of the user's
    /// own.
    pub concept: String,
    /// The probe target.
    pub label: Label,
    /// Position in the concept's full enumeration (the line's position when absent).
    pub index: usize,
    /// GM program, for synthesized clips.
    pub program: Option<u8>,
    /// The clip's seed, for synthesized clips.
    pub seed: Option<u64>,
    /// Every other field (root, mode, bpm, program name, `is_silent`, source file, ...).
    pub fields: Map<String, Value>,
}

/// The manifest line of a spec.
pub(crate) fn manifest_line(spec: &ClipSpec, is_silent: bool) -> String {
    let mut obj = Map::new();
    obj.insert("file".into(), Value::String(clip_file(spec)));
    obj.insert("concept".into(), Value::String(spec.concept.name().into()));
    obj.insert("label".into(), spec.label.to_json());
    obj.insert("index".into(), spec.index.into());
    obj.insert("program".into(), spec.program.into());
    obj.insert("seed".into(), spec.seed.into());
    obj.insert("is_silent".into(), is_silent.into());
    for (k, v) in &spec.fields {
        obj.entry(k.clone()).or_insert_with(|| v.clone());
    }
    Value::Object(obj).to_string()
}

/// The relative path of a spec's WAV file.
pub fn clip_file(spec: &ClipSpec) -> String {
    format!("{CLIPS_DIR}/{}.wav", spec.name)
}

fn parse_line(line: &str, position: usize) -> Result<ManifestEntry, String> {
    let Value::Object(mut obj) = serde_json::from_str::<Value>(line).map_err(|e| e.to_string())?
    else {
        return Err("not a JSON object".into());
    };
    let mut take = |k: &str| obj.remove(k).ok_or_else(|| format!("missing `{k}`"));
    let file = take("file")?
        .as_str()
        .ok_or("`file` is not a string")?
        .to_string();
    check_inside(&file)?;
    let concept = take("concept")?
        .as_str()
        .filter(|c| !c.trim().is_empty())
        .ok_or("`concept` is not a non-empty string")?
        .to_string();
    let label = match take("label")? {
        Value::String(s) => Label::Class(s),
        Value::Number(n) => Label::Value(n.as_f64().ok_or("`label` is not finite")?),
        _ => return Err("`label` must be a string or a number".into()),
    };
    let index = match obj.remove("index") {
        None => position,
        Some(v) => v.as_u64().ok_or("`index` is not an integer")? as usize,
    };
    let program = match obj.remove("program") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .filter(|p| *p < 128)
                .ok_or("`program` is not 0..=127")? as u8,
        ),
    };
    let seed = match obj.remove("seed") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_u64().ok_or("`seed` is not an integer")?),
    };
    Ok(ManifestEntry {
        file,
        concept,
        label,
        index,
        program,
        seed,
        fields: obj,
    })
}

/// Reads a dataset folder's `manifest.jsonl`.
pub fn read_manifest(dir: &Path) -> Result<Vec<ManifestEntry>, ConceptError> {
    let path = dir.join(MANIFEST_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            ConceptError::Manifest {
                path: path.clone(),
                why: "missing: not a baton dataset folder, or its `baton dataset` run has not \
                      finished (run it again to resume)"
                    .into(),
            }
        } else {
            ConceptError::Io {
                path: path.clone(),
                err: e,
            }
        }
    })?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .enumerate()
        .map(|(position, (i, l))| {
            parse_line(l, position).map_err(|why| ConceptError::Manifest {
                path: path.clone(),
                why: format!("line {}: {why}", i + 1),
            })
        })
        .collect()
}

/// Refuses a clip path that could point outside the dataset folder: manifests are user input.
fn check_inside(file: &str) -> Result<(), String> {
    let parts: Vec<Component> = Path::new(file).components().collect();
    let inside = parts.iter().any(|c| matches!(c, Component::Normal(_)))
        && parts
            .iter()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if inside {
        Ok(())
    } else {
        Err(format!(
            "`file` {file:?} must be a path inside the dataset folder (relative, no `..`)"
        ))
    }
}

/// The path of an entry's WAV file inside the dataset folder `dir`; an error when the entry's
/// `file` is absolute or climbs out with `..` ([`read_manifest`] already refuses such lines).
pub fn entry_path(dir: &Path, entry: &ManifestEntry) -> Result<PathBuf, ConceptError> {
    check_inside(&entry.file).map_err(|why| ConceptError::Manifest {
        path: dir.join(MANIFEST_FILE),
        why,
    })?;
    Ok(dir.join(&entry.file))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(synth: &str) -> DatasetInfo {
        DatasetInfo {
            format: DATASET_FORMAT.into(),
            concept: "notes".into(),
            programs: vec![0],
            limit: None,
            seed: 0,
            sample_rate: 32000,
            sample_format: "f32".into(),
            synth: synth.into(),
            clips: 12,
            imported_from: None,
        }
    }

    #[test]
    fn a_long_non_ascii_option_is_shortened_on_a_character_boundary() {
        // `"a` then 2-byte characters: byte 37 falls inside one
        let ours = info(&format!("a{}.sf2", "\u{e9}".repeat(60)));
        let diff = ours.difference(&info("builtin"));
        let want = format!("synth: \"a{}... vs \"builtin\"", "\u{e9}".repeat(35));
        assert_eq!(diff, want);
        assert_eq!(info("a").difference(&info("b")), "synth: \"a\" vs \"b\"");
    }

    fn entry(file: &str) -> ManifestEntry {
        ManifestEntry {
            file: file.into(),
            concept: "notes".into(),
            label: Label::Class("C".into()),
            index: 0,
            program: Some(0),
            seed: Some(0),
            fields: Map::new(),
        }
    }

    #[test]
    fn clip_paths_must_stay_inside_the_dataset_folder() {
        let dir = Path::new("/data/set");
        assert_eq!(
            entry_path(dir, &entry("clips/a.wav")).expect("inside"),
            dir.join("clips/a.wav")
        );
        for bad in ["/etc/passwd", "../x.wav", "clips/../../x.wav", "", "."] {
            let err = entry_path(dir, &entry(bad)).expect_err(bad).to_string();
            assert!(err.contains("inside the dataset folder"), "{bad}: {err}");
        }
    }

    #[test]
    fn a_manifest_line_pointing_outside_the_folder_is_refused() {
        let line = r#"{"file":"../../secret.wav","concept":"notes","label":"C","index":0,"program":0,"seed":1}"#;
        let err = parse_line(line, 0).expect_err("outside");
        assert!(err.contains("inside the dataset folder"), "{err}");
        let ok = parse_line(&line.replace("../../secret.wav", "clips/a.wav"), 0).expect("ok");
        assert_eq!(ok.file, "clips/a.wav");
    }

    #[test]
    fn a_hand_written_line_needs_only_file_concept_and_label() {
        let e = parse_line(
            r#"{"file":"a.wav","concept":"mood","label":"calm","take":2}"#,
            5,
        )
        .expect("minimal line");
        assert_eq!(e.concept, "mood");
        assert_eq!(e.label, Label::Class("calm".into()));
        assert_eq!((e.index, e.program, e.seed), (5, None, None));
        assert_eq!(e.fields["take"], 2);
        let e = parse_line(r#"{"file":"b.wav","concept":"brightness","label":0.25}"#, 0)
            .expect("numeric label");
        assert_eq!(e.label, Label::Value(0.25));
        for (bad, why) in [
            (r#"{"file":"a.wav","label":"x"}"#, "missing `concept`"),
            (r#"{"file":"a.wav","concept":" ","label":"x"}"#, "non-empty"),
            (
                r#"{"file":"a.wav","concept":"m","label":"x","program":200}"#,
                "0..=127",
            ),
            (
                r#"{"file":"a.wav","concept":"m","label":[1]}"#,
                "string or a number",
            ),
        ] {
            let err = parse_line(bad, 0).expect_err(bad);
            assert!(err.contains(why), "{bad}: {err}");
        }
    }
}
