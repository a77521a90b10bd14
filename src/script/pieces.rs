//! Piece verbs: `piece(prompt, seconds)` and its builder methods (`steer`, `gate`, `seed`,
//! `tempo`, `layers`, `cfg`, `negative`, `greedy`, `top_k`, `temperature`, `cond_only`),
//! `model(...)` and
//! `render(piece, "file.wav")`.

use std::fmt;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;

use rhai::{Dynamic, Engine, EvalAltResult, Map, NativeCallContext, INT};

use super::schedules::{bounded, num};
use super::{fail, sandbox, Host, RenderRequest, Rendered};
use crate::model::{Sampling, DEFAULT_GUIDANCE_SCALE, DEFAULT_TEMPERATURE, DEFAULT_TOP_K};
use crate::piece::{check_window_seconds, ClipPrompt};
use crate::steer::{Direction, LayerWeights, Plan, Schedule, StrengthUnit, Term};

type Res<T> = Result<T, Box<EvalAltResult>>;

/// A piece of music to render: prompt, length, decoding options and the steering plan.
#[derive(Debug, Clone)]
pub struct Piece {
    /// Text prompt.
    pub prompt: String,
    /// Length in seconds.
    pub seconds: f64,
    /// The steering plan (its `seed` also seeds sampling).
    pub plan: Plan,
    /// Layer weights of terms added without their own.
    pub layers: LayerWeights,
    /// Token choice.
    pub sampling: Sampling,
    /// Classifier-free guidance scale.
    pub cfg: f64,
    /// What guidance steers away from (`None`: nothing, as MusicGen does).
    pub negative: Option<String>,
    /// The clip the piece continues.
    pub clip: Option<ClipPrompt>,
    /// Window and stride seconds for long pieces (`None`: the defaults).
    pub window: Option<(f64, Option<f64>)>,
}

impl Piece {
    /// A piece with MusicGen's defaults (top-k 250, temperature 1, CFG 3) and no steering.
    pub fn new(prompt: &str, seconds: f64) -> Self {
        Piece {
            prompt: prompt.to_string(),
            seconds,
            plan: Plan::default(),
            layers: LayerWeights::default(),
            sampling: Sampling::TopK {
                k: DEFAULT_TOP_K,
                temperature: DEFAULT_TEMPERATURE,
            },
            cfg: DEFAULT_GUIDANCE_SCALE,
            negative: None,
            clip: None,
            window: None,
        }
    }
}

impl fmt::Display for Piece {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "piece \"{}\", {} s, ", self.prompt, self.seconds)?;
        match self.sampling {
            Sampling::Greedy => write!(f, "greedy")?,
            Sampling::TopK { k, temperature } => write!(f, "top-k {k} at T={temperature}")?,
        }
        write!(f, ", cfg {}", self.cfg)?;
        if let Some(n) = &self.negative {
            write!(f, " away from \"{n}\"")?;
        }
        if let Some(c) = &self.clip {
            write!(f, ", continuing {}", c.path.display())?;
        }
        if let Some((w, stride)) = self.window {
            write!(f, ", window {w} s")?;
            if let Some(t) = stride {
                write!(f, " (stride {t} s)")?;
            }
        }
        write!(f, ", seed {}; {}", self.plan.seed, self.plan)
    }
}

fn probability(v: &Dynamic, what: &str) -> Res<f64> {
    let p = num(v, what)?;
    if (0.0..=1.0).contains(&p) {
        Ok(p)
    } else {
        fail(format!("{what} must be between 0 and 1, got {p}"))
    }
}

fn weights_rule(v: &Dynamic) -> Res<LayerWeights> {
    let Ok(s) = v.clone().into_string() else {
        return fail(format!(
            "layer weights must be a string like \"exp\", \"top:8\", not {}",
            v.type_name()
        ));
    };
    s.parse()
        .map_err(|e: crate::steer::SteerError| e.to_string().into())
}

fn strength_unit(v: &Dynamic) -> Res<StrengthUnit> {
    let Ok(s) = v.clone().into_string() else {
        return fail(format!(
            "unit must be \"absolute\" or \"residual\", not {}",
            v.type_name()
        ));
    };
    s.parse().map_err(|e: String| e.into())
}

/// `eta0` and `phi` from a strength argument: a number is a constant strength, a schedule is
/// the whole `eta0 * phi(t)`.
fn strength(amount: &Dynamic) -> Res<(f64, Schedule)> {
    if let Some(s) = amount.clone().try_cast::<Schedule>() {
        return Ok((1.0, s));
    }
    Ok((num(amount, "steering strength")?, Schedule::constant(1.0)))
}

/// `piece.continue_from(clip [, #{steer_from: "clip" | "new"}])`: the clip is looked up beside
/// the recipe, then in the output folder (a take the recipe rendered earlier; in watch mode the
/// one this run is about to put there).
fn continue_from(host: &Host, p: &mut Piece, clip: &str, opts: Option<Map>) -> Res<Piece> {
    let mut steer_from_clip = false;
    for (k, v) in opts.unwrap_or_default() {
        match (k.as_str(), v.clone().into_string().ok().as_deref()) {
            ("steer_from", Some("clip")) => steer_from_clip = true,
            ("steer_from", Some("new")) => steer_from_clip = false,
            ("steer_from", _) => {
                return fail(format!(
                    "continue_from: steer_from is \"clip\" or \"new\", not {v}"
                ))
            }
            (other, _) => {
                return fail(format!(
                    "continue_from: unknown option `{other}` (known: steer_from)"
                ))
            }
        }
    }
    let path = Path::new(clip);
    let candidates = if path.is_absolute() {
        vec![path.to_path_buf()]
    } else {
        vec![
            host.recipe_dir().join(path),
            host.options.out_dir.join(path),
        ]
    };
    let pending = |c: &Path| host.renderer.try_lock().is_ok_and(|r| r.has_pending(c));
    // The first place that holds the clip, in order (a take this run staged counts as held
    // where it will be put), so the same recipe always continues the same file.
    let found = candidates.iter().find(|c| pending(c) || c.is_file());
    let Some(found) = found else {
        return fail(format!("continue_from: clip `{clip}` not found (looked beside the recipe and in the output folder)"));
    };
    p.clip = Some(if pending(found) {
        // Rendered by this run and not yet in place: the renderer reads the staged take.
        ClipPrompt {
            path: found.clone(),
            hash: 0,
            seconds: 0.0,
            steer_from_clip,
        }
    } else {
        ClipPrompt::new(found, steer_from_clip).map_err(|e| format!("continue_from: {e}"))?
    });
    Ok(p.clone())
}

/// The most terms one piece may hold: each copies its direction, and a recipe looping over
/// `steer` would otherwise fill memory.
pub const MAX_TERMS: usize = 256;

fn add_term(p: &mut Piece, d: Direction, amount: &Dynamic, opts: Option<Map>) -> Res<Piece> {
    let (eta0, schedule) = strength(amount)?;
    let mut term = Term {
        direction: d,
        strength: eta0,
        schedule,
        weights: p.layers,
        gate: None,
        unit: StrengthUnit::Absolute,
    };
    for (k, v) in opts.unwrap_or_default() {
        match k.as_str() {
            "gate" => term.gate = Some(probability(&v, "gate")?),
            "layers" => term.weights = weights_rule(&v)?,
            "delay" => term.schedule = bounded(term.schedule.shift(num(&v, "delay")?))?,
            "unit" => term.unit = strength_unit(&v)?,
            other => {
                return fail(format!(
                    "steer: unknown option `{other}` (known: gate, layers, delay, unit)"
                ))
            }
        }
    }
    // Residual units need the direction's norms, and the term must steer something: said
    // here, at the steer call, not at render.
    term.check().map_err(|e| e.to_string())?;
    if p.plan.terms.len() >= MAX_TERMS {
        return fail(format!(
            "steer: a piece holds at most {MAX_TERMS} terms (add directions together with `+` \
             to steer with more at once)"
        ));
    }
    p.plan.terms.push(term);
    Ok(p.clone())
}

/// `p` as it prints, followed by the overrides (`--seconds`, `--greedy`) that replace its own
/// settings when it is rendered.
fn shown(host: &Host, p: &Piece) -> String {
    let mut overrides = Vec::new();
    if let Some(s) = host.options.seconds_override {
        overrides.push(format!("--seconds {s}"));
    }
    if host.options.greedy {
        overrides.push("--greedy".to_string());
    }
    if overrides.is_empty() {
        p.to_string()
    } else {
        format!(
            "{p}\n  rendered with {} (command line)",
            overrides.join(" ")
        )
    }
}

/// Registers the piece type and verbs, `model` and `render`.
pub(crate) fn register(engine: &mut Engine, host: &Arc<Host>) {
    engine.register_type_with_name::<Piece>("Piece");
    // A piece prints with the command line's overrides in force, since they, not the piece's
    // own settings, are what a render will use.
    let h = host.clone();
    engine.register_fn("to_string", move |p: &mut Piece| shown(&h, p));
    let h = host.clone();
    engine.register_fn("to_debug", move |p: &mut Piece| shown(&h, p));
    engine.register_get("prompt", |p: &mut Piece| p.prompt.clone());
    engine.register_get("seconds", |p: &mut Piece| p.seconds);
    engine.register_get("terms", |p: &mut Piece| p.plan.terms.len() as INT);

    engine.register_fn("piece", |prompt: &str, seconds: Dynamic| -> Res<Piece> {
        let s = num(&seconds, "piece: seconds")?;
        if !(s > 0.0 && s.is_finite()) {
            return fail(format!("piece: length must be positive seconds, got {s}"));
        }
        Ok(Piece::new(prompt, s))
    });
    engine.register_fn("steer", |p: &mut Piece, d: Direction, amount: Dynamic| {
        add_term(p, d, &amount, None)
    });
    engine.register_fn(
        "steer",
        |p: &mut Piece, d: Direction, amount: Dynamic, opts: Map| {
            add_term(p, d, &amount, Some(opts))
        },
    );
    engine.register_fn("gate", |p: &mut Piece, prob: Dynamic| -> Res<Piece> {
        p.plan.gate = probability(&prob, "gate")?;
        Ok(p.clone())
    });
    engine.register_fn("seed", |p: &mut Piece, seed: INT| -> Piece {
        p.plan.seed = seed as u64;
        p.clone()
    });
    engine.register_fn("tempo", |p: &mut Piece, bpm: Dynamic| -> Res<Piece> {
        let bpm = num(&bpm, "tempo")?;
        if !(bpm > 0.0 && bpm.is_finite()) {
            return fail(format!(
                "tempo must be positive beats per minute, got {bpm}"
            ));
        }
        p.plan.tempo = Some(bpm);
        Ok(p.clone())
    });
    engine.register_fn("layers", |p: &mut Piece, rule: Dynamic| -> Res<Piece> {
        p.layers = weights_rule(&rule)?;
        Ok(p.clone())
    });
    engine.register_fn("cond_only", |p: &mut Piece| -> Piece {
        p.plan.conditional_only = true;
        p.clone()
    });
    engine.register_fn("cfg", |p: &mut Piece, s: Dynamic| -> Res<Piece> {
        let cfg = num(&s, "cfg")?;
        if !(cfg.is_finite() && cfg >= 0.0) {
            return fail(format!("cfg must be a non-negative number, got {cfg}"));
        }
        p.cfg = cfg;
        Ok(p.clone())
    });
    let h = host.clone();
    engine.register_fn("continue_from", move |p: &mut Piece, clip: &str| {
        continue_from(&h, p, clip, None)
    });
    let h = host.clone();
    engine.register_fn(
        "continue_from",
        move |p: &mut Piece, clip: &str, opts: Map| continue_from(&h, p, clip, Some(opts)),
    );
    engine.register_fn("window", |p: &mut Piece, w: Dynamic| -> Res<Piece> {
        let w = num(&w, "window")?;
        check_window_seconds(Some(w), None).map_err(|e| format!("window: {e}"))?;
        p.window = Some((w, None));
        Ok(p.clone())
    });
    engine.register_fn(
        "window",
        |p: &mut Piece, w: Dynamic, stride: Dynamic| -> Res<Piece> {
            let (w, t) = (num(&w, "window")?, num(&stride, "window: stride")?);
            check_window_seconds(Some(w), Some(t)).map_err(|e| format!("window: {e}"))?;
            p.window = Some((w, Some(t)));
            Ok(p.clone())
        },
    );
    engine.register_fn("negative", |p: &mut Piece, text: &str| -> Res<Piece> {
        // Only the text is checked here (any guidance passes): `cfg` may still change, so
        // `render` checks the pair.
        crate::model::check_negative_prompt(Some(text), f64::INFINITY)
            .map_err(|e| format!("negative: {e} (`.negative(())` removes one)"))?;
        p.negative = Some(text.to_string());
        Ok(p.clone())
    });
    engine.register_fn("negative", |p: &mut Piece, _none: ()| -> Piece {
        p.negative = None;
        p.clone()
    });
    engine.register_fn("greedy", |p: &mut Piece| -> Piece {
        p.sampling = Sampling::Greedy;
        p.clone()
    });
    engine.register_fn("top_k", |p: &mut Piece, k: INT| -> Res<Piece> {
        let temperature = match p.sampling {
            Sampling::TopK { temperature, .. } => temperature,
            Sampling::Greedy => DEFAULT_TEMPERATURE,
        };
        if k < 1 {
            return fail(format!("top_k must be at least 1, got {k}"));
        }
        p.sampling = Sampling::TopK {
            k: k as usize,
            temperature,
        };
        Ok(p.clone())
    });
    engine.register_fn("temperature", |p: &mut Piece, t: Dynamic| -> Res<Piece> {
        let t = num(&t, "temperature")?;
        if t <= 0.0 {
            return fail(format!("temperature must be positive, got {t}"));
        }
        let k = match p.sampling {
            Sampling::TopK { k, .. } => k,
            Sampling::Greedy => DEFAULT_TOP_K,
        };
        p.sampling = Sampling::TopK { k, temperature: t };
        Ok(p.clone())
    });
    engine.register_fn("+", |a: Piece, b: Piece| -> Piece {
        let mut p = a.clone();
        p.plan = a.plan.merge(&b.plan);
        p
    });

    let h = host.clone();
    engine.register_fn("help", move || {
        let lines: Vec<String> = super::VERBS.iter().map(|(_, u)| format!("  {u}")).collect();
        h.say(format!("recipe verbs:\n{}", lines.join("\n")));
    });
    let h = host.clone();
    engine.register_fn("model", move |spec: &str| -> Res<()> {
        if spec.trim().is_empty() {
            return fail("model: empty model name");
        }
        *h.model.lock().map_err(|_| "model lock poisoned")? = Some(spec.to_string());
        Ok(())
    });

    let h = host.clone();
    engine.register_fn("play", move |ctx: NativeCallContext, p: &mut Piece| {
        play(&h, &ctx, p, None)
    });
    let h = host.clone();
    engine.register_fn(
        "play",
        move |ctx: NativeCallContext, p: &mut Piece, opts: Map| play(&h, &ctx, p, Some(opts)),
    );
    let h = host.clone();
    engine.register_fn("stop", move || -> Res<String> {
        let mut renderer = h
            .renderer
            .try_lock()
            .map_err(|_| "stop cannot be called while a render is running")?;
        renderer.stop().or_else(fail)
    });
    let h = host.clone();
    engine.register_fn("wait", move || -> Res<String> {
        let mut renderer = h
            .renderer
            .try_lock()
            .map_err(|_| "wait cannot be called while a render is running")?;
        renderer.wait().or_else(fail)
    });
    let h = host.clone();
    engine.register_fn("playing", move || -> String {
        h.renderer
            .try_lock()
            .ok()
            .and_then(|mut r| r.playing())
            .unwrap_or_else(|| "nothing is playing".into())
    });
    let h = host.clone();
    engine.register_fn(
        "render",
        move |ctx: NativeCallContext, p: &mut Piece, path: &str| render(&h, &ctx, p, path),
    );
}

/// What rendering or playing `p` asks of the renderer (warnings said), its audio going to
/// `out`.
fn request(host: &Host, p: &Piece, verb: &str, out: PathBuf) -> Res<RenderRequest> {
    crate::model::check_negative_prompt(p.negative.as_deref(), p.cfg)
        .map_err(|e| format!("{verb}: {e}"))?;
    let warnings = p.plan.warnings();
    for w in warnings
        .into_iter()
        .chain(crate::model::guidance_warning(p.cfg))
    {
        host.say(format!("warning: {w}"));
    }
    let mut sampling = p.sampling;
    if host.options.greedy {
        sampling = Sampling::Greedy;
    }
    Ok(RenderRequest {
        model: host.model_spec(),
        prompt: p.prompt.clone(),
        seconds: host.options.seconds_override.unwrap_or(p.seconds),
        plan: p.plan.clone(),
        sampling,
        guidance_scale: p.cfg,
        negative_prompt: p.negative.clone(),
        seed: p.plan.seed,
        clip: p.clip.clone(),
        window: p.window.map(|(w, _)| w),
        stride: p.window.and_then(|(_, t)| t),
        out,
    })
}

/// `play(piece [, #{forever, ramp, keep}])`: see [`crate::script::Renderer::play`].
fn play(host: &Host, ctx: &NativeCallContext, p: &Piece, opts: Option<Map>) -> Res<()> {
    let mut play = crate::script::PlayOptions::default();
    for (key, value) in opts.unwrap_or_default() {
        match key.as_str() {
            "forever" => {
                play.forever = value
                    .as_bool()
                    .map_err(|t| format!("play: forever must be true or false, got {t}"))?
            }
            "ramp" => {
                let r = value
                    .as_float()
                    .or_else(|_| value.as_int().map(|i| i as f64))
                    .map_err(|t| format!("play: ramp must be seconds, got {t}"))?;
                if !(r.is_finite() && r >= 0.0) {
                    return Err(format!("play: ramp must be 0 s or more, got {r}").into());
                }
                play.ramp_s = r;
            }
            "keep" => {
                let path = value
                    .into_string()
                    .map_err(|t| format!("play: keep must be a file name, got {t}"))?;
                let out = sandbox::output_path(
                    &path,
                    &host.options.out_dir,
                    &host.options.allow_write,
                    "wav",
                )
                .or_else(fail)?;
                play.keep = Some(out);
            }
            other => {
                return Err(format!("play: unknown option {other:?} (forever, ramp, keep)").into())
            }
        }
    }
    let request = request(host, p, "play", play.keep.clone().unwrap_or_default())?;
    if let Some(keep) = &play.keep {
        let seconds = if play.forever { 0.0 } else { request.seconds };
        host.claim_output("play", keep, ((seconds * 32_000.0 * 4.0) as u64) + 44)?;
    }
    let said = super::with_curves(host, ctx, |curves| {
        let mut renderer = host
            .renderer
            .try_lock()
            .map_err(|_| "play cannot be called while a render is running")?;
        renderer.play(&request, &play, curves).or_else(fail)
    })?;
    host.say(said);
    Ok(())
}

/// `render` in live mode: the run's first render plays (or steers the piece playing), the
/// others are skipped.
fn render_live(
    host: &Host,
    ctx: &NativeCallContext,
    p: &Piece,
    out: &std::path::Path,
    live: &crate::script::PlayOptions,
) -> Res<()> {
    // A path no file can have marks the run's live piece among its outputs.
    let marker = PathBuf::from("\0live");
    let first = {
        let mut outputs = host
            .run_outputs
            .lock()
            .map_err(|_| "output table poisoned")?;
        let first = !outputs.contains(&marker);
        if first {
            outputs.push(marker);
        }
        first
    };
    if !first {
        host.say(format!(
            "skipped {}: live mode plays the first piece a run renders",
            out.display()
        ));
        return Ok(());
    }
    let request = request(host, p, "render", PathBuf::new())?;
    let said = super::with_curves(host, ctx, |curves| {
        let mut renderer = host
            .renderer
            .try_lock()
            .map_err(|_| "render cannot be called while another render is running")?;
        renderer.play(&request, live, curves).or_else(fail)
    })?;
    host.say(said);
    Ok(())
}

fn render(host: &Host, ctx: &NativeCallContext, p: &Piece, path: &str) -> Res<()> {
    let out = sandbox::output_path(
        path,
        &host.options.out_dir,
        &host.options.allow_write,
        "wav",
    )
    .or_else(fail)?;
    if let Some(live) = &host.options.live {
        return render_live(host, ctx, p, &out, live);
    }
    let request = request(host, p, "render", out.clone())?;
    // Audio bytes as MusicGen writes them (32 kHz, 32-bit float), the clip a continuation
    // holds included, counted before the work.
    let seconds = request.seconds.max(0.0) + request.clip.as_ref().map_or(0.0, |c| c.seconds);
    let audio_bytes = ((seconds * 32_000.0 * 4.0) as u64).saturating_add(44);
    host.claim_output("render", &out, audio_bytes)?;
    let done = super::with_curves(host, ctx, |curves| {
        let mut renderer = host
            .renderer
            .try_lock()
            .map_err(|_| "render cannot be called while another render is running")?;
        renderer.render(&request, curves).or_else(fail)
    })?;
    match done {
        Rendered::Written => host.say(format!("wrote {}", out.display())),
        Rendered::Unchanged => host.say(format!("unchanged {}", out.display())),
        Rendered::Staged => host.say(format!(
            "rendered {} (it replaces the file when the recipe finishes)",
            out.display()
        )),
    }
    if let Ok(mut w) = host.written.lock() {
        w.push(out);
    }
    Ok(())
}
