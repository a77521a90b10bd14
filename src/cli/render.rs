//! `baton render`: a prompt (with optional `--steer` bundles) or a recipe to WAV.

use std::path::{Path, PathBuf};
use std::time::Instant;

use baton::audio::{write_wav, SampleFormat};
use baton::model::{write_codes, Extent, GenerateOptions, MusicGen};
use baton::piece::plan_for;
use baton::progress::GenerationProgress;
use clap::Args;

use super::common::{load_model, model_config, ModelArgs};
use super::generation::{plan_hook, ExtentArgs, SamplingArgs, SteerArgs};
use super::output::{check_output_in_new_folder, NewFolder};
use super::play::{check_seconds_or_inf, hook_steps, length, run_performance, Outputs};
use super::recipe::RecipePaths;

/// Arguments of `baton render`.
#[derive(Args, Debug)]
pub struct RenderArgs {
    /// A Rhai recipe to run instead of --prompt.
    pub recipe: Option<PathBuf>,
    /// Text prompt; repeat for a batch (one file per prompt; prompt i is sampled with seed
    /// --seed + i - 1, exactly as rendered alone with that seed).
    #[arg(long)]
    pub prompt: Vec<String>,
    /// Length of the new music in seconds (after --continue's clip); longer than one --window,
    /// it is generated window by window; `inf` goes on until Ctrl-C (with --out - or a file
    /// that is whole when stopped) [default: 10].
    #[arg(long, conflicts_with = "max_new_tokens", allow_negative_numbers = true)]
    pub seconds: Option<f64>,
    /// Decoder steps after the prompt, with Hugging Face's meaning (new frames + codebooks - 1).
    #[arg(long)]
    pub max_new_tokens: Option<usize>,
    #[command(flatten)]
    pub extent: ExtentArgs,
    /// Output WAV file (a stem or folder for a batch); `-` streams one piece to stdout as it is
    /// generated (lengths left open, as on any pipe: `| aplay`, `| ffplay -`, `| sox`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Seed of the sampling RNG.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Also write the generated codes (tensor `codes`, i64 [codebooks, frames]).
    #[arg(long)]
    pub save_codes: Option<PathBuf>,
    /// Write 16-bit PCM instead of 32-bit float WAV.
    #[arg(long)]
    pub pcm16: bool,
    #[command(flatten)]
    pub steering: SteerArgs,
    #[command(flatten)]
    pub paths: RecipePaths,
    #[command(flatten)]
    pub model: ModelArgs,
}

/// Runs `baton render`.
pub fn run(args: RenderArgs) -> miette::Result<()> {
    if args.recipe.is_some() {
        return super::recipe::run(&args);
    }
    if args.prompt.is_empty() {
        return Err(miette::miette!(
            "nothing to render: give --prompt TEXT (repeatable) or a RECIPE.rhai"
        ));
    }
    if let Some(i) = args.prompt.iter().position(|p| p.trim().is_empty()) {
        return Err(miette::miette!("--prompt number {} is empty", i + 1));
    }
    if let Some(s) = args.seconds {
        check_seconds_or_inf(s)?;
    }
    let to_stdout = args.out.as_deref() == Some(Path::new("-"));
    let endless = args.seconds == Some(f64::INFINITY);
    if to_stdout || endless {
        if args.prompt.len() > 1 {
            return Err(miette::miette!(
                "--out - and --seconds inf stream one piece: give one --prompt"
            ));
        }
        if args.save_codes.is_some() {
            return Err(miette::miette!(
                "--save-codes needs the whole piece: not with --out - or --seconds inf"
            ));
        }
        if endless && args.out.is_none() {
            return Err(miette::miette!(
                "--seconds inf never ends by itself: give --out - (a stream) or --out FILE \
                 (whole when Ctrl-C stops it)"
            ));
        }
    }
    if args.max_new_tokens == Some(0) {
        return Err(miette::miette!("--max-new-tokens must be at least 1"));
    }
    args.sampling.check()?;
    // The steering flags are checked (bundles read) before the model load; only the check of
    // each direction against the model's shape has to wait for it.
    let plan = args.steering.plan(args.seed, &args.paths.library, None)?;
    // Lengths and windows are settled by config.json: checked before the weights load.
    let (_, config) = model_config(&args.model.spec())?;
    let clip = args.extent.check(&config)?;
    if let Some(t) = args.max_new_tokens {
        baton::piece::check_new_tokens(&config, t)
            .map_err(|e| miette::miette!("--max-new-tokens {e}"))?;
    }
    let out = args.out.clone().unwrap_or_else(|| PathBuf::from("out.wav"));
    let wavs = if to_stdout {
        OutputPlan {
            files: Vec::new(),
            new_folder: None,
        }
    } else {
        OutputPlan::new(&out, &args.prompt, "wav")?
    };
    let codes_paths = args
        .save_codes
        .as_ref()
        .map(|p| OutputPlan::new(p, &args.prompt, "safetensors"))
        .transpose()?;

    let model = load_model(&args.model)?;
    for (i, prompt) in args.prompt.iter().enumerate() {
        if let Some(w) = model
            .prompt_warning(prompt)
            .map_err(|e| miette::miette!("{e}"))?
        {
            eprintln!("warning: --prompt number {}: {w}", i + 1);
        }
    }
    let max_new_tokens = match args.max_new_tokens {
        Some(t) => t,
        None => length(&model, args.seconds.unwrap_or(10.0))?.0,
    };
    let mut extent = args.extent.extent(&model, clip.as_ref())?;
    extent.endless = endless;
    let plan = plan_for(&plan, clip.as_ref(), &extent, model.frame_rate());
    let options = args.sampling.options(max_new_tokens, args.seed);
    let prompts: Vec<&str> = args.prompt.iter().map(String::as_str).collect();
    // Every check passed: only now create the folders asked for with a trailing `/`.
    wavs.create_folder()?;
    if let Some(c) = &codes_paths {
        c.create_folder()?;
    }
    if to_stdout || endless {
        let mut hook = plan_hook(&model, &plan, hook_steps(&model, max_new_tokens, endless)?)?;
        let outputs = Outputs {
            stdout: to_stdout,
            file: wavs.files.first().cloned(),
            player: None,
            format: SampleFormat::from_pcm16_flag(args.pcm16),
        };
        run_performance(
            &model,
            prompts[0],
            &options,
            &extent,
            hook.as_mut()
                .map(|h| h.as_mut() as &mut dyn baton::model::ResidualHook),
            baton::perform::Listen::first_term(&plan).as_ref(),
            outputs,
        )?;
        return Ok(());
    }
    let started = Instant::now();
    let mut hook = plan_hook(&model, &plan, max_new_tokens)?;
    let codes = generate_with_progress(&model, &prompts, &options, &extent, hook.as_mut())?;
    let generate_s = started.elapsed().as_secs_f64();
    let windows = model.pass_steps(&extent, max_new_tokens);
    let steps: usize = windows.iter().sum();

    let decode_start = Instant::now();
    let audio = model.decode(&codes).map_err(|e| miette::miette!("{e}"))?;
    let decode_s = decode_start.elapsed().as_secs_f64();
    let audio_s = audio.first().map_or(0.0, |a| a.len() as f64) / model.sample_rate() as f64;
    eprintln!(
        "generated {steps} steps{} in {generate_s:.2} s ({:.2} steps/s, text encoding \
         included), decoded in {decode_s:.2} s, real-time factor {:.2}",
        if windows.len() > 1 {
            format!(" in {} windows", windows.len())
        } else {
            String::new()
        },
        steps as f64 / generate_s,
        (generate_s + decode_s) / audio_s.max(1e-9)
    );
    let format = SampleFormat::from_pcm16_flag(args.pcm16);
    for (i, wave) in audio.iter().enumerate() {
        write_wav(&wavs.files[i], wave, model.sample_rate(), format)
            .map_err(|e| miette::miette!("{e}"))?;
        if let Some(paths) = &codes_paths {
            let item = codes.get(i).map_err(|e| miette::miette!("{e}"))?;
            write_codes(&paths.files[i], &item).map_err(|e| miette::miette!("{e}"))?;
        }
        eprintln!(
            "wrote {} ({:.2} s)",
            wavs.files[i].display(),
            wave.len() as f64 / model.sample_rate() as f64
        );
    }
    Ok(())
}

/// Runs generation with a progress bar showing decoder steps/s, the window of a long piece and
/// the real-time factor (compute time / audio time; below 1 is faster than real time), steered
/// by `hook` as [`plan_hook`] makes it.
pub fn generate_with_progress(
    model: &MusicGen,
    prompts: &[&str],
    options: &GenerateOptions,
    extent: &Extent,
    hook: Option<&mut Box<dyn baton::model::ResidualHook>>,
) -> miette::Result<baton::model::Codes> {
    let windows = model.pass_steps(extent, options.max_new_tokens);
    let total = windows.iter().sum();
    let progress = GenerationProgress::new(total, model.frame_rate(), true).with_windows(&windows);
    let mut on_step = |done: usize, _total: usize| progress.step(done);
    let hook = hook.map(|h| h.as_mut() as &mut dyn baton::model::ResidualHook);
    let codes = model.generate_piece(prompts, options, extent, hook, &mut on_step, None);
    progress.finish();
    codes.map_err(|e| miette::miette!("{e}"))
}

/// Where a render's files go: one path per prompt, and the folders to create first.
struct OutputPlan {
    files: Vec<PathBuf>,
    new_folder: Option<NewFolder>,
}

impl OutputPlan {
    /// Plans and checks the outputs of `prompts`; creates nothing.
    ///
    /// One prompt writes `out` itself unless `out` names a folder. A folder (an existing one, or
    /// a path ending with `/`) receives a file named after the prompt (one prompt) or
    /// `prompt-{i}.{ext}` (a batch); otherwise a batch writes `{stem}-{i}.{ext}` next to `out`.
    /// Missing folders on the way are created once every check has passed, as the other verbs
    /// do.
    fn new(out: &Path, prompts: &[String], ext: &str) -> miette::Result<Self> {
        let n = prompts.len();
        let as_folder = is_folder(out);
        let files: Vec<PathBuf> = if n == 1 && !as_folder {
            vec![out.to_path_buf()]
        } else if n == 1 {
            vec![out.join(format!("{}.{ext}", file_stem_of(&prompts[0])))]
        } else {
            (1..=n)
                .map(|i| {
                    if as_folder {
                        out.join(format!("prompt-{i}.{ext}"))
                    } else {
                        let stem = out.with_extension("");
                        PathBuf::from(format!("{}-{i}.{ext}", stem.display()))
                    }
                })
                .collect()
        };
        let mut new_folder = None;
        for f in &files {
            // Every file of a plan shares one folder: the first check says what to create.
            let folder = check_output_in_new_folder(f)?;
            new_folder.get_or_insert(folder);
        }
        Ok(Self { files, new_folder })
    }

    /// Creates the planned folders, if any.
    fn create_folder(&self) -> miette::Result<()> {
        match &self.new_folder {
            Some(folder) => folder.create(),
            None => Ok(()),
        }
    }
}

/// A file name for a prompt: its words in lower case joined by `-`, at most 60 characters
/// (`prompt` when nothing is left).
fn file_stem_of(prompt: &str) -> String {
    let words: Vec<String> = prompt
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect();
    let mut stem = String::new();
    for w in words {
        if stem.chars().count() + w.chars().count() + 1 > 60 {
            break;
        }
        if !stem.is_empty() {
            stem.push('-');
        }
        stem.push_str(&w);
    }
    if stem.is_empty() {
        "prompt".into()
    } else {
        stem
    }
}

/// True when `out` names a folder: an existing one, or a path ending with `/`.
fn is_folder(out: &Path) -> bool {
    out.is_dir() || out.to_string_lossy().ends_with('/')
}
