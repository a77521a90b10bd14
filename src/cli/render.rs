//! `baton render`: a prompt (with optional `--steer` bundles) or a recipe to WAV.

use clap::Args;
use std::path::PathBuf;

use super::common::ModelArgs;

/// Arguments of `baton render`.
#[derive(Args, Debug)]
pub struct RenderArgs {
    /// A Rhai recipe to run instead of --prompt.
    pub recipe: Option<PathBuf>,
    /// Text prompt; repeat for a batch (one file per prompt).
    #[arg(long)]
    pub prompt: Vec<String>,
    /// Length of the music in seconds.
    #[arg(long, conflicts_with = "max_new_tokens")]
    pub seconds: Option<f64>,
    /// Decoder steps, with Hugging Face's meaning (frames + codebooks - 1).
    #[arg(long)]
    pub max_new_tokens: Option<usize>,
    /// Output WAV file (a stem or folder for a batch).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Always pick the most likely token (no sampling).
    #[arg(long)]
    pub greedy: bool,
    /// Sample among the K most likely tokens.
    #[arg(long, default_value_t = 250)]
    pub top_k: usize,
    /// Sampling temperature.
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f64,
    /// Classifier-free guidance scale (1.0 disables guidance).
    #[arg(long, default_value_t = 3.0)]
    pub cfg: f64,
    /// Seed of the sampling RNG.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Also write the generated codes (tensor `codes`, i64 [codebooks, frames]).
    #[arg(long)]
    pub save_codes: Option<PathBuf>,
    /// Write 16-bit PCM instead of 32-bit float WAV.
    #[arg(long)]
    pub pcm16: bool,
    /// Steer with a direction bundle: BUNDLE[:STRENGTH] (repeatable).
    #[arg(long)]
    pub steer: Vec<String>,
    /// Layer weighting for --steer: exp, linear, uniform or top:K.
    #[arg(long, default_value = "exp")]
    pub layer_weights: String,
    /// Probability of steering at each step (stochastic gate).
    #[arg(long, default_value_t = 1.0)]
    pub gate: f64,
    #[command(flatten)]
    pub model: ModelArgs,
}

/// Runs `baton render`.
pub fn run(args: RenderArgs) -> miette::Result<()> {
    if args.recipe.is_some() {
        return super::recipe::run(&args);
    }
    Err(miette::miette!(
        "baton render --prompt is not implemented yet"
    ))
}
