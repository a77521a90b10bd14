//! A piece as a generation the caller steps: the one loop behind every render, sweep, recipe
//! and live performance.
//!
//! [`PieceStream`] holds what a piece needs between steps (text conditioning, the current
//! window's [`Generation`], the sampling RNGs and the frames so far) and takes one decoder step
//! at a time, with the steering hook the caller passes to *that* step: a performance can swap
//! its steering between any two steps. Frames are handed out as soon as the delay pattern has
//! completed them ([`PieceStream::take_frames`]); a piece with a window goes on window after
//! window, and an endless one ([`Extent::endless`]) never stops by itself.

use candle_core::{Device, Tensor};

use super::decoder::CrossContext;
use super::generate::{self, Generation, GenerationInputs, Prefix};
use super::{Extent, GenerateOptions, ModelError, MusicGen, Pass, ResidualHook, Window};

/// The passes of a piece, worked out one at a time (an endless piece has no last one): the
/// first from the clip, and with a window each next one prompted with the last `frames -
/// stride` frames of the one before.
#[derive(Debug, Clone)]
pub struct Passes {
    window: Option<Window>,
    /// New frames in all; `None`: endless.
    new_frames: Option<usize>,
    from: usize,
    len: usize,
    done: usize,
    started: bool,
}

impl Passes {
    /// The passes making `new_frames` frames (`None`: without end, which needs a window) after
    /// `clip_frames` frames of clip.
    pub fn new(clip_frames: usize, new_frames: Option<usize>, window: Option<Window>) -> Self {
        Passes {
            window,
            new_frames,
            from: 0,
            len: clip_frames,
            done: 0,
            started: false,
        }
    }
}

impl Iterator for Passes {
    type Item = Pass;

    fn next(&mut self) -> Option<Pass> {
        let left = self.new_frames.map_or(usize::MAX, |n| n - self.done.min(n));
        let Some(w) = self.window else {
            if self.started {
                return None;
            }
            self.started = true;
            return Some(Pass {
                prompt_from: 0,
                prompt_len: self.len,
                new: left,
            });
        };
        if self.started && left == 0 {
            return None;
        }
        let new = left.min(w.frames.saturating_sub(self.len));
        if new == 0 {
            return None;
        }
        self.started = true;
        let pass = Pass {
            prompt_from: self.from,
            prompt_len: self.len,
            new,
        };
        self.done += new;
        // The window just made ends at the piece's end: the next keeps its last frames - stride.
        let end = self.from + self.len + new;
        let kept = (self.len + new).saturating_sub(w.stride);
        self.from = end - kept;
        self.len = kept;
        Some(pass)
    }
}

/// A piece being generated step by step (see the module doc).
pub struct PieceStream<'m> {
    model: &'m MusicGen,
    batch: usize,
    guided: bool,
    cross: CrossContext,
    options: GenerateOptions,
    passes: Passes,
    rngs: Vec<rand::rngs::StdRng>,
    /// Per item, `[codebooks][frames]`: the clip, then the new frames taken so far.
    piece: Vec<Vec<Vec<i64>>>,
    clip_frames: usize,
    /// The pass being generated and its generation.
    current: Option<(Pass, Generation<'m>)>,
    /// Steps and new frames of the passes before the current one.
    steps_before: usize,
    frames_before: usize,
    /// New frames handed out by [`PieceStream::take_frames`].
    handed: usize,
    total_steps: Option<usize>,
    listen: Option<usize>,
}

impl<'m> PieceStream<'m> {
    /// Starts a piece: `options.max_new_tokens` steps after the extent's clip (or without end
    /// when [`Extent::endless`]), reusing an earlier generation's first steps when `prefix`
    /// says so (`hook` steers the reused steps as it steered them). Encodes the prompts and
    /// feeds the clip; no step is taken yet.
    pub fn new(
        model: &'m MusicGen,
        prompts: &[&str],
        options: &GenerateOptions,
        extent: &Extent,
        hook: Option<&mut dyn ResidualHook>,
        prefix: Option<&Prefix>,
    ) -> Result<Self, ModelError> {
        model.check_options(prompts, options, extent)?;
        let (cross, guided) = model.cross_context(prompts, options)?;
        let k = model.num_codebooks();
        let clip = extent.clip.clone().unwrap_or_else(|| vec![Vec::new(); k]);
        let clip_frames = clip.first().map_or(0, Vec::len);
        let new_frames = (!extent.endless).then(|| model.new_frames(options.max_new_tokens));
        let total_steps = (!extent.endless).then(|| {
            model
                .pass_steps(extent, options.max_new_tokens)
                .iter()
                .sum()
        });
        let mut stream = PieceStream {
            model,
            batch: prompts.len(),
            guided,
            cross,
            options: options.clone(),
            passes: Passes::new(clip_frames, new_frames, extent.window),
            rngs: generate::seeded_rngs(options.seed, prompts.len()),
            piece: vec![clip; prompts.len()],
            clip_frames,
            current: None,
            steps_before: 0,
            frames_before: 0,
            handed: 0,
            total_steps,
            listen: None,
        };
        stream.start_pass(hook, prefix)?;
        Ok(stream)
    }

    /// Starts the next pass, prompted with the piece's frames it names; false when there is
    /// none.
    fn start_pass(
        &mut self,
        hook: Option<&mut dyn ResidualHook>,
        prefix: Option<&Prefix>,
    ) -> Result<bool, ModelError> {
        let Some(pass) = self.passes.next() else {
            return Ok(false);
        };
        let prompt: Vec<Vec<Vec<i64>>> = self
            .piece
            .iter()
            .map(|item| {
                item.iter()
                    .map(|row| row[pass.prompt_from..pass.prompt_from + pass.prompt_len].to_vec())
                    .collect()
            })
            .collect();
        let inputs = GenerationInputs {
            cross: &self.cross,
            batch: self.batch,
            guided: self.guided,
            pad: self.model.pad,
            bos: self.model.bos,
            prefix,
            prompt: (pass.prompt_len > 0).then_some(prompt.as_slice()),
            first_step: self.frames_before,
        };
        let pass_options = GenerateOptions {
            max_new_tokens: pass.new + self.model.num_codebooks() - 1,
            ..self.options.clone()
        };
        let mut generation = Generation::new(
            &self.model.decoder,
            &inputs,
            &pass_options,
            hook,
            &mut self.rngs,
        )?;
        generation.listen(self.listen);
        self.current = Some((pass, generation));
        Ok(true)
    }

    /// Moves the frames the current pass has completed into the piece.
    fn collect_frames(&mut self) -> Result<(), ModelError> {
        if let Some((_, generation)) = &mut self.current {
            let frames = generation.take_frames()?;
            for (item, got) in self.piece.iter_mut().zip(frames) {
                for (row, ids) in item.iter_mut().zip(got) {
                    row.extend(ids);
                }
            }
        }
        Ok(())
    }

    /// Takes the piece's next decoder step, steered by `hook` (asked for the piece's step: new
    /// frames before this window plus the window's step). Moves on to the next window when
    /// the current one is done. Returns false, taking no step, once the piece is complete.
    pub fn step(&mut self, hook: Option<&mut dyn ResidualHook>) -> Result<bool, ModelError> {
        let finished = self.current.as_ref().is_none_or(|(_, g)| g.is_finished());
        if finished {
            if let Some((pass, generation)) = &self.current {
                let (new, steps) = (pass.new, generation.steps());
                self.collect_frames()?;
                self.steps_before += steps;
                self.frames_before += new;
                self.current = None;
            }
            if !self.start_pass(None, None)? {
                return Ok(false);
            }
        }
        let Some((_, generation)) = &mut self.current else {
            return Ok(false);
        };
        generation.step(hook, &mut self.rngs)?;
        Ok(true)
    }

    /// Keeps decoder block `block`'s output at each step from now on (`None`: none): what a
    /// live reading of the music's concept projects ([`PieceStream::heard`]).
    pub fn listen(&mut self, block: Option<usize>) -> Result<(), ModelError> {
        if let Some(b) = block.filter(|b| *b >= self.model.num_layers()) {
            return Err(ModelError::Invalid(format!(
                "block {b} does not exist: the model has {}",
                self.model.num_layers()
            )));
        }
        self.listen = block;
        if let Some((_, g)) = &mut self.current {
            g.listen(block);
        }
        Ok(())
    }

    /// The listened block's output at the last step, `[rows, hidden]` f32 (the conditional
    /// rows first; none before a step, or when nothing is listened to).
    pub fn heard(&self) -> Option<&Tensor> {
        self.current.as_ref().and_then(|(_, g)| g.heard())
    }

    /// Decoder steps taken so far over every window (reused ones included).
    pub fn steps_done(&self) -> usize {
        self.steps_before + self.current.as_ref().map_or(0, |(_, g)| g.done())
    }

    /// Decoder steps of the whole piece (each window adds `codebooks - 1` steps for its delay
    /// pattern); `None` for an endless piece.
    pub fn total_steps(&self) -> Option<usize> {
        self.total_steps
    }

    /// True once every step of a finite piece is taken.
    pub fn is_finished(&self) -> bool {
        self.total_steps.is_some_and(|t| self.steps_done() >= t)
    }

    /// New frames completed so far (handed out or not).
    pub fn frames_done(&self) -> usize {
        self.frames_before + self.current.as_ref().map_or(0, |(_, g)| g.ready_frames())
    }

    /// New frames handed out so far by [`PieceStream::take_frames`].
    pub fn frames_taken(&self) -> usize {
        self.handed
    }

    /// The new frames completed since the last call, `[batch][codebooks][frames]` (the clip's
    /// frames are never handed out). Reads the chosen ids from the device once.
    pub fn take_frames(&mut self) -> Result<Vec<Vec<Vec<i64>>>, ModelError> {
        self.collect_frames()?;
        let from = self.clip_frames + self.handed;
        let out: Vec<Vec<Vec<i64>>> = self
            .piece
            .iter()
            .map(|item| item.iter().map(|row| row[from..].to_vec()).collect())
            .collect();
        self.handed += out[0][0].len();
        Ok(out)
    }

    /// The whole piece's codes `[batch, codebooks, frames]` (i64, CPU): the clip's frames, then
    /// the new ones completed so far.
    pub fn codes(&mut self) -> Result<Tensor, ModelError> {
        self.collect_frames()?;
        let k = self.model.num_codebooks();
        let frames = self.piece[0][0].len();
        let flat: Vec<i64> = self.piece.iter().flatten().flatten().copied().collect();
        Ok(Tensor::from_vec(
            flat,
            (self.batch, k, frames),
            &Device::Cpu,
        )?)
    }
}

/// Audio for frames as they come (see [`MusicGen::decode_stream`]): per batch item, the
/// samples that are final so far.
pub struct AudioStream<'m> {
    codec: super::encodec::DecodeStream<'m>,
    codebooks: usize,
}

impl<'m> AudioStream<'m> {
    pub(super) fn new(codec: super::encodec::DecodeStream<'m>, codebooks: usize) -> Self {
        AudioStream { codec, codebooks }
    }

    /// Frames the audio lags the codes by (the codec's look-ahead): a frame is heard once this
    /// many more have arrived.
    pub fn lag_frames(&self) -> usize {
        self.codec.context()
    }

    /// Takes frames `[batch][codebooks][frames]` (as [`PieceStream::take_frames`] gives them)
    /// and returns each item's audio that is now final (possibly none).
    pub fn push(&mut self, frames: &[Vec<Vec<i64>>]) -> Result<Vec<Vec<f32>>, ModelError> {
        let n = frames.first().and_then(|f| f.first()).map_or(0, Vec::len);
        let fits = frames
            .iter()
            .all(|item| item.len() == self.codebooks && item.iter().all(|row| row.len() == n));
        if frames.is_empty() || !fits {
            return Err(ModelError::Invalid(format!(
                "frames must be [batch][{}][frames], every row one length",
                self.codebooks
            )));
        }
        if n == 0 && self.codec.frames_in() == 0 {
            return Ok(vec![Vec::new(); frames.len()]);
        }
        let flat: Vec<i64> = frames.iter().flatten().flatten().copied().collect();
        let codes = Tensor::from_vec(flat, (frames.len(), self.codebooks, n), &Device::Cpu)?;
        Self::host(self.codec.push(&codes)?)
    }

    /// The rest of the audio, once the last frames are pushed.
    pub fn finish(&mut self) -> Result<Vec<Vec<f32>>, ModelError> {
        Self::host(self.codec.finish()?)
    }

    fn host(audio: Tensor) -> Result<Vec<Vec<f32>>, ModelError> {
        Ok(audio
            .squeeze(1)?
            .to_dtype(candle_core::DType::F32)?
            .to_vec2()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(clip: usize, new: usize, window: Option<Window>) -> Vec<Pass> {
        Passes::new(clip, Some(new), window).collect()
    }

    #[test]
    fn one_pass_without_a_window() {
        assert_eq!(
            all(3, 10, None),
            vec![Pass {
                prompt_from: 0,
                prompt_len: 3,
                new: 10
            }]
        );
    }

    #[test]
    fn windows_keep_frames_minus_stride_as_prompt() {
        let w = Window {
            frames: 10,
            stride: 6,
        };
        let got = all(0, 20, Some(w));
        let want = [(0, 0, 10), (6, 4, 6), (12, 4, 4)];
        let want: Vec<Pass> = want
            .iter()
            .map(|&(prompt_from, prompt_len, new)| Pass {
                prompt_from,
                prompt_len,
                new,
            })
            .collect();
        assert_eq!(got, want);
        assert_eq!(got.iter().map(|p| p.new).sum::<usize>(), 20);
    }

    #[test]
    fn an_endless_piece_goes_on_window_after_window() {
        let w = Window {
            frames: 10,
            stride: 6,
        };
        let mut passes = Passes::new(2, None, Some(w));
        let first = passes.next().unwrap();
        assert_eq!((first.prompt_len, first.new), (2, 8));
        for _ in 0..1000 {
            let p = passes.next().unwrap();
            assert_eq!((p.prompt_len, p.new), (4, 6));
        }
    }
}
