//! The one interface through which the decoder knows about steering and probing.
//!
//! Layer indexing: block `l` (0-based) is the `l`-th decoder block; its output is what Hugging
//! Face calls `hidden_states[l + 1]` (index 0 is the embeddings), except HF's very last entry,
//! which is taken after the final LayerNorm. baton never applies the final LayerNorm to a
//! captured or steered block output.

use candle_core::Tensor;

/// Steering seen from the decoder during generation.
///
/// The decoder calls [`ResidualHook::offsets`] once per generated frame (one forward pass with a
/// KV cache), before running its blocks, and adds each returned vector to the corresponding
/// block's output at every position. Hooks are `Send`: a CPU step runs on one of rayon's worker
/// threads (see [`crate::model::generate::Generation::step`]).
pub trait ResidualHook: Send {
    /// Vectors to add at generation step `step` (0-based: the forward pass that produces frame
    /// `step`) of a batch of `batch` items. One entry per decoder block; `None` means nothing is
    /// added to that block. Each vector is already on the decoder's device and dtype, with shape
    /// `[hidden]` (the same for every item) or `[batch, 1, hidden]` (one row per item; both
    /// classifier-free-guidance halves of an item get its row).
    fn offsets(&mut self, step: usize, batch: usize) -> candle_core::Result<&[Option<Tensor>]>;

    /// When true, offsets are added only to the conditional half of a classifier-free-guidance
    /// batch (the first half); by default both halves are steered, as in the paper.
    fn conditional_only(&self) -> bool {
        false
    }
}
