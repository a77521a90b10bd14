//! The MusicGen-backed [`Renderer`]: loads each model a recipe names once, compiles the piece's
//! plan into a [`PlanHook`], generates with a progress bar, decodes and writes the WAV atomically.
//!
//! It remembers its last few renders. A piece that differs from one of them only in its
//! steering from some step on (same model, prompt, length, sampling, seed, directions and layer
//! weights; schedules, strengths and gates equal up to that step) reuses that render's steps up
//! to there ([`MusicGen::generate_reusing`]): in watch mode or the REPL, changing the end of a
//! piece's steering only generates the end again. Only with f32 activations (the CPU, or
//! `--dtype f32` on a GPU): in half precision the replay's rounding can change tokens.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hasher};
use std::sync::Arc;

use crate::progress::GenerationProgress;
use candle_core::{DType, Device};

use super::{CurveSampler, PlayOptions, RenderRequest, Rendered, Renderer};
use crate::audio::play::Player;
use crate::audio::{write_wav, SampleFormat};
use crate::model::{Codes, GenerateOptions, MusicGen, Prefix, ResidualHook, WeightFormat};
use crate::perform::live::{LivePiece, LiveRequest};
use crate::perform::{Buffering, PlayEvent};
use crate::probe::eval::{pooled_windows, read_clip, PooledWindow, Windowing};
use crate::probe::Pooling;
use crate::steer::{Plan, PlanHook};

/// How many earlier renders a [`ModelRenderer`] keeps for reuse (their codes are small).
const REMEMBERED: usize = 8;

/// An earlier render whose steps a later one may reuse.
struct PastRender {
    /// [`reuse_key`] of its request: what must be equal for any step to be reusable.
    key: u64,
    /// Its hook's coefficients (`[step][term]`, empty when nothing was steered): steps are
    /// reusable while these agree.
    coefficients: Vec<Vec<f32>>,
    codes: Codes,
}

/// Renders recipe pieces with MusicGen.
pub struct ModelRenderer {
    device: Device,
    dtype: WeightFormat,
    format: SampleFormat,
    progress: bool,
    models: HashMap<String, Arc<MusicGen>>,
    past: Vec<PastRender>,
    /// The player live pieces go through (`None`: the first found when one is played).
    player: Option<Player>,
    /// The piece playing now, and the [`reuse_key`] it was started with.
    live: Option<(LivePiece, u64)>,
}

/// Seconds of audio a live piece generates ahead of the ear once playing: the longest a
/// steering change waits to be heard when generation keeps up.
const LIVE_AHEAD_S: f64 = 1.0;

impl ModelRenderer {
    /// A renderer that loads models on `device` with decoder weights in `dtype`.
    pub fn new(device: Device, dtype: WeightFormat, format: SampleFormat, progress: bool) -> Self {
        ModelRenderer {
            device,
            dtype,
            format,
            progress,
            models: HashMap::new(),
            past: Vec::new(),
            player: None,
            live: None,
        }
    }

    /// Plays live pieces through `player` (a command reading a WAV stream on stdin).
    pub fn with_player(mut self, player: Player) -> Self {
        self.player = Some(player);
        self
    }

    fn model(&mut self, spec: &str) -> Result<&MusicGen, String> {
        load_once(
            &mut self.models,
            spec,
            &self.device,
            self.dtype,
            self.progress,
        )
        .map(|m| &**m)
    }
}

/// The model `spec` from `models`, loaded into it on first use. A free function (not a method)
/// so the model can stay borrowed while the renderer's other fields change.
fn load_once<'a>(
    models: &'a mut HashMap<String, Arc<MusicGen>>,
    spec: &str,
    device: &Device,
    dtype: WeightFormat,
    progress: bool,
) -> Result<&'a Arc<MusicGen>, String> {
    match models.entry(spec.to_string()) {
        std::collections::hash_map::Entry::Occupied(e) => Ok(e.into_mut()),
        std::collections::hash_map::Entry::Vacant(slot) => {
            if progress {
                eprintln!("loading {spec}");
            }
            let m = MusicGen::load_as(spec, device, dtype)
                .map_err(|e| format!("cannot load model {spec}: {e}"))?;
            Ok(slot.insert(Arc::new(m)))
        }
    }
}

/// What generating `request` on `model` takes: its decoder steps (0 for a piece played
/// `forever`), its extent, its plan as the new frames see it, and the steps its steering is
/// worked out for (an hour's for a piece without end).
fn shape_of(
    model: &MusicGen,
    request: &RenderRequest,
    forever: bool,
) -> Result<(usize, crate::model::Extent, Plan, usize), String> {
    let steps = if forever {
        0
    } else {
        crate::piece::steps_for_seconds(model, request.seconds).map_err(|e| e.to_string())?
    };
    let mut extent =
        crate::piece::extent(model, request.clip.as_ref(), request.window, request.stride)?;
    extent.endless = forever;
    let plan = crate::piece::plan_for(
        &request.plan,
        request.clip.as_ref(),
        &extent,
        model.frame_rate(),
    );
    let horizon = crate::piece::steering_steps(model, steps, forever).map_err(|e| e.to_string())?;
    Ok((steps, extent, plan, horizon))
}

/// The generation options `request` asks for, over `max_new_tokens` steps.
fn options_of(request: &RenderRequest, max_new_tokens: usize) -> GenerateOptions {
    GenerateOptions {
        max_new_tokens,
        sampling: request.sampling,
        guidance_scale: request.guidance_scale,
        seed: request.seed,
        negative_prompt: request.negative_prompt.clone(),
    }
}

/// Everything about a request that steps depend on but its steering: model, prompt, steps,
/// sampling, guidance, seed, clip and window. Pieces that share it are the same piece steered
/// otherwise (what a live piece can be moved to without a restart).
fn piece_key(request: &RenderRequest, steps: usize) -> u64 {
    let mut h = DefaultHasher::new();
    super::hash_debug(
        &mut h,
        &(
            &request.model,
            &request.prompt,
            steps,
            request.sampling,
            request.guidance_scale.to_bits(),
            &request.negative_prompt,
            request.seed,
            (
                request
                    .clip
                    .as_ref()
                    .map(|c| (&c.path, c.hash, c.steer_from_clip)),
                request.window.map(f64::to_bits),
                request.stride.map(f64::to_bits),
            ),
        ),
    );
    h.finish()
}

/// [`piece_key`] and what else steps depend on apart from the per-step coefficients of its
/// plan: which half is steered, and each term's direction and layer weights.
fn reuse_key(request: &RenderRequest, steps: usize) -> u64 {
    let mut h = DefaultHasher::new();
    let terms: Vec<_> = request
        .plan
        .terms
        .iter()
        .map(|t| (&t.direction, t.weights, t.unit))
        .collect();
    super::hash_debug(
        &mut h,
        &(
            piece_key(request, steps),
            request.plan.conditional_only,
            terms,
        ),
    );
    h.finish()
}

/// How many of the first `steps` steps two hooks' coefficients (`[step][term]`) agree on (all
/// of them when neither steers anything).
fn shared_steps(a: &[Vec<f32>], b: &[Vec<f32>], steps: usize) -> usize {
    if a.is_empty() && b.is_empty() {
        return steps;
    }
    a.iter()
        .zip(b)
        .take(steps)
        .take_while(|(x, y)| x == y)
        .count()
}

/// Compiles `plan` for `model` and `max_new_tokens` steps; `None` when it steers nothing, so
/// unsteered generation runs exactly as without steering.
pub fn plan_hook(
    model: &MusicGen,
    plan: &Plan,
    max_new_tokens: usize,
    curves: &mut CurveSampler<'_>,
) -> Result<Option<PlanHook>, String> {
    if plan.terms.is_empty() {
        return Ok(None);
    }
    // Offsets are made in the decoder's activation dtype, so adding them needs no cast.
    PlanHook::new(
        plan,
        max_new_tokens,
        model.frame_rate(),
        model.num_layers(),
        model.hidden_size(),
        model.device(),
        model.activations(),
        curves,
    )
    .map(Some)
    .map_err(|e| e.to_string())
}

impl Renderer for ModelRenderer {
    fn pooled(
        &mut self,
        model: &str,
        audio: &std::path::Path,
        layers: &[usize],
        pooling: Pooling,
        windowing: Option<Windowing>,
    ) -> Result<Vec<PooledWindow>, String> {
        let model = self.model(model)?;
        let samples = read_clip(model, audio).map_err(|e| e.to_string())?;
        pooled_windows(model, &samples, layers, pooling, windowing, &mut |_, _| {})
            .map_err(|e| e.to_string())
    }

    fn render(
        &mut self,
        request: &RenderRequest,
        curves: &mut CurveSampler<'_>,
    ) -> Result<Rendered, String> {
        let (format, progress) = (self.format, self.progress);
        let model = load_once(
            &mut self.models,
            &request.model,
            &self.device,
            self.dtype,
            progress,
        )?;
        let (max_new_tokens, extent, plan, _) = shape_of(model, request, false)?;
        if let Some(w) = model
            .prompt_warning(&request.prompt)
            .map_err(|e| e.to_string())?
        {
            eprintln!("warning: {w}");
        }
        let mut hook = plan_hook(model, &plan, max_new_tokens, curves)?;
        let key = reuse_key(request, max_new_tokens);
        let coefficients = hook
            .as_ref()
            .map_or_else(Vec::new, |h| h.coefficients().to_vec());
        // In half precision the one-pass replay rounds differently enough from the step loop
        // to change tokens, and a piece should not depend on what was rendered before it.
        let exact = model.activations() == DType::F32;
        let earlier = self
            .past
            .iter()
            .filter(|p| exact && p.key == key)
            .map(|p| {
                (
                    shared_steps(&p.coefficients, &coefficients, max_new_tokens),
                    &p.codes,
                )
            })
            .max_by_key(|(steps, _)| *steps)
            .filter(|(steps, _)| *steps > 0);
        let prefix = earlier.map(|(steps, codes)| Prefix { codes, steps });
        if let (Some(p), true) = (&prefix, progress) {
            eprintln!(
                "reusing {} of {max_new_tokens} steps from an earlier render",
                p.steps
            );
        }
        let options = options_of(request, max_new_tokens);
        let windows = model.pass_steps(&extent, max_new_tokens);
        let bar = GenerationProgress::new(windows.iter().sum(), model.frame_rate(), progress)
            .with_windows(&windows);
        let mut on_step = |done: usize, _total: usize| bar.step(done);
        let codes = model
            .generate_piece(
                &[request.prompt.as_str()],
                &options,
                &extent,
                hook.as_mut().map(|h| h as &mut dyn ResidualHook),
                &mut on_step,
                prefix.as_ref(),
            )
            .map_err(|e| e.to_string())?;
        bar.finish_and_clear();
        self.past
            .retain(|p| p.key != key || p.coefficients != coefficients);
        if self.past.len() == REMEMBERED {
            self.past.remove(0);
        }
        self.past.push(PastRender {
            key,
            coefficients,
            codes: codes.clone(),
        });
        let audio = model.decode(&codes).map_err(|e| e.to_string())?;
        let wave = audio.first().ok_or("the model returned no audio")?;
        if let Some(dir) = request.out.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        write_wav(&request.out, wave, model.sample_rate(), format).map_err(|e| e.to_string())?;
        Ok(Rendered::Written)
    }

    fn frame_rate(&mut self, model: &str) -> Result<f64, String> {
        Ok(self.model(model)?.frame_rate())
    }

    fn play(
        &mut self,
        request: &RenderRequest,
        play: &PlayOptions,
        curves: &mut CurveSampler<'_>,
    ) -> Result<String, String> {
        let model = load_once(
            &mut self.models,
            &request.model,
            &self.device,
            self.dtype,
            self.progress,
        )?
        .clone();
        let (max_new_tokens, extent, plan, horizon) = shape_of(&model, request, play.forever)?;
        let hook = plan_hook(&model, &plan, horizon, curves)?;
        let key = piece_key(request, max_new_tokens) ^ u64::from(play.forever);
        // The same piece with other steering: the one playing takes it, without a restart.
        if let Some((live, playing_key)) = &self.live {
            if *playing_key == key && live.is_playing() && play.keep.is_none() {
                let (from, status) = live.steer(hook, play.ramp_s);
                let when = match status.ahead_s {
                    Some(a) => format!("heard in about {a:.1} s"),
                    None => "heard as playback starts".into(),
                };
                return Ok(format!(
                    "steering changed from step {from}{} ({when}); {status}",
                    if play.ramp_s > 0.0 {
                        format!(", ramping over {} s", play.ramp_s)
                    } else {
                        String::new()
                    }
                ));
            }
        }
        if let Some((live, _)) = self.live.take() {
            let _ = live.stop();
        }
        let player = match &self.player {
            Some(p) => p.clone(),
            None => Player::find_streaming()?,
        };
        let live_request = LiveRequest {
            prompt: request.prompt.clone(),
            options: options_of(request, max_new_tokens),
            extent,
            hook,
            listen: crate::perform::Listen::first_term(&plan),
            player,
            buffering: Buffering {
                piece_s: (!play.forever).then_some(request.seconds),
                fixed_s: None,
                max_ahead_s: LIVE_AHEAD_S,
            },
            keep: play.keep.clone(),
            format: self.format,
        };
        // The REPL answers for the start itself; the rest is said as it happens.
        let events = Arc::new(|event: PlayEvent| {
            if !matches!(event, PlayEvent::Started { .. }) {
                eprintln!("{event}");
            }
        });
        let live = LivePiece::start(model, live_request, events)?;
        self.live = Some((live, key));
        Ok(format!(
            "playing {:?}{} (stop() ends it; play the piece again with other steering to change \
             it while it plays)",
            request.prompt,
            if play.forever {
                " without end".to_string()
            } else {
                format!(" for {} s", request.seconds)
            }
        ))
    }

    fn stop(&mut self) -> Result<String, String> {
        let (live, _) = self.live.take().ok_or("nothing is playing")?;
        let report = live.stop()?;
        Ok(format!(
            "stopped: {:.1} s of audio made in {:.1} s",
            report.audio_s, report.elapsed_s
        ))
    }

    fn wait(&mut self) -> Result<String, String> {
        let listening = crate::interrupt::listen();
        while self.live.as_ref().is_some_and(|(l, _)| l.is_playing()) {
            if crate::interrupt::requested() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        drop(listening);
        self.stop()
    }

    fn playing(&mut self) -> Option<String> {
        let (live, _) = self.live.as_ref()?;
        let status = live.status();
        Some(if live.is_playing() {
            format!("playing: {status}")
        } else {
            format!("ended: {status}")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::shared_steps;

    #[test]
    fn shared_steps_end_at_the_first_difference() {
        // Two terms over four steps, `[step][term]`.
        let a = vec![
            vec![0.0, 1.0],
            vec![0.5, 1.0],
            vec![1.0, 1.0],
            vec![1.0, 1.0],
        ];
        let mut b = a.clone();
        assert_eq!(shared_steps(&a, &b, 4), 4);
        assert_eq!(shared_steps(&a, &b, 3), 3);
        b[2][1] = 0.9;
        assert_eq!(shared_steps(&a, &b, 4), 2);
        let one_term: Vec<Vec<f32>> = b.iter().map(|s| s[..1].to_vec()).collect();
        assert_eq!(shared_steps(&a, &one_term, 4), 0, "other terms");
        assert_eq!(
            shared_steps(&[], &[], 7),
            7,
            "unsteered pieces share every step"
        );
    }
}
