//! `baton render RECIPE.rhai`, and the flags recipes run with (shared by `watch` and `repl`).
//!
//! Recipe mode: `--out DIR` is the output folder (default `.`) every recipe path is relative
//! to; `--model` other than the default wins over the recipe's `model(...)`; `--seconds`
//! overrides every piece's length and `--greedy` forces greedy decoding (short, deterministic
//! test renders). The direction library is `--directions DIR` (or `$BATON_DIRECTIONS`, default
//! `./directions`); extra writable folders are `--allow-write PATH` (repeatable) and the path list
//! in `$BATON_ALLOW_WRITE`.

use std::path::PathBuf;

use baton::audio::play::{Playback, Player};
use baton::audio::SampleFormat;
use baton::script::render::ModelRenderer;
use baton::script::sandbox::{DEFAULT_OUTPUT_MB, DEFAULT_RENDERS, DEFAULT_RUN_OPERATIONS};
use baton::script::{run_file, Limits, RecipeOptions};

use clap::Args;

use super::common::{parse_device, parse_dtype, Library, ModelArgs};
use super::generation::check_seconds;
use super::render::RenderArgs;

/// The `--model` default: any other value overrides a recipe's `model(...)`.
const DEFAULT_MODEL: &str = "facebook/musicgen-small";

/// Runs a recipe file (the `RECIPE` argument of `baton render`).
pub fn run(args: &RenderArgs) -> miette::Result<()> {
    let Some(recipe) = &args.recipe else {
        return Err(miette::miette!("no recipe given"));
    };
    if !args.prompt.is_empty() || !args.steering.steer.is_empty() {
        return Err(miette::miette!(
            "give either a RECIPE.rhai or --prompt/--steer, not both"
        ));
    }
    // A recipe sets these per piece; given on the command line they would silently do nothing.
    let mut prompt_only = args.sampling.changed();
    prompt_only.extend(args.steering.changed());
    prompt_only.extend(args.extent.changed());
    prompt_only.extend(
        [
            (args.max_new_tokens.is_some(), "--max-new-tokens"),
            (args.seed != 0, "--seed"),
            (args.save_codes.is_some(), "--save-codes"),
        ]
        .into_iter()
        .filter_map(|(given, flag)| given.then_some(flag)),
    );
    if let Some(flag) = prompt_only.first() {
        return Err(miette::miette!(
            "{flag} is for --prompt renders; a recipe sets it per piece (see `help()`), and \
             takes only --seconds and --greedy as overrides"
        ));
    }
    let flags = RecipeFlags {
        out: args.out.clone().unwrap_or_else(|| PathBuf::from(".")),
        seconds: args.seconds,
        greedy: args.sampling.greedy,
        pcm16: args.pcm16,
        paths: args.paths.clone(),
        model: args.model.clone(),
    };
    let options = flags.options()?;
    run_file(recipe, options, Box::new(flags.renderer()?)).map_err(|e| miette::Report::new(*e))?;
    Ok(())
}

/// How recipes run: the flags `watch` and `repl` take, and the recipe mode of `render`.
#[derive(Args, Debug, Clone)]
pub struct RecipeFlags {
    /// Output folder: every file a recipe writes is relative to it.
    #[arg(long, default_value = ".")]
    pub out: PathBuf,
    /// Override every piece's length, in seconds (quick drafts).
    #[arg(long, allow_negative_numbers = true)]
    pub seconds: Option<f64>,
    /// Always pick the most likely token in every piece.
    #[arg(long)]
    pub greedy: bool,
    /// Write 16-bit PCM instead of 32-bit float WAV.
    #[arg(long)]
    pub pcm16: bool,
    #[command(flatten)]
    pub paths: RecipePaths,
    #[command(flatten)]
    pub model: ModelArgs,
}

/// Playing what the interactive verbs render.
#[derive(Args, Debug, Clone)]
pub struct PlayArgs {
    /// Play each newly rendered file (a newer run that renders something cuts the one playing),
    /// with the first player found: paplay, aplay, afplay, play or ffplay.
    #[arg(long)]
    pub play: bool,
    /// The player command, `{}` standing for the file (implies --play), e.g. "mpv --no-video {}".
    #[arg(long, value_name = "CMD")]
    pub player: Option<String>,
    /// A MIDI input (its number or a part of its name) whose knobs set `knob(cc)` schedules
    /// while pieces play.
    #[arg(long, value_name = "PORT")]
    pub midi: Option<String>,
}

impl PlayArgs {
    /// Background playback, when asked for.
    pub fn playback(&self) -> miette::Result<Option<Playback>> {
        let player = match (&self.player, self.play) {
            (Some(cmd), _) => Player::parse(cmd).map_err(|e| miette::miette!("--player: {e}"))?,
            (None, true) => Player::find().map_err(|e| miette::miette!("--play: {e}"))?,
            (None, false) => return Ok(None),
        };
        Ok(Some(Playback::new(player)))
    }

    /// The player for pieces played while they are generated (`play(...)`, `watch --live`):
    /// --player reading `-` for its file, or `None` to find one when a piece plays.
    pub fn stream_player(&self) -> miette::Result<Option<Player>> {
        self.player
            .as_deref()
            .map(Player::parse_streaming)
            .transpose()
            .map_err(|e| miette::miette!("--player: {e}"))
    }
}

/// Where recipes find directions, where and how much they may write: shared by every verb that
/// runs recipes or steers.
#[derive(Args, Debug, Clone)]
pub struct RecipePaths {
    #[command(flatten)]
    pub library: Library,
    /// A folder a recipe may write to besides --out (repeatable; also $BATON_ALLOW_WRITE).
    #[arg(long)]
    pub allow_write: Vec<PathBuf>,
    /// CLAP checkpoint that the recipe verb clap(wav, text) loads on first use: a hub id or a
    /// local folder (transformers' ClapModel format).
    #[arg(long, value_name = "M", default_value = baton::eval::clap::DEFAULT_MODEL)]
    pub clap_model: String,
    #[command(flatten)]
    pub budget: RecipeBudget,
}

/// How much one run of a recipe may do (a recipe file, a REPL input, a watch-mode save).
#[derive(Args, Debug, Clone)]
pub struct RecipeBudget {
    /// Script operations one run may use, user curves sampled while rendering included.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_RUN_OPERATIONS)]
    pub max_operations: u64,
    /// Pieces one run may render.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_RENDERS)]
    pub max_renders: usize,
    /// MiB one run may write (audio counted as 32 kHz 32-bit float).
    #[arg(long, value_name = "MIB", default_value_t = DEFAULT_OUTPUT_MB)]
    pub max_output_mb: u64,
}

impl RecipeFlags {
    /// The recipe options these flags ask for, checked.
    pub fn options(&self) -> miette::Result<RecipeOptions> {
        if let Some(s) = self.seconds {
            check_seconds(s)?;
        }
        if self.out.extension().is_some_and(|e| e == "wav") {
            return Err(miette::miette!(
                "in recipe mode --out is a folder (the recipe names its files), got {}",
                self.out.display()
            ));
        }
        let budget = &self.paths.budget;
        Ok(RecipeOptions {
            directions: self.paths.library.dir.clone(),
            out_dir: self.out.clone(),
            allow_write: self
                .paths
                .allow_write
                .iter()
                .cloned()
                .chain(
                    std::env::var_os("BATON_ALLOW_WRITE")
                        .map(|v| std::env::split_paths(&v).collect::<Vec<_>>())
                        .unwrap_or_default(),
                )
                .collect(),
            default_model: DEFAULT_MODEL.into(),
            model_override: (self.model.source.model != DEFAULT_MODEL
                || self.model.source.revision.is_some())
            .then(|| self.model.spec()),
            seconds_override: self.seconds,
            greedy: self.greedy,
            clap_model: self.paths.clap_model.clone(),
            limits: Limits {
                max_run_operations: budget.max_operations,
                max_renders: budget.max_renders,
                max_output_bytes: budget.max_output_mb.saturating_mul(1 << 20),
                ..Limits::default()
            },
            ..RecipeOptions::default()
        })
    }

    /// The MusicGen renderer these flags ask for (models load on first use).
    pub fn renderer(&self) -> miette::Result<ModelRenderer> {
        let format = SampleFormat::from_pcm16_flag(self.pcm16);
        Ok(ModelRenderer::new(
            parse_device(&self.model.source.device)?,
            parse_dtype(&self.model.dtype)?,
            format,
            true,
        ))
    }
}
