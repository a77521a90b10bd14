//! `baton fad`: Fréchet and kernel audio distances between a folder of reference WAVs and a
//! folder of generated ones.

use std::io::IsTerminal;
use std::path::PathBuf;

use baton::eval::clap::DEFAULT_MODEL;
use baton::eval::embed::{Embedder, Embedding};
use baton::eval::{audio_distances, wav_files, AudioDistances};
use baton::files::write_atomic;
use clap::Args;

use super::common::{parse_device, ModelSource};
use super::output::check_output;

/// Arguments of `baton fad`.
#[derive(Args, Debug)]
pub struct FadArgs {
    /// Folder of reference WAV files (real music; sub-folders are not searched).
    pub reference: PathBuf,
    /// Folder of generated WAV files.
    pub generated: PathBuf,
    /// Embedding to measure in: encodec (the MusicGen codec's encoder latent, one row per
    /// frame) or clap (CLAP's audio embedding, one row per 10 s window of each file).
    #[arg(long, default_value = "encodec")]
    pub embedding: String,
    /// CLAP checkpoint for --embedding clap: a hub id or a local folder (transformers'
    /// ClapModel format).
    #[arg(long, value_name = "M", default_value = DEFAULT_MODEL)]
    pub clap_model: String,
    // The MusicGen whose codec embeds (--embedding encodec); CLAP runs on --device too.
    #[command(flatten)]
    pub model: ModelSource,
    /// Gaussian kernel bandwidth for KAD [default: median pairwise distance of the reference
    /// embeddings].
    #[arg(long)]
    pub bandwidth: Option<f64>,
    /// Also write the distances and every generated file's share to this JSON file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Runs `baton fad`.
pub fn run(args: FadArgs) -> miette::Result<()> {
    let err = |e: baton::eval::EvalError| miette::miette!("{e}");
    let embedding: Embedding = args
        .embedding
        .parse()
        .map_err(|e: String| miette::miette!("--embedding: {e}"))?;
    if let Some(h) = args.bandwidth.filter(|h| !(h.is_finite() && *h > 0.0)) {
        return Err(miette::miette!(
            "--bandwidth must be a positive number, got {h}"
        ));
    }
    // Everything that needs no model is checked before it loads.
    let reference = wav_files(&args.reference).map_err(err)?;
    let generated = wav_files(&args.generated).map_err(err)?;
    if let Some(json) = &args.json {
        check_output(json)?;
    }
    let device = parse_device(&args.model.device)?;
    let spec = match embedding {
        Embedding::Encodec => args.model.spec(),
        Embedding::Clap => args.clap_model.clone(),
    };
    let embedder = Embedder::load(embedding, &spec, &device).map_err(err)?;

    let bar = baton::progress::counter(
        reference.len() + generated.len(),
        "files",
        format!("embedding ({embedding})"),
        std::io::stderr().is_terminal(),
    );
    let mut tick = || bar.inc(1);
    let reference = embedder.embed_files(&reference, &mut tick).map_err(err)?;
    let generated = embedder.embed_files(&generated, &mut tick).map_err(err)?;
    bar.finish_and_clear();

    let report = audio_distances(embedding, &reference, &generated, args.bandwidth).map_err(err)?;
    print_report(&report);
    if let Some(json) = &args.json {
        let text = serde_json::to_string_pretty(&report)
            .map_err(|e| miette::miette!("cannot write {}: {e}", json.display()))?;
        write_atomic(json, text.as_bytes())
            .map_err(|e| miette::miette!("cannot write {}: {e}", json.display()))?;
    }
    Ok(())
}

/// Six significant digits whatever the scale (distances in an untrained codec's latent space can
/// be 1e-4, in a trained one hundreds).
pub fn num(x: f64) -> String {
    if x == 0.0 || (1e-3..1e6).contains(&x.abs()) {
        format!("{x:.6}")
    } else {
        format!("{x:.5e}")
    }
}

fn print_report(r: &AudioDistances) {
    println!(
        "embedding  {} ({} dimensions)\nreference  {} files, {} rows\ngenerated  {} files, {} rows",
        r.embedding,
        r.dim,
        r.reference.files,
        r.reference.rows,
        r.generated.files,
        r.generated.rows
    );
    println!("FAD        {}", num(r.fad));
    println!(
        "KAD        {}  (unbiased MMD^2 x {}, Gaussian kernel, bandwidth {})",
        num(r.kad),
        r.kad_scale,
        num(r.kad_bandwidth)
    );
    // The files that pull the generated set furthest away, for a look.
    let mut worst: Vec<_> = r
        .files
        .iter()
        .filter_map(|f| f.fad_leave_one_out.map(|d| (d, f)))
        .filter(|(d, _)| *d > 0.0)
        .collect();
    worst.sort_by(|a, b| b.0.total_cmp(&a.0));
    if !worst.is_empty() && r.files.len() > 2 {
        println!("most FAD added by one file:");
        for (d, f) in worst.iter().take(3) {
            println!("  +{}  {}", num(*d), f.path.display());
        }
    }
}
