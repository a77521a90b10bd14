//! Bad input to `baton render` / `baton info`: each case must exit non-zero with a clear message,
//! never panic, and leave no output file behind.

use std::path::{Path, PathBuf};
use std::process::Command;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Runs baton offline with an empty hub cache; returns (success, stderr).
fn baton(args: &[&str], home: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(args)
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HOME", home.join("hf"))
        .output()
        .expect("run baton");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    (out.status.success(), stderr)
}

/// `baton render --prompt a --model MODEL --out OUT EXTRA...`.
fn render_a<'a>(model: &'a str, out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["render", "--prompt", "a", "--model", model, "--out", out];
    args.extend(extra);
    args
}

/// Asserts a clean failure mentioning every `needles` item (whitespace-insensitive, since miette
/// wraps long messages) and no file at `out`.
fn fails_with(args: &[&str], needles: &[&str], out: &Path) {
    let home = tempfile::tempdir().unwrap();
    let (ok, stderr) = baton(args, home.path());
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
    assert!(!out.exists(), "{args:?} left {}", out.display());
}

/// A copy of tiny-a that a test may damage.
fn tiny_copy(dir: &Path) -> PathBuf {
    let dst = dir.join("model");
    std::fs::create_dir(&dst).unwrap();
    for entry in std::fs::read_dir(fixture("tiny-a")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dst.join(entry.file_name())).unwrap();
    }
    dst
}

#[test]
fn unknown_hub_id_offline() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.wav");
    let o = out.to_str().unwrap();
    fails_with(
        &render_a("nobody/no-such-model", o, &[]),
        &["nobody/no-such-model", "HF_HUB_OFFLINE"],
        &out,
    );
    fails_with(
        &["info", "--model", "nobody/no-such-model"],
        &["not in the local Hugging Face cache"],
        &out,
    );
}

#[test]
fn missing_folder_and_files() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.wav");
    let o = out.to_str().unwrap();
    let missing = dir.path().join("no/such/folder");
    fails_with(
        &render_a(missing.to_str().unwrap(), o, &[]),
        &["does not exist"],
        &out,
    );
    let model = tiny_copy(dir.path());
    std::fs::remove_file(model.join("model.safetensors")).unwrap();
    fails_with(
        &render_a(model.to_str().unwrap(), o, &[]),
        &["model.safetensors", "not found"],
        &out,
    );
}

#[test]
fn corrupt_weights() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.wav");
    let o = out.to_str().unwrap();
    let model = tiny_copy(dir.path());
    let weights = model.join("model.safetensors");
    // Truncated: the header promises more data than the file holds.
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    fails_with(
        &render_a(model.to_str().unwrap(), o, &[]),
        &["model.safetensors", "truncated or corrupt"],
        &out,
    );
    std::fs::write(&weights, b"definitely not safetensors").unwrap();
    fails_with(
        &["info", "--model", model.to_str().unwrap()],
        &["model.safetensors", "not a safetensors file"],
        &out,
    );
}

#[test]
fn config_out_of_range() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.wav");
    let o = out.to_str().unwrap();
    let model = tiny_copy(dir.path());
    let path = model.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    config["decoder"]["num_attention_heads"] = 5.into();
    std::fs::write(&path, config.to_string()).unwrap();
    fails_with(
        &render_a(model.to_str().unwrap(), o, &[]),
        &["config.json", "decoder.hidden_size", "num_attention_heads"],
        &out,
    );
    config["decoder"]["num_attention_heads"] = 4.into();
    // Too few positions for one frame with the delay pattern (4 codebooks need 7).
    config["decoder"]["max_position_embeddings"] = 6.into();
    std::fs::write(&path, config.to_string()).unwrap();
    for verb in [&["info"][..], &["render", "--prompt", "a", "--out", o][..]] {
        let mut args = verb.to_vec();
        args.extend(["--model", model.to_str().unwrap()]);
        fails_with(
            &args,
            &[
                "decoder.max_position_embeddings",
                "2 * decoder.num_codebooks - 1",
            ],
            &out,
        );
    }
    config["decoder"]["max_position_embeddings"] = 256.into();
    // A codec with 2 codebooks (0.6 kbps at 50 Hz, 6 bits) under a 4-codebook decoder.
    config["audio_encoder"]["target_bandwidths"] = serde_json::json!([0.6]);
    std::fs::write(&path, config.to_string()).unwrap();
    fails_with(
        &render_a(model.to_str().unwrap(), o, &[]),
        &["decoder predicts 4 codebooks", "audio codec has only 2"],
        &out,
    );
    config["audio_encoder"]["target_bandwidths"] = serde_json::json!([1.2]);
    // Ratios whose product overflows.
    config["audio_encoder"]["upsampling_ratios"] = serde_json::json!([u64::MAX / 2, 4]);
    std::fs::write(&path, config.to_string()).unwrap();
    fails_with(
        &["info", "--model", model.to_str().unwrap()],
        &["audio_encoder.upsampling_ratios", "overflows"],
        &out,
    );
    config["audio_encoder"]["upsampling_ratios"] = serde_json::json!([8, 5, 4, 4]);
    config["model_type"] = "musicgen_melody".into();
    std::fs::write(&path, config.to_string()).unwrap();
    fails_with(
        &["info", "--model", model.to_str().unwrap()],
        &["musicgen-melody", "not supported yet"],
        &out,
    );
}

#[test]
fn bad_prompt_and_lengths() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.wav");
    let o = out.to_str().unwrap();
    let m = fixture("tiny-a");
    let m = m.to_str().unwrap();
    fails_with(
        &["render", "--prompt", "  ", "--model", m, "--out", o],
        &["empty"],
        &out,
    );
    for s in ["0", "-1", "nan"] {
        fails_with(
            &render_a(m, o, &["--seconds", s]),
            &["--seconds must be a positive number"],
            &out,
        );
    }
    // tiny-a has 256 positions at 50 frames/s: about 5 s in one pass. Longer pieces are made
    // window by window (tests/continuation.rs), but no window may be longer than the model's.
    fails_with(
        &render_a(m, o, &["--seconds", "60", "--window", "60"]),
        &["does not fit this model"],
        &out,
    );
    fails_with(
        &render_a(m, o, &["--max-new-tokens", "1"]),
        &["--max-new-tokens must be at least 6"],
        &out,
    );
}

#[test]
fn lengths_out_of_range_are_refused_before_the_weights_load() {
    // Weights that cannot load: a length error proves the check came first.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.wav");
    let o = out.to_str().unwrap();
    let model = tiny_copy(dir.path());
    std::fs::write(model.join("model.safetensors"), b"no weights here").unwrap();
    let m = model.to_str().unwrap();
    // tiny-a: 4 codebooks at 50 frames/s, so an hour is 180000 frames + 3 steps.
    fails_with(
        &render_a(m, o, &["--max-new-tokens", "180004"]),
        &["--max-new-tokens must be at most 180003"],
        &out,
    );
    fails_with(
        &render_a(m, o, &["--max-new-tokens", "3"]),
        &["--max-new-tokens must be at least 6"],
        &out,
    );
    for s in ["3601", "1e9", "1e300"] {
        fails_with(
            &render_a(m, o, &["--seconds", s]),
            &["is longer than the longest finite piece"],
            &out,
        );
    }
    fails_with(
        &render_a(m, o, &["--seconds", "1e300"]),
        &["--seconds 1e300"],
        &out,
    );
    // The limits are inclusive: an hour passes the check and fails only at the weights.
    fails_with(
        &render_a(m, o, &["--max-new-tokens", "180003"]),
        &["not a safetensors file"],
        &out,
    );
}

#[test]
fn unwritable_output() {
    let dir = tempfile::tempdir().unwrap();
    let m = fixture("tiny-a");
    let m = m.to_str().unwrap();
    // A folder that cannot be made: a file stands where it would go.
    let blocker = dir.path().join("a-file");
    std::fs::write(&blocker, b"x").unwrap();
    let out = blocker.join("x.wav");
    fails_with(
        &render_a(m, out.to_str().unwrap(), &["--seconds", "0.1"]),
        &["cannot write", "is not a folder"],
        &out,
    );
    let codes = blocker.join("c.safetensors");
    fails_with(
        &render_a(
            m,
            dir.path().join("ok.wav").to_str().unwrap(),
            &["--seconds", "0.1", "--save-codes", codes.to_str().unwrap()],
        ),
        &["cannot write"],
        &dir.path().join("ok.wav"),
    );
}

#[test]
fn missing_output_folders_are_created_and_one_prompt_into_a_folder_is_named_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let m = fixture("tiny-a");
    let m = m.to_str().unwrap();
    let home = tempfile::tempdir().unwrap();
    let out = dir.path().join("new/deeper/x.wav");
    let (ok, stderr) = baton(
        &render_a(m, out.to_str().unwrap(), &["--seconds", "0.1"]),
        home.path(),
    );
    assert!(ok, "{stderr}");
    assert!(out.is_file());
    let folder = format!("{}/", dir.path().join("takes").display());
    let (ok, stderr) = baton(&render_a(m, &folder, &["--seconds", "0.1"]), home.path());
    assert!(ok, "{stderr}");
    let names: Vec<_> = std::fs::read_dir(dir.path().join("takes"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 1);
    assert_eq!(names, ["a.wav"]);
}

/// Every argument is checked before the model is loaded (a missing model is not the error
/// reported) and no `--out DIR/` folder is created by a render that fails.
#[test]
fn arguments_checked_before_the_model_and_no_folder_created() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("takes");
    let out = format!("{}/", folder.display());
    let missing_model = dir.path().join("no-model");
    let m = missing_model.to_str().unwrap();
    let cases: [(&[&str], &str); 4] = [
        (&["--gate", "1.5"], "--gate must be a probability"),
        (&["--layer-weights", "bogus"], "--layer-weights"),
        (&["--steer", "no/such/bundle.safetensors"], "no bundle file"),
        (&["--cfg=-1"], "--cfg must be"),
    ];
    for (extra, needle) in cases {
        fails_with(&render_a(m, &out, extra), &[needle], &folder);
    }
    // All arguments fine: now the missing model is the error, and still no folder.
    fails_with(&render_a(m, &out, &[]), &["no-model"], &folder);
    // The codes folder is not created either.
    let codes = dir.path().join("codes");
    let codes_arg = format!("{}/", codes.display());
    fails_with(
        &render_a(m, &out, &["--save-codes", &codes_arg]),
        &["no-model"],
        &codes,
    );
}

#[test]
fn an_unreachable_hub_says_how_to_go_on_without_it() {
    let home = tempfile::tempdir().unwrap();
    let out = home.path().join("x.wav");
    // Nothing listens on port 9 of this machine: the connection is refused at once.
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(["render", "--prompt", "a", "--out", out.to_str().unwrap()])
        .env_remove("HF_HUB_OFFLINE")
        .env("HF_HOME", home.path())
        .env("HF_ENDPOINT", "http://127.0.0.1:9")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success());
    let flat: String = stderr.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(flat.contains("--model DIR"), "{stderr}");
    assert!(flat.contains("HF_HUB_OFFLINE=1"), "{stderr}");
    assert!(!out.exists());
}
