//! Autoregressive generation: BOS start, the delay pattern (built as Hugging Face's
//! `build_delay_pattern_mask`, applied on the device at every step, undone as HF does after
//! generation), classifier-free
//! guidance over a doubled batch `[cond; uncond]`, and greedy or seeded top-k sampling.
//!
//! The whole step runs on the decoder's device, token choice and next input included; the host
//! launches work (uploading the top-k noise, and steering offsets when a hook adds them) and
//! reads the chosen ids only when frames are taken (once a pass, for a whole render): the loop
//! never waits for the device in between.

use candle_core::{DType, Tensor, D};
use rand::{Rng, SeedableRng};

use super::decoder::{BlockOffsets, CrossContext, Decoder};
use super::{GenerateOptions, ModelError, ResidualHook, Sampling};

/// "Not fixed by the pattern: the model predicts this token."
pub const FREE: i64 = -1;

/// HF's `build_delay_pattern_mask` for one batch item.
///
/// `prompt` holds one row per codebook (all the same length); returns the trimmed decoder input
/// (each row up to the first position the model must fill) and the pattern `[codebooks][max_length]`
/// whose entries are either a fixed id (prompt or `pad`) or [`FREE`].
pub fn build_delay_pattern(
    prompt: &[Vec<i64>],
    pad: i64,
    max_length: usize,
) -> (Vec<Vec<i64>>, Vec<Vec<i64>>) {
    let k = prompt.len();
    let seq_len = prompt.first().map_or(0, Vec::len);
    let mut shifted = vec![vec![FREE; max_length]; k];
    // Too short for the pattern: HF returns the input unchanged and an all-free pattern.
    if max_length + 1 < 2 * k {
        return (prompt.to_vec(), shifted);
    }
    for (cb, row) in prompt.iter().enumerate() {
        for (i, &id) in row.iter().enumerate() {
            if cb + i < max_length {
                shifted[cb][cb + i] = id;
            }
        }
    }
    // Pad the lower triangle (position <= codebook: the BOS side) and the upper one (the last
    // codebooks' tails: position >= max_length - k + 1 + codebook).
    for (cb, row) in shifted.iter_mut().enumerate() {
        for (pos, slot) in row.iter_mut().enumerate() {
            if pos <= cb || pos + k > max_length + cb {
                *slot = pad;
            }
        }
    }
    let first_free = shifted[0]
        .iter()
        .position(|&id| id == FREE)
        .unwrap_or(seq_len);
    let input = shifted.iter().map(|r| r[..first_free].to_vec()).collect();
    (input, shifted)
}

/// Undoes the delay pattern: per codebook, the tokens that are not `pad`, as HF does after
/// generation. Fails if codebooks end up with different lengths.
pub fn undo_delay_pattern(ids: &[Vec<i64>], pad: i64) -> Result<Vec<Vec<i64>>, ModelError> {
    let rows: Vec<Vec<i64>> = ids
        .iter()
        .map(|r| r.iter().copied().filter(|&id| id != pad).collect())
        .collect();
    if rows.windows(2).any(|w| w[0].len() != w[1].len()) {
        return Err(ModelError::Invalid(
            "codebooks have different lengths after undoing the delay pattern".into(),
        ));
    }
    Ok(rows)
}

/// Classifier-free guidance on raw logits `[cond; uncond]` (`2 * batch` rows):
/// `uncond + scale * (cond - uncond)`, `[batch, ..]`.
pub fn guide(logits: &Tensor, batch: usize, scale: f64) -> candle_core::Result<Tensor> {
    let cond = logits.narrow(0, 0, batch)?;
    let uncond = logits.narrow(0, batch, batch)?;
    &uncond + ((cond - &uncond)? * scale)?
}

/// Samples one id per row of `scores` `[.., vocab]` among its `k` largest entries, with
/// probabilities `softmax(scores / temperature)` (HF's temperature then top-k warpers), and
/// returns them `[..]` (u32). Runs on the scores' device by the Gumbel-max trick: the noise for
/// the `k` candidates comes from the host RNGs (so a seed picks the same tokens on every device,
/// up to rounding in the logits), and only the chosen ids need to leave the device. The rows are
/// split evenly over `rngs` in order (one RNG per batch item, so an item draws the same noise
/// whatever else is in the batch). Candidates tied with the k-th score are cut by sort order,
/// where HF would keep them all.
pub fn sample_top_k(
    scores: &Tensor,
    k: usize,
    temperature: f64,
    rngs: &mut [impl Rng],
) -> candle_core::Result<Tensor> {
    let k = k.clamp(1, scores.dim(D::Minus1)?);
    let (best, ids) = scores.contiguous()?.sort_last_dim(false)?;
    let best = best.narrow(D::Minus1, 0, k)?;
    let ids = ids.narrow(D::Minus1, 0, k)?.contiguous()?;
    let n = best.elem_count();
    if rngs.is_empty() || n % rngs.len() != 0 {
        candle_core::bail!("{n} candidates cannot be split over {} RNGs", rngs.len());
    }
    let per_rng = n / rngs.len();
    // argmax(x_i / t + G_i) with G_i = -ln(-ln U_i) is distributed as softmax(x / t).
    let noise: Vec<f32> = rngs
        .iter_mut()
        .flat_map(|rng| (0..per_rng).map(move |_| -(-rng.random::<f64>().ln()).ln() as f32))
        .collect();
    let noise = Tensor::from_vec(noise, best.shape(), best.device())?;
    let perturbed = ((best / temperature.max(1e-6))? + noise)?;
    let chosen = perturbed.argmax_keepdim(D::Minus1)?;
    ids.gather(&chosen, D::Minus1)?.squeeze(D::Minus1)
}

/// Everything the generation loop needs besides the decoder.
pub struct GenerationInputs<'a> {
    /// Text conditioning: `[cond; uncond]` rows when guidance is on, else `[cond]`.
    pub cross: &'a CrossContext,
    /// Prompts in the batch (conditional rows).
    pub batch: usize,
    /// Whether `cross` holds the doubled CFG batch.
    pub guided: bool,
    /// Pad id (the delay pattern's filler) and BOS id (the first input).
    pub pad: i64,
    /// First decoder input id.
    pub bos: i64,
    /// Steps to take from an earlier generation instead of generating them again.
    pub prefix: Option<&'a Prefix<'a>>,
    /// Frames this generation continues, `[batch][codebooks][frames]` (every item and codebook
    /// the same length): fed after BOS through the delay pattern, never steered, and returned at
    /// the start of the codes, as transformers' `generate` does with an audio prompt
    /// (`input_values`) or with `decoder_input_ids` of BOS and codes.
    pub prompt: Option<&'a [Vec<Vec<i64>>]>,
    /// Where this generation starts in the piece, counted in new frames before it (0 for the
    /// first window): its step `s` is the piece's step `first_step + s`, which the hook is asked
    /// for.
    pub first_step: usize,
}

/// One sampling RNG per batch item, item `b` seeded `seed + b`: an item samples what it would
/// alone. A long piece keeps them from window to window.
pub fn seeded_rngs(seed: u64, batch: usize) -> Vec<rand::rngs::StdRng> {
    (0..batch)
        .map(|b| rand::rngs::StdRng::seed_from_u64(seed.wrapping_add(b as u64)))
        .collect()
}

/// The first `steps` steps of an earlier generation, to be reused: what lets a re-render whose
/// steering changes only from step `steps` on skip the steps before. The reused steps are run
/// as one teacher-forced pass that fills the KV cache (with the hook's offsets of those steps),
/// and sampling goes on from step `steps` with the RNG where it would have been.
///
/// The result is what generating from scratch gives, up to rounding: the one pass computes the
/// cache with matrix products where the step loop uses matrix-vector ones. In f32 that rounding
/// has not changed a token in the tests and measurements; in half precision it is large enough
/// to, so [`crate::script::render::ModelRenderer`] reuses steps only with f32 activations.
pub struct Prefix<'a> {
    /// Codes of the earlier generation, `[batch, codebooks, frames]` (as [`generate`] returns).
    pub codes: &'a Tensor,
    /// How many of its steps to keep (at most the new generation's steps; the codes must
    /// hold enough frames for them, else generation fails).
    pub steps: usize,
}

/// The chosen ids of steps `0..steps` (delay pattern applied) that `codes` `[batch, k, frames]`
/// were generated with (after `prompt_frames` frames of prompt), `[batch, k, steps]` u32.
fn patterned_ids(
    codes: &Tensor,
    patterns: &[Vec<Vec<i64>>],
    prompt_frames: usize,
    steps: usize,
) -> Result<Vec<u32>, ModelError> {
    let codes: Vec<Vec<Vec<i64>>> = codes.to_dtype(DType::I64)?.to_vec3()?;
    let k = patterns.first().map_or(0, Vec::len);
    let mut ids = Vec::with_capacity(codes.len() * k * steps);
    for (item, pattern) in codes.iter().zip(patterns) {
        for (cb, row) in pattern.iter().enumerate() {
            // Step j fills position p + j + 1 (p prompt frames after BOS); the free positions
            // hold the new frames in order, which follow the prompt's in the codes.
            let p = prompt_frames;
            let mut frame = p;
            for &fixed in &row[p + 1..=p + steps] {
                if fixed == FREE {
                    let id = item[cb].get(frame).ok_or_else(|| {
                        ModelError::Invalid(format!(
                            "the earlier codes hold {} frames, too few to reuse {steps} steps",
                            item[cb].len()
                        ))
                    })?;
                    ids.push(*id as u32);
                    frame += 1;
                } else {
                    ids.push(fixed as u32);
                }
            }
        }
    }
    Ok(ids)
}

/// Runs steps `0..steps` of a [`Prefix`] as one pass over their inputs, filling `cache`, and
/// returns the reused ids `[batch, k, steps]` (u32).
#[allow(clippy::too_many_arguments)]
fn replay_prefix(
    decoder: &Decoder,
    inputs: &GenerationInputs,
    prefix: &Prefix,
    steps: usize,
    patterns: &[Vec<Vec<i64>>],
    prompt_frames: usize,
    first: &Tensor,
    cache: &mut super::decoder::DecoderCache,
    hook: Option<&mut &mut dyn ResidualHook>,
) -> Result<Tensor, ModelError> {
    let k = patterns.first().map_or(0, Vec::len);
    let device = decoder.device();
    let (batch, codes_k, _) = prefix.codes.dims3()?;
    if batch != inputs.batch || codes_k != k {
        return Err(ModelError::Invalid(format!(
            "the earlier codes are [{batch}, {codes_k}, ..], this generation [{}, {k}, ..]",
            inputs.batch
        )));
    }
    let ids = Tensor::from_vec(
        patterned_ids(prefix.codes, patterns, prompt_frames, steps)?,
        (batch, k, steps),
        device,
    )?;
    // Step j's input is step j - 1's choice; step 0's is the start's last position.
    let fed = Tensor::cat(&[first, &ids.narrow(2, 0, steps - 1)?], 2)?;
    let fed = if inputs.guided {
        Tensor::cat(&[&fed, &fed], 0)?
    } else {
        fed
    };
    // Each position gets its own step's offsets: `[batch, steps, hidden]` per steered block.
    let mut only_cond = false;
    let offsets = match hook {
        Some(h) => {
            only_cond = h.conditional_only() && inputs.guided;
            let hidden = decoder.config().hidden_size;
            let mut per_block: Vec<Vec<Option<Tensor>>> = Vec::new();
            for step in 0..steps {
                let piece_step = inputs.first_step + step;
                for (l, v) in h.offsets(piece_step, inputs.batch)?.iter().enumerate() {
                    if per_block.len() <= l {
                        per_block.resize(l + 1, Vec::new());
                    }
                    // Entry i is step i's, even after steps that returned fewer blocks.
                    per_block[l].resize(step, None);
                    per_block[l].push(v.clone());
                }
            }
            let item_rows = (inputs.batch, 1, hidden);
            per_block
                .into_iter()
                .map(|vs| {
                    let dtype = vs.iter().flatten().next().map(|v| v.dtype());
                    let Some(dtype) = dtype else {
                        return Ok(None);
                    };
                    let zeros = Tensor::zeros(item_rows, dtype, device)?;
                    let columns = (0..steps)
                        .map(|i| match vs.get(i).cloned().flatten() {
                            // `[hidden]` or `[batch, 1, hidden]`, as one row per item.
                            Some(v) => v.reshape(((), 1, hidden))?.broadcast_as(item_rows),
                            None => Ok(zeros.clone()),
                        })
                        .collect::<candle_core::Result<Vec<_>>>()?;
                    Ok(Some(Tensor::cat(&columns, 1)?))
                })
                .collect::<candle_core::Result<Vec<_>>>()?
        }
        None => Vec::new(),
    };
    let steer = (!offsets.is_empty()).then(|| BlockOffsets {
        offsets: &offsets,
        rows: only_cond.then_some(inputs.batch),
    });
    decoder.forward(&fed, Some(inputs.cross), Some(cache), steer.as_ref(), &[])?;
    Ok(ids)
}

/// Ids per codebook, `[k][positions]`.
type Rows = Vec<Vec<i64>>;

/// One pass of generation that the caller steps: the decoder's KV cache, the delay pattern, the
/// chosen ids and where the pass is. [`generate`] runs one to its end; [`super::stream`] steps
/// them one by one, window after window, and reads the frames as they complete.
///
/// Frame `j` of the pass (counted after its prompt) is complete once codebook `k - 1` has chosen
/// it, after step `j + k - 1`: the delay pattern holds a frame back `k - 1` steps.
pub struct Generation<'a> {
    decoder: &'a Decoder,
    cross: CrossContext,
    batch: usize,
    guided: bool,
    pad: i64,
    first_step: usize,
    sampling: Sampling,
    guidance_scale: f64,
    /// Decoder steps this pass takes.
    steps: usize,
    /// Prompt frames after BOS.
    prompt_frames: usize,
    /// Per item: its start input and its pattern.
    built: Vec<(Rows, Rows)>,
    fixed: Tensor,
    fixed_ids: Tensor,
    cache: super::decoder::DecoderCache,
    /// The next step's input, `[rows, k, 1]`.
    input: Tensor,
    /// Every step's ids (pattern applied), `[batch, k, steps]` u32, on the device.
    chosen_ids: Tensor,
    done: usize,
    /// New frames already handed out by [`Generation::take_frames`].
    taken: usize,
    /// The block whose output each step keeps (see [`Generation::listen`]), and the last one.
    listen: Option<usize>,
    heard: Option<Tensor>,
}

impl<'a> Generation<'a> {
    /// Starts a pass of `options.max_new_tokens` steps after the prompt (BOS, then
    /// `inputs.prompt`'s frames, fed in one unsteered pass), replaying `inputs.prefix`'s steps
    /// (steered by `hook` as they were) when there is one. `rngs` (one per batch item, see
    /// [`seeded_rngs`]) move on past the replayed steps' draws.
    pub fn new(
        decoder: &'a Decoder,
        inputs: &GenerationInputs,
        options: &GenerateOptions,
        mut hook: Option<&mut dyn ResidualHook>,
        rngs: &mut [rand::rngs::StdRng],
    ) -> Result<Self, ModelError> {
        let cfg = decoder.config();
        let k = cfg.num_codebooks;
        let steps = options.max_new_tokens;
        let rows = if inputs.guided {
            2 * inputs.batch
        } else {
            inputs.batch
        };
        if rngs.len() != inputs.batch {
            return Err(ModelError::Invalid(format!(
                "{} sampling RNGs for a batch of {}",
                rngs.len(),
                inputs.batch
            )));
        }
        // Per item: BOS, then the prompt's frames, per codebook.
        let mut prompts = vec![vec![vec![inputs.bos]; k]; inputs.batch];
        if let Some(given) = inputs.prompt {
            let p = given
                .first()
                .and_then(|item| item.first())
                .map_or(0, Vec::len);
            let fits = given.len() == inputs.batch
                && given
                    .iter()
                    .all(|item| item.len() == k && item.iter().all(|row| row.len() == p));
            if !fits {
                return Err(ModelError::Invalid(format!(
                    "a prompt of codes needs {} items of {k} codebooks of one length",
                    inputs.batch
                )));
            }
            for (item, codes) in prompts.iter_mut().zip(given) {
                for (row, frames) in item.iter_mut().zip(codes) {
                    row.extend(frames);
                }
            }
        }
        let p = prompts[0][0].len() - 1;
        let max_length = p + 1 + steps;
        if p > 0 && max_length + 1 < 2 * k {
            // Too short for the delay pattern: the prompt's codes would come back misaligned.
            return Err(ModelError::Invalid(format!(
                "a prompt of {p} frames and {steps} steps is too short for {k} codebooks' delay \
                 pattern"
            )));
        }

        let built: Vec<_> = prompts
            .iter()
            .map(|item| build_delay_pattern(item, inputs.pad, max_length))
            .collect();
        let patterns: Vec<Vec<Vec<i64>>> = built.iter().map(|(_, pat)| pat.clone()).collect();
        let device = decoder.device();
        // The pattern once on the device: where `fixed` `[max_length, k]` is 1 a position takes
        // the pattern's id (`fixed_ids` `[max_length, batch, k]`: prompt codes differ between
        // items), else the chosen token. With it, a step never waits for the device: each
        // step's input is built there from the previous step's choice, and the chosen ids are
        // read back only when frames are taken. Every item's pattern frees the same positions.
        let fixed: Vec<u8> = (0..max_length)
            .flat_map(|pos| {
                patterns[0]
                    .iter()
                    .map(move |row| u8::from(row[pos] != FREE))
            })
            .collect();
        let fixed_ids: Vec<u32> = (0..max_length)
            .flat_map(|pos| {
                patterns
                    .iter()
                    .flat_map(move |pat| pat.iter().map(move |row| row[pos].max(0) as u32))
            })
            .collect();
        let fixed = Tensor::from_vec(fixed, (max_length, k), device)?;
        let fixed_ids = Tensor::from_vec(fixed_ids, (max_length, inputs.batch, k), device)?;
        // The start runs up to position p (BOS alone without a prompt): positions before p are
        // the prompt's, fed unsteered in one pass; position p is step 0's input.
        let start_ids: Vec<u32> = built
            .iter()
            .flat_map(|(start, _)| {
                start
                    .iter()
                    .flat_map(|row| row[..=p].iter().map(|&id| id as u32))
            })
            .collect();
        let start_ids = Tensor::from_vec(start_ids, (inputs.batch, k, p + 1), device)?;
        let mut cache = decoder.new_cache(rows, max_length)?;
        if p > 0 {
            let before = both_halves(inputs.guided, start_ids.narrow(2, 0, p)?.contiguous()?)?;
            decoder.forward(&before, Some(inputs.cross), Some(&mut cache), None, &[])?;
        }
        let first = start_ids.narrow(2, p, 1)?.contiguous()?;
        let mut input = both_halves(inputs.guided, first.clone())?;
        let chosen_ids = Tensor::zeros((inputs.batch, k, steps), DType::U32, device)?;

        let reused = inputs.prefix.map_or(0, |pre| pre.steps.min(steps));
        if let (Some(prefix), true) = (inputs.prefix, reused > 0) {
            let ids = replay_prefix(
                decoder,
                inputs,
                prefix,
                reused,
                &patterns,
                p,
                &first,
                &mut cache,
                hook.as_mut(),
            )?;
            chosen_ids.slice_set(&ids, 2, 0)?;
            input = both_halves(inputs.guided, ids.narrow(2, reused - 1, 1)?.contiguous()?)?;
            // The RNG continues where generating the reused steps would have left it.
            if let Sampling::TopK { k: top_k, .. } = options.sampling {
                let per_step = k * top_k.clamp(1, cfg.vocab_size);
                for rng in rngs.iter_mut() {
                    for _ in 0..reused * per_step {
                        let _: f64 = rng.random();
                    }
                }
            }
        }
        Ok(Self {
            decoder,
            cross: inputs.cross.clone(),
            batch: inputs.batch,
            guided: inputs.guided,
            pad: inputs.pad,
            first_step: inputs.first_step,
            sampling: options.sampling,
            guidance_scale: options.guidance_scale,
            steps,
            prompt_frames: p,
            built,
            fixed,
            fixed_ids,
            cache,
            input,
            chosen_ids,
            done: reused,
            taken: 0,
            listen: None,
            heard: None,
        })
    }

    /// Keeps the output of decoder block `block` at each step from now on (`None`: none),
    /// for a live reading of what the music holds ([`Generation::heard`]).
    pub fn listen(&mut self, block: Option<usize>) {
        self.listen = block;
        self.heard = None;
    }

    /// The listened block's output at the last step, `[rows, hidden]` f32 (the conditional
    /// rows first).
    pub fn heard(&self) -> Option<&Tensor> {
        self.heard.as_ref()
    }

    /// Decoder steps this pass takes in all.
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// Steps taken so far (replayed ones included).
    pub fn done(&self) -> usize {
        self.done
    }

    /// True once every step is taken.
    pub fn is_finished(&self) -> bool {
        self.done >= self.steps
    }

    /// New frames this pass makes in all: its steps less the delay pattern's `k - 1`.
    pub fn new_frames(&self) -> usize {
        (self.steps + 1).saturating_sub(self.decoder.config().num_codebooks)
    }

    /// New frames complete so far.
    pub fn ready_frames(&self) -> usize {
        (self.done + 1)
            .saturating_sub(self.decoder.config().num_codebooks)
            .min(self.new_frames())
    }

    /// Takes the next step, steered by `hook` (asked for the piece's step `first_step + done`).
    /// A finished pass takes no more steps.
    pub fn step(
        &mut self,
        hook: Option<&mut dyn ResidualHook>,
        rngs: &mut [rand::rngs::StdRng],
    ) -> Result<(), ModelError> {
        if self.is_finished() {
            return Ok(());
        }
        if self.decoder.device().is_cpu() {
            // A CPU step is a few hundred operations, most split across rayon's threads.
            return super::on_worker(|| self.step_here(hook, rngs));
        }
        self.step_here(hook, rngs)
    }

    /// [`Generation::step`] on the calling thread.
    fn step_here(
        &mut self,
        hook: Option<&mut dyn ResidualHook>,
        rngs: &mut [rand::rngs::StdRng],
    ) -> Result<(), ModelError> {
        let step = self.done;
        let offsets = match hook {
            Some(h) => {
                let only_cond = h.conditional_only() && self.guided;
                let offs = h.offsets(self.first_step + step, self.batch)?;
                Some((offs, only_cond))
            }
            None => None,
        };
        let steer = offsets.as_ref().map(|(offs, only_cond)| BlockOffsets {
            offsets: offs,
            rows: only_cond.then_some(self.batch),
        });
        let capture: Vec<usize> = self.listen.into_iter().collect();
        let out = self.decoder.forward(
            &self.input,
            Some(&self.cross),
            Some(&mut self.cache),
            steer.as_ref(),
            &capture,
        )?;
        if let Some(block) = out.captured.first() {
            self.heard = Some(block.squeeze(1)?);
        }
        let t = out.hidden.dim(1)?;
        let last = out.hidden.narrow(1, t - 1, 1)?;
        // Guidance and the token choice run on the decoder's device.
        let logits = self.decoder.logits(&last)?.squeeze(2)?; // [rows, k, vocab], f32
        let scores = if self.guided {
            guide(&logits, self.batch, self.guidance_scale)?
        } else {
            logits
        };
        let chosen = match self.sampling {
            // On ties candle's CPU argmax takes the first index, as torch does; its CUDA kernel
            // may take another (only exact ties, likelier with half-precision logits).
            Sampling::Greedy => scores.argmax(D::Minus1)?,
            Sampling::TopK { k, temperature } => sample_top_k(&scores, k, temperature, rngs)?,
        }; // [batch, k], u32
        let shape = chosen.shape().clone();
        let at = self.prompt_frames + step + 1;
        let next = self
            .fixed
            .get(at)?
            .broadcast_as(&shape)?
            .where_cond(&self.fixed_ids.get(at)?, &chosen)?
            .unsqueeze(2)?;
        self.chosen_ids.slice_set(&next, 2, step)?;
        self.input = both_halves(self.guided, next)?;
        self.done += 1;
        Ok(())
    }

    /// The new frames completed since the last call, `[batch][k][frames]` (one read from the
    /// device).
    pub fn take_frames(&mut self) -> Result<Vec<Vec<Vec<i64>>>, ModelError> {
        let k = self.decoder.config().num_codebooks;
        let (from, to) = (self.taken, self.ready_frames());
        if to <= from {
            return Ok(vec![vec![Vec::new(); k]; self.batch]);
        }
        // Frame j of codebook cb was chosen at step j + cb.
        let ids: Vec<Vec<Vec<u32>>> = self
            .chosen_ids
            .narrow(2, from, to - from + k - 1)?
            .to_vec3()?;
        self.taken = to;
        Ok(ids
            .into_iter()
            .map(|item| {
                item.into_iter()
                    .enumerate()
                    .map(|(cb, row)| {
                        row[cb..cb + to - from]
                            .iter()
                            .map(|&id| id as i64)
                            .collect()
                    })
                    .collect()
            })
            .collect())
    }

    /// Codes `[batch, codebooks, frames]` (i64, on the CPU) with the delay pattern undone: the
    /// prompt's frames, then every new one. Only for a finished pass.
    pub fn codes(&self) -> Result<Tensor, ModelError> {
        if !self.is_finished() {
            return Err(ModelError::Invalid(format!(
                "the pass has taken {} of its {} steps",
                self.done, self.steps
            )));
        }
        let k = self.decoder.config().num_codebooks;
        let p = self.prompt_frames;
        // The stored ids already follow the pattern, so undoing it after the start (whose BOS
        // and pads the undo drops, and whose prompt frames it keeps) is all that is left.
        let chosen_ids: Vec<Vec<Vec<u32>>> = self.chosen_ids.to_vec3()?;
        let frames: Vec<Vec<Vec<i64>>> = chosen_ids
            .iter()
            .zip(&self.built)
            .map(|(item, (start, _))| {
                let item: Vec<Vec<i64>> = item
                    .iter()
                    .zip(start)
                    .map(|(ids, begin)| {
                        begin[..=p]
                            .iter()
                            .copied()
                            .chain(ids.iter().map(|&id| id as i64))
                            .collect()
                    })
                    .collect();
                undo_delay_pattern(&item, self.pad)
            })
            .collect::<Result<_, _>>()?;
        let n = frames[0][0].len();
        let flat: Vec<i64> = frames.into_iter().flatten().flatten().collect();
        Ok(Tensor::from_vec(
            flat,
            (self.batch, k, n),
            &candle_core::Device::Cpu,
        )?)
    }
}

/// `t` as both halves of a guided batch, or as it is.
fn both_halves(guided: bool, t: Tensor) -> candle_core::Result<Tensor> {
    if guided {
        Tensor::cat(&[&t, &t], 0)
    } else {
        Ok(t)
    }
}

/// Runs the decoder for `options.max_new_tokens` steps after the prompt (BOS, then
/// `inputs.prompt`'s frames) and returns codes `[batch, codebooks, frames]` (i64) with the delay
/// pattern undone: the prompt's frames, then the new ones. `rngs` (one per batch item, see
/// [`seeded_rngs`]) are where sampling draws from, and are left where it stopped.
pub fn generate(
    decoder: &Decoder,
    inputs: &GenerationInputs,
    options: &GenerateOptions,
    mut hook: Option<&mut dyn ResidualHook>,
    on_step: &mut dyn FnMut(usize, usize),
    rngs: &mut [rand::rngs::StdRng],
) -> Result<Tensor, ModelError> {
    let mut pass = Generation::new(
        decoder,
        inputs,
        options,
        hook.as_mut().map(|h| &mut **h as &mut dyn ResidualHook),
        rngs,
    )?;
    if pass.done() > 0 {
        on_step(pass.done(), pass.steps());
    }
    while !pass.is_finished() {
        pass.step(
            hook.as_mut().map(|h| &mut **h as &mut dyn ResidualHook),
            rngs,
        )?;
        on_step(pass.done(), pass.steps());
    }
    pass.codes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    const P: i64 = 2048;

    #[test]
    fn delay_pattern_matches_hf_docstring() {
        // HF docstring, 4 codebooks, max_length 8, BOS-only prompt.
        let (input, pattern) = build_delay_pattern(&vec![vec![P]; 4], P, 8);
        let f = FREE;
        assert_eq!(
            pattern,
            vec![
                vec![P, f, f, f, f, P, P, P],
                vec![P, P, f, f, f, f, P, P],
                vec![P, P, P, f, f, f, f, P],
                vec![P, P, P, P, f, f, f, f],
            ]
        );
        assert_eq!(input, vec![vec![P]; 4]);
    }

    #[test]
    fn delay_pattern_with_prompt_matches_hf_docstring() {
        // [P, a, b, -1, -1, P, P, P] ... with a prompt of two frames after BOS.
        let prompt = vec![vec![P, 1, 2], vec![P, 3, 4], vec![P, 5, 6], vec![P, 7, 8]];
        let (input, pattern) = build_delay_pattern(&prompt, P, 8);
        let f = FREE;
        assert_eq!(pattern[0], vec![P, 1, 2, f, f, P, P, P]);
        assert_eq!(pattern[1], vec![P, P, 3, 4, f, f, P, P]);
        assert_eq!(pattern[3], vec![P, P, P, P, 7, 8, f, f]);
        assert_eq!(input[2], vec![P, P, P]);
    }

    #[test]
    fn undo_recovers_frames() {
        let (_, pattern) = build_delay_pattern(&vec![vec![P]; 4], P, 8);
        // Generated ids where the pattern is free, its fixed id elsewhere.
        let ids: Vec<Vec<i64>> = (0..4)
            .map(|cb| {
                (0..8)
                    .map(|p| match pattern[cb as usize][p] {
                        FREE => cb * 100 + p as i64,
                        fixed => fixed,
                    })
                    .collect()
            })
            .collect();
        let frames = undo_delay_pattern(&ids, P).unwrap();
        // max_length 8 = 7 new tokens → 4 frames; codebook k's frame i was generated at i + k + 1.
        assert_eq!(frames[0], vec![1, 2, 3, 4]);
        assert_eq!(frames[3], vec![304, 305, 306, 307]);
    }

    #[test]
    fn top_k_stays_in_top_k_and_is_seeded() {
        let logits: Vec<f32> = (0..50).map(|i| ((i * 37) % 50) as f32 * 0.1).collect();
        let mut sorted = logits.clone();
        sorted.sort_by(|a, b| b.total_cmp(a));
        let rows = Tensor::from_vec(logits.repeat(500), (500, 50), &Device::Cpu).unwrap();
        let draw = |seed| -> Vec<u32> {
            let mut rng = [rand::rngs::StdRng::seed_from_u64(seed)];
            let ids = sample_top_k(&rows, 5, 1.0, &mut rng).unwrap();
            ids.to_vec1().unwrap()
        };
        let a = draw(7);
        assert!(a.iter().all(|&i| logits[i as usize] >= sorted[4]));
        assert_eq!(a, draw(7), "same seed, other draws");
        assert_ne!(a, draw(8), "seed has no effect");
    }

    /// Frequencies of `n` draws of each id from one row of logits.
    fn frequencies(logits: &[f32], k: usize, temperature: f64, n: usize) -> Vec<f64> {
        let rows = Tensor::from_vec(logits.repeat(n), (n, logits.len()), &Device::Cpu).unwrap();
        let mut rng = [rand::rngs::StdRng::seed_from_u64(1)];
        let ids: Vec<u32> = sample_top_k(&rows, k, temperature, &mut rng)
            .unwrap()
            .to_vec1()
            .unwrap();
        let mut freq = vec![0.0; logits.len()];
        for i in ids {
            freq[i as usize] += 1.0 / n as f64;
        }
        freq
    }

    #[test]
    fn top_k_samples_the_softmax_of_the_kept_logits() {
        let l = [0.0, 2f32.ln(), 3f32.ln(), 4f32.ln()];
        let close = |got: &[f64], want: &[f64]| {
            for (g, w) in got.iter().zip(want) {
                assert!((g - w).abs() < 0.015, "{got:?} vs {want:?}");
            }
        };
        // softmax over all four: 1, 2, 3, 4 (/10).
        close(&frequencies(&l, 4, 1.0, 20_000), &[0.1, 0.2, 0.3, 0.4]);
        // top-2 keeps 3 and 4 (/7); the rest never comes up.
        close(
            &frequencies(&l, 2, 1.0, 20_000),
            &[0.0, 0.0, 3. / 7., 4. / 7.],
        );
        // temperature 2: weights sqrt(1..4).
        let w: Vec<f64> = (1..=4).map(|i| (i as f64).sqrt()).collect();
        let total: f64 = w.iter().sum();
        let want: Vec<f64> = w.iter().map(|v| v / total).collect();
        close(&frequencies(&l, 4, 2.0, 20_000), &want);
    }

    #[test]
    fn guidance_mixes_raw_logits_and_greedy_takes_the_first_best() {
        let logits = Tensor::new(&[[2f32, 0.0], [1.0, 1.0]], &Device::Cpu).unwrap();
        let mixed: Vec<Vec<f32>> = guide(&logits, 1, 3.0).unwrap().to_vec2().unwrap();
        assert_eq!(mixed, vec![vec![4.0, -2.0]]);
        let ties = Tensor::new(&[1f32, 3.0, 3.0], &Device::Cpu).unwrap();
        assert_eq!(
            ties.argmax(D::Minus1).unwrap().to_scalar::<u32>().unwrap(),
            1
        );
    }
}
