//! The Rhai engine for recipes: registered types and functions, sandbox, diagnostics.
//!
//! A recipe is a Rhai script that builds [`Piece`]s (a prompt, a length and a steering
//! [`Plan`]) and renders them. The engine's surface is split by verb family,
//! one file each: [`schedules`] (time curves and their algebra), [`directions`] (loading concept
//! directions and their algebra), [`probes`] (probe scores, classifying and projecting clips),
//! [`pieces`] (pieces, steering terms, `render`, `model`),
//! [`plot`] (terminal sparklines and PNG plots), [`scores`] (`clap(wav, text)`); [`modules`] resolves `import` (the recipe's
//! folder, then the built-in `stdlib/`), [`sandbox`] holds the limits and the output-path rules,
//! and [`diagnostics`] turns Rhai errors into miette reports pointing at the recipe's line and
//! column (also inside imported modules).
//!
//! Rendering goes through the [`Renderer`] trait, so recipes can be run without a model
//! ([`DryRun`]: tests, checks) or with MusicGen ([`render::ModelRenderer`], what the CLI uses).

pub mod diagnostics;
pub mod directions;
pub mod modules;
pub mod pieces;
pub mod plot;
pub mod probes;
pub mod render;
pub mod sandbox;
pub mod schedules;
pub mod scores;
pub mod session;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rhai::{Dynamic, Engine, EvalAltResult, FnPtr, NativeCallContext, Position};

pub use diagnostics::ScriptError;
pub use pieces::Piece;
pub use sandbox::Limits;
pub use session::Session;

use crate::model::Sampling;
use crate::probe::eval::{PooledWindow, Windowing};
use crate::probe::Pooling;
use crate::steer::Plan;

/// One `render(piece, "file.wav")` call of a recipe, ready for a [`Renderer`].
#[derive(Debug, Clone)]
pub struct RenderRequest {
    /// Hub id or folder of the model.
    pub model: String,
    /// Text prompt.
    pub prompt: String,
    /// Length of the music in seconds.
    pub seconds: f64,
    /// What to steer, when and where.
    pub plan: Plan,
    /// Token choice.
    pub sampling: Sampling,
    /// Classifier-free guidance scale.
    pub guidance_scale: f64,
    /// What guidance steers away from (`None`: nothing).
    pub negative_prompt: Option<String>,
    /// Seed of the sampling RNG (the gate has its own, `plan.seed`).
    pub seed: u64,
    /// The clip the piece continues (`seconds` is then the new part's length).
    pub clip: Option<crate::piece::ClipPrompt>,
    /// Seconds one pass holds and its stride (`None`: the defaults of [`crate::piece`]).
    pub window: Option<f64>,
    /// See `window`.
    pub stride: Option<f64>,
    /// Where the WAV goes (already checked against the sandbox rules).
    pub out: PathBuf,
}

/// How a piece is played live (see [`Renderer::play`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PlayOptions {
    /// Play window after window until stopped, instead of the piece's seconds.
    pub forever: bool,
    /// Seconds over which a steering change moves from the old steering to the new (0: at
    /// once).
    pub ramp_s: f64,
    /// A file that keeps what is played (already checked against the sandbox rules).
    pub keep: Option<PathBuf>,
}

/// Samples the user functions (`curve(|t| ...)`) inside a plan's schedules: `(id, t) -> value`.
pub type CurveSampler<'a> = dyn FnMut(usize, f64) -> Result<f64, String> + 'a;

/// What a [`Renderer`] did with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rendered {
    /// The file was written.
    Written,
    /// The file already holds exactly this piece, so nothing was generated (watch mode).
    Unchanged,
    /// Rendered beside the file, to replace it when the whole recipe succeeds (watch mode).
    Staged,
}

/// Turns render requests into audio files.
pub trait Renderer: Send {
    /// Renders one piece. `curves` samples user-function schedules; call it (through
    /// [`Plan::coefficients`] or [`crate::steer::PlanHook::new`]) before generation starts.
    fn render(
        &mut self,
        request: &RenderRequest,
        curves: &mut CurveSampler<'_>,
    ) -> Result<Rendered, String>;

    /// Decoder steps per second of audio for `model` (what plans are sampled at).
    fn frame_rate(&mut self, _model: &str) -> Result<f64, String> {
        Ok(crate::steer::schedule::PAPER_FRAME_RATE)
    }

    /// Plays a piece in the background while it is generated and returns at once. When the
    /// piece playing now differs from `request` only in its steering, it is not restarted: it
    /// takes the new steering from its next frames (ramping over `play.ramp_s`). Returns a line
    /// for the user.
    fn play(
        &mut self,
        _request: &RenderRequest,
        _play: &PlayOptions,
        _curves: &mut CurveSampler<'_>,
    ) -> Result<String, String> {
        Err("playing needs a model and a player (the REPL, or baton watch --live)".into())
    }

    /// Stops the piece playing; returns what it did.
    fn stop(&mut self) -> Result<String, String> {
        Err("nothing is playing".into())
    }

    /// Waits until the piece playing ends (Ctrl-C ends the wait and the piece); returns what
    /// it did.
    fn wait(&mut self) -> Result<String, String> {
        Err("nothing is playing".into())
    }

    /// How the playing piece goes (`None`: nothing plays).
    fn playing(&mut self) -> Option<String> {
        None
    }

    /// The file standing in for `path` when this run has rendered it but not yet put it in
    /// place (watch mode's staged renders): it can be read there although it is not on disk
    /// under its own name yet.
    fn staged(&self, _path: &Path) -> Option<PathBuf> {
        None
    }

    /// Whether `path` is a file this run has rendered but not yet put in place (see
    /// [`Renderer::staged`]).
    fn has_pending(&self, path: &Path) -> bool {
        self.staged(path).is_some()
    }

    /// Outputs of decoder blocks `layers` for a mono WAV file (teacher-forced, no text), pooled
    /// over time, one vector per requested block: what probes see. The whole file is one
    /// window unless `windowing` cuts it (each window read on its own). Used by
    /// `probe.classify` and `probe.project`.
    fn pooled(
        &mut self,
        _model: &str,
        _audio: &Path,
        _layers: &[usize],
        _pooling: Pooling,
        _windowing: Option<Windowing>,
    ) -> Result<Vec<PooledWindow>, String> {
        Err("reading audio through a probe needs a model (this run renders nothing)".into())
    }
}

/// A renderer shared between runs (watch mode and the REPL keep loaded models this way).
impl<R: Renderer> Renderer for Arc<Mutex<R>> {
    fn render(
        &mut self,
        request: &RenderRequest,
        curves: &mut CurveSampler<'_>,
    ) -> Result<Rendered, String> {
        lock(self)?.render(request, curves)
    }

    fn frame_rate(&mut self, model: &str) -> Result<f64, String> {
        lock(self)?.frame_rate(model)
    }

    fn play(
        &mut self,
        request: &RenderRequest,
        play: &PlayOptions,
        curves: &mut CurveSampler<'_>,
    ) -> Result<String, String> {
        lock(self)?.play(request, play, curves)
    }

    fn stop(&mut self) -> Result<String, String> {
        lock(self)?.stop()
    }

    fn wait(&mut self) -> Result<String, String> {
        lock(self)?.wait()
    }

    fn playing(&mut self) -> Option<String> {
        lock(self).ok()?.playing()
    }

    fn staged(&self, path: &Path) -> Option<PathBuf> {
        self.lock().ok()?.staged(path)
    }

    fn pooled(
        &mut self,
        model: &str,
        audio: &Path,
        layers: &[usize],
        pooling: Pooling,
        windowing: Option<Windowing>,
    ) -> Result<Vec<PooledWindow>, String> {
        lock(self)?.pooled(model, audio, layers, pooling, windowing)
    }
}

/// Runs `run` with a sampler of the session's user functions (`curve(|t| ...)`), called through
/// the interpreter: before generation starts (never from inside the decoder loop), or to read
/// or plot a schedule. Their operations count against the sandbox's limit.
pub(crate) fn with_curves<T>(
    host: &Host,
    ctx: &NativeCallContext,
    run: impl FnOnce(&mut CurveSampler<'_>) -> Result<T, Box<EvalAltResult>>,
) -> Result<T, Box<EvalAltResult>> {
    let curves = host
        .curves
        .lock()
        .map_err(|_| "curve table poisoned")?
        .clone();
    let mut sample = |id: usize, t: f64| -> Result<f64, String> {
        let f = curves
            .get(id)
            .ok_or_else(|| format!("unknown curve #{id}"))?;
        let v: Dynamic = f.call_within_context(ctx, (t,)).map_err(|e| match *e {
            // The run's budget ran out inside the curve: say which budget, not just "terminated".
            EvalAltResult::ErrorTerminated(reason, _) => reason.to_string(),
            other => other.to_string(),
        })?;
        v.as_float()
            .or_else(|_| v.as_int().map(|i| i as f64))
            .map_err(|t| format!("returned {t}, not a number"))
    };
    run(&mut sample)
}

fn lock<R>(shared: &Mutex<R>) -> Result<std::sync::MutexGuard<'_, R>, String> {
    shared
        .lock()
        .map_err(|_| "the renderer panicked in an earlier run".to_string())
}

/// What a [`DryRun`] was asked to render.
#[derive(Debug, Default, Clone)]
pub struct DryRunLog {
    /// Every request, in order.
    pub requests: Vec<RenderRequest>,
    /// Per request: the plan's coefficients per term and step (`[term][step]`).
    pub coefficients: Vec<Vec<Vec<f64>>>,
}

/// A renderer that renders nothing and remembers what it was asked, sampling each plan at
/// `frame_rate` (dry runs and tests). Clones share one log.
#[derive(Debug, Clone)]
pub struct DryRun {
    log: Arc<Mutex<DryRunLog>>,
    /// Frame rate used to sample plans.
    pub frame_rate: f64,
}

impl Default for DryRun {
    fn default() -> Self {
        DryRun {
            log: Arc::default(),
            frame_rate: 50.0,
        }
    }
}

impl DryRun {
    /// A copy of the log so far.
    pub fn log(&self) -> DryRunLog {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

impl Renderer for DryRun {
    fn render(
        &mut self,
        request: &RenderRequest,
        curves: &mut CurveSampler<'_>,
    ) -> Result<Rendered, String> {
        let steps = (request.seconds * self.frame_rate).round() as usize;
        let c = request
            .plan
            .coefficients(steps, self.frame_rate, curves)
            .map_err(|e| e.to_string())?;
        let mut log = self.log.lock().map_err(|_| "dry-run log poisoned")?;
        log.requests.push(request.clone());
        log.coefficients.push(c);
        Ok(Rendered::Written)
    }

    fn frame_rate(&mut self, _model: &str) -> Result<f64, String> {
        Ok(self.frame_rate)
    }
}

/// How a recipe runs: where directions come from, where audio may go, overrides and limits.
#[derive(Debug, Clone)]
pub struct RecipeOptions {
    /// Direction library: `notes:C#` is `DIR/notes/C#.safetensors`.
    pub directions: PathBuf,
    /// Output folder: every path a recipe writes is relative to it.
    pub out_dir: PathBuf,
    /// Extra places a recipe may write to (absolute or `..` paths under these are allowed).
    pub allow_write: Vec<PathBuf>,
    /// Model used when the recipe does not call `model(...)`.
    pub default_model: String,
    /// Model that wins over the recipe's `model(...)` (tests, CI).
    pub model_override: Option<String>,
    /// Length that wins over every piece's length (short test renders).
    pub seconds_override: Option<f64>,
    /// Force greedy decoding in every piece.
    pub greedy: bool,
    /// Sandbox limits.
    pub limits: Limits,
    /// Echo `print` and `plot` output to stdout (they are always collected in the outcome).
    pub echo: bool,
    /// CLAP checkpoint `clap(wav, text)` loads (hub id or folder; the CLI's `--clap-model`).
    pub clap_model: String,
    /// Live mode (`baton watch --live`): the first piece a run renders is played instead of
    /// written, and a later run that renders it with other steering steers it as it plays.
    pub live: Option<PlayOptions>,
}

impl Default for RecipeOptions {
    fn default() -> Self {
        RecipeOptions {
            directions: PathBuf::from("directions"),
            out_dir: PathBuf::from("."),
            allow_write: Vec::new(),
            default_model: "facebook/musicgen-small".into(),
            model_override: None,
            seconds_override: None,
            greedy: false,
            limits: Limits::default(),
            echo: true,
            clap_model: crate::eval::clap::DEFAULT_MODEL.into(),
            live: None,
        }
    }
}

/// What running a recipe produced.
#[derive(Debug, Default)]
pub struct RecipeOutcome {
    /// Files written by `render` and `plot`, in order.
    pub written: Vec<PathBuf>,
    /// Lines printed by `print`, `debug` and `plot`.
    pub printed: Vec<String>,
}

/// State shared by the registered functions of one recipe run.
pub(crate) struct Host {
    pub options: RecipeOptions,
    /// Folder of the recipe: relative bundle paths and user modules are looked up there first.
    pub recipe_dir: Mutex<PathBuf>,
    pub model: Mutex<Option<String>>,
    pub curves: Mutex<Vec<FnPtr>>,
    pub renderer: Mutex<Box<dyn Renderer>>,
    pub written: Mutex<Vec<PathBuf>>,
    /// Files written by the current run (one recipe, one REPL input): a second write to one
    /// of them is refused, since only the last would survive.
    pub run_outputs: Mutex<Vec<PathBuf>>,
    /// What the current run has used of its limits.
    pub budget: sandbox::Budget,
    pub printed: Mutex<Vec<String>>,
    /// Source text per module name, for error reports inside imported modules.
    pub sources: Mutex<BTreeMap<String, String>>,
    pub bundles: Mutex<HashMap<PathBuf, directions::LoadedBundle>>,
    /// The CLAP model of `clap(wav, text)`, loaded on its first call and kept for the session.
    pub clap: Mutex<Option<Arc<crate::eval::clap::Clap>>>,
}

impl Host {
    /// Folder of the recipe (or module file) being run.
    pub(crate) fn recipe_dir(&self) -> PathBuf {
        self.recipe_dir
            .lock()
            .map(|d| d.clone())
            .unwrap_or_else(|_| PathBuf::from("."))
    }

    /// Claims `out` for the current run, which will write about `bytes` there: an error naming
    /// `verb` when the run already wrote it, or past the run's render and byte budgets.
    pub(crate) fn claim_output(
        &self,
        verb: &str,
        out: &Path,
        bytes: u64,
    ) -> Result<(), Box<EvalAltResult>> {
        self.budget
            .output(&self.options.limits, verb == "render", bytes)
            .map_err(|e| format!("{verb}: {e}"))?;
        let mut outputs = self
            .run_outputs
            .lock()
            .map_err(|_| "output table poisoned")?;
        if outputs.iter().any(|p| p == out) {
            return fail(format!(
                "{verb}: this run already wrote {}; give each {verb} its own file (the last \
                 would silently replace the others)",
                out.display()
            ));
        }
        outputs.push(out.to_path_buf());
        Ok(())
    }

    pub(crate) fn say(&self, line: String) {
        if self.options.echo {
            println!("{line}");
        }
        if let Ok(mut p) = self.printed.lock() {
            p.push(line);
        }
    }

    /// The model renders use: the override, else the recipe's `model(...)`, else the default.
    pub(crate) fn model_spec(&self) -> String {
        if let Some(m) = &self.options.model_override {
            return m.clone();
        }
        self.model
            .lock()
            .ok()
            .and_then(|m| m.clone())
            .unwrap_or_else(|| self.options.default_model.clone())
    }
}

/// Usage line of every recipe verb (error hints and documentation).
pub const VERBS: &[(&str, &str)] = &[
    (
        "direction",
        "direction(\"concept:target\" | \"file.safetensors\") -> .name, .scores, .residual_norms, .blocks, .best_block, .metric, .width",
    ),
    (
        "probe",
        "probe(\"concept:target\") -> .scores, .best_block, .best_score, .direction, .classes",
    ),
    ("library", "library() -> names in the direction library"),
    (
        "classify",
        "probe.classify(\"clip.wav\" [, #{window: s, hop: s}]) -> #{class, probs: #{class: p}, block}, or one per window with start/end  (needs BUNDLE.classifier.safetensors from `baton train --task multiclass`)",
    ),
    (
        "project",
        "probe.project(\"clip.wav\" [, #{window: s, hop: s}]) -> #{block, score, projection}, or one per window  (onto the direction at the best block)",
    ),
    (
        "clap",
        "clap(\"clip.wav\", \"text\") -> CLAP cosine of the clip and the text  (model: --clap-model, default laion/larger_clap_music, loaded on first use)",
    ),
    ("help", "help()"),
    ("piece", "piece(prompt, seconds) -> .prompt, .seconds, .terms"),
    (
        "steer",
        "piece.steer(direction, strength_or_schedule [, #{gate: p, layers: \"top:8\", delay: s, unit: \"residual\"}])",
    ),
    ("gate", "piece.gate(p)"),
    (
        "negative",
        "piece.negative(\"text\")  (guidance steers away from it; needs cfg above 1; .negative(()) removes it)",
    ),
    ("seed", "piece.seed(n)"),
    (
        "continue_from",
        "piece.continue_from(\"clip.wav\" [, #{steer_from: \"clip\" | \"new\"}])  (the piece continues the clip; its seconds are the new part's)",
    ),
    (
        "window",
        "piece.window(seconds [, stride])  (longer pieces are made window by window; default 30 s, stride 18 s)",
    ),
    ("tempo", "piece.tempo(bpm)  (schedules then count beats)"),
    (
        "cfg",
        "piece.cfg(scale)  (classifier-free guidance; default 3, 1 turns it off)",
    ),
    ("greedy", "piece.greedy()  (always the most likely token)"),
    ("top_k", "piece.top_k(k)  (sample among the k most likely tokens; default 250)"),
    (
        "temperature",
        "piece.temperature(t)  (divides the logits before sampling; default 1)",
    ),
    (
        "cond_only",
        "piece.cond_only()  (steer only the conditional half of the guidance batch)",
    ),
    (
        "layers",
        "piece.layers(\"exp\" | \"exp:KAPPA\" | \"linear\" | \"uniform\" | \"top:K\")",
    ),
    ("render", "render(piece, \"file.wav\")"),
    (
        "play",
        "play(piece [, #{forever: true, ramp: seconds, keep: \"take.wav\"}])  (plays while it is generated and returns at once; playing the same piece with other steering steers it as it plays)",
    ),
    ("stop", "stop()  (ends the piece playing)"),
    ("wait", "wait()  (waits until the piece playing ends; Ctrl-C ends it)"),
    ("playing", "playing()  (how the piece playing goes: speed, buffer)"),
    ("model", "model(\"facebook/musicgen-small\" | folder)"),
    (
        "plot",
        "plot(schedule [, seconds] [, \"file.png\"]) | plot(direction [, \"file.png\"])",
    ),
    ("constant", "constant(v)"),
    ("linear", "linear(from, to, t0, t1)"),
    ("rise", "rise(t0, t1)"),
    ("fall", "fall(t0, t1)"),
    ("exp_decay", "exp_decay(rate_per_20ms)"),
    ("logistic", "logistic(center, width)"),
    ("sine", "sine(period [, phase_in_cycles])"),
    ("cosine", "cosine(period [, phase_in_cycles])"),
    ("square", "square(period [, duty])"),
    ("step", "step(t0)"),
    ("at", "at(t0, value)"),
    ("adsr", "adsr(attack, decay, sustain, release, note_off)"),
    ("keyframes", "keyframes([[t, v], ...] [, \"smooth\"])"),
    ("noise", "noise(seed, knots_per_unit)"),
    ("curve", "curve(|t| ...)"),
    (
        "knob",
        "knob(cc [, initial])  (a MIDI controller's value, 0 to 1, read as each step is made; --midi PORT connects one)",
    ),
    ("clamp", "clamp(schedule, lo, hi)"),
    ("min", "min(a, b)  (the lower of two schedules, or a schedule and a number)"),
    ("max", "max(a, b)  (the higher of two schedules, or a schedule and a number)"),
    ("shift", "shift(schedule, dt)"),
    ("delay", "delay(schedule, dt)"),
    ("stretch", "stretch(schedule, factor)"),
    ("reverse", "reverse(schedule, length)"),
    ("repeat", "repeat(schedule, period)"),
    ("seq", "seq([[schedule, duration], ...])"),
    ("crossfade", "crossfade(a, b, t0, t1)"),
    ("mix", "mix(a, b, weight)"),
    ("value", "schedule.value(t)"),
    ("orth", "direction.orth(other)"),
    ("cosine", "direction.cosine(other) -> #{block: cos}"),
    ("top", "direction.top(k)"),
    ("blocks", "direction.blocks(2..10 | [1, 5, 7])"),
    ("weights", "direction.weights(\"exp\") -> #{block: weight}"),
    ("normalize", "direction.normalize()"),
    ("scale", "direction.scale(k)"),
];

/// One line of recipe code per verb of [`VERBS`], showing it in use (`:doc NAME` prints it
/// under the signature). A test compiles every one.
pub const EXAMPLES: &[(&str, &str)] = &[
    (
        "direction",
        r#"let cs = direction("notes:C#"); print(cs.best_block);"#,
    ),
    (
        "probe",
        r#"let p = probe("chords:maj"); print(p.best_score);"#,
    ),
    ("library", r#"for name in library() { print(name); }"#),
    (
        "classify",
        r#"print(probe("chords:maj").classify("take.wav", #{window: 4.0, hop: 2.0}));"#,
    ),
    (
        "project",
        r#"print(probe("notes:C#").project("take.wav"));"#,
    ),
    (
        "clap",
        r#"print(clap("take.wav", "lofi hip hop with piano"));"#,
    ),
    ("help", "help()"),
    ("piece", r#"let p = piece("lofi piano", 20.0);"#),
    (
        "steer",
        r#"let p = piece("lofi piano", 20.0).steer(direction("notes:C#"), 0.6 * rise(0.0, 8.0));"#,
    ),
    ("gate", r#"let p = piece("lofi piano", 20.0).gate(0.3);"#),
    (
        "negative",
        r#"let p = piece("lofi piano", 20.0).negative("drums");"#,
    ),
    ("seed", r#"let p = piece("lofi piano", 20.0).seed(7);"#),
    (
        "continue_from",
        r#"let p = piece("lofi piano", 20.0).continue_from("intro.wav");"#,
    ),
    (
        "window",
        r#"let p = piece("ambient drone", 120.0).window(30.0, 18.0);"#,
    ),
    (
        "tempo",
        r#"let p = piece("house", 20.0).tempo(124.0).steer(direction("notes:C"), square(4.0));"#,
    ),
    ("cfg", r#"let p = piece("lofi piano", 20.0).cfg(5.0);"#),
    ("greedy", r#"let p = piece("lofi piano", 4.0).greedy();"#),
    ("top_k", r#"let p = piece("lofi piano", 20.0).top_k(50);"#),
    (
        "temperature",
        r#"let p = piece("lofi piano", 20.0).temperature(0.8);"#,
    ),
    (
        "cond_only",
        r#"let p = piece("lofi piano", 20.0).cond_only();"#,
    ),
    (
        "layers",
        r#"let p = piece("lofi piano", 20.0).layers("top:8");"#,
    ),
    (
        "render",
        r#"render(piece("lofi piano", 20.0), "lofi.wav");"#,
    ),
    ("play", r#"play(piece("lofi piano", 60.0), #{ramp: 2.0});"#),
    ("stop", "stop();"),
    ("wait", "wait();"),
    ("playing", "print(playing());"),
    ("model", r#"model("facebook/musicgen-medium");"#),
    (
        "plot",
        r#"plot(rise(0.0, 8.0) * sine(2.0), 16.0, "swell.png");"#,
    ),
    ("constant", "let s = constant(0.5);"),
    ("linear", "let s = linear(0.0, 1.0, 2.0, 10.0);"),
    ("rise", "let s = rise(0.0, 8.0);"),
    ("fall", "let s = fall(12.0, 20.0);"),
    ("exp_decay", "let s = exp_decay(0.998);"),
    ("logistic", "let s = logistic(10.0, 1.5);"),
    ("sine", "let s = sine(4.0, 0.25);"),
    ("cosine", "let s = cosine(4.0);"),
    ("square", "let s = square(2.0, 0.25);"),
    ("step", "let s = step(8.0);"),
    ("at", "let s = at(8.0, 0.7);"),
    ("adsr", "let s = adsr(1.0, 2.0, 0.6, 3.0, 12.0);"),
    (
        "keyframes",
        r#"let s = keyframes([[0.0, 0.0], [4.0, 1.0], [12.0, 0.2]], "smooth");"#,
    ),
    ("noise", "let s = noise(7, 2.0);"),
    (
        "curve",
        "let s = curve(|t| if t < 8.0 { t / 8.0 } else { 1.0 });",
    ),
    ("knob", "let s = 0.8 * knob(1, 0.5);"),
    ("clamp", "let s = clamp(sine(4.0) * 2.0, 0.2, 1.0);"),
    ("min", "let s = min(rise(0.0, 8.0), 0.6);"),
    ("max", "let s = max(fall(0.0, 8.0), 0.1);"),
    ("shift", "let s = shift(rise(0.0, 4.0), 6.0);"),
    (
        "delay",
        "let s = delay(adsr(1.0, 1.0, 0.5, 2.0, 6.0), 4.0);",
    ),
    ("stretch", "let s = stretch(sine(1.0), 4.0);"),
    ("reverse", "let s = reverse(rise(0.0, 10.0), 20.0);"),
    ("repeat", "let s = repeat(rise(0.0, 2.0), 2.0);"),
    (
        "seq",
        "let s = seq([[rise(0.0, 4.0), 4.0], [constant(1.0), 8.0]]);",
    ),
    (
        "crossfade",
        "let s = crossfade(sine(2.0), square(4.0), 8.0, 12.0);",
    ),
    (
        "mix",
        "let s = mix(constant(0.2), sine(2.0), rise(0.0, 16.0));",
    ),
    ("value", "print(rise(0.0, 8.0).value(2.0));"),
    (
        "orth",
        r#"let d = direction("chords:maj").orth(direction("chords:min"));"#,
    ),
    ("top", r#"let d = direction("notes:C#").top(6);"#),
    ("blocks", r#"let d = direction("notes:C#").blocks(8..16);"#),
    ("weights", r#"print(direction("notes:C#").weights("exp"));"#),
    (
        "normalize",
        r#"let d = (direction("chords:maj") + direction("chords:min")).normalize();"#,
    ),
    ("scale", r#"let d = direction("notes:C#").scale(0.5);"#),
];

/// Feeds `value`'s `Debug` text to `hasher` without building the string: a fingerprint of
/// every field (direction vectors included) for the render caches.
pub(crate) fn hash_debug(hasher: &mut impl std::hash::Hasher, value: &impl std::fmt::Debug) {
    struct Feed<'a, H>(&'a mut H);
    impl<H: std::hash::Hasher> std::fmt::Write for Feed<'_, H> {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            self.0.write(s.as_bytes());
            Ok(())
        }
    }
    let _ = std::fmt::write(&mut Feed(hasher), format_args!("{value:?}"));
}

/// A runtime error raised by a registered function (Rhai adds the call's position).
pub(crate) fn fail<T>(message: impl Into<String>) -> Result<T, Box<EvalAltResult>> {
    Err(Box::new(EvalAltResult::ErrorRuntime(
        Dynamic::from(message.into()),
        Position::NONE,
    )))
}

/// Up to `n` candidates closest to `name` by edit distance (for "did you mean" hints).
pub fn closest<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
    n: usize,
) -> Vec<String> {
    let lower = name.to_lowercase();
    let mut scored: Vec<(usize, &str)> = candidates
        .into_iter()
        .map(|c| (levenshtein(&lower, &c.to_lowercase()), c))
        .collect();
    scored.sort();
    scored.dedup_by(|a, b| a.1 == b.1);
    let limit = (name.chars().count() / 2).max(3);
    scored
        .into_iter()
        .filter(|(d, _)| *d <= limit)
        .take(n)
        .map(|(_, c)| c.to_string())
        .collect()
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Builds the sandboxed engine with every recipe verb registered.
pub(crate) fn build_engine(host: &Arc<Host>) -> Engine {
    let mut engine = Engine::new();
    sandbox::apply(&mut engine, &host.options.limits);
    {
        let h = host.clone();
        engine.on_progress(move |_| {
            // Ctrl-C in the REPL: the input stops here, the session stays.
            if crate::interrupt::requested() {
                return Some(Dynamic::from("interrupted (Ctrl-C)".to_string()));
            }
            h.budget.operation(&h.options.limits).map(Dynamic::from)
        });
        let h = host.clone();
        engine.on_print(move |s| h.say(s.to_string()));
        let h = host.clone();
        engine.on_debug(move |s, _, _| h.say(s.to_string()));
    }
    engine.set_module_resolver(modules::Resolver::new(host.clone()));
    schedules::register(&mut engine, host);
    directions::register(&mut engine, host);
    probes::register(&mut engine, host);
    pieces::register(&mut engine, host);
    plot::register(&mut engine, host);
    scores::register(&mut engine, host);
    engine
}

/// Runs a recipe's source text. `name` labels it in error reports (usually its path);
/// `recipe_dir` is where relative bundle paths and user modules are looked up.
pub fn run_source(
    name: &str,
    source: &str,
    recipe_dir: &Path,
    options: RecipeOptions,
    renderer: Box<dyn Renderer>,
) -> Result<RecipeOutcome, Box<ScriptError>> {
    let mut session = Session::new(recipe_dir, options, renderer);
    let _last_value = session.run(name, source)?;
    Ok(session.take_outcome())
}

/// Reads and runs a recipe file.
pub fn run_file(
    path: &Path,
    options: RecipeOptions,
    renderer: Box<dyn Renderer>,
) -> Result<RecipeOutcome, Box<ScriptError>> {
    let source = std::fs::read_to_string(path).map_err(|e| {
        Box::new(ScriptError::plain(format!(
            "cannot read recipe {}: {e}",
            path.display()
        )))
    })?;
    let dir = crate::files::folder_of(path);
    run_source(&path.display().to_string(), &source, dir, options, renderer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closest_names() {
        let names = ["notes:C", "notes:C#", "notes:D", "chords:maj"];
        assert_eq!(closest("notes:c#", names, 2), vec!["notes:C#", "notes:C"]);
        assert!(closest("zzzzzzzzzzzzzz", names, 2).is_empty());
    }
}
