//! Probe verbs: `probe(name)` loads a trained concept probe (same names as `direction(...)`)
//! with its per-block scores and, when `baton train --task multiclass` wrote one next to the
//! bundle, its classifier; `.classify(wav)` labels a clip with that classifier and
//! `.project(wav)` gives the clip's projection onto the direction at the best block.
//!
//! Both read a clip the way `baton features` does (capture mode: EnCodec codes run
//! teacher-forced through the decoder with no text, block output pooled over time, with the
//! bundle's pooling), through [`Renderer::pooled`](super::Renderer::pooled).
//!
//! ```rhai
//! let chords = probe("chords:all");        // directions/chords/all.safetensors
//! print(chords.best_block);                // block with the best validation score
//! let c = chords.classify("take1.wav");    // needs directions/chords/all.classifier.safetensors
//! print(`${c.class} (p = ${c.probs[c.class]})`);
//! print(probe("notes:C#").project("take1.wav").projection);
//! ```

use std::path::PathBuf;
use std::sync::Arc;

use rhai::{Array, Dynamic, Engine, EvalAltResult, Map, INT};

use super::directions::{load_bundle, score_map};
use super::{fail, Host};
use crate::probe::bundle::classifier_path;
use crate::probe::Pooling;
use crate::rfm::fit::Task;
use crate::rfm::io::SavedProbe;
use crate::steer::Direction;

type Res<T> = Result<T, Box<EvalAltResult>>;

/// A probe as recipes see it: the per-block scores and directions of a trained concept probe,
/// and its classifier when one was saved next to the bundle.
#[derive(Debug, Clone)]
pub struct Probe {
    /// The name the recipe used.
    pub name: String,
    /// The bundle's direction and scores.
    pub direction: Direction,
    /// Pooling of the features the probe was trained on (`mean`, `last`).
    pub pooling: String,
    /// Where the classifier is (or would be): `BUNDLE.classifier.safetensors`.
    pub classifier_path: PathBuf,
    /// The multiclass classifier, when that file exists.
    pub classifier: Option<Arc<SavedProbe>>,
}

/// Loads the probe a recipe names: its bundle, and its classifier if the file exists.
pub(crate) fn load_probe(host: &Host, name: &str) -> Result<Probe, String> {
    let (path, loaded) = load_bundle(host, name)?;
    let classifier_path = classifier_path(&path);
    let classifier = if classifier_path.is_file() {
        let saved = SavedProbe::read(&classifier_path).map_err(|e| e.to_string())?;
        Some(Arc::new(saved))
    } else {
        None
    };
    Ok(Probe {
        name: name.to_string(),
        direction: loaded.direction,
        pooling: loaded.pooling,
        classifier_path,
        classifier,
    })
}

/// Finds a clip (recipe folder first) and returns its pooled features at `block`.
fn pooled_at(host: &Host, verb: &str, p: &Probe, path: &str, block: usize) -> Res<Vec<f32>> {
    if !path.to_ascii_lowercase().ends_with(".wav") {
        return fail(format!("{verb}: `{path}` is not a .wav file"));
    }
    let file = [host.recipe_dir().join(path), PathBuf::from(path)]
        .into_iter()
        .find(|c| c.is_file())
        .ok_or_else(|| format!("{verb}: audio file `{path}` not found"))?;
    let pooling: Pooling = p
        .pooling
        .parse()
        .map_err(|e| format!("{verb}: probe `{}`: {e}", p.name))?;
    let model = host.model_spec();
    let mut renderer = host
        .renderer
        .try_lock()
        .map_err(|_| format!("{verb} cannot run while rendering"))?;
    let mut pooled = renderer
        .pooled(&model, &file, &[block], pooling)
        .map_err(|e| format!("{verb}: {e}"))?;
    match pooled.pop() {
        Some(h) if pooled.is_empty() => Ok(h),
        _ => fail(format!("{verb}: no hidden state for block {block}")),
    }
}

/// Labels a clip with the probe's classifier: `#{class, probs: #{name: p}, block}`.
fn classify(host: &Host, p: &Probe, path: &str) -> Res<Map> {
    let Some(c) = &p.classifier else {
        return fail(format!(
            "classify: probe `{}` has no classifier (no {}); train one with \
             `baton train FEATURES --out BUNDLE --task multiclass`, which writes it next to the \
             bundle (`.project(wav)` gives the direction's projection without one)",
            p.name,
            p.classifier_path.display()
        ));
    };
    if c.rfm.task == Task::Regression {
        return fail(format!(
            "classify: {} holds a regression probe, which predicts values, not classes",
            p.classifier_path.display()
        ));
    }
    let h = pooled_at(host, "classify", p, path, c.layer)?;
    let proba = c
        .classify(&h)
        .map_err(|e| format!("classify with model `{}`: {e}", host.model_spec()))?;
    let name = |k: usize| c.class_name(k);
    let mut best = 0;
    let mut probs = Map::new();
    for (k, &pk) in proba.iter().enumerate() {
        if pk > proba[best] {
            best = k;
        }
        probs.insert(name(k).into(), Dynamic::from_float(pk));
    }
    let mut m = Map::new();
    m.insert("class".into(), Dynamic::from(name(best)));
    m.insert("probs".into(), Dynamic::from_map(probs));
    m.insert("block".into(), Dynamic::from(c.layer as INT));
    Ok(m)
}

/// Projects a clip's pooled hidden state at the probe's best block onto its direction: a
/// concept score (larger = more of the concept), not a calibrated probability.
fn project(host: &Host, p: &Probe, path: &str) -> Res<Map> {
    let Some((block, score)) = p.direction.best_block() else {
        return fail(format!("project: probe `{}` has no scored block", p.name));
    };
    let h = pooled_at(host, "project", p, path, block)?;
    let Some(q) = p
        .direction
        .vectors
        .get(&block)
        .filter(|q| q.len() == h.len())
    else {
        return fail(format!(
            "project: the direction is {} wide but model `{}` gives {}",
            p.direction.hidden_size,
            host.model_spec(),
            h.len()
        ));
    };
    let projection: f64 = h.iter().zip(q).map(|(a, b)| *a as f64 * *b as f64).sum();
    let mut m = Map::new();
    m.insert("block".into(), Dynamic::from(block as INT));
    m.insert("score".into(), Dynamic::from_float(score));
    m.insert("projection".into(), Dynamic::from_float(projection));
    Ok(m)
}

/// Registers the probe type and verbs.
pub(crate) fn register(engine: &mut Engine, host: &Arc<Host>) {
    engine.register_type_with_name::<Probe>("Probe");
    let h = host.clone();
    engine.register_fn("probe", move |name: &str| -> Res<Probe> {
        load_probe(&h, name).or_else(fail)
    });
    let describe = |p: &mut Probe| {
        let classes = p
            .classifier
            .as_ref()
            .map_or(String::new(), |c| format!(", classifier {:?}", c.classes));
        format!("probe for {}{classes}", p.direction)
    };
    engine.register_fn("to_string", describe);
    engine.register_fn("to_debug", describe);
    engine.register_get("scores", |p: &mut Probe| {
        score_map(p.direction.scores.clone())
    });
    engine.register_get("metric", |p: &mut Probe| p.direction.metric.clone());
    engine.register_get("direction", |p: &mut Probe| p.direction.clone());
    engine.register_get("best_block", |p: &mut Probe| -> Dynamic {
        p.direction
            .best_block()
            .map_or(Dynamic::UNIT, |(l, _)| Dynamic::from(l as INT))
    });
    engine.register_get("best_score", |p: &mut Probe| -> Dynamic {
        p.direction
            .best_block()
            .map_or(Dynamic::UNIT, |(_, s)| Dynamic::from_float(s))
    });
    engine.register_get("classes", |p: &mut Probe| -> Array {
        p.classifier.as_ref().map_or_else(Array::new, |c| {
            c.classes.iter().cloned().map(Dynamic::from).collect()
        })
    });
    let h = host.clone();
    engine.register_fn("classify", move |p: &mut Probe, path: &str| -> Res<Map> {
        classify(&h, p, path)
    });
    let h = host.clone();
    engine.register_fn("project", move |p: &mut Probe, path: &str| -> Res<Map> {
        project(&h, p, path)
    });
}
