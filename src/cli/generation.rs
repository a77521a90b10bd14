//! The generation flags `render` and `sweep` share: how tokens are chosen (`--greedy`,
//! `--top-k`, `--temperature`, `--cfg`, `--negative-prompt`) and what steers (`--steer`,
//! `--layer-weights`, `--gate`, `--strength-unit`), each checked before the model loads.

use std::path::PathBuf;

use baton::model::{
    check_negative_prompt, guidance_warning, GenerateOptions, MusicGen, ResidualHook, Sampling,
    DEFAULT_GUIDANCE_SCALE, DEFAULT_TEMPERATURE, DEFAULT_TOP_K,
};
use baton::model::{Extent, MusicGenConfig};
use baton::piece::{check_window_seconds, check_with_config, ClipPrompt};
use baton::probe::DirectionBundle;
use baton::steer::{Direction, LayerWeights, Plan, PlanHook, Schedule, StrengthUnit, Term};
use clap::Args;

use super::common::Library;

/// `--layer-weights` when not given.
const DEFAULT_LAYER_WEIGHTS: &str = "exp";

/// Strength of a `--steer BUNDLE` given without `:STRENGTH` (the middle of the paper's demos).
pub const DEFAULT_STRENGTH: f64 = 0.5;

/// Refuses a `--seconds` that is not a positive number up to the longest finite piece (render,
/// recipes and sweep take one), before any model loads.
pub fn check_seconds(seconds: f64) -> miette::Result<()> {
    baton::piece::check_seconds(seconds).map_err(|e| miette::miette!("--seconds {e}"))
}

/// Where a piece starts and how it is extended past one window.
#[derive(Args, Debug, Clone, Default)]
pub struct ExtentArgs {
    /// Continue this clip (any WAV: mixed to mono, resampled to the model's rate); the output
    /// holds the clip, then the new music (--seconds is the new part's length).
    #[arg(long = "continue", value_name = "CLIP.wav")]
    pub clip: Option<PathBuf>,
    /// Count steering schedules from the clip's start instead of from the first new frame.
    #[arg(long, requires = "clip")]
    pub steer_from_clip: bool,
    /// Seconds one pass of the model holds; longer pieces are generated window by window
    /// [default: 30, at most the model's limit].
    #[arg(long, value_name = "S", allow_negative_numbers = true)]
    pub window: Option<f64>,
    /// Seconds each next window moves on by: it is prompted with the last WINDOW - STRIDE
    /// seconds of the one before [default: 18, at most 60 % of the window].
    #[arg(long, value_name = "S", allow_negative_numbers = true)]
    pub extend_stride: Option<f64>,
}

impl ExtentArgs {
    /// The flags set away from their defaults.
    pub fn changed(&self) -> Vec<&'static str> {
        [
            (self.clip.is_some(), "--continue"),
            (self.steer_from_clip, "--steer-from-clip"),
            (self.window.is_some(), "--window"),
            (self.extend_stride.is_some(), "--extend-stride"),
        ]
        .into_iter()
        .filter_map(|(changed, flag)| changed.then_some(flag))
        .collect()
    }

    /// Checks what can be checked before the model's weights load (the clip is read, window
    /// and stride are sane and, from the model's config, fit it and the clip) and returns the
    /// clip.
    pub fn check(&self, config: &MusicGenConfig) -> miette::Result<Option<ClipPrompt>> {
        check_window_seconds(self.window, self.extend_stride)
            .map_err(|e| miette::miette!("--window/--extend-stride: {e}"))?;
        let clip = self
            .clip
            .as_deref()
            .map(|p| ClipPrompt::new(p, self.steer_from_clip))
            .transpose()
            .map_err(|e| miette::miette!("--continue: {e}"))?;
        if !self.changed().is_empty() {
            check_with_config(config, clip.as_ref(), self.window, self.extend_stride)
                .map_err(|e| miette::miette!("{e}"))?;
        }
        Ok(clip)
    }

    /// The piece's extent for `model` (the clip encoded, the window in frames).
    pub fn extent(&self, model: &MusicGen, clip: Option<&ClipPrompt>) -> miette::Result<Extent> {
        baton::piece::extent(model, clip, self.window, self.extend_stride)
            .map_err(|e| miette::miette!("{e}"))
    }
}

/// How each token is chosen.
#[derive(Args, Debug, Clone)]
pub struct SamplingArgs {
    /// Always pick the most likely token (no sampling).
    #[arg(long)]
    pub greedy: bool,
    /// Sample among the K most likely tokens.
    #[arg(long, default_value_t = DEFAULT_TOP_K)]
    pub top_k: usize,
    /// Sampling temperature.
    #[arg(long, default_value_t = DEFAULT_TEMPERATURE)]
    pub temperature: f64,
    /// Classifier-free guidance scale (1.0 disables guidance).
    #[arg(long, default_value_t = DEFAULT_GUIDANCE_SCALE)]
    pub cfg: f64,
    /// Text for guidance to steer away from ("drums, vocals"): the unconditional half of the
    /// guidance batch is conditioned on it instead of on nothing. Needs --cfg above 1.
    #[arg(long, value_name = "TEXT")]
    pub negative_prompt: Option<String>,
}

impl SamplingArgs {
    /// The flags set to something other than their defaults, but for `--greedy` (a recipe
    /// takes that one as an override; it sets the others per piece).
    pub fn changed(&self) -> Vec<&'static str> {
        [
            (self.top_k != DEFAULT_TOP_K, "--top-k"),
            (self.temperature != DEFAULT_TEMPERATURE, "--temperature"),
            (self.cfg != DEFAULT_GUIDANCE_SCALE, "--cfg"),
            (self.negative_prompt.is_some(), "--negative-prompt"),
        ]
        .into_iter()
        .filter_map(|(changed, flag)| changed.then_some(flag))
        .collect()
    }

    /// Refuses values generation cannot use.
    pub fn check(&self) -> miette::Result<()> {
        if !self.greedy {
            if self.top_k == 0 {
                return Err(miette::miette!("--top-k must be at least 1"));
            }
            if !(self.temperature.is_finite() && self.temperature > 0.0) {
                return Err(miette::miette!(
                    "--temperature must be a positive number, got {}",
                    self.temperature
                ));
            }
        }
        if !(self.cfg.is_finite() && self.cfg >= 0.0) {
            return Err(miette::miette!(
                "--cfg must be a non-negative number, got {}",
                self.cfg
            ));
        }
        if let Some(w) = guidance_warning(self.cfg) {
            eprintln!("warning: --cfg: {w}");
        }
        check_negative_prompt(self.negative_prompt.as_deref(), self.cfg)
            .map_err(|e| miette::miette!("--negative-prompt: {e}"))
    }

    /// The generation options for `max_new_tokens` steps from `seed`.
    pub fn options(&self, max_new_tokens: usize, seed: u64) -> GenerateOptions {
        GenerateOptions {
            max_new_tokens,
            sampling: if self.greedy {
                Sampling::Greedy
            } else {
                Sampling::TopK {
                    k: self.top_k,
                    temperature: self.temperature,
                }
            },
            guidance_scale: self.cfg,
            seed,
            negative_prompt: self.negative_prompt.clone(),
        }
    }
}

/// What steers, and how it is spread over blocks and steps.
#[derive(Args, Debug, Clone)]
pub struct SteerArgs {
    /// Steer with a direction bundle: BUNDLE[:STRENGTH] (repeatable; `baton sweep` takes the
    /// strengths from --strengths instead).
    #[arg(long)]
    pub steer: Vec<String>,
    /// Layer weighting for --steer: exp, linear, uniform or top:K.
    #[arg(long, default_value = DEFAULT_LAYER_WEIGHTS)]
    pub layer_weights: String,
    /// Probability of steering at each step (stochastic gate).
    #[arg(long, default_value_t = 1.0)]
    pub gate: f64,
    /// What strengths are measured in: absolute (the paper's: the direction's unit vector as
    /// it is) or residual (fractions of each block's typical output norm, recorded in the
    /// bundle, so a strength means the same in any model).
    #[arg(long, default_value = "absolute")]
    pub strength_unit: StrengthUnit,
    /// Scale every --steer strength by MIDI knob CC (0 to 127; see --midi), read as each step
    /// is made: full strength until the knob is first moved.
    #[arg(long, value_name = "CC")]
    pub knob: Option<usize>,
}

impl SteerArgs {
    /// The flags set to something other than their defaults (`--steer` included).
    pub fn changed(&self) -> Vec<&'static str> {
        [
            (!self.steer.is_empty(), "--steer"),
            (
                self.layer_weights != DEFAULT_LAYER_WEIGHTS,
                "--layer-weights",
            ),
            (self.gate != 1.0, "--gate"),
            (
                self.strength_unit != StrengthUnit::Absolute,
                "--strength-unit",
            ),
            (self.knob.is_some(), "--knob"),
        ]
        .into_iter()
        .filter_map(|(changed, flag)| changed.then_some(flag))
        .collect()
    }

    /// Checks `--layer-weights` and `--gate` (the bundles are read by [`SteerArgs::plan`]).
    pub fn check(&self) -> miette::Result<LayerWeights> {
        let weights: LayerWeights = self
            .layer_weights
            .parse()
            .map_err(|e| miette::miette!("--layer-weights: {e}"))?;
        if !(0.0..=1.0).contains(&self.gate) {
            return Err(miette::miette!(
                "--gate must be a probability between 0 and 1, got {}",
                self.gate
            ));
        }
        Ok(weights)
    }

    /// The plan the flags ask for, with the gate seeded by `seed`; `strength` replaces every
    /// `--steer`'s own (a sweep sets it).
    pub fn plan(
        &self,
        seed: u64,
        library: &Library,
        strength: Option<f64>,
    ) -> miette::Result<Plan> {
        let weights = self.check()?;
        let schedule = match self.knob {
            Some(cc) => Schedule::knob(cc, 1.0).map_err(|e| miette::miette!("--knob: {e}"))?,
            None => Schedule::constant(1.0),
        };
        let terms = self
            .steer
            .iter()
            .map(|spec| {
                let (name, own) = parse_steer(spec, library)?;
                let term = Term {
                    direction: load_direction(&name, library)?,
                    strength: strength.or(own).unwrap_or(DEFAULT_STRENGTH),
                    schedule: schedule.clone(),
                    weights,
                    gate: None,
                    unit: self.strength_unit,
                };
                // Residual units need the bundle's norms, and a term must steer something:
                // both known now, before the model loads.
                term.check()
                    .map_err(|e| miette::miette!("--steer {spec}: {e}"))?;
                if let Some(w) = term.warning() {
                    eprintln!("warning: --steer {spec}: {w}");
                }
                Ok(term)
            })
            .collect::<miette::Result<Vec<_>>>()?;
        Ok(Plan {
            terms,
            gate: self.gate,
            seed,
            ..Plan::default()
        })
    }
}

/// The steering hook of `plan` over `steps` decoder steps, or `None` when it steers nothing.
pub fn plan_hook(
    model: &MusicGen,
    plan: &Plan,
    steps: usize,
) -> miette::Result<Option<Box<dyn ResidualHook>>> {
    let hook: Option<PlanHook> =
        baton::script::render::plan_hook(model, plan, steps, &mut |_, _| {
            Err("no user curves on the command line".into())
        })
        .map_err(|e| miette::miette!("{e}"))?;
    Ok(hook.map(|h| Box::new(h) as Box<dyn ResidualHook>))
}

/// Splits `BUNDLE[:STRENGTH]` (the strength is `None` when not given); BUNDLE is a file or a
/// library name such as `notes:C#`. A whole spec that names a bundle is one, so a class named
/// by a number (`level:2`) needs no strength to be reached.
pub fn parse_steer(spec: &str, library: &Library) -> miette::Result<(String, Option<f64>)> {
    if library.bundle("--steer", spec).is_ok() {
        return Ok((spec.to_string(), None));
    }
    if let Some((bundle, s)) = spec.rsplit_once(':') {
        if let Ok(strength) = s.trim().parse::<f64>() {
            if !strength.is_finite() {
                return Err(miette::miette!("--steer {spec}: strength is not finite"));
            }
            return Ok((bundle.to_string(), Some(strength)));
        }
    }
    Ok((spec.to_string(), None))
}

fn load_direction(name: &str, library: &Library) -> miette::Result<Direction> {
    let path = library.bundle("--steer", name)?;
    let bundle =
        DirectionBundle::read(&path).map_err(|e| miette::miette!("--steer {name}: {e}"))?;
    Ok(Direction::from_bundle(name, bundle))
}
