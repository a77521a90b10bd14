//! Options shared by every verb that loads a model.

use clap::Args;

/// Which model to load, and where to run it.
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// Hugging Face hub id or local folder.
    #[arg(long, default_value = "facebook/musicgen-small")]
    pub model: String,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Storage type of the decoder weights: f32, f16 or bf16.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
}
