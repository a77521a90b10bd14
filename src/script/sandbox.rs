//! The recipe sandbox: resource limits and where a recipe may write.
//!
//! Recipes can be shared, so running one must be safe: the engine stops after a bounded number
//! of operations (an endless loop ends with a clear error), bounds call depth and the size of
//! strings, arrays and maps, has no `eval`, and has no file access of its own. The only files a
//! recipe touches are the ones its verbs name: direction bundles and models are read; audio and
//! plots are written under the output folder (relative paths without `..`), or under a folder
//! the user allowed explicitly.

use std::path::{Component, Path, PathBuf};

use rhai::Engine;

/// Resource limits of a recipe run.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Script operations (roughly: expressions evaluated) before the run is stopped.
    pub max_operations: u64,
    /// Depth of nested function calls.
    pub max_call_levels: usize,
    /// Longest string, in bytes.
    pub max_string_size: usize,
    /// Largest array.
    pub max_array_size: usize,
    /// Largest object map.
    pub max_map_size: usize,
    /// Imported modules.
    pub max_modules: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_operations: 50_000_000,
            max_call_levels: 64,
            max_string_size: 1 << 20,
            max_array_size: 1 << 16,
            max_map_size: 1 << 12,
            max_modules: 64,
        }
    }
}

/// Applies the limits and removes `eval`.
pub fn apply(engine: &mut Engine, limits: &Limits) {
    engine
        .set_max_operations(limits.max_operations)
        .set_max_call_levels(limits.max_call_levels)
        .set_max_expr_depths(128, 64)
        .set_max_string_size(limits.max_string_size)
        .set_max_array_size(limits.max_array_size)
        .set_max_map_size(limits.max_map_size)
        .set_max_modules(limits.max_modules)
        .disable_symbol("eval");
}

/// Lexically resolves `.` and `..` (the path need not exist yet).
fn normalise(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        normalise(path)
    } else {
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
        normalise(&cwd.join(path))
    }
}

/// Where a recipe's `requested` output goes: `out_dir/requested` for a relative path without
/// `..`; anything else only when it falls under one of `allowed`. `extension` is required
/// (`wav`, `png`).
pub fn output_path(
    requested: &str,
    out_dir: &Path,
    allowed: &[PathBuf],
    extension: &str,
) -> Result<PathBuf, String> {
    let p = Path::new(requested);
    let has_ext = p
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case(extension));
    if !has_ext {
        return Err(format!("output `{requested}` must be a .{extension} file"));
    }
    let plain = !p.is_absolute()
        && p.components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if plain {
        return Ok(out_dir.join(p));
    }
    let target = if p.is_absolute() {
        absolute(p)
    } else {
        absolute(&out_dir.join(p))
    };
    if allowed.iter().any(|a| target.starts_with(absolute(a))) {
        return Ok(target);
    }
    Err(format!(
        "recipes may only write under the output folder ({}), with relative paths and no `..`: \
         `{requested}` is outside it (allow it with BATON_ALLOW_WRITE={})",
        out_dir.display(),
        target.parent().unwrap_or(&target).display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_paths() {
        let out = Path::new("/tmp/out");
        assert_eq!(
            output_path("a/b.wav", out, &[], "wav").unwrap(),
            PathBuf::from("/tmp/out/a/b.wav")
        );
        assert!(output_path("../b.wav", out, &[], "wav").is_err());
        assert!(output_path("/etc/b.wav", out, &[], "wav").is_err());
        assert!(output_path("a/../../b.wav", out, &[], "wav").is_err());
        assert!(output_path("b.txt", out, &[], "wav").is_err());
        assert_eq!(
            output_path(
                "/srv/music/x.wav",
                out,
                &[PathBuf::from("/srv/music")],
                "wav"
            )
            .unwrap(),
            PathBuf::from("/srv/music/x.wav")
        );
        assert!(output_path(
            "/srv/musicx/x.wav",
            out,
            &[PathBuf::from("/srv/music")],
            "wav"
        )
        .is_err());
    }
}
