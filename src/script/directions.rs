//! Direction verbs: `direction("notes:C#")` (a library name) or `direction("my.safetensors")`
//! (a bundle path), `probe(...)` (the same bundle seen as a probe: scores, best block), and the
//! direction algebra (`*`, `+`, `-`, `normalize`, `orth`, `cosine`, `top`, `blocks`, `weights`).
//!
//! Library names `CONCEPT:TARGET` resolve to `DIR/CONCEPT/TARGET.safetensors`, where `DIR` is the
//! direction library folder (`BATON_DIRECTIONS`, default `./directions`).

use std::ops::{Range, RangeInclusive};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rhai::{Array, Dynamic, Engine, EvalAltResult, Map, INT};

use super::schedules::num;
use super::{closest, fail, Host};
use crate::probe::DirectionBundle;
use crate::steer::{Direction, LayerWeights};

type Res<T> = Result<T, Box<EvalAltResult>>;

/// A probe as recipes see it: the per-block scores of a trained concept probe.
#[derive(Debug, Clone)]
pub struct Probe {
    /// The bundle's direction and scores.
    pub direction: Direction,
}

/// Every `CONCEPT:TARGET` name in a direction library folder.
pub fn library_names(dir: &Path) -> Vec<String> {
    let mut names = Vec::new();
    let Ok(concepts) = std::fs::read_dir(dir) else {
        return names;
    };
    for c in concepts.flatten() {
        let Ok(files) = std::fs::read_dir(c.path()) else {
            continue;
        };
        let concept = c.file_name().to_string_lossy().to_string();
        for f in files.flatten() {
            let p = f.path();
            if p.extension().is_some_and(|e| e == "safetensors") {
                if let Some(stem) = p.file_stem() {
                    names.push(format!("{concept}:{}", stem.to_string_lossy()));
                }
            }
        }
    }
    names.sort();
    names
}

/// Finds the file a recipe's direction name refers to.
pub(crate) fn resolve(host: &Host, name: &str) -> Result<PathBuf, String> {
    if name.ends_with(".safetensors") {
        let p = Path::new(name);
        let candidates = if p.is_absolute() {
            vec![p.to_path_buf()]
        } else {
            vec![host.recipe_dir.join(p), p.to_path_buf()]
        };
        return candidates
            .into_iter()
            .find(|c| c.is_file())
            .ok_or_else(|| format!("direction bundle `{name}` not found"));
    }
    let Some((concept, target)) = name.split_once(':') else {
        return Err(format!(
            "`{name}` is neither a library name like \"notes:C#\" nor a .safetensors bundle path"
        ));
    };
    let lib = &host.options.directions;
    let path = lib.join(concept).join(format!("{target}.safetensors"));
    if path.is_file() {
        return Ok(path);
    }
    let known = library_names(lib);
    let mut msg = format!("unknown direction `{name}` (no {})", path.display());
    let near = closest(name, known.iter().map(|s| s.as_str()), 3);
    if !near.is_empty() {
        msg.push_str(&format!("; closest known: {}", near.join(", ")));
    } else if known.is_empty() {
        msg.push_str(&format!(
            "; the direction library {} is empty (set BATON_DIRECTIONS)",
            lib.display()
        ));
    }
    Err(msg)
}

/// Loads (once per run) the direction a name refers to.
pub(crate) fn load(host: &Host, name: &str) -> Result<Direction, String> {
    let path = resolve(host, name)?;
    if let Some(d) = host.bundles.lock().ok().and_then(|b| b.get(&path).cloned()) {
        return Ok(d);
    }
    let bundle = DirectionBundle::read(&path).map_err(|e| e.to_string())?;
    let d = Direction::from_bundle(name, bundle);
    if let Ok(mut b) = host.bundles.lock() {
        b.insert(path, d.clone());
    }
    Ok(d)
}

fn block_list(values: impl IntoIterator<Item = INT>) -> Res<Vec<usize>> {
    values
        .into_iter()
        .map(|v| usize::try_from(v).or_else(|_| fail(format!("block index {v} is negative"))))
        .collect()
}

fn score_map(scores: impl IntoIterator<Item = (usize, f64)>) -> Map {
    scores
        .into_iter()
        .map(|(l, s)| (l.to_string().into(), Dynamic::from_float(s)))
        .collect()
}

fn rhai_err(e: impl std::fmt::Display) -> Box<EvalAltResult> {
    e.to_string().into()
}

/// Projects a clip's pooled hidden state at the probe's best block onto its direction: a
/// concept score (larger = more of the concept), not a calibrated probability.
fn classify(host: &Host, p: &Probe, path: &str) -> Res<Map> {
    let Some((block, score)) = p.direction.best_block() else {
        return fail("classify: the probe has no scored block");
    };
    if !path.to_ascii_lowercase().ends_with(".wav") {
        return fail(format!("classify: `{path}` is not a .wav file"));
    }
    let file = [host.recipe_dir.join(path), PathBuf::from(path)]
        .into_iter()
        .find(|c| c.is_file())
        .ok_or_else(|| format!("classify: audio file `{path}` not found"))?;
    let model = host.model_spec();
    let mut renderer = host
        .renderer
        .try_lock()
        .map_err(|_| "classify cannot run while rendering")?;
    let pooled = renderer.pooled(&model, &file, &[block]).or_else(fail)?;
    let (Some(h), Some(q)) = (pooled.first(), p.direction.vectors.get(&block)) else {
        return fail("classify: no hidden state for the probe's block");
    };
    let projection: f64 = h.iter().zip(q).map(|(a, b)| *a as f64 * *b as f64).sum();
    let mut m = Map::new();
    m.insert("block".into(), Dynamic::from(block as INT));
    m.insert("score".into(), Dynamic::from_float(score));
    m.insert("projection".into(), Dynamic::from_float(projection));
    Ok(m)
}

/// Registers the direction and probe types and verbs.
pub(crate) fn register(engine: &mut Engine, host: &Arc<Host>) {
    engine.register_type_with_name::<Direction>("Direction");
    engine.register_type_with_name::<Probe>("Probe");
    let h = host.clone();
    engine.register_fn("direction", move |name: &str| -> Res<Direction> {
        load(&h, name).or_else(fail)
    });
    let h = host.clone();
    engine.register_fn("probe", move |name: &str| -> Res<Probe> {
        Ok(Probe {
            direction: load(&h, name).or_else(fail)?,
        })
    });
    let h = host.clone();
    engine.register_fn("library", move || -> Array {
        library_names(&h.options.directions)
            .into_iter()
            .map(Dynamic::from)
            .collect()
    });

    engine.register_fn("to_string", |d: &mut Direction| d.to_string());
    engine.register_fn("to_debug", |d: &mut Direction| d.to_string());
    engine.register_get("name", |d: &mut Direction| d.name.clone());
    engine.register_get("scores", |d: &mut Direction| score_map(d.scores.clone()));
    engine.register_get("metric", |d: &mut Direction| d.metric.clone());
    engine.register_get("width", |d: &mut Direction| d.hidden_size as INT);
    engine.register_get("blocks", |d: &mut Direction| -> Array {
        d.vectors.keys().map(|l| Dynamic::from(*l as INT)).collect()
    });
    engine.register_get("best_block", |d: &mut Direction| -> Dynamic {
        d.best_block()
            .map_or(Dynamic::UNIT, |(l, _)| Dynamic::from(l as INT))
    });

    engine.register_fn("*", |d: Direction, k: f64| d.scale(k));
    engine.register_fn("*", |k: f64, d: Direction| d.scale(k));
    engine.register_fn("*", |d: Direction, k: INT| d.scale(k as f64));
    engine.register_fn("*", |k: INT, d: Direction| d.scale(k as f64));
    engine.register_fn("-", |d: Direction| d.scale(-1.0));
    engine.register_fn("scale", |d: &mut Direction, k: Dynamic| -> Res<Direction> {
        Ok(d.scale(num(&k, "scale")?))
    });
    engine.register_fn("+", |a: Direction, b: Direction| -> Res<Direction> {
        a.add(&b).map_err(rhai_err)
    });
    engine.register_fn("-", |a: Direction, b: Direction| -> Res<Direction> {
        a.sub(&b).map_err(rhai_err)
    });
    engine.register_fn("normalize", |d: &mut Direction| d.normalize());
    engine.register_fn(
        "orth",
        |a: &mut Direction, b: Direction| -> Res<Direction> {
            a.orthogonalize(&b).map_err(rhai_err)
        },
    );
    engine.register_fn("cosine", |a: &mut Direction, b: Direction| -> Res<Map> {
        a.cosine(&b).map(score_map).map_err(rhai_err)
    });
    engine.register_fn("top", |d: &mut Direction, k: INT| -> Res<Direction> {
        Ok(d.top(block_list([k])?[0]))
    });
    engine.register_fn(
        "blocks",
        |d: &mut Direction, r: Range<INT>| -> Res<Direction> { Ok(d.blocks(&block_list(r)?)) },
    );
    engine.register_fn(
        "blocks",
        |d: &mut Direction, r: RangeInclusive<INT>| -> Res<Direction> {
            Ok(d.blocks(&block_list(r)?))
        },
    );
    engine.register_fn(
        "blocks",
        |d: &mut Direction, list: Array| -> Res<Direction> {
            let ints = list
                .iter()
                .map(|v| {
                    v.as_int()
                        .or_else(|t| fail(format!("block index must be an integer, not {t}")))
                })
                .collect::<Res<Vec<INT>>>()?;
            Ok(d.blocks(&block_list(ints)?))
        },
    );
    engine.register_fn("weights", |d: &mut Direction, rule: &str| -> Res<Map> {
        let rule: LayerWeights = rule.parse().map_err(rhai_err)?;
        Ok(score_map(rule.weights(d)))
    });

    engine.register_fn("to_string", |p: &mut Probe| {
        format!("probe for {}", p.direction)
    });
    engine.register_fn("to_debug", |p: &mut Probe| {
        format!("probe for {}", p.direction)
    });
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
    let h = host.clone();
    engine.register_fn("classify", move |p: &mut Probe, path: &str| -> Res<Map> {
        classify(&h, p, path)
    });
    engine.register_get("best_score", |p: &mut Probe| -> Dynamic {
        p.direction
            .best_block()
            .map_or(Dynamic::UNIT, |(_, s)| Dynamic::from_float(s))
    });
}
