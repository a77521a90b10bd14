//! The direction library: a folder of bundles named `CONCEPT:TARGET`, kept as
//! `DIR/CONCEPT/TARGET.safetensors` (classifiers that `baton train` writes beside them,
//! `TARGET.classifier.safetensors`, are not directions). The one rule from names to files, for
//! recipes, the command line and `baton learn` alike.

use std::path::{Path, PathBuf};

use super::Direction;
use crate::probe::DirectionBundle;

/// One bundle of a direction library, as `baton library` and the REPL's `:library` list it.
#[derive(Debug, Clone)]
pub struct LibraryEntry {
    /// Its library name, `CONCEPT:TARGET`.
    pub name: String,
    /// The bundle, or why it could not be read.
    pub bundle: Result<DirectionBundle, String>,
    /// Whether a classifier (`TARGET.classifier.safetensors`) sits beside it.
    pub classifier: bool,
}

impl LibraryEntry {
    /// The block steering and `baton eval` use, with its validation score.
    pub fn best(&self) -> Option<(usize, f64)> {
        let b = self.bundle.as_ref().ok()?;
        Direction::from_bundle(self.name.as_str(), b.clone()).best_block()
    }
}

/// Where the library in `dir` keeps the bundle named `CONCEPT:TARGET`:
/// `dir/CONCEPT/TARGET.safetensors` (`None` for a name without `:`).
pub fn library_path(dir: &Path, name: &str) -> Option<PathBuf> {
    let (concept, target) = name.split_once(':')?;
    Some(dir.join(concept).join(format!("{target}.safetensors")))
}

/// Every bundle of the library in `dir` whose name starts with `prefix`, sorted by name.
pub fn list_library(dir: &Path, prefix: &str) -> Vec<LibraryEntry> {
    library_names(dir)
        .into_iter()
        .filter(|n| n.starts_with(prefix))
        .filter_map(|name| {
            let path = library_path(dir, &name)?;
            Some(LibraryEntry {
                classifier: crate::probe::bundle::classifier_path(&path).is_file(),
                bundle: DirectionBundle::read(&path).map_err(|e| e.to_string()),
                name,
            })
        })
        .collect()
}

/// The library as a table: name, blocks, best block and score, method, model, whether it has
/// residual norms (so it can steer in residual units), classifier.
pub fn library_table(entries: &[LibraryEntry]) -> String {
    let width = entries
        .iter()
        .map(|r| r.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let mut lines = vec![format!(
        "{:width$}  blocks  best block       method     model                     norms  classifier",
        "name"
    )];
    for r in entries {
        lines.push(match &r.bundle {
            Ok(b) => {
                let best = r
                    .best()
                    .map_or("-".into(), |(l, s)| format!("{l} ({} {s:.3})", b.metric));
                let yes = |x: bool| if x { "yes" } else { "-" };
                format!(
                    "{:width$}  {:>2}/{:<3}  {best:15}  {:9}  {:24}  {:5}  {}",
                    r.name,
                    b.directions.len(),
                    b.num_layers,
                    b.method,
                    b.model,
                    yes(!b.residual_norms.is_empty()),
                    yes(r.classifier)
                )
            }
            Err(e) => format!("{:width$}  unreadable: {e}", r.name),
        });
    }
    lines.join("\n")
}

/// Every `CONCEPT:TARGET` name in a direction library folder.
pub fn library_names(dir: &Path) -> Vec<String> {
    let mut names = Vec::new();
    let Ok(concepts) = std::fs::read_dir(dir) else {
        return names;
    };
    for c in concepts.flatten() {
        let Ok(files) = std::fs::read_dir(c.path()) else {
            continue;
        };
        let concept = c.file_name().to_string_lossy().to_string();
        for f in files.flatten() {
            let p = f.path();
            if p.extension().is_some_and(|e| e == "safetensors") {
                if let Some(stem) = p.file_stem().map(|s| s.to_string_lossy()) {
                    if !stem.ends_with(".classifier") {
                        names.push(format!("{concept}:{stem}"));
                    }
                }
            }
        }
    }
    names.sort();
    names
}
