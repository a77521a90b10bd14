//! Probe verbs: `probe(name)` loads a trained concept probe (same names as `direction(...)`)
//! with its per-block scores and, when `baton train --task multiclass` wrote one next to the
//! bundle, its classifier; `.classify(wav)` labels a clip with that classifier and
//! `.project(wav)` gives the clip's projection onto the direction at the best block; with
//! `#{window: s, hop: s}` both return one reading per window (as `baton eval --window`).
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
//! // Windows, each read on its own: when does the chord take hold?
//! for r in chords.classify("take1.wav", #{window: 4.0, hop: 2.0}) {
//!     print(`${r.start}-${r.end} s: ${r.class}`);
//! }
//! ```

use std::path::PathBuf;
use std::sync::Arc;

use rhai::{Array, Dynamic, Engine, EvalAltResult, Map, INT};

use super::directions::{load_bundle, score_map};
use super::schedules::num;
use super::{fail, Host};
use crate::probe::bundle::classifier_path;
use crate::probe::eval::{most_likely, Reader, Value, Windowing};
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

/// Finds a clip (recipe folder first) and returns its pooled features at `block`: one window
/// for the whole clip, or one per window of `windowing`.
fn pooled_at(
    host: &Host,
    verb: &str,
    p: &Probe,
    path: &str,
    block: usize,
    windowing: Option<Windowing>,
) -> Res<Vec<(f64, f64, Vec<f32>)>> {
    let file = super::scores::find_clip(host, verb, path)?;
    let pooling: Pooling = p
        .pooling
        .parse()
        .map_err(|e| format!("{verb}: probe `{}`: {e}", p.name))?;
    let model = host.model_spec();
    let mut renderer = host
        .renderer
        .try_lock()
        .map_err(|_| format!("{verb} cannot run while rendering"))?;
    let windows = renderer
        .pooled(&model, &file, &[block], pooling, windowing)
        .map_err(|e| format!("{verb}: {e}"))?;
    windows
        .into_iter()
        .map(|w| match <[Vec<f32>; 1]>::try_from(w.blocks) {
            Ok([h]) => Ok((w.start, w.end, h)),
            Err(_) => fail(format!("{verb}: no hidden state for block {block}")),
        })
        .collect()
}

/// `#{window: seconds, hop: seconds}` (hop defaults to the window).
fn windowing(verb: &str, opts: &Map) -> Res<Windowing> {
    for key in opts.keys() {
        if key != "window" && key != "hop" {
            return fail(format!("{verb}: unknown option `{key}` (window, hop)"));
        }
    }
    let seconds = |key: &str| -> Res<Option<f64>> {
        match opts.get(key) {
            None => Ok(None),
            Some(v) => {
                let s = num(v, &format!("{verb}: {key}"))?;
                if s > 0.0 && s.is_finite() {
                    Ok(Some(s))
                } else {
                    fail(format!("{verb}: {key} must be positive seconds, got {s}"))
                }
            }
        }
    };
    let Some(window) = seconds("window")? else {
        return fail(format!(
            "{verb}: the options need a `window` length in seconds"
        ));
    };
    let hop = seconds("hop")?.unwrap_or(window);
    Ok(Windowing { window, hop })
}

/// One reading as a map; `start` and `end` are added when the clip was cut into windows.
fn reading(fields: Map, start: f64, end: f64, windowed: bool) -> Dynamic {
    let mut m = fields;
    if windowed {
        m.insert("start".into(), Dynamic::from_float(start));
        m.insert("end".into(), Dynamic::from_float(end));
    }
    Dynamic::from_map(m)
}

/// The readings of a clip: one map for the whole clip, or an array of maps, one per window.
fn readings(windows: Vec<Dynamic>, windowed: bool) -> Dynamic {
    if windowed {
        Dynamic::from_array(windows)
    } else {
        windows.into_iter().next().unwrap_or(Dynamic::UNIT)
    }
}

/// Labels a clip (or each window of it) with the probe's classifier: `#{class, probs: #{name:
/// p}, block}`.
fn classify(host: &Host, p: &Probe, path: &str, windowing: Option<Windowing>) -> Res<Dynamic> {
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
    let mut out = Vec::new();
    for (start, end, h) in pooled_at(host, "classify", p, path, c.layer, windowing)? {
        let proba = c
            .classify(&h)
            .map_err(|e| format!("classify with model `{}`: {e}", host.model_spec()))?;
        let probs: Map = proba
            .iter()
            .enumerate()
            .map(|(k, &pk)| (c.class_name(k).into(), Dynamic::from_float(pk)))
            .collect();
        let mut m = Map::new();
        m.insert(
            "class".into(),
            Dynamic::from(c.class_name(most_likely(&proba))),
        );
        m.insert("probs".into(), Dynamic::from_map(probs));
        m.insert("block".into(), Dynamic::from(c.layer as INT));
        out.push(reading(m, start, end, windowing.is_some()));
    }
    Ok(readings(out, windowing.is_some()))
}

/// Projects a clip's (or each window's) pooled hidden state at the probe's best block onto its
/// direction: a concept score (larger = more of the concept), not a calibrated probability.
fn project(host: &Host, p: &Probe, path: &str, windowing: Option<Windowing>) -> Res<Dynamic> {
    let Some((block, score)) = p.direction.best_block() else {
        return fail(format!("project: probe `{}` has no scored block", p.name));
    };
    let reader = Reader::Direction {
        block,
        vector: p.direction.vectors.get(&block).cloned().unwrap_or_default(),
    };
    let mut out = Vec::new();
    for (start, end, h) in pooled_at(host, "project", p, path, block, windowing)? {
        let projection = match reader.read(&h) {
            Ok(Value::Projection(x)) => x,
            Ok(Value::Probabilities(_)) => return fail("project: not a direction"),
            Err(e) => return fail(format!("project with model `{}`: {e}", host.model_spec())),
        };
        let mut m = Map::new();
        m.insert("block".into(), Dynamic::from(block as INT));
        m.insert("score".into(), Dynamic::from_float(score));
        m.insert("projection".into(), Dynamic::from_float(projection));
        out.push(reading(m, start, end, windowing.is_some()));
    }
    Ok(readings(out, windowing.is_some()))
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
    engine.register_fn("classify", move |p: &mut Probe, path: &str| {
        classify(&h, p, path, None)
    });
    let h = host.clone();
    engine.register_fn("classify", move |p: &mut Probe, path: &str, opts: Map| {
        classify(&h, p, path, Some(windowing("classify", &opts)?))
    });
    let h = host.clone();
    engine.register_fn("project", move |p: &mut Probe, path: &str| {
        project(&h, p, path, None)
    });
    let h = host.clone();
    engine.register_fn("project", move |p: &mut Probe, path: &str, opts: Map| {
        project(&h, p, path, Some(windowing("project", &opts)?))
    });
}
