//! The recipe sandbox: resource limits and where a recipe may write.
//!
//! Recipes can be shared, so running one must be safe: the engine stops after a bounded number
//! of operations per call and per run (an endless loop, or a curve too costly to sample, ends
//! with a clear error), bounds call depth, the size of strings, arrays and maps, the depth of
//! schedule trees, the renders and bytes of a run, has no `eval`, and has no file access of its
//! own. The only files a recipe touches are the ones its verbs name: direction bundles and
//! models are read; audio and plots are written under the output folder (relative paths
//! without `..`, and no symbolic link leading out of it), or under a folder the user allowed
//! explicitly.

use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use rhai::Engine;

/// Default of [`Limits::max_run_operations`]: about half a minute of interpreter work.
pub const DEFAULT_RUN_OPERATIONS: u64 = 200_000_000;
/// Default of [`Limits::max_renders`].
pub const DEFAULT_RENDERS: usize = 200;
/// Default of [`Limits::max_output_bytes`], in MiB (about 5.8 hours of 32 kHz float audio).
pub const DEFAULT_OUTPUT_MB: u64 = 2048;

/// What one run has used of its [`Limits`] so far (reset at the start of each run).
#[derive(Debug, Default)]
pub struct Budget {
    operations: AtomicU64,
    renders: AtomicUsize,
    bytes: AtomicU64,
}

impl Budget {
    /// Starts a new run.
    pub fn reset(&self) {
        self.operations.store(0, Ordering::Relaxed);
        self.renders.store(0, Ordering::Relaxed);
        self.bytes.store(0, Ordering::Relaxed);
    }

    /// Counts one operation; the message that ends the run once past the limit.
    pub fn operation(&self, limits: &Limits) -> Option<String> {
        let n = self.operations.fetch_add(1, Ordering::Relaxed) + 1;
        (n > limits.max_run_operations).then(|| {
            format!(
                "this run used its budget of {} script operations (user curves sampled while \
                 rendering count too): raise it with --max-operations",
                limits.max_run_operations
            )
        })
    }

    /// Counts a render (or plot) about to write `bytes`: an error past either limit.
    pub fn output(&self, limits: &Limits, is_render: bool, bytes: u64) -> Result<(), String> {
        if is_render {
            let n = self.renders.fetch_add(1, Ordering::Relaxed) + 1;
            if n > limits.max_renders {
                return Err(format!(
                    "this run may render {} pieces: raise it with --max-renders",
                    limits.max_renders
                ));
            }
        }
        let before = self
            .bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some(b.saturating_add(bytes))
            })
            .unwrap_or(u64::MAX);
        let total = before.saturating_add(bytes);
        if total > limits.max_output_bytes {
            return Err(format!(
                "this run may write {} MiB (this write would bring it to {} MiB): raise it with \
                 --max-output-mb",
                limits.max_output_bytes >> 20,
                total >> 20
            ));
        }
        Ok(())
    }
}

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
    /// Script operations in one whole run (a recipe file, a REPL input, a watch-mode save),
    /// user curves sampled during renders included: `max_operations` bounds each call only.
    pub max_run_operations: u64,
    /// Pieces one run may render.
    pub max_renders: usize,
    /// Bytes one run may write (audio counted as 32 kHz 32-bit float, plots as written).
    pub max_output_bytes: u64,
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
            max_run_operations: DEFAULT_RUN_OPERATIONS,
            max_renders: DEFAULT_RENDERS,
            max_output_bytes: DEFAULT_OUTPUT_MB << 20,
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

/// `path` (absolute, without `..`) with every symbolic link in it resolved: the real path of its
/// deepest part that exists, followed by the parts that do not exist yet. A link to nothing is
/// an error, since what it would come to name cannot be known.
fn real_path(path: &Path) -> Result<PathBuf, String> {
    let mut existing = path;
    let mut missing = Vec::new();
    loop {
        if std::fs::symlink_metadata(existing).is_ok() {
            let real = std::fs::canonicalize(existing).map_err(|e| {
                format!(
                    "cannot resolve {} (a symbolic link to nothing?): {e}",
                    existing.display()
                )
            })?;
            return Ok(missing.iter().rev().fold(real, |p, c| p.join(c)));
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                missing.push(name.to_os_string());
                existing = parent;
            }
            _ => return Ok(path.to_path_buf()),
        }
    }
}

/// Where a recipe's `requested` output goes: `out_dir/requested` for a relative path without
/// `..`; anything else only when it falls under one of `allowed`. Either way the real path
/// (symbolic links resolved, the file itself included) must stay under the output folder or an
/// allowed one, so a link inside the output folder cannot lead a write outside it.
/// `extension` is required (`wav`, `png`).
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
    let target = if plain {
        out_dir.join(p)
    } else if p.is_absolute() {
        absolute(p)
    } else {
        absolute(&out_dir.join(p))
    };
    let real = real_path(&absolute(&target))?;
    let under = |root: &Path| real_path(&absolute(root)).is_ok_and(|r| real.starts_with(r));
    if (plain && under(out_dir)) || allowed.iter().any(|a| under(a)) {
        return Ok(target);
    }
    if plain {
        return Err(format!(
            "`{requested}` leads outside the output folder ({}) through a symbolic link: it \
             would write {} (allow that folder with BATON_ALLOW_WRITE={})",
            out_dir.display(),
            real.display(),
            real.parent().unwrap_or(&real).display()
        ));
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

    #[cfg(unix)]
    #[test]
    fn symbolic_links_cannot_lead_outside_the_output_folder() {
        use std::os::unix::fs::symlink;
        let root = tempfile::tempdir().unwrap();
        let out = root.path().join("out");
        let elsewhere = root.path().join("elsewhere");
        std::fs::create_dir_all(out.join("inside")).unwrap();
        std::fs::create_dir_all(&elsewhere).unwrap();
        symlink(&elsewhere, out.join("link")).unwrap();
        symlink(out.join("inside"), out.join("alias")).unwrap();
        symlink(elsewhere.join("victim.wav"), out.join("x.wav")).unwrap();
        symlink(root.path().join("nowhere"), out.join("dangling")).unwrap();
        let err = output_path("link/x.wav", &out, &[], "wav").unwrap_err();
        assert!(err.contains("symbolic link"), "{err}");
        assert!(output_path("link/deeper/x.png", &out, &[], "png").is_err());
        // The file itself a link to outside.
        assert!(output_path("x.wav", &out, &[], "wav").is_err());
        assert!(output_path("dangling/x.wav", &out, &[], "wav").is_err());
        // Links that stay inside, and new folders, are fine.
        assert_eq!(
            output_path("alias/y.wav", &out, &[], "wav").unwrap(),
            out.join("alias/y.wav")
        );
        assert!(output_path("new/folder/y.wav", &out, &[], "wav").is_ok());
        // Allowing the link's target allows the write.
        assert!(output_path("link/x.wav", &out, std::slice::from_ref(&elsewhere), "wav").is_ok());
    }
}
