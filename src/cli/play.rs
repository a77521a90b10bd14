//! `baton play`: hear a prompt while it is generated, and the streaming outputs `render` shares
//! with it (`--out -`, `--seconds inf`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton::audio::play::Player;
use baton::audio::SampleFormat;
use baton::model::{Extent, GenerateOptions, MusicGen, ResidualHook};
use baton::perform::{
    perform, Buffering, Listen, PlayEvent, PlayerSink, Progress, Report, Sink, Sparkline, WavFile,
    WavOut, DEFAULT_CHUNK_FRAMES,
};
use baton::piece::{plan_for, steering_steps, steps_for_seconds};
use baton::script::{run_file, PlayOptions, Renderer};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use super::common::{load_model, model_config, ModelArgs};
use super::generation::{plan_hook, ExtentArgs, SamplingArgs, SteerArgs};
use super::output::check_output;
use super::recipe::{RecipeFlags, RecipePaths};

/// Arguments of `baton play`.
#[derive(Args, Debug)]
pub struct PlayArgs {
    /// A Rhai recipe: the first piece it renders is played instead of written.
    pub recipe: Option<PathBuf>,
    /// Text prompt (instead of a recipe).
    #[arg(long)]
    pub prompt: Option<String>,
    /// Seconds of music, or `inf` for a piece that goes on window after window until Ctrl-C
    /// [default: 30; for a recipe: each piece's own].
    #[arg(long, allow_negative_numbers = true)]
    pub seconds: Option<f64>,
    #[command(flatten)]
    pub extent: ExtentArgs,
    /// Player command reading a WAV stream on stdin, e.g. "aplay -q -" or "ffplay -nodisp
    /// -autoexit -i -" [default: the first of paplay, aplay, pw-cat, play, ffplay on PATH].
    #[arg(long)]
    pub player: Option<String>,
    /// Also write what is played to this WAV file (whole even when stopped with Ctrl-C).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Seconds to buffer before playing [default: worked out from the generation speed, so
    /// that a finite piece plays through without a gap].
    #[arg(long, value_name = "S")]
    pub buffer: Option<f64>,
    /// Seconds of audio generated ahead of what is heard, once playing: how late a steering
    /// change is heard at most.
    #[arg(long, value_name = "S", default_value_t = 1.0)]
    pub ahead: f64,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Seed of the sampling RNG.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Send 16-bit PCM instead of 32-bit float (for players that take no float WAV).
    #[arg(long)]
    pub pcm16: bool,
    /// A MIDI input (its number or a part of its name): its knobs set `knob(cc)` schedules
    /// (--knob CC scales the --steer strengths) as the piece plays.
    #[arg(long, value_name = "PORT")]
    pub midi: Option<String>,
    #[command(flatten)]
    pub steering: SteerArgs,
    #[command(flatten)]
    pub paths: RecipePaths,
    #[command(flatten)]
    pub model: ModelArgs,
}

/// Seconds a prompt plays for without --seconds.
const DEFAULT_SECONDS: f64 = 30.0;

/// Where a performance's audio goes.
pub struct Outputs {
    /// A WAV stream on stdout (`--out -`).
    pub stdout: bool,
    /// A WAV file, whole whenever the piece stops.
    pub file: Option<PathBuf>,
    /// A player reading stdin, and how it buffers.
    pub player: Option<(Player, Buffering)>,
    /// Sample format of every output.
    pub format: SampleFormat,
}

/// The piece's length: decoder steps, or endless (`--seconds inf`).
pub fn length(model: &MusicGen, seconds: f64) -> miette::Result<(usize, bool)> {
    if seconds == f64::INFINITY {
        return Ok((0, true));
    }
    let steps = steps_for_seconds(model, seconds).map_err(|e| miette::miette!("{e}"))?;
    Ok((steps, false))
}

/// Refuses a `--seconds` that is neither a positive number nor `inf`.
pub fn check_seconds_or_inf(seconds: f64) -> miette::Result<()> {
    if seconds == f64::INFINITY {
        return Ok(());
    }
    super::generation::check_seconds(seconds)
}

/// Generates `prompt` into `outputs` as it is made, showing speed against real time and the
/// buffer, until the piece ends or Ctrl-C stops it (the files are finished either way).
pub fn run_performance(
    model: &MusicGen,
    prompt: &str,
    options: &GenerateOptions,
    extent: &Extent,
    hook: Option<&mut dyn ResidualHook>,
    listen: Option<&Listen>,
    outputs: Outputs,
) -> miette::Result<Report> {
    let rate = model.sample_rate();
    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    let status = ProgressBar::new_spinner();
    status.set_style(
        ProgressStyle::with_template("{spinner} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    status.enable_steady_tick(Duration::from_millis(200));
    let mut clock = None;
    if let Some((player, buffering)) = &outputs.player {
        let bar = status.clone();
        let events = Arc::new(move |event: PlayEvent| {
            // On the command line, what can be done about a slow machine is said too.
            let hint = match event {
                PlayEvent::CannotKeepUp { .. } => {
                    " (a faster --dtype, a GPU, or --buffer S for a longer start)"
                }
                _ => "",
            };
            bar.suspend(|| eprintln!("{event}{hint}"));
        });
        let sink = PlayerSink::start(player, rate, outputs.format, *buffering, events)
            .map_err(|e| miette::miette!("{e}"))?;
        clock = Some(sink.clock());
        sinks.push(Box::new(sink));
    }
    if outputs.stdout {
        let out = WavOut::new("stdout", std::io::stdout(), rate, outputs.format)
            .map_err(|e| miette::miette!("{e}"))?;
        sinks.push(Box::new(out));
    }
    if let Some(path) = &outputs.file {
        let file =
            WavFile::create(path, rate, outputs.format).map_err(|e| miette::miette!("{e}"))?;
        sinks.push(Box::new(file));
    }
    // Ctrl-C stops the piece at the next step, and the outputs are finished.
    let listening = baton::interrupt::listen();
    let mut should_stop = baton::interrupt::requested;
    let frame_rate = model.frame_rate();
    let mut shown = std::time::Instant::now();
    let mut line = Sparkline::new((5.0 * frame_rate) as usize);
    let mut on_progress = |p: &Progress| {
        if let Some(r) = p.reading {
            line.push(r);
        }
        if shown.elapsed() < Duration::from_millis(250) {
            return;
        }
        shown = std::time::Instant::now();
        let speed = p.steps_per_s();
        status.set_message(format!(
            "{} steps, {speed:.1} steps/s ({:.2}x real time), {:.1} s of audio out{}{}",
            match p.total_steps {
                Some(t) => format!("{}/{t}", p.steps),
                None => p.steps.to_string(),
            },
            speed / frame_rate,
            p.audio_s,
            match clock.as_ref().map(|c| c.ahead_s()) {
                Some(Some(ahead)) => format!(", {ahead:.1} s buffered"),
                Some(None) => ", buffering".to_string(),
                None => String::new(),
            },
            if p.total_steps.is_none() {
                ", Ctrl-C ends it"
            } else {
                ""
            },
        ));
        if let Some(l) = listen.filter(|_| p.reading.is_some()) {
            status.set_message(format!(
                "{}  block {} concept over 5 s: {}",
                status.message(),
                l.block,
                line.draw(30)
            ));
        }
    };
    let mut all: Vec<&mut dyn Sink> = sinks.iter_mut().map(|s| s.as_mut() as _).collect();
    let report = perform(
        model,
        prompt,
        options,
        extent,
        hook,
        listen,
        &mut all,
        DEFAULT_CHUNK_FRAMES,
        &mut should_stop,
        &mut on_progress,
    );
    drop(all);
    drop(sinks);
    drop(listening);
    status.finish_and_clear();
    let report = report.map_err(|e| miette::miette!("{e}"))?;
    eprintln!(
        "{} {:.1} s of audio in {:.1} s ({:.1} steps/s, {:.2}x real time; first audio after \
         {:.2} s){}",
        if report.stopped {
            "stopped after"
        } else {
            "made"
        },
        report.audio_s,
        report.elapsed_s,
        report.steps as f64 / report.elapsed_s.max(1e-9),
        report.steps as f64 / report.elapsed_s.max(1e-9) / frame_rate,
        report.first_audio_s.unwrap_or(0.0),
        match (&outputs.file, &report.closed) {
            (Some(f), _) => format!(", wrote {}", f.display()),
            (None, Some(why)) => format!(" ({why})"),
            (None, None) => String::new(),
        }
    );
    Ok(report)
}

/// Plays the first piece `recipe` renders, until it ends (or Ctrl-C).
fn play_recipe(recipe: &Path, args: &PlayArgs, player: Player) -> miette::Result<()> {
    let mut prompt_only = args.sampling.changed();
    prompt_only.extend(args.steering.changed());
    prompt_only.extend(args.extent.changed());
    if args.seed != 0 {
        prompt_only.push("--seed");
    }
    if args.buffer.is_some() {
        prompt_only.push("--buffer");
    }
    if let Some(flag) = prompt_only.first() {
        return Err(miette::miette!(
            "{flag} is for --prompt; a recipe sets it per piece, and takes only --seconds and \
             --greedy as overrides"
        ));
    }
    let forever = args.seconds == Some(f64::INFINITY);
    let flags = RecipeFlags {
        out: PathBuf::from("."),
        seconds: args.seconds.filter(|s| s.is_finite()),
        greedy: args.sampling.greedy,
        pcm16: args.pcm16,
        paths: args.paths.clone(),
        model: args.model.clone(),
    };
    let mut options = flags.options()?;
    options.live = Some(PlayOptions {
        forever,
        ramp_s: 0.0,
        keep: args.out.clone(),
    });
    let renderer = Arc::new(Mutex::new(flags.renderer()?.with_player(player)));
    run_file(recipe, options, Box::new(renderer.clone())).map_err(|e| miette::Report::new(*e))?;
    let mut renderer = renderer
        .lock()
        .map_err(|_| miette::miette!("the renderer failed"))?;
    let said = renderer.wait().map_err(|e| miette::miette!("{e}"))?;
    eprintln!("{said}");
    Ok(())
}

/// Runs `baton play`.
pub fn run(args: PlayArgs) -> miette::Result<()> {
    let seconds = args.seconds.unwrap_or(DEFAULT_SECONDS);
    check_seconds_or_inf(seconds)?;
    for (flag, value) in [("--buffer", args.buffer), ("--ahead", Some(args.ahead))] {
        if let Some(v) = value.filter(|v| !(v.is_finite() && *v >= 0.0)) {
            return Err(miette::miette!(
                "{flag} must be a number of seconds, 0 or more, got {v}"
            ));
        }
    }
    args.sampling.check()?;
    let player = match &args.player {
        Some(p) => Player::parse_streaming(p),
        None => Player::find_streaming(),
    }
    .map_err(|e| miette::miette!("{e}"))?;
    if let Some(out) = &args.out {
        check_output(out)?;
    }
    let _midi = connect_midi(args.midi.as_deref())?;
    let prompt = match (&args.recipe, &args.prompt) {
        (Some(_), Some(_)) => {
            return Err(miette::miette!(
                "give either a RECIPE.rhai or --prompt, not both"
            ))
        }
        (Some(recipe), None) => return play_recipe(recipe, &args, player),
        (None, Some(p)) if p.trim().is_empty() => return Err(miette::miette!("--prompt is empty")),
        (None, Some(p)) => p.clone(),
        (None, None) => {
            return Err(miette::miette!(
                "nothing to play: give --prompt TEXT or a RECIPE.rhai"
            ))
        }
    };
    let plan = args.steering.plan(args.seed, &args.paths.library, None)?;
    let (_, config) = model_config(&args.model.spec())?;
    let clip = args.extent.check(&config)?;
    let model = load_model(&args.model)?;
    if let Some(w) = model
        .prompt_warning(&prompt)
        .map_err(|e| miette::miette!("{e}"))?
    {
        eprintln!("warning: --prompt: {w}");
    }
    let (steps, endless) = length(&model, seconds)?;
    let mut extent = args.extent.extent(&model, clip.as_ref())?;
    extent.endless = endless;
    let plan = plan_for(&plan, clip.as_ref(), &extent, model.frame_rate());
    let mut hook = plan_hook(&model, &plan, hook_steps(&model, steps, endless)?)?;
    let options = args.sampling.options(steps, args.seed);
    let buffering = Buffering {
        piece_s: (!endless).then_some(seconds),
        fixed_s: args.buffer,
        max_ahead_s: args.ahead,
    };
    let outputs = Outputs {
        stdout: false,
        file: args.out.clone(),
        player: Some((player, buffering)),
        format: SampleFormat::from_pcm16_flag(args.pcm16),
    };
    run_performance(
        &model,
        &prompt,
        &options,
        &extent,
        hook.as_mut().map(|h| h.as_mut() as &mut dyn ResidualHook),
        Listen::first_term(&plan).as_ref(),
        outputs,
    )?;
    Ok(())
}

/// Connects `port`'s knobs to `knob(cc)` schedules while the returned value lives.
pub fn connect_midi(port: Option<&str>) -> miette::Result<Option<baton::perform::midi::MidiKnobs>> {
    let Some(port) = port else {
        return Ok(None);
    };
    let knobs = baton::perform::midi::connect(port).map_err(|e| miette::miette!("--midi: {e}"))?;
    eprintln!("knobs follow MIDI port {}", knobs.port);
    Ok(Some(knobs))
}

/// The steering hook's horizon for a piece of `steps` decoder steps, or an endless one (see
/// [`baton::piece::steering_steps`]).
pub fn hook_steps(model: &MusicGen, steps: usize, endless: bool) -> miette::Result<usize> {
    steering_steps(model, steps, endless).map_err(|e| miette::miette!("{e}"))
}
