//! Random decoder weights for the quantization tests and `examples/bench_decoder.rs` (which
//! includes this file by path).

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use rand::SeedableRng;
use rand_distr::Distribution;

/// Every weight drawn from N(0, 0.02²) (transformers' init for MusicGen's decoder), so the
/// quantization sees weights distributed as a trained model's roughly are, and materialised: a
/// `VarMap` hands out lazily zeroed buffers, whose products read the kernel's shared zero page
/// instead of memory (that made early benchmark runs look faster than real weights allow).
/// Each tensor is drawn from a generator seeded by its name, so every run (and every test that
/// states a bound measured on these weights) sees the same weights.
pub struct RandomWeights;

/// A `shape` tensor of N(0, `std`²) values from a generator seeded with `seed`.
pub fn seeded_normal(shape: impl Into<Shape>, std: f32, seed: u64, dev: &Device) -> Tensor {
    let shape = shape.into();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let normal = rand_distr::Normal::new(0f32, std).expect("a finite, positive deviation");
    let values: Vec<f32> = (0..shape.elem_count())
        .map(|_| normal.sample(&mut rng))
        .collect();
    Tensor::from_vec(values, shape, dev).expect("as many values as the shape holds")
}

/// FNV-1a of a tensor's name: its generator's seed.
fn seed_of(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl SimpleBackend for RandomWeights {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _h: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        seeded_normal(s, 0.02, seed_of(name), dev).to_dtype(dtype)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("{name}: shape unknown")
    }

    fn contains_tensor(&self, _name: &str) -> bool {
        true
    }
}
