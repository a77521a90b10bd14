//! Scoring verbs: `clap(wav, text)`, the CLAP cosine of a clip and a text (what `baton clap`
//! prints for the pair), so a recipe can check a take against its prompt.
//!
//! The CLAP model is the run's `--clap-model` ([`RecipeOptions::clap_model`], default
//! `laion/larger_clap_music`), loaded on the first call and kept for the session (a REPL's
//! later inputs, every take a recipe scores). Clips are found as the probe verbs find them: in
//! the recipe's folder first, then as given; a take this run rendered is read even before watch
//! mode puts it in place.
//!
//! ```rhai
//! render(piece("lofi piano", 10.0).seed(1), "take.wav");
//! let fit = clap("take.wav", "lofi piano");
//! if fit < 0.3 { print(`take.wav drifted from its prompt: ${fit}`); }
//! ```
//!
//! [`RecipeOptions::clap_model`]: super::RecipeOptions::clap_model

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::Device;
use rhai::{Engine, EvalAltResult, FLOAT};

use super::{fail, Host};
use crate::eval::clap::{cosine, Clap};

type Res<T> = Result<T, Box<EvalAltResult>>;

/// The clip a recipe names, as `verb` reads it: a `.wav` file in the recipe's folder, else the
/// path as given, or a file this run rendered there and has not yet put in place. Returns the
/// name the recipe means (the renderer maps it to its staged file).
pub(crate) fn find_clip(host: &Host, verb: &str, path: &str) -> Res<PathBuf> {
    if !path.to_ascii_lowercase().ends_with(".wav") {
        return fail(format!("{verb}: `{path}` is not a .wav file"));
    }
    let renderer = host
        .renderer
        .try_lock()
        .map_err(|_| format!("{verb} cannot run while rendering"))?;
    [host.recipe_dir().join(path), PathBuf::from(path)]
        .into_iter()
        .find(|c| c.is_file() || renderer.has_pending(c))
        .ok_or_else(|| format!("{verb}: audio file `{path}` not found").into())
}

/// The session's CLAP model, loaded now if this is the first call.
fn clap_model(host: &Host) -> Res<Arc<Clap>> {
    let mut slot = host.clap.lock().map_err(|_| "CLAP model table poisoned")?;
    if let Some(c) = slot.as_ref() {
        return Ok(c.clone());
    }
    let spec = &host.options.clap_model;
    let clap = Clap::load(spec, &Device::Cpu)
        .map_err(|e| format!("clap: CLAP model {spec}: {e} (name another with --clap-model)"))?;
    let clap = Arc::new(clap);
    *slot = Some(clap.clone());
    Ok(clap)
}

/// `clap(wav, text)`: the cosine of the clip's and the text's CLAP embeddings.
fn clap_score(host: &Host, path: &str, text: &str) -> Res<FLOAT> {
    if text.trim().is_empty() {
        return fail("clap: the text is empty; give the words to score the clip against");
    }
    let named = find_clip(host, "clap", path)?;
    let file = {
        let renderer = host
            .renderer
            .try_lock()
            .map_err(|_| "clap cannot run while rendering")?;
        renderer.staged(&named).unwrap_or_else(|| named.clone())
    };
    let clap = clap_model(host)?;
    let shown = |p: &Path, e: &dyn std::fmt::Display| format!("clap: {}: {e}", p.display());
    // Errors reading a staged take name the take, not its hidden stand-in.
    let (samples, rate) = crate::audio::read_wav_mono(&file).map_err(|e| {
        if file == named {
            format!("clap: {e}")
        } else {
            shown(&named, &e)
        }
    })?;
    let audio = clap
        .embed_audio(&samples, rate)
        .map_err(|e| shown(&named, &e))?;
    let words = clap.embed_text(text).map_err(|e| format!("clap: {e}"))?;
    Ok(cosine(&audio, &words) as FLOAT)
}

/// Registers `clap`.
pub(crate) fn register(engine: &mut Engine, host: &Arc<Host>) {
    let h = host.clone();
    engine.register_fn("clap", move |path: &str, text: &str| {
        clap_score(&h, path, text)
    });
}
