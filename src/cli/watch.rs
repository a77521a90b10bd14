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
    /// Play the first piece the recipe renders while it is generated, instead of writing it;
    /// each save then changes the playing piece's steering (a broken save keeps it playing on
    /// the last good steering). A save that changes more than steering starts the piece again.
    #[arg(long)]
    pub live: bool,
    /// With --live: play window after window until Ctrl-C, not the piece's seconds.
    #[arg(long, requires = "live")]
    pub forever: bool,
    /// With --live: seconds over which a saved change of steering moves in (0: at once).
    #[arg(long, requires = "live", value_name = "S", default_value_t = 0.0)]
    pub ramp: f64,
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
    let mut options = args.flags.options()?;
    if !(args.ramp.is_finite() && args.ramp >= 0.0) {
        return Err(miette::miette!(
            "--ramp must be 0 s or more, got {}",
            args.ramp
        ));
    }
    let _midi = super::play::connect_midi(args.play.midi.as_deref())?;
    let mut renderer = args.flags.renderer()?;
    let playback = if args.live {
        options.live = Some(baton::script::PlayOptions {
            forever: args.forever,
            ramp_s: args.ramp,
            keep: None,
        });
        if let Some(player) = args.play.stream_player()? {
            renderer = renderer.with_player(player);
        }
        None
    } else {
        args.play.playback()?
    };
    let live = Live::new(&args.recipe, options, renderer);
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
