//! `baton render --prompt ... --steer BUNDLE:STRENGTH` reproduces the reference's steered codes,
//! and recipe mode reports script errors as miette reports with the recipe's line and column.

use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::Device;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn baton(args: &[&str], cwd: &Path) -> std::process::Output {
    // BATON_BIN: a specific binary (when several checkouts share one target folder).
    let bin = std::env::var("BATON_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_baton").into());
    Command::new(bin)
        .args(args)
        .current_dir(cwd)
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

#[test]
fn steer_flags_match_the_reference() {
    let r = candle_core::safetensors::load(
        fixtures().join("steer-reference.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    let bytes = std::fs::read(fixtures().join("steer-reference.safetensors")).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta.metadata().clone().unwrap();
    let prompts: Vec<String> = serde_json::from_str(&meta["prompts"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let wav_dir = format!("{}/wav/", dir.path().display());
    let codes_dir = format!("{}/codes/", dir.path().display());
    let steer = format!(
        "{}:{}",
        fixtures().join("steer-direction.safetensors").display(),
        meta["eta0"]
    );
    let out = baton(
        &[
            "render",
            "--prompt",
            &prompts[0],
            "--prompt",
            &prompts[1],
            "--greedy",
            "--cfg",
            "3",
            "--max-new-tokens",
            &meta["max_new_tokens"],
            "--model",
            fixtures().join("tiny-a").to_str().unwrap(),
            "--steer",
            &steer,
            "--layer-weights",
            "exp",
            "--out",
            &wav_dir,
            "--save-codes",
            &codes_dir,
        ],
        dir.path(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want: Vec<Vec<Vec<i64>>> = r["const.codes"].to_vec3().unwrap();
    for (i, want) in want.iter().enumerate() {
        let path = dir
            .path()
            .join(format!("codes/prompt-{}.safetensors", i + 1));
        let got = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
        let got: Vec<Vec<i64>> = got["codes"].to_vec2().unwrap();
        assert_eq!(&got, want, "prompt {i}");
    }
    // A bad flag value is one clear line, before any model work.
    let out = baton(
        &[
            "render",
            "--prompt",
            "x",
            "--steer",
            &steer,
            "--gate",
            "1.5",
            "--max-new-tokens",
            "8",
            "--model",
            fixtures().join("tiny-a").to_str().unwrap(),
        ],
        dir.path(),
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--gate must be a probability"));
}

#[test]
fn residual_units_multiply_each_block_by_its_norm() {
    let dir = tempfile::tempdir().unwrap();
    let old = fixtures().join("steer-direction.safetensors");
    let mut bundle = baton::probe::DirectionBundle::read(&old).unwrap();
    // A power of two, so 0.5 residual units and strength 2 round alike.
    bundle.residual_norms = bundle.directions.keys().map(|&l| (l, 4.0)).collect();
    let normed = dir.path().join("normed.safetensors");
    bundle.write(&normed).unwrap();
    let render = |name: &str, steer: &str, unit: &str| {
        let codes = dir.path().join(format!("{name}.safetensors"));
        let out = baton(
            &[
                "render",
                "--prompt",
                "a tune",
                "--greedy",
                "--max-new-tokens",
                "12",
                "--model",
                fixtures().join("tiny-a").to_str().unwrap(),
                "--steer",
                steer,
                "--strength-unit",
                unit,
                "--out",
                dir.path().join(format!("{name}.wav")).to_str().unwrap(),
                "--save-codes",
                codes.to_str().unwrap(),
            ],
            dir.path(),
        );
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!stderr.contains("panicked"), "{stderr}");
        (out.status.success(), stderr, std::fs::read(codes).ok())
    };
    let normed = normed.to_str().unwrap();
    let (ok, err, residual) = render("residual", &format!("{normed}:0.5"), "residual");
    assert!(ok, "{err}");
    let (_, _, absolute) = render("absolute", &format!("{normed}:2"), "absolute");
    assert!(
        residual.is_some() && residual == absolute,
        "0.5 residual units of norm 4 are strength 2"
    );
    let (_, _, weaker) = render("weaker", &format!("{normed}:0.5"), "absolute");
    assert!(residual != weaker, "the unit made no difference");

    // A bundle trained before norms were recorded says what to do.
    let (ok, err, _) = render("old", &format!("{}:0.5", old.display()), "residual");
    assert!(!ok);
    let err = err.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(err.contains("has no residual norms"), "{err}");
    assert!(err.contains("baton train"), "{err}");
    assert!(!err.contains("loading"), "the model loaded first: {err}");
    let (ok, err, _) = render("bad", &format!("{normed}:0.5"), "relative");
    assert!(!ok && err.contains("absolute or residual"), "{err}");
}

#[test]
fn recipe_errors_point_at_the_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.rhai"),
        "let a = rise(0, 10);\nlet p = piece(\"x\", 5.0).steer(direction(\"notes:Cb\"), a);\n",
    )
    .unwrap();
    let out = baton(&["render", "bad.rhai"], dir.path());
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown direction `notes:Cb`"), "{err}");
    assert!(err.contains("bad.rhai:2:31"), "{err}");
}

#[test]
fn directions_and_allow_write_flags_reach_the_recipe() {
    let dir = tempfile::tempdir().unwrap();
    let library = dir.path().join("lib");
    std::fs::create_dir_all(library.join("notes")).unwrap();
    std::fs::copy(
        fixtures().join("steer-direction.safetensors"),
        library.join("notes").join("X.safetensors"),
    )
    .unwrap();
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let target = elsewhere.join("take.wav");
    std::fs::write(
        dir.path().join("r.rhai"),
        format!(
            "let p = piece(\"loud drums\", 0.1).steer(direction(\"notes:X\"), 0.5);\nrender(p, {:?});\n",
            target.display().to_string()
        ),
    )
    .unwrap();
    let model = fixtures().join("tiny-a");
    let base = [
        "render",
        "r.rhai",
        "--greedy",
        "--model",
        model.to_str().unwrap(),
    ];
    // Without --directions the library name is unknown; without --allow-write the absolute
    // path is refused; with both, the recipe renders there.
    let out = baton(&base, dir.path());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("notes:X"), "{err}");
    let lib = library.to_str().unwrap();
    let out = baton(&[&base[..], &["--directions", lib]].concat(), dir.path());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && !target.exists(), "{err}");
    let allow = elsewhere.to_str().unwrap();
    let out = baton(
        &[&base[..], &["--directions", lib, "--allow-write", allow]].concat(),
        dir.path(),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(target.is_file());
}
