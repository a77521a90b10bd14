//! `baton watch RECIPE.rhai`: live-code a piece. The recipe runs now and again on every save
//! (of it, a module beside it, or a bundle in the direction library); a run that fails keeps
//! the last good files, and only the pieces that changed are rendered again.

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use baton::live::{Live, RunReport, WatchEvent};
use clap::Args;

use super::recipe::{PlayArgs, RecipeFlags};

/// How long saves are gathered into one run (editors often write a file in several steps).
const DEBOUNCE: Duration = Duration::from_millis(250);

/// Arguments of `baton watch`.
#[derive(Args, Debug)]
pub struct WatchArgs {
    /// The Rhai recipe to run on every save.
    pub recipe: PathBuf,
    #[command(flatten)]
    pub play: PlayArgs,
    #[command(flatten)]
    pub flags: RecipeFlags,
}

/// `path` as the user would write it: relative to the working folder when inside it, without
/// `.` components (the watcher reports `/abs/./piece.rhai`).
fn shown(path: &Path) -> String {
    let clean: PathBuf = path
        .components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect();
    let cwd = std::env::current_dir().unwrap_or_default();
    clean
        .strip_prefix(&cwd)
        .unwrap_or(&clean)
        .display()
        .to_string()
}

/// Runs `baton watch` until interrupted.
pub fn run(args: WatchArgs) -> miette::Result<()> {
    if !args.recipe.is_file() {
        return Err(miette::miette!("no recipe file {}", args.recipe.display()));
    }
    let options = args.flags.options()?;
    let playback = args.play.playback()?;
    let live = Live::new(&args.recipe, options, args.flags.renderer()?);
    eprintln!(
        "watching {} (Ctrl-C to stop); files go to {}",
        args.recipe.display(),
        args.flags.out.display()
    );
    let mut run = 0;
    live.watch(DEBOUNCE, |event| {
        match event {
            WatchEvent::Changed(files) => {
                let names: Vec<String> = files.iter().map(|f| shown(f)).collect();
                eprintln!("changed: {}", names.join(", "));
                return true;
            }
            WatchEvent::Missed(e) => {
                eprintln!("watching files: {e}; save again if a change was missed");
                return true;
            }
            WatchEvent::Ran(report) => {
                run += 1;
                match report {
                    RunReport::Done {
                        rendered,
                        unchanged,
                        took,
                        ..
                    } => {
                        eprintln!(
                            "run {run}: ok in {:.1} s: {} rendered, {unchanged} unchanged",
                            took.as_secs_f64(),
                            rendered.len(),
                        );
                        if let Some(p) = &playback {
                            p.play(rendered);
                        }
                    }
                    RunReport::Failed(err) => {
                        eprintln!("{:?}", miette::Report::new(*err));
                        eprintln!("run {run}: failed; no file was replaced");
                    }
                    RunReport::MoveFailed(message) => {
                        eprintln!("run {run}: {message}");
                    }
                }
            }
        }
        eprintln!("waiting for changes...");
        true
    })
    .map_err(|e| miette::miette!("{e}"))
}
