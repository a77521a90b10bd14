//! Random decoder weights for the quantization tests and `examples/bench_decoder.rs` (which
//! includes this file by path).

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;

/// Every weight drawn from N(0, 0.02²) (transformers' init for MusicGen's decoder), so the
/// quantization sees weights distributed as a trained model's roughly are, and materialised: a
/// `VarMap` hands out lazily zeroed buffers, whose products read the kernel's shared zero page
/// instead of memory (that made early benchmark runs look faster than real weights allow).
pub struct RandomWeights;

impl SimpleBackend for RandomWeights {
    fn get(
        &self,
        s: Shape,
        _name: &str,
        _h: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        Tensor::randn(0f32, 0.02, s, dev)?.to_dtype(dtype)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("{name}: shape unknown")
    }

    fn contains_tensor(&self, _name: &str) -> bool {
        true
    }
}
