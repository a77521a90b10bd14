//! `baton features`: a dataset folder to a features file (pooled per-block decoder outputs).

use std::path::PathBuf;

use baton::concepts::read_manifest;
use baton::probe::{check_entries, extract_entries, extract_shard, ExtractOptions, Pooling};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use super::common::{load_model, ModelArgs};
use super::output::check_output_in_new_folder;
use super::shard::ShardArgs;

/// Arguments of `baton features`.
#[derive(Args, Debug)]
pub struct FeaturesArgs {
    /// Dataset folder written by `baton dataset` (clips/*.wav + manifest.jsonl).
    pub dataset: PathBuf,
    /// Output features file (.safetensors; missing folders are created). A shard writes
    /// OUT's name with `.shard-K-of-N` before the extension instead, for `baton merge`.
    #[arg(long)]
    pub out: PathBuf,
    /// Decoder blocks to keep, comma-separated (default: all).
    #[arg(long, value_delimiter = ',')]
    pub layers: Vec<usize>,
    /// Pooling over time: mean (the paper's) or last.
    #[arg(long, default_value = "mean")]
    pub pooling: String,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub shard: ShardArgs,
}

/// Runs `baton features`.
pub fn run(args: FeaturesArgs) -> miette::Result<()> {
    let pooling: Pooling = args.pooling.parse().map_err(|e| miette::miette!("{e}"))?;
    let shard = args.shard.resolve()?;
    let out = if shard.is_whole() {
        args.out.clone()
    } else {
        shard.file_for(&args.out)
    };
    // Everything that can be checked without the model is, before the slow load and extraction.
    let out_folder = check_output_in_new_folder(&out)?;
    let entries = read_manifest(&args.dataset).map_err(|e| miette::miette!("{e}"))?;
    check_entries(&args.dataset, &entries).map_err(|e| miette::miette!("{e}"))?;
    let model = load_model(&args.model)?;
    let options = ExtractOptions {
        layers: args.layers.clone(),
        pooling,
        model_name: baton::model::load::model_identity(&args.model.spec()),
    };
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} clips  {per_sec}  [{elapsed}<{eta}]")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut on_clip = |done: usize, total: usize| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    };
    if !shard.is_whole() {
        let part = extract_shard(
            &model,
            &args.dataset,
            &entries,
            shard,
            &options,
            &mut on_clip,
        );
        bar.finish_and_clear();
        let part = part.map_err(|e| miette::miette!("{e}"))?;
        out_folder.create()?;
        part.write(&out).map_err(|e| miette::miette!("{e}"))?;
        eprintln!(
            "wrote {}: shard {shard}, {} of {} clips x {} blocks x {} features ({} pooling); \
             join the shards with `baton merge`",
            out.display(),
            part.set.n,
            part.total,
            part.set.layers.len(),
            part.set.hidden_size,
            part.set.pooling
        );
        return Ok(());
    }
    let features = extract_entries(&model, &args.dataset, &entries, &options, &mut on_clip);
    bar.finish_and_clear();
    let features = features.map_err(|e| miette::miette!("{e}"))?;
    out_folder.create()?;
    features.write(&out).map_err(|e| miette::miette!("{e}"))?;
    eprintln!(
        "wrote {}: {} clips x {} blocks x {} features ({} pooling)",
        out.display(),
        features.n,
        features.layers.len(),
        features.hidden_size,
        features.pooling
    );
    Ok(())
}
