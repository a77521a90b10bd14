//! `baton clap` through the binary: the table and JSON of a tiny checkpoint, other rates and
//! stereo, and clean errors (never a panic) for bad input.

use std::path::{Path, PathBuf};
use std::process::Command;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn tiny_clap() -> String {
    fixture("clap/tiny-a").display().to_string()
}

/// Runs baton offline with an empty hub cache; returns (success, stdout, stderr).
fn baton(args: &[&str], home: &Path) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(args)
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HOME", home.join("hf"))
        .output()
        .expect("run baton");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// Asserts a clean failure whose message holds every one of `needles` (whitespace-insensitive).
fn fails_with(args: &[&str], needles: &[&str]) {
    let home = tempfile::tempdir().unwrap();
    let (ok, _, stderr) = baton(args, home.path());
    assert!(!ok, "{args:?} succeeded");
    assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
    let flat: String = stderr
        .split(|c: char| c.is_whitespace() || c == '│')
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    for n in needles {
        assert!(flat.contains(n), "{args:?}: expected {n:?} in {stderr}");
    }
}

/// Writes `channels` interleaved channels of a tone as a 16-bit WAV.
fn write_wav(path: &Path, rate: u32, channels: u16, seconds: f64) {
    let spec = hound::WavSpec {
        channels,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    let n = (seconds * rate as f64) as usize;
    for i in 0..n {
        let t = i as f64 / rate as f64;
        let s = 0.3 * (2.0 * std::f64::consts::PI * 440.0 * t).sin();
        for c in 0..channels {
            let v = if c == 0 { s } else { s * 0.5 };
            w.write_sample((v * 32767.0) as i16).unwrap();
        }
    }
    w.finalize().unwrap();
}

#[test]
fn scores_every_clip_against_every_text() {
    let dir = tempfile::tempdir().unwrap();
    let mono = dir.path().join("mono48k.wav");
    let stereo = dir.path().join("stereo16k.wav");
    let cd = dir.path().join("cd.wav");
    write_wav(&mono, 48_000, 1, 1.5);
    write_wav(&stereo, 16_000, 2, 1.0);
    write_wav(&cd, 44_100, 1, 0.5);
    let json = dir.path().join("scores.json");
    let clap = tiny_clap();
    let args = [
        "clap",
        mono.to_str().unwrap(),
        stereo.to_str().unwrap(),
        cd.to_str().unwrap(),
        "--text",
        "jazz",
        "--text",
        "a heavy metal guitar riff",
        "--clap-model",
        &clap,
        "--json",
        json.to_str().unwrap(),
    ];
    let (ok, stdout, stderr) = baton(&args, dir.path());
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("jazz") && stdout.contains("a heavy metal guitar riff"),
        "{stdout}"
    );
    assert_eq!(stdout.lines().count(), 4, "{stdout}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(
        v["texts"],
        serde_json::json!(["jazz", "a heavy metal guitar riff"])
    );
    assert_eq!(v["clips"].as_array().unwrap().len(), 3);
    let scores = v["scores"].as_array().unwrap();
    assert_eq!(scores.len(), 3);
    for row in scores {
        let row = row.as_array().unwrap();
        assert_eq!(row.len(), 2);
        for s in row {
            let s = s.as_f64().unwrap();
            assert!((-1.0..=1.0).contains(&s), "{s}");
        }
    }
    // The printed table holds the same numbers, to 4 places.
    let first = stdout.lines().nth(1).unwrap();
    let printed: f64 = first.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(
        (printed - scores[0][0].as_f64().unwrap()).abs() < 1e-4,
        "{first}"
    );
}

#[test]
fn bad_input_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("clip.wav");
    write_wav(&clip, 22_050, 1, 0.2);
    let clip = clip.to_str().unwrap();
    let clap = tiny_clap();
    // No text.
    fails_with(&["clap", clip, "--clap-model", &clap], &["--text"]);
    // An empty text, among others.
    fails_with(
        &[
            "clap",
            clip,
            "--text",
            "a",
            "--text",
            " ",
            "--clap-model",
            &clap,
        ],
        &["--text number 2 is empty"],
    );
    // An empty (0 s) clip.
    let empty = dir.path().join("empty.wav");
    write_wav(&empty, 48_000, 2, 0.0);
    fails_with(
        &[
            "clap",
            empty.to_str().unwrap(),
            "--text",
            "a",
            "--clap-model",
            &clap,
        ],
        &["empty.wav", "no samples"],
    );
    // Not a WAV file.
    let text = dir.path().join("notes.wav");
    std::fs::write(&text, "not audio").unwrap();
    fails_with(
        &[
            "clap",
            text.to_str().unwrap(),
            "--text",
            "a",
            "--clap-model",
            &clap,
        ],
        &["notes.wav"],
    );
    // A missing clip.
    fails_with(
        &[
            "clap",
            "no/such/clip.wav",
            "--text",
            "a",
            "--clap-model",
            &clap,
        ],
        &["no/such/clip.wav"],
    );
    // A MusicGen folder is not a CLAP model.
    let musicgen = fixture("tiny-a").display().to_string();
    fails_with(
        &["clap", clip, "--text", "a", "--clap-model", &musicgen],
        &["not a CLAP model", "musicgen", "clap"],
    );
    // A folder that does not exist, and a hub id not in the (empty, offline) cache.
    fails_with(
        &[
            "clap",
            clip,
            "--text",
            "a",
            "--clap-model",
            "no/such/folder/here",
        ],
        &["does not exist"],
    );
    fails_with(
        &[
            "clap",
            clip,
            "--text",
            "a",
            "--clap-model",
            "laion/larger_clap_music",
        ],
        &["laion/larger_clap_music", "HF_HUB_OFFLINE"],
    );
    // A folder with a CLAP config but no weights.
    let broken = dir.path().join("broken");
    std::fs::create_dir(&broken).unwrap();
    std::fs::copy(
        fixture("clap/tiny-a/config.json"),
        broken.join("config.json"),
    )
    .unwrap();
    fails_with(
        &[
            "clap",
            clip,
            "--text",
            "a",
            "--clap-model",
            broken.to_str().unwrap(),
        ],
        &["model.safetensors"],
    );
    // A fused checkpoint (feature fusion is not implemented) is refused by name.
    let fused = dir.path().join("fused");
    std::fs::create_dir(&fused).unwrap();
    for entry in std::fs::read_dir(fixture("clap/tiny-a")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), fused.join(entry.file_name())).unwrap();
    }
    let config = std::fs::read_to_string(fused.join("config.json")).unwrap();
    std::fs::write(
        fused.join("config.json"),
        config.replace("\"enable_fusion\": false", "\"enable_fusion\": true"),
    )
    .unwrap();
    fails_with(
        &[
            "clap",
            clip,
            "--text",
            "a",
            "--clap-model",
            fused.to_str().unwrap(),
        ],
        &["enable_fusion", "not supported"],
    );
    // A text longer than the (tiny) text encoder takes.
    let long = "la ".repeat(100);
    fails_with(
        &["clap", clip, "--text", &long, "--clap-model", &clap],
        &["tokens long", "at most"],
    );
    // A JSON output in a folder that does not exist.
    fails_with(
        &[
            "clap",
            clip,
            "--text",
            "a",
            "--clap-model",
            &clap,
            "--json",
            "no/such/dir/s.json",
        ],
        &["no/such/dir"],
    );
}

#[test]
fn unusual_rates_and_channel_counts_are_mixed_and_resampled() {
    // Six channels at 8 kHz, and a clip of a single sample (repeated to 10 s as transformers'
    // `repeatpad` does): both scored, as the library scores their mono mix.
    let dir = tempfile::tempdir().unwrap();
    let six = dir.path().join("six.wav");
    let blip = dir.path().join("blip.wav");
    write_wav(&six, 8_000, 6, 0.5);
    write_wav(&blip, 11_025, 1, 1.0 / 11_025.0);
    let json = dir.path().join("s.json");
    let clap = tiny_clap();
    let (ok, stdout, stderr) = baton(
        &[
            "clap",
            six.to_str().unwrap(),
            blip.to_str().unwrap(),
            "--text",
            "a",
            "--clap-model",
            &clap,
            "--json",
            json.to_str().unwrap(),
        ],
        dir.path(),
    );
    assert!(ok, "{stdout}{stderr}");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let model = baton::eval::clap::Clap::load(&clap, &candle_core::Device::Cpu).unwrap();
    let text = model.embed_text("a").unwrap();
    for (i, path) in [&six, &blip].iter().enumerate() {
        let (x, rate) = baton::audio::read_wav_mono(path).unwrap();
        let want = baton::eval::clap::cosine(&model.embed_audio(&x, rate).unwrap(), &text);
        let got = doc["scores"][i][0].as_f64().unwrap();
        assert!(
            (got - want as f64).abs() < 1e-6,
            "{path:?}: {got} vs {want}"
        );
    }
}
