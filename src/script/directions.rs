//! Direction verbs: `direction("notes:C#")` (a library name) or `direction("my.safetensors")`
//! (a bundle path), `library()`, and the direction algebra (`*`, `+`, `-`, `normalize`, `orth`,
//! `cosine`, `top`, `blocks`, `weights`). `probe(...)` reads the same names (see [`super::probes`]).
//!
//! Library names `CONCEPT:TARGET` resolve to `DIR/CONCEPT/TARGET.safetensors`, where `DIR` is the
//! direction library folder (`BATON_DIRECTIONS`, default `./directions`). Classifiers that
//! `baton train` writes beside bundles (`TARGET.classifier.safetensors`) are not directions and
//! are left out of the library's names.

use std::ops::{Range, RangeInclusive};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rhai::{Array, Dynamic, Engine, EvalAltResult, Map, INT};

use super::schedules::num;
use super::{closest, fail, Host};
use crate::probe::DirectionBundle;
use crate::steer::{Direction, LayerWeights};

type Res<T> = Result<T, Box<EvalAltResult>>;

/// A bundle as loaded (once per run): its direction and the pooling of its features.
#[derive(Debug, Clone)]
pub(crate) struct LoadedBundle {
    pub direction: Direction,
    pub pooling: String,
    /// Size and modification time of the file when read: a retrained bundle is read again.
    stamp: Option<(u64, std::time::SystemTime)>,
}

pub use crate::steer::library::{
    library_names, library_path, library_table, list_library, LibraryEntry,
};

/// Finds the file a recipe's direction name refers to.
pub(crate) fn resolve(host: &Host, name: &str) -> Result<PathBuf, String> {
    if name.ends_with(".safetensors") {
        let p = Path::new(name);
        let candidates = if p.is_absolute() {
            vec![p.to_path_buf()]
        } else {
            vec![host.recipe_dir().join(p), p.to_path_buf()]
        };
        return candidates
            .into_iter()
            .find(|c| c.is_file())
            .ok_or_else(|| format!("direction bundle `{name}` not found"));
    }
    let lib = &host.options.directions;
    let Some(path) = library_path(lib, name) else {
        return Err(format!(
            "`{name}` is neither a library name like \"notes:C#\" nor a .safetensors bundle path"
        ));
    };
    if path.is_file() {
        return Ok(path);
    }
    let known = library_names(lib);
    let mut msg = format!("unknown direction `{name}` (no {})", path.display());
    if let Some(command) = crate::concepts::learn_command(name) {
        msg.push_str(&format!("; `{command}` makes it"));
    }
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

/// Loads the bundle a name refers to, once per session unless its file changes (a REPL
/// outlives retraining); returns its path too.
pub(crate) fn load_bundle(host: &Host, name: &str) -> Result<(PathBuf, LoadedBundle), String> {
    let path = resolve(host, name)?;
    let now = crate::files::stamp(&path);
    let cached = host.bundles.lock().ok().and_then(|b| b.get(&path).cloned());
    if let Some(b) = cached.filter(|b| b.stamp.is_some() && b.stamp == now) {
        return Ok((path, b));
    }
    if path
        .file_stem()
        .is_some_and(|s| s.to_string_lossy().ends_with(".classifier"))
    {
        return Err(format!(
            "`{name}` is a classifier, not a direction bundle: name the bundle beside it \
             (probe(...) loads the classifier with it)"
        ));
    }
    let bundle = DirectionBundle::read(&path).map_err(|e| e.to_string())?;
    let pooling = bundle.pooling.clone();
    let loaded = LoadedBundle {
        direction: Direction::from_bundle(name, bundle),
        pooling,
        stamp: now,
    };
    if let Ok(mut b) = host.bundles.lock() {
        b.insert(path.clone(), loaded.clone());
    }
    Ok((path, loaded))
}

/// Loads the direction a name refers to (see [`load_bundle`]).
pub(crate) fn load(host: &Host, name: &str) -> Result<Direction, String> {
    load_bundle(host, name).map(|(_, b)| b.direction)
}

fn block_list(values: impl IntoIterator<Item = INT>) -> Res<Vec<usize>> {
    values
        .into_iter()
        .map(|v| usize::try_from(v).or_else(|_| fail(format!("block index {v} is negative"))))
        .collect()
}

pub(crate) fn score_map(scores: impl IntoIterator<Item = (usize, f64)>) -> Map {
    scores
        .into_iter()
        .map(|(l, s)| (l.to_string().into(), Dynamic::from_float(s)))
        .collect()
}

/// A direction the algebra made, refused when a value overflowed to infinity or became NaN
/// (`d * 1e30 * 1e30`, `scale(0.0 / 0.0)`): steering with it would silently wreck the audio.
fn finite(d: Direction) -> Res<Direction> {
    match d
        .vectors
        .iter()
        .find(|(_, v)| v.iter().any(|x| !x.is_finite()))
    {
        Some((l, _)) => fail(format!(
            "`{}` is not finite at block {l} (NaN or infinity: a scale of 0/0, or a value too \
             large for 32-bit floats)",
            d.name
        )),
        None => Ok(d),
    }
}

/// `d` with only the blocks in `keep`, refused when none of them is one of `d`'s.
fn keep_blocks(d: &Direction, keep: &[usize]) -> Res<Direction> {
    let kept = d.blocks(keep);
    if kept.vectors.is_empty() {
        let has: Vec<String> = d.vectors.keys().map(|l| l.to_string()).collect();
        return fail(format!(
            "blocks: `{}` has none of the blocks asked for (it has {})",
            d.name,
            if has.is_empty() {
                "none".into()
            } else {
                has.join(", ")
            }
        ));
    }
    Ok(kept)
}

/// Block indices of the range `start..end`, bounded: no model has a block past `1 << 16`, and
/// `blocks(0..1000000000)` must not build a billion-entry list.
fn range_blocks(start: INT, end: INT) -> Res<Vec<usize>> {
    const MAX_BLOCK: INT = 1 << 16;
    if start < 0 {
        return fail(format!("block index {start} is negative"));
    }
    block_list(start..end.min(MAX_BLOCK))
}

fn rhai_err(e: impl std::fmt::Display) -> Box<EvalAltResult> {
    e.to_string().into()
}

/// Registers the direction type and verbs.
pub(crate) fn register(engine: &mut Engine, host: &Arc<Host>) {
    engine.register_type_with_name::<Direction>("Direction");
    let h = host.clone();
    engine.register_fn("direction", move |name: &str| -> Res<Direction> {
        load(&h, name).or_else(fail)
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
    engine.register_get("residual_norms", |d: &mut Direction| {
        score_map(d.residual_norms.iter().map(|(&l, &n)| (l, n as f64)))
    });
    engine.register_get("metric", |d: &mut Direction| d.metric.clone());
    engine.register_get("width", |d: &mut Direction| d.hidden_size as INT);
    engine.register_get("blocks", |d: &mut Direction| -> Array {
        d.vectors.keys().map(|l| Dynamic::from(*l as INT)).collect()
    });
    engine.register_get("best_block", |d: &mut Direction| -> Dynamic {
        d.best_block()
            .map_or(Dynamic::UNIT, |(l, _)| Dynamic::from(l as INT))
    });

    engine.register_fn("*", |d: Direction, k: f64| finite(d.scale(k)));
    engine.register_fn("*", |k: f64, d: Direction| finite(d.scale(k)));
    engine.register_fn("*", |d: Direction, k: INT| finite(d.scale(k as f64)));
    engine.register_fn("*", |k: INT, d: Direction| finite(d.scale(k as f64)));
    engine.register_fn("-", |d: Direction| d.scale(-1.0));
    engine.register_fn("scale", |d: &mut Direction, k: Dynamic| -> Res<Direction> {
        finite(d.scale(num(&k, "scale")?))
    });
    engine.register_fn("+", |a: Direction, b: Direction| -> Res<Direction> {
        finite(a.add(&b).map_err(rhai_err)?)
    });
    engine.register_fn("-", |a: Direction, b: Direction| -> Res<Direction> {
        finite(a.sub(&b).map_err(rhai_err)?)
    });
    engine.register_fn("normalize", |d: &mut Direction| -> Res<Direction> {
        if d.vectors.values().all(|v| v.iter().all(|x| *x == 0.0)) {
            return fail(format!(
                "normalize: every vector of `{}` is zero, so it has no direction to keep",
                d.name
            ));
        }
        finite(d.normalize())
    });
    engine.register_fn(
        "orth",
        |a: &mut Direction, b: Direction| -> Res<Direction> {
            finite(a.orthogonalize(&b).map_err(rhai_err)?)
        },
    );
    engine.register_fn("cosine", |a: &mut Direction, b: Direction| -> Res<Map> {
        a.cosine(&b).map(score_map).map_err(rhai_err)
    });
    engine.register_fn("top", |d: &mut Direction, k: INT| -> Res<Direction> {
        if k < 1 {
            return fail(format!("top({k}) keeps no block: k must be at least 1"));
        }
        Ok(d.top(block_list([k])?[0]))
    });
    engine.register_fn(
        "blocks",
        |d: &mut Direction, r: Range<INT>| -> Res<Direction> {
            keep_blocks(d, &range_blocks(r.start, r.end)?)
        },
    );
    engine.register_fn(
        "blocks",
        |d: &mut Direction, r: RangeInclusive<INT>| -> Res<Direction> {
            keep_blocks(d, &range_blocks(*r.start(), r.end().saturating_add(1))?)
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
            keep_blocks(d, &block_list(ints)?)
        },
    );
    engine.register_fn("weights", |d: &mut Direction, rule: &str| -> Res<Map> {
        let rule: LayerWeights = rule.parse().map_err(rhai_err)?;
        Ok(score_map(rule.weights(d)))
    });
}
