//! `baton library`: what the direction library holds. One row per bundle
//! (`DIR/CONCEPT/TARGET.safetensors`, the names recipes and `--steer` use): its blocks, the best
//! block and its validation score, the model it was trained on, and whether a classifier (for
//! `baton eval` and `probe(...).classify`) sits beside it.

use baton::probe::bundle::classifier_path;
use baton::probe::DirectionBundle;
use baton::script::directions::library_names;
use baton::steer::Direction;
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

/// One bundle as listed.
struct Row {
    name: String,
    /// The bundle's facts, or why it could not be read.
    bundle: Result<DirectionBundle, String>,
    classifier: bool,
}

/// Runs `baton library`.
pub fn run(args: LibraryArgs) -> miette::Result<()> {
    if !args.library.dir.is_dir() {
        return Err(miette::miette!(
            "no direction library at {} (set --directions or $BATON_DIRECTIONS; `baton train \
             --out DIR/CONCEPT/TARGET.safetensors` adds to one)",
            args.library.dir.display()
        ));
    }
    let rows: Vec<Row> = library_names(&args.library.dir)
        .into_iter()
        .filter(|n| {
            args.filter
                .as_ref()
                .is_none_or(|f| n.starts_with(f.as_str()))
        })
        .map(|name| {
            let path = args
                .library
                .bundle("library", &name)
                .map_err(|e| e.to_string());
            let classifier = path.as_ref().is_ok_and(|p| classifier_path(p).is_file());
            let bundle = path.and_then(|p| DirectionBundle::read(&p).map_err(|e| e.to_string()));
            Row {
                name,
                bundle,
                classifier,
            }
        })
        .collect();
    if args.json {
        let items: Vec<serde_json::Value> = rows.iter().map(row_json).collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&items).unwrap_or_default()
        );
        return Ok(());
    }
    if rows.is_empty() {
        println!("{}: no bundles", args.library.dir.display());
        return Ok(());
    }
    let width = rows.iter().map(|r| r.name.len()).max().unwrap_or(4).max(4);
    println!(
        "{:width$}  blocks  best block       model                     classifier",
        "name"
    );
    for r in &rows {
        match &r.bundle {
            Ok(b) => {
                let best =
                    best(b).map_or("-".into(), |(l, s)| format!("{l} ({} {s:.3})", b.metric));
                println!(
                    "{:width$}  {:>2}/{:<3}  {best:15}  {:24}  {}",
                    r.name,
                    b.directions.len(),
                    b.num_layers,
                    b.model,
                    if r.classifier { "yes" } else { "-" }
                );
            }
            Err(e) => println!("{:width$}  unreadable: {e}", r.name),
        }
    }
    Ok(())
}

/// The best block and its score, as steering and `baton eval` pick it.
fn best(b: &DirectionBundle) -> Option<(usize, f64)> {
    Direction::from_bundle("", b.clone()).best_block()
}

fn row_json(r: &Row) -> serde_json::Value {
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
            "best_block": best(b).map(|(l, _)| l),
            "best_score": best(b).map(|(_, s)| s),
            "pooling": b.pooling,
            "classifier": r.classifier,
        }),
        Err(e) => json!({"name": r.name, "error": e}),
    }
}
