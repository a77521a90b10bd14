//! `baton clap`: how well each clip matches each text, by CLAP's cosine similarity.

use std::io::IsTerminal;
use std::path::PathBuf;

use baton::eval::clap::{Clap, ClapScores, DEFAULT_MODEL};
use clap::Args;
use miette::{miette, Result};

/// Arguments of `baton clap`.
#[derive(Args, Debug)]
pub struct ClapArgs {
    /// WAV clips to score (any rate; stereo is mixed to mono; longer than 10 s is read in 10 s
    /// windows whose embeddings are averaged).
    #[arg(value_name = "CLIP", required = true)]
    pub clips: Vec<PathBuf>,
    /// A text to score every clip against; repeat for more.
    #[arg(long = "text", value_name = "T")]
    pub texts: Vec<String>,
    /// CLAP checkpoint: a Hugging Face hub id or a local folder (transformers' ClapModel format).
    #[arg(long, value_name = "M", default_value = DEFAULT_MODEL)]
    pub clap_model: String,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Also write the scores as JSON: {"clips": [...], "texts": [...], "scores": [[per text] per clip]}.
    #[arg(long, value_name = "F")]
    pub json: Option<PathBuf>,
}

/// Runs `baton clap`.
pub fn run(args: ClapArgs) -> Result<()> {
    if args.texts.is_empty() {
        return Err(miette!(
            "give at least one --text to score the clips against (e.g. --text \"lofi hip hop with piano\")"
        ));
    }
    if let Some(i) = args.texts.iter().position(|t| t.trim().is_empty()) {
        return Err(miette!(
            "--text number {} is empty: give the words to score the clips against",
            i + 1
        ));
    }
    if let Some(json) = &args.json {
        super::output::check_output(json)?;
    }
    let device = super::common::parse_device(&args.device)?;
    // Read every clip before loading the model: a bad file fails at once.
    let mut audio = Vec::with_capacity(args.clips.len());
    for path in &args.clips {
        let (samples, rate) = baton::audio::read_wav_mono(path).map_err(|e| miette!("{e}"))?;
        audio.push((samples, rate));
    }
    let clap = Clap::load(&args.clap_model, &device)
        .map_err(|e| miette!("CLAP model {}: {e}", args.clap_model))?;
    let texts = args
        .texts
        .iter()
        .map(|t| clap.embed_text(t))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| miette!("{e}"))?;
    let bar = baton::progress::counter(
        audio.len(),
        "clips",
        "CLAP".into(),
        std::io::stderr().is_terminal(),
    );
    let mut clips = Vec::with_capacity(audio.len());
    for (path, (samples, rate)) in args.clips.iter().zip(&audio) {
        let e = clap
            .embed_audio(samples, *rate)
            .map_err(|e| miette!("{}: {e}", path.display()))?;
        clips.push(e);
        bar.inc(1);
    }
    bar.finish_and_clear();
    let names = args.clips.iter().map(|p| p.display().to_string()).collect();
    let scores = ClapScores::new(names, &clips, args.texts.clone(), &texts);
    print_table(&scores);
    if let Some(path) = &args.json {
        let mut text = serde_json::to_string_pretty(&scores)
            .map_err(|e| miette!("cannot encode the scores: {e}"))?;
        text.push('\n');
        baton::files::write_atomic(path, text.as_bytes())
            .map_err(|e| miette!("cannot write {}: {e}", path.display()))?;
    }
    Ok(())
}

/// Shortens `s` to `max` characters, marking the cut with "..." (at the end of a text).
fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let head: String = s.chars().take(max.saturating_sub(3)).collect();
        format!("{head}...")
    }
}

/// Shortens a path to `max` characters from the front, so the file name stays in view.
fn cut_front(s: &str, max: usize) -> String {
    let n = s.chars().count();
    if n <= max {
        s.to_string()
    } else {
        let tail: String = s.chars().skip(n + 3 - max).collect();
        format!("...{tail}")
    }
}

/// One row per clip, one column per text, cosines to 4 places (the JSON keeps every digit).
fn print_table(scores: &ClapScores) {
    let heads: Vec<String> = scores.texts.iter().map(|t| cut(t, 28)).collect();
    let widths: Vec<usize> = heads.iter().map(|h| h.chars().count().max(7)).collect();
    let names: Vec<String> = scores.clips.iter().map(|c| cut_front(c, 40)).collect();
    let first = names
        .iter()
        .map(|n| n.chars().count())
        .max()
        .unwrap_or(0)
        .max(4);
    let mut line = format!("{:<first$}", "clip");
    for (h, w) in heads.iter().zip(&widths) {
        line.push_str(&format!("  {h:>w$}"));
    }
    println!("{line}");
    for (name, row) in names.iter().zip(&scores.scores) {
        let mut line = format!("{name:<first$}");
        for (s, w) in row.iter().zip(&widths) {
            line.push_str(&format!("  {s:>w$.4}"));
        }
        println!("{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_names_keep_their_informative_end() {
        assert_eq!(cut("lofi hip hop", 20), "lofi hip hop");
        assert_eq!(cut("lofi hip hop with piano", 10), "lofi hi...");
        assert_eq!(
            cut_front("takes/a/b/s0.300-seed1.wav", 15),
            "...00-seed1.wav"
        );
        assert_eq!(cut_front("a.wav", 15), "a.wav");
    }
}
