//! `baton learn` on the tiny checkpoint: from nothing to a bundle in the direction library in one
//! command, resumable, and named by the errors that need it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn tiny_a() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-a")
}

fn baton(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn learn_lists_what_it_can_learn_and_refuses_what_it_cannot() {
    let dir = tempfile::tempdir().unwrap();
    let out = baton(dir.path(), &["learn", "--list"]);
    assert!(out.status.success());
    let listed = text(&out);
    assert!(
        listed.contains("notes") && listed.contains("C#"),
        "{listed}"
    );
    assert!(
        listed.contains("tempos") && listed.contains("bpm"),
        "{listed}"
    );
    for (args, want) in [
        (vec!["learn", "notes:H"], "its targets are C, C#"),
        (vec!["learn", "colours"], "unknown concept"),
        (vec!["learn"], "baton learn --list"),
        (vec!["learn", "notes:C#", "--clips", "24"], "at least 48"),
    ] {
        let out = baton(dir.path(), &args);
        assert!(!out.status.success(), "{args:?}");
        assert!(text(&out).contains(want), "{args:?}: {}", text(&out));
    }
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing written"
    );
}

#[test]
fn learn_makes_a_library_bundle_from_nothing_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_a();
    let args = [
        "learn",
        "notes:C#",
        "--clips",
        "48",
        "--search",
        "2",
        "--directions",
        "lib",
        "--model",
        model.to_str().unwrap(),
    ];
    // A recipe that needs the bundle says how to make it.
    std::fs::write(
        dir.path().join("r.rhai"),
        "let d = direction(\"notes:C#\");\n",
    )
    .unwrap();
    let before = baton(dir.path(), &["render", "r.rhai", "--directions", "lib"]);
    assert!(!before.status.success());
    assert!(
        text(&before).contains("`baton learn notes:C#` makes it"),
        "{}",
        text(&before)
    );
    let steer = baton(
        dir.path(),
        &[
            "render",
            "--prompt",
            "a",
            "--steer",
            "notes:C#",
            "--directions",
            "lib",
        ],
    );
    assert!(
        text(&steer).contains("baton learn notes:C# --directions lib"),
        "{}",
        text(&steer)
    );

    let out = baton(dir.path(), &args);
    assert!(out.status.success(), "{}", text(&out));
    let said = text(&out);
    assert!(
        said.contains("stage 1/3") && said.contains("stage 3/3"),
        "{said}"
    );
    assert!(dir.path().join("lib/notes/C#.safetensors").is_file());
    let after = baton(dir.path(), &["render", "r.rhai", "--directions", "lib"]);
    assert!(after.status.success(), "{}", text(&after));
    // Again: nothing is rendered or extracted again, and the probe is trained anew.
    let again = baton(dir.path(), &args);
    assert!(again.status.success());
    let said = text(&again);
    assert!(said.contains("0 rendered, 48 already present"), "{said}");
    assert!(
        said.contains("features.safetensors is up to date"),
        "{said}"
    );
}

#[test]
fn learn_sizes_its_work_to_the_model() {
    // A config as wide as musicgen-medium's (the weights do not matter: the sizes are said
    // before anything loads them).
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("wide");
    std::fs::create_dir(&model).unwrap();
    for entry in std::fs::read_dir(tiny_a()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), model.join(entry.file_name())).unwrap();
    }
    let config = std::fs::read_to_string(model.join("config.json")).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&config).unwrap();
    json["decoder"]["hidden_size"] = 1536.into();
    std::fs::write(model.join("config.json"), json.to_string()).unwrap();
    let out = baton(
        dir.path(),
        &[
            "learn",
            "notes:C#",
            "--model",
            model.to_str().unwrap(),
            "--directions",
            "lib",
        ],
    );
    let said = text(&out);
    assert!(
        said.contains("120 clips of 4 s") && said.contains("x 8 draws"),
        "{said}"
    );
    let out = baton(
        dir.path(),
        &[
            "learn",
            "notes:C#",
            "--model",
            tiny_a().to_str().unwrap(),
            "--clips",
            "9999",
            "--search",
            "0",
        ],
    );
    assert!(
        text(&out).contains("--search must be at least 1"),
        "{}",
        text(&out)
    );
}
