//! The `baton` command line: parses arguments, calls the library, renders errors with miette.

mod cli;

use clap::{Parser, Subcommand};

/// Steer MusicGen while it composes, with concept directions and Rhai recipes.
#[derive(Parser)]
#[command(name = "baton", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per run: boxing the large render arguments would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Generate music from a text prompt or a Rhai recipe, and write WAV files.
    Render(cli::render::RenderArgs),
    /// Play a prompt while it is generated (through aplay, paplay, pw-cat, play or ffplay),
    /// optionally without end (--seconds inf) and into a file as well.
    Play(cli::play::PlayArgs),
    /// Re-run a recipe on every save: failed runs keep the last good files, unchanged pieces
    /// are not rendered again.
    Watch(cli::watch::WatchArgs),
    /// Explore directions, schedules and pieces line by line (one session, models load once).
    Repl(cli::repl::ReplArgs),
    /// Read audio with a trained probe: class probabilities or projections, per clip or window.
    Eval(cli::eval::EvalArgs),
    /// Render one prompt at several steering strengths and seeds, and read every take with a
    /// probe: how strongly is the concept heard at each strength?
    Sweep(cli::sweep::SweepArgs),
    /// Fréchet and kernel audio distances (FAD, KAD) between a folder of reference WAVs and a
    /// folder of generated ones, in the MusicGen codec's embedding, with each file's share.
    Fad(cli::fad::FadArgs),
    /// List the direction library: each bundle's blocks, best block and score, model, classifier.
    Library(cli::library::LibraryArgs),
    /// Score WAV clips against texts with CLAP (cosine of every clip and text; default model
    /// laion/larger_clap_music).
    Clap(cli::clap_cli::ClapArgs),
    /// Print a model's shape and size.
    Info(cli::info::InfoArgs),
    /// Render a SynTheory-style concept dataset, or cut your own recordings into one
    /// (clips/*.wav + manifest.jsonl).
    Dataset(cli::dataset::DatasetArgs),
    /// Learn a concept's directions from nothing: dataset, features and probes in one resumable
    /// command, the bundles going to the direction library (`baton learn notes:C#`, `--list`).
    Learn(cli::learn::LearnArgs),
    /// Extract pooled per-block decoder features from a dataset folder.
    Features(cli::features::FeaturesArgs),
    /// Join the shards of `baton features --shard K/N` (or the readings of `baton eval --shard
    /// K/N --json`) into the file one process writes.
    Merge(cli::merge::MergeArgs),
    /// Train RFM probes (or the difference-of-means baseline) on a features file and write a
    /// direction bundle.
    Train(cli::train::TrainArgs),
}

fn main() -> miette::Result<()> {
    // Errors stay on one line however long the paths in them are (scripts grep them).
    let _ = miette::set_hook(Box::new(|_| {
        Box::new(miette::MietteHandlerOpts::new().wrap_lines(false).build())
    }));
    let cli = Cli::parse();
    // Ctrl-C (or a kill) mid-write must not leave `.NAME.PID-NONCE.tmp` or staged files behind:
    // the handler deletes what is in flight, then ends the run as the signal would have (130).
    // Work that listens (a performance finishing its file) is asked to stop first.
    let _ = ctrlc::set_handler(|| {
        if baton::interrupt::on_signal() {
            eprintln!("\nstopping (Ctrl-C again quits at once)");
            return;
        }
        baton::files::remove_in_flight();
        eprintln!("interrupted");
        std::process::exit(130);
    });
    match cli.command {
        Command::Render(args) => cli::render::run(args),
        Command::Play(args) => cli::play::run(args),
        Command::Watch(args) => cli::watch::run(args),
        Command::Repl(args) => cli::repl::run(args),
        Command::Eval(args) => cli::eval::run(args),
        Command::Sweep(args) => cli::sweep::run(args),
        Command::Fad(args) => cli::fad::run(args),
        Command::Library(args) => cli::library::run(args),
        Command::Clap(args) => cli::clap_cli::run(args),
        Command::Info(args) => cli::info::run(args),
        Command::Dataset(args) => cli::dataset::run(args),
        Command::Learn(args) => cli::learn::run(args),
        Command::Features(args) => cli::features::run(args),
        Command::Merge(args) => cli::merge::run(args),
        Command::Train(args) => cli::train::run(args),
    }
}
