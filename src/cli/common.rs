//! Options shared by every verb that loads a model, and the loading itself.

use std::path::PathBuf;
use std::time::Duration;

use baton::model::load::{self, ModelFiles};
use baton::model::{MusicGen, MusicGenConfig, WeightFormat};
use baton::steer::library::library_path;
use candle_core::Device;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

/// Which model, and where to run it: the flags every verb that loads a MusicGen (or only its
/// codec, as `baton fad` does) shares.
#[derive(Args, Debug, Clone)]
pub struct ModelSource {
    /// Hugging Face hub id or local folder of the MusicGen model.
    #[arg(long, default_value = "facebook/musicgen-small")]
    pub model: String,
    /// Hub revision of --model: a branch, tag, commit or `refs/pr/N` [default: main].
    #[arg(long)]
    pub revision: Option<String>,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

impl ModelSource {
    /// The model as the library takes it: `--model`, with `@REV` when `--revision` is given.
    pub fn spec(&self) -> String {
        load::with_revision(&self.model, self.revision.as_deref())
    }
}

/// Which model to load, where to run it, and how its decoder weights are stored.
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    #[command(flatten)]
    pub source: ModelSource,
    /// Storage of the decoder weights: f32, f16, bf16, q8 (8 bits with a scale per row, CPU
    /// only: a quarter of f32's bytes per step) or q4 (4 bits with a scale per 32 weights, CPU
    /// only: 5 bits a weight, a coarser approximation). On the CPU, bf16, q8 and q4 also keep
    /// the attention cache in bf16, which long pieces read every step.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
}

impl ModelArgs {
    /// See [`ModelSource::spec`].
    pub fn spec(&self) -> String {
        self.source.spec()
    }
}

/// The direction library: where names like `notes:C#` resolve.
#[derive(Args, Debug, Clone)]
pub struct Library {
    /// Direction library that names like `notes:C#` resolve in (DIR/notes/C#.safetensors).
    #[arg(
        long = "directions",
        env = "BATON_DIRECTIONS",
        default_value = "directions"
    )]
    pub dir: PathBuf,
}

impl Library {
    /// The bundle file `name` means: a path, or a library name `CONCEPT:TARGET` resolving to
    /// `DIR/CONCEPT/TARGET.safetensors`; `flag` names the option in the error.
    pub fn bundle(&self, flag: &str, name: &str) -> miette::Result<PathBuf> {
        let file = PathBuf::from(name);
        let path = if file.is_file() {
            file
        } else {
            library_path(&self.dir, name).unwrap_or(file)
        };
        if !path.is_file() {
            let learn = baton::concepts::learn_command(name)
                .map(|c| format!("; `{c} --directions {}` makes it", self.dir.display()))
                .unwrap_or_default();
            return Err(miette::miette!(
                "{flag} {name}: no bundle file {} (library names resolve under --directions or \
                 $BATON_DIRECTIONS, now {}){learn}",
                path.display(),
                self.dir.display()
            ));
        }
        Ok(path)
    }
}

/// Parses `cpu`, `cuda` or `cuda:N`.
pub fn parse_device(spec: &str) -> miette::Result<Device> {
    let cuda = |n: usize| {
        Device::new_cuda(n).map_err(|e| miette::miette!("cannot use --device {spec}: {e}"))
    };
    match spec {
        "cpu" => Ok(Device::Cpu),
        "cuda" => cuda(0),
        _ => match spec.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(n)) => cuda(n),
            _ => Err(miette::miette!(
                "unknown --device {spec:?}: expected cpu, cuda or cuda:N"
            )),
        },
    }
}

/// Parses `f32`, `f16`, `bf16`, `q8` or `q4`.
pub fn parse_dtype(spec: &str) -> miette::Result<WeightFormat> {
    spec.parse()
        .map_err(|e: String| miette::miette!("--dtype: {e}"))
}

/// Loads the model named by `args`: first its files (downloads show hf-hub's own bar), then the
/// weights under a spinner on stderr, so the two never share a line.
pub fn load_model(args: &ModelArgs) -> miette::Result<MusicGen> {
    let device = parse_device(&args.source.device)?;
    let dtype = parse_dtype(&args.dtype)?;
    let spec = args.spec();
    let files = load::resolve(&spec).map_err(|e| miette::miette!("{e}"))?;
    let spinner = ProgressBar::new_spinner();
    spinner.set_style(
        ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    spinner.set_message(format!("loading {spec}"));
    spinner.enable_steady_tick(Duration::from_millis(120));
    let model = MusicGen::load_files_as(&files, &device, dtype);
    spinner.finish_and_clear();
    model.map_err(|e| miette::miette!("{e}"))
}

/// The files of the model `spec` names and its parsed `config.json`, without loading weights:
/// what settles lengths and windows before the (slow) load.
pub fn model_config(spec: &str) -> miette::Result<(ModelFiles, MusicGenConfig)> {
    let files = load::resolve(spec).map_err(|e| miette::miette!("{e}"))?;
    let text = std::fs::read_to_string(&files.config)
        .map_err(|e| miette::miette!("cannot read {}: {e}", files.config.display()))?;
    let config = MusicGenConfig::from_json(&text)
        .map_err(|e| miette::miette!("{}: {e}", files.config.display()))?;
    Ok((files, config))
}
