//! `baton merge SHARD... --out FILE`: join the features shards of `baton features --shard K/N`
//! into the features file one process writes.

use std::path::PathBuf;

use baton::probe::merge_files;
use clap::Args;

use super::output::check_output_in_new_folder;

/// Arguments of `baton merge`.
#[derive(Args, Debug)]
pub struct MergeArgs {
    /// The shard files `baton features --shard K/N` wrote (OUT.shard-K-of-N.safetensors), all N
    /// of one run, in any order.
    #[arg(required = true, value_name = "SHARD")]
    pub shards: Vec<PathBuf>,
    /// The features file to write (missing folders are created).
    #[arg(long)]
    pub out: PathBuf,
}

/// Runs `baton merge`.
pub fn run(args: MergeArgs) -> miette::Result<()> {
    let out_folder = check_output_in_new_folder(&args.out)?;
    if let Some(shard) = args.shards.iter().find(|s| **s == args.out) {
        return Err(miette::miette!(
            "--out {} is one of the shards; write the merged file elsewhere",
            shard.display()
        ));
    }
    let features = merge_files(&args.shards).map_err(|e| miette::miette!("{e}"))?;
    out_folder.create()?;
    features
        .write(&args.out)
        .map_err(|e| miette::miette!("{e}"))?;
    eprintln!(
        "wrote {}: {} clips x {} blocks x {} features ({} pooling) from {} shard(s)",
        args.out.display(),
        features.n,
        features.layers.len(),
        features.hidden_size,
        features.pooling,
        args.shards.len()
    );
    Ok(())
}
