//! The MusicGen-backed [`Renderer`]: loads each model a recipe names once, compiles the piece's
//! plan into a [`PlanHook`], generates with a progress bar, decodes and writes the WAV atomically.

use std::collections::HashMap;

use crate::progress::GenerationProgress;
use candle_core::{DType, Device};

use super::{CurveSampler, RenderRequest, Rendered, Renderer};
use crate::audio::{write_wav, SampleFormat};
use crate::model::{GenerateOptions, MusicGen, ResidualHook};
use crate::probe::extract::pooled_clip;
use crate::probe::{ExtractError, Pooling};
use crate::steer::{Plan, PlanHook};

/// Renders recipe pieces with MusicGen.
pub struct ModelRenderer {
    device: Device,
    dtype: DType,
    format: SampleFormat,
    progress: bool,
    models: HashMap<String, MusicGen>,
}

impl ModelRenderer {
    /// A renderer that loads models on `device` with decoder weights in `dtype`.
    pub fn new(device: Device, dtype: DType, format: SampleFormat, progress: bool) -> Self {
        ModelRenderer {
            device,
            dtype,
            format,
            progress,
            models: HashMap::new(),
        }
    }

    fn model(&mut self, spec: &str) -> Result<&MusicGen, String> {
        if !self.models.contains_key(spec) {
            if self.progress {
                eprintln!("loading {spec}");
            }
            let m = MusicGen::load(spec, &self.device, self.dtype)
                .map_err(|e| format!("cannot load model {spec}: {e}"))?;
            self.models.insert(spec.to_string(), m);
        }
        self.models
            .get(spec)
            .ok_or_else(|| format!("model {spec} vanished"))
    }
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
    ) -> Result<Vec<Vec<f32>>, String> {
        let model = self.model(model)?;
        pooled_clip(model, audio, layers, pooling).map_err(|e| match e {
            // The extractor's advice is about datasets; a recipe's clip needs resampling.
            ExtractError::SampleRate {
                path,
                found,
                expected,
            } => format!(
                "{} is at {found} Hz but the model expects {expected} Hz: resample it first",
                path.display()
            ),
            e => e.to_string(),
        })
    }

    fn render(
        &mut self,
        request: &RenderRequest,
        curves: &mut CurveSampler<'_>,
    ) -> Result<Rendered, String> {
        let (format, progress) = (self.format, self.progress);
        let model = self.model(&request.model)?;
        let max_new_tokens = model
            .max_new_tokens_for_seconds(request.seconds)
            .map_err(|e| e.to_string())?;
        let mut hook = plan_hook(model, &request.plan, max_new_tokens, curves)?;
        let options = GenerateOptions {
            max_new_tokens,
            sampling: request.sampling,
            guidance_scale: request.guidance_scale,
            seed: request.seed,
        };
        let bar = GenerationProgress::new(max_new_tokens, model.frame_rate(), progress);
        let mut on_step = |done: usize, _total: usize| bar.step(done);
        let codes = model
            .generate(
                &[request.prompt.as_str()],
                &options,
                hook.as_mut().map(|h| h as &mut dyn ResidualHook),
                &mut on_step,
            )
            .map_err(|e| e.to_string())?;
        bar.finish_and_clear();
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
}
