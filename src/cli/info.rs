//! `baton info`: a model's shape and size, read from its config and weight headers (no weights
//! are loaded).

use std::collections::BTreeMap;

use baton::model::load::Weights;
use clap::Args;

/// Arguments of `baton info`.
#[derive(Args, Debug)]
pub struct InfoArgs {
    /// Hugging Face hub id or local folder.
    #[arg(long, default_value = "facebook/musicgen-small")]
    pub model: String,
    /// Hub revision of --model: a branch, tag, commit or `refs/pr/N` [default: main].
    #[arg(long)]
    pub revision: Option<String>,
}

fn human_bytes(n: usize) -> String {
    let n = n as f64;
    if n >= 1e9 {
        format!("{:.2} GB", n / 1e9)
    } else if n >= 1e6 {
        format!("{:.1} MB", n / 1e6)
    } else {
        format!("{:.1} kB", n / 1e3)
    }
}

/// Runs `baton info`.
pub fn run(args: InfoArgs) -> miette::Result<()> {
    let err = |e: baton::model::ModelError| miette::miette!("{e}");
    let spec = baton::model::load::with_revision(&args.model, args.revision.as_deref());
    let (files, config) = super::common::model_config(&spec)?;
    let weights = Weights::open(&files.weights).map_err(err)?;

    // Parameters and bytes per top-level part of the checkpoint.
    let mut parts: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for (name, dtype, shape) in weights.tensors() {
        let part = name.split('.').next().unwrap_or("").to_string();
        let n: usize = shape.iter().product();
        let e = parts.entry(part).or_default();
        e.0 += n;
        e.1 += n * dtype.size_in_bytes();
    }
    let d = &config.decoder;
    let max_s = config.max_seconds();
    println!("model            {spec}");
    println!(
        "decoder          {} blocks, hidden {}, {} heads, ffn {}",
        d.num_hidden_layers, d.hidden_size, d.num_attention_heads, d.ffn_dim
    );
    println!(
        "codebooks        {} x {} entries (pad/BOS id {})",
        d.num_codebooks,
        d.vocab_size,
        d.pad_id()
    );
    println!("text encoder     T5, d_model {}", config.text_hidden_size);
    println!(
        "audio            {} Hz mono, {} samples/frame, {} frames/s, at most {:.1} s",
        config.sample_rate,
        config.hop_length,
        config.frame_rate(),
        max_s
    );
    let (mut total_n, mut total_b) = (0, 0);
    for (part, (n, b)) in &parts {
        println!(
            "weights          {part:<16} {:>7.1} M params  {:>10}",
            *n as f64 / 1e6,
            human_bytes(*b)
        );
        total_n += n;
        total_b += b;
    }
    println!(
        "weights          {:<16} {:>7.1} M params  {:>10}",
        "total",
        total_n as f64 / 1e6,
        human_bytes(total_b)
    );
    Ok(())
}
