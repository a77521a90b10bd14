//! `baton library`: what the direction library holds. One row per bundle
//! (`DIR/CONCEPT/TARGET.safetensors`, the names recipes and `--steer` use): its blocks, the best
//! block and its validation score, how it was found (`rfm` or `mean-diff`), the model it was
//! trained on, whether it carries residual norms (needed for `--strength-unit residual`), and
//! whether a classifier (for `baton eval` and `probe(...).classify`) sits beside it.

use baton::steer::library::{library_table, list_library, LibraryEntry};
use clap::Args;
use serde_json::json;

use super::common::Library;

/// Arguments of `baton library`.
#[derive(Args, Debug)]
pub struct LibraryArgs {
    #[command(flatten)]
    pub library: Library,
    /// Only names starting with this (`notes`, `notes:C`).
    pub filter: Option<String>,
    /// Print JSON (one object per bundle) instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Runs `baton library`.
pub fn run(args: LibraryArgs) -> miette::Result<()> {
    let dir = &args.library.dir;
    if !dir.is_dir() {
        return Err(miette::miette!(
            "no direction library at {} (set --directions or $BATON_DIRECTIONS; `baton train \
             --out DIR/CONCEPT/TARGET.safetensors` adds to one)",
            dir.display()
        ));
    }
    let entries = list_library(dir, args.filter.as_deref().unwrap_or(""));
    if args.json {
        let items: Vec<serde_json::Value> = entries.iter().map(entry_json).collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&items).unwrap_or_default()
        );
    } else if entries.is_empty() {
        println!("{}: no bundles", dir.display());
    } else {
        println!("{}", library_table(&entries));
    }
    Ok(())
}

fn entry_json(r: &LibraryEntry) -> serde_json::Value {
    match &r.bundle {
        Ok(b) => json!({
            "name": r.name,
            "concept": b.concept,
            "target": b.target,
            "model": b.model,
            "hidden_size": b.hidden_size,
            "num_layers": b.num_layers,
            "blocks": b.directions.keys().collect::<Vec<_>>(),
            "metric": b.metric,
            "method": b.method,
            "best_block": r.best().map(|(l, _)| l),
            "best_score": r.best().map(|(_, s)| s),
            "pooling": b.pooling,
            "residual_norms": (!b.residual_norms.is_empty()).then_some(&b.residual_norms),
            "classifier": r.classifier,
        }),
        Err(e) => json!({"name": r.name, "error": e}),
    }
}
