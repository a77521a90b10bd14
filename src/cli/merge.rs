//! `baton merge SHARD... --out FILE`: join the features shards of `baton features --shard K/N`
//! into the features file one process writes, or the readings shards of
//! `baton eval --shard K/N --json F` (`.json`) into the readings file one process writes.

use std::path::PathBuf;

use baton::files::write_atomic;
use baton::probe::merge_files;
use baton::probe::shards::merge_readings;
use clap::Args;

use super::output::{check_output_in_new_folder, NewFolder};

/// Arguments of `baton merge`.
#[derive(Args, Debug)]
pub struct MergeArgs {
    /// The shard files `baton features --shard K/N` wrote (OUT.shard-K-of-N.safetensors), or
    /// those `baton eval --shard K/N --json F` wrote (F.shard-K-of-N.json): all N of one run,
    /// in any order.
    #[arg(required = true, value_name = "SHARD")]
    pub shards: Vec<PathBuf>,
    /// The file to write: a features file, or a readings file for .json shards (missing
    /// folders are created).
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
    let readings = args
        .shards
        .first()
        .is_some_and(|s| s.extension().is_some_and(|e| e == "json"));
    if readings {
        return merge_readings_files(&args, out_folder);
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

/// `baton merge F.shard-*.json --out F`: the readings of `baton eval --shard K/N --json F`.
fn merge_readings_files(args: &MergeArgs, out_folder: NewFolder) -> miette::Result<()> {
    let docs = args
        .shards
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p)
                .map_err(|e| miette::miette!("cannot read {}: {e}", p.display()))?;
            let doc: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| miette::miette!("{}: not a readings file ({e})", p.display()))?;
            Ok((p.clone(), doc))
        })
        .collect::<miette::Result<Vec<_>>>()?;
    let whole = merge_readings(docs).map_err(|e| miette::miette!("{e}"))?;
    out_folder.create()?;
    write_atomic(
        &args.out,
        serde_json::to_string_pretty(&whole)
            .unwrap_or_default()
            .as_bytes(),
    )
    .map_err(|e| miette::miette!("cannot write {}: {e}", args.out.display()))?;
    eprintln!(
        "wrote {}: {} reading(s) from {} shard(s)",
        args.out.display(),
        whole["readings"].as_array().map_or(0, Vec::len),
        args.shards.len()
    );
    Ok(())
}
