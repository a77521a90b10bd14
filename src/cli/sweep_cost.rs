//! What steering costs the music in a `baton sweep`: each take's CLAP cosine with the sweep's
//! prompt, the Fréchet and kernel audio distances of each strength's takes from the strength-0
//! takes, and the PNG of concept against CLAP per strength (the paper's trade-off curve).
//!
//! - **CLAP** scores are kept in each take's record (`"clap": {"model": M, "cosine": x}`), made
//!   as the take is rendered; a take whose record lacks a score of this run's `--clap-model`
//!   (an older sweep, another model, a run with `--no-clap`) is scored at the end and its record
//!   rewritten. The audio is never rendered again.
//! - **Distances** are measured in the MusicGen codec's embedding (`baton fad`'s default: one
//!   row per codec frame, 50 a second), so a strength of one short take still has hundreds of
//!   rows; they are not cached but recomputed from the takes on disk at the end of every run
//!   (the encoder costs little next to generation), so they always cover the folder's takes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use baton::eval::audio_distances;
use baton::eval::clap::{cosine, Clap, DEFAULT_MODEL};
use baton::eval::embed::{Embedder, Embedding, FileEmbedding};
use baton::files::write_atomic;
use baton::script::plot::{draw_curve, png_gray, CurvePoint};
use candle_core::Device;
use serde_json::{json, Value as Json};

/// The trade-off plot's file in the sweep folder.
pub const TRADEOFF_FILE: &str = "tradeoff.png";

/// How a CLAP checkpoint is named in records: a local folder by its full path (so another
/// spelling of it is the same model), a hub id as given.
pub fn clap_id(spec: &str) -> String {
    Path::new(spec)
        .canonicalize()
        .map_or_else(|_| spec.to_string(), |p| p.display().to_string())
}

/// The cosine `record` holds for the CLAP model `id`, if it holds one.
pub fn clap_of(record: &Json, id: &str) -> Option<f64> {
    let c = record.get("clap")?;
    (c.get("model")?.as_str()? == id)
        .then(|| c.get("cosine")?.as_f64())
        .flatten()
}

/// A loaded CLAP model and the sweep prompt's embedding.
pub struct ClapScorer {
    clap: Clap,
    id: String,
    prompt: Vec<f32>,
}

impl ClapScorer {
    /// Loads `spec` and embeds `prompt`; the error names the flags that choose another model or
    /// leave the column out.
    pub fn load(spec: &str, prompt: &str, device: &Device) -> miette::Result<Self> {
        let hint = if spec == DEFAULT_MODEL {
            " (the default; it is downloaded once, or read from the hub cache when \
             HF_HUB_OFFLINE is set)"
        } else {
            ""
        };
        let clap = Clap::load(spec, device).map_err(|e| {
            miette::miette!(
                "CLAP model {spec}{hint}: {e}\nthe sweep's CLAP column needs it: name another \
                 checkpoint with --clap-model M, or leave the column out with --no-clap"
            )
        })?;
        let prompt = clap
            .embed_text(prompt)
            .map_err(|e| miette::miette!("CLAP model {spec}: the prompt: {e}"))?;
        Ok(ClapScorer {
            clap,
            id: clap_id(spec),
            prompt,
        })
    }

    /// The model's name in records.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The record field of `wav`'s cosine with the prompt.
    pub fn score(&self, wav: &Path) -> miette::Result<Json> {
        let (samples, rate) =
            baton::audio::read_wav_mono(wav).map_err(|e| miette::miette!("{e}"))?;
        let audio = self
            .clap
            .embed_audio(&samples, rate)
            .map_err(|e| miette::miette!("CLAP: {}: {e}", wav.display()))?;
        Ok(json!({"model": self.id, "cosine": cosine(&audio, &self.prompt)}))
    }
}

/// Scores every take of `records` (file name to record) that lacks a score of `scorer`'s model,
/// rewriting its record beside the audio; returns how many were scored.
pub fn fill_clap<'a>(
    out: &Path,
    records: impl IntoIterator<Item = &'a Json>,
    scorer: &ClapScorer,
) -> miette::Result<usize> {
    let mut scored = 0;
    for record in records {
        if clap_of(record, scorer.id()).is_some() {
            continue;
        }
        let Some(file) = record.get("file").and_then(Json::as_str) else {
            continue;
        };
        let mut record = record.clone();
        record["clap"] = scorer.score(&out.join(file))?;
        super::sweep::write_json(&out.join(Path::new(file).with_extension("json")), &record)?;
        scored += 1;
    }
    Ok(scored)
}

/// The mean CLAP cosine of `takes` for model `id`, and how many had one.
pub fn mean_clap(takes: &[&Json], id: &str) -> Option<(f64, usize)> {
    let scores: Vec<f64> = takes.iter().filter_map(|t| clap_of(t, id)).collect();
    (!scores.is_empty()).then(|| {
        (
            scores.iter().sum::<f64>() / scores.len() as f64,
            scores.len(),
        )
    })
}

/// FAD and KAD of each strength's takes against the strength-0 takes, in the codec embedding
/// of the sweep's model, loaded on first use; embeddings are kept for the run.
pub struct Distances {
    model: String,
    device: Device,
    embedder: Option<Embedder>,
    cache: HashMap<PathBuf, FileEmbedding>,
}

/// FAD and KAD of one strength against the reference strength.
#[derive(Debug, Clone, Copy)]
pub struct Distance {
    /// Fréchet audio distance.
    pub fad: f64,
    /// Kernel audio distance (unbiased MMD² x 100, as `baton fad`).
    pub kad: f64,
}

impl Distances {
    /// Distances in the codec of the MusicGen `model` (hub id or folder) on `device`.
    pub fn new(model: String, device: Device) -> Self {
        Distances {
            model,
            device,
            embedder: None,
            cache: HashMap::new(),
        }
    }

    /// The name of the embedding, as `baton fad` reports it.
    pub fn embedding(&self) -> &'static str {
        Embedding::Encodec.name()
    }

    fn embed(&mut self, files: &[PathBuf]) -> miette::Result<Vec<FileEmbedding>> {
        if self.embedder.is_none() {
            let e = Embedder::load(Embedding::Encodec, &self.model, &self.device)
                .map_err(|e| miette::miette!("FAD/KAD embedding: {e}"))?;
            self.embedder = Some(e);
        }
        let Some(embedder) = &self.embedder else {
            return Err(miette::miette!("FAD/KAD embedding not loaded"));
        };
        let mut rows = Vec::with_capacity(files.len());
        for f in files {
            if !self.cache.contains_key(f) {
                let e = embedder.embed_file(f).map_err(|e| miette::miette!("{e}"))?;
                self.cache.insert(f.clone(), e);
            }
            rows.extend(self.cache.get(f).cloned());
        }
        Ok(rows)
    }

    /// The distance of `generated` (take files) from `reference`; `None` (with a warning) when
    /// the sets cannot be compared (too few rows).
    pub fn between(
        &mut self,
        reference: &[PathBuf],
        generated: &[PathBuf],
    ) -> miette::Result<Option<Distance>> {
        let r = self.embed(reference)?;
        let g = self.embed(generated)?;
        match audio_distances(Embedding::Encodec, &r, &g, None) {
            Ok(d) => Ok(Some(Distance {
                fad: d.fad,
                kad: d.kad,
            })),
            Err(e) => {
                eprintln!("warning: no FAD/KAD for {} take(s): {e}", generated.len());
                Ok(None)
            }
        }
    }
}

/// Writes the trade-off curve of `summary` (rows with `strength`, `clap` and the concept under
/// `concept_key`) to `out/tradeoff.png`: concept against CLAP, one labelled point per strength,
/// joined in strength order. Writes nothing when no strength has a CLAP score.
pub fn write_tradeoff(
    out: &Path,
    summary: &[Json],
    concept_key: &str,
    concept_label: &str,
    legend: &str,
) -> miette::Result<()> {
    let points: Vec<CurvePoint> = summary
        .iter()
        .filter_map(|row| {
            Some(CurvePoint {
                x: row.get("clap")?.as_f64()?,
                y: row.get(concept_key)?.as_f64()?,
                label: format!("{}", row.get("strength")?.as_f64()?),
            })
        })
        .collect();
    if points.is_empty() {
        return Ok(());
    }
    let (w, h, px) = draw_curve(
        &points,
        "CLAP cosine with the prompt",
        concept_label,
        legend,
    );
    let path = out.join(TRADEOFF_FILE);
    write_atomic(&path, &png_gray(w, h, &px))
        .map_err(|e| miette::miette!("cannot write {}: {e}", path.display()))
}
