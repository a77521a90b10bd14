//! Hostile and unusual input: nothing escapes the output folder, nothing aborts the process,
//! nothing but a regular file is ever replaced, and input that would steer nothing (or steer
//! with NaN) is refused instead of rendering an unsteered take without a word.

mod steer_common;

use std::path::{Path, PathBuf};
use std::process::Command;

use baton::script::{DryRun, DryRunLog, RecipeOptions, RecipeOutcome, ScriptError};

struct Run {
    outcome: Result<RecipeOutcome, Box<ScriptError>>,
    log: DryRunLog,
    _lib: tempfile::TempDir,
}

/// Runs `source` without a model, over a library of 4-block directions, writing under `out`.
fn run_in(source: &str, out: &Path, tweak: impl FnOnce(&mut RecipeOptions)) -> Run {
    let lib = steer_common::library(8, 4);
    let (outcome, log) = steer_common::dry_run(source, lib.path(), out, tweak);
    Run {
        outcome,
        log,
        _lib: lib,
    }
}

/// The error of a recipe that must fail, as one line of text (message and help).
fn error_with(source: &str, tweak: impl FnOnce(&mut RecipeOptions)) -> String {
    let out = tempfile::tempdir().unwrap();
    match run_in(source, out.path(), tweak).outcome {
        Ok(_) => panic!("recipe succeeded: {source}"),
        Err(e) => steer_common::one_line(e),
    }
}

fn error(source: &str) -> String {
    error_with(source, |_| {})
}

fn printed(source: &str) -> Vec<String> {
    let out = tempfile::tempdir().unwrap();
    match run_in(source, out.path(), |_| {}).outcome {
        Ok(o) => o.printed,
        Err(e) => panic!("{:?}", miette::Report::new(*e)),
    }
}

#[cfg(unix)]
#[test]
fn a_symbolic_link_in_the_output_folder_cannot_lead_a_write_outside() {
    let root = tempfile::tempdir().unwrap();
    let (out, elsewhere) = (root.path().join("out"), root.path().join("elsewhere"));
    std::fs::create_dir_all(&out).unwrap();
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, out.join("link")).unwrap();
    for source in [
        r#"render(piece("x", 0.5), "link/x.wav");"#,
        r#"plot(linear(0.0, 1.0, 0.0, 2.0), 2.0, "link/p.png");"#,
    ] {
        let run = run_in(source, &out, |_| {});
        let err = format!("{:?}", run.outcome.expect_err(source));
        assert!(err.contains("symbolic link"), "{source}: {err}");
        assert!(run.log.requests.is_empty(), "{source} rendered");
    }
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
}

#[test]
fn a_deep_schedule_is_a_recipe_error_not_a_stack_overflow() {
    let err =
        error("let s = constant(0.0); for i in 0..50000 { s = s + 0.0; } print(s.value(0.1));");
    assert!(err.contains("levels deep"), "{err}");
    // Every combinator counts, not only arithmetic.
    let err = error("let s = constant(1.0); for i in 0..2000 { s = shift(s, 0.0); }");
    assert!(err.contains("levels deep"), "{err}");
    // A deep but allowed schedule still evaluates.
    assert_eq!(
        printed("let s = constant(0.0); for i in 0..900 { s = s + 0.5; } print(s.value(0.1));"),
        vec!["450.0"]
    );
}

#[test]
fn a_run_has_one_budget_of_operations_renders_and_bytes() {
    // Each call of the curve is well within the per-call limit; together they are not.
    let costly = r#"
        let c = curve(|t| { let x = 0; for i in 0..2000 { x += i; } 0.0 });
        render(piece("x", 2.0).steer(direction("notes:C"), c), "a.wav");
    "#;
    let err = error_with(costly, |o| o.limits.max_run_operations = 300_000);
    assert!(err.contains("--max-operations"), "{err}");
    // A loop of renders stops at the render budget, having rendered exactly that many.
    let out = tempfile::tempdir().unwrap();
    let run = run_in(
        r#"for i in 0..100000 { render(piece("x", 0.5), `f${i}.wav`); }"#,
        out.path(),
        |o| o.limits.max_renders = 7,
    );
    let err = format!("{:?}", run.outcome.err().unwrap());
    assert!(err.contains("--max-renders"), "{err}");
    assert_eq!(run.log.requests.len(), 7);
    // And at the byte budget: 10 s of 32 kHz float audio is 1.28 MB.
    let err = error_with(
        r#"for i in 0..10 { render(piece("x", 10.0), `f${i}.wav`); }"#,
        |o| o.limits.max_output_bytes = 3 << 20,
    );
    assert!(err.contains("--max-output-mb"), "{err}");
    // The defaults leave ordinary recipes alone.
    assert_eq!(
        baton::script::Limits::default().max_renders,
        baton::script::sandbox::DEFAULT_RENDERS
    );
}

#[test]
fn non_finite_directions_are_refused() {
    for source in [
        r#"let d = direction("notes:C").scale(0.0 / 0.0);"#,
        r#"let d = direction("notes:C") * 1e30 * 1e30;"#,
        r#"let d = direction("notes:C") + direction("notes:D") * 1e38 * 10.0;"#,
    ] {
        let err = error(source);
        assert!(err.contains("not finite"), "{source}: {err}");
    }
}

#[test]
fn steering_that_steers_nothing_is_refused() {
    let cases = [
        (
            r#"direction("notes:C").blocks(5..9)"#,
            "has none of the blocks",
        ),
        (
            r#"direction("notes:C").blocks([7])"#,
            "has none of the blocks",
        ),
        (r#"direction("notes:C").top(0)"#, "keeps no block"),
        (
            r#"(direction("notes:C") - direction("notes:C")).normalize()"#,
            "every vector",
        ),
        (
            r#"piece("x", 1.0).steer(direction("notes:C") - direction("notes:C"), 0.5)"#,
            "steers nothing",
        ),
        (r#"piece("x", 1.0).layers("top:0")"#, "keep no block"),
    ];
    for (source, needle) in cases {
        let err = error(source);
        assert!(err.contains(needle), "{source}: {err}");
    }
    // A billion-block range is bounded, not built.
    let err = error(r#"direction("notes:C").blocks(100..1000000000000)"#);
    assert!(err.contains("has none of the blocks"), "{err}");
}

#[test]
fn nonsense_schedule_arguments_are_refused() {
    for (source, needle) in [
        (
            "adsr(-1.0, 0.1, 0.5, 0.2, 2.0)",
            "attack must be a time of 0 or more",
        ),
        (
            "adsr(0.1, 0.1, 0.5, -2.0, 2.0)",
            "release must be a time of 0 or more",
        ),
        ("linear(0.0, 1.0, 5.0, 2.0)", "before start time"),
        ("rise(3.0, 1.0)", "before start time"),
    ] {
        let err = error(source);
        assert!(err.contains(needle), "{source}: {err}");
    }
    // Equal times are a step, as documented.
    assert_eq!(
        printed("print(linear(0.0, 1.0, 2.0, 2.0).value(2.0));"),
        vec!["1.0"]
    );
}

#[test]
fn extreme_values_render_with_a_warning() {
    let said = printed(
        r#"render(piece("x", 0.5).steer(direction("notes:C"), 1e9), "a.wav");
           render(piece("x", 0.5).cfg(1e9), "b.wav");
           render(piece("x", 0.5).steer(direction("notes:C"), 0.5), "c.wav");"#,
    );
    let warnings: Vec<&String> = said.iter().filter(|l| l.starts_with("warning:")).collect();
    assert_eq!(warnings.len(), 2, "{said:?}");
    assert!(warnings[0].contains("strength 1000000000"), "{said:?}");
    assert!(warnings[1].contains("guidance scale"), "{said:?}");
}

#[test]
fn two_writes_to_one_file_in_a_run_are_refused() {
    let out = tempfile::tempdir().unwrap();
    let run = run_in(
        r#"render(piece("a", 0.5), "x.wav"); render(piece("b", 0.5), "./x.wav");"#,
        out.path(),
        |_| {},
    );
    let err = format!("{:?}", run.outcome.err().unwrap());
    assert!(err.contains("already wrote"), "{err}");
    assert_eq!(run.log.requests.len(), 1);
    let err = error(r#"plot(rise(0, 1), 1.0, "p.png"); plot(rise(0, 2), 2.0, "p.png");"#);
    assert!(err.contains("already wrote"), "{err}");
    // Another run (a REPL input, a watch-mode save) may write the file again.
    let mut session = baton::script::Session::new(
        Path::new("."),
        RecipeOptions {
            out_dir: out.path().to_path_buf(),
            echo: false,
            ..RecipeOptions::default()
        },
        Box::new(DryRun::default()),
    );
    for input in ["in:1", "in:2"] {
        let written = session.run(input, r#"render(piece("a", 0.5), "again.wav");"#);
        assert!(written.is_ok(), "{input}");
    }
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// `baton render --prompt a --greedy --max-new-tokens 8 --model tiny-a --out OUT`: (ok, stderr).
fn render_to(out: &Path) -> (bool, String) {
    let model = fixture("tiny-a");
    let output = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args([
            "render",
            "--prompt",
            "a",
            "--greedy",
            "--max-new-tokens",
            "8",
        ])
        .arg("--model")
        .arg(&model)
        .arg("--out")
        .arg(out)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(!stderr.contains("panicked"), "{stderr}");
    (output.status.success(), stderr)
}

#[cfg(unix)]
#[test]
fn special_files_are_never_replaced() {
    use std::io::Read;
    use std::os::unix::fs::FileTypeExt;
    let dir = tempfile::tempdir().unwrap();
    // A FIFO is streamed into: a player reading it gets the whole WAV.
    let fifo = dir.path().join("pipe.wav");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            std::fs::File::open(&fifo)
                .unwrap()
                .read_to_end(&mut bytes)
                .unwrap();
            bytes
        })
    };
    let (ok, stderr) = render_to(&fifo);
    assert!(ok, "{stderr}");
    let bytes = reader.join().unwrap();
    assert!(
        bytes.starts_with(b"RIFF") && bytes.len() > 44,
        "{}",
        bytes.len()
    );
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
    // /dev/null is streamed into and stays the device.
    let (ok, stderr) = render_to(Path::new("/dev/null"));
    assert!(ok, "{stderr}");
    assert!(std::fs::metadata("/dev/null")
        .unwrap()
        .file_type()
        .is_char_device());
    // /dev/full reports its own error instead of "wrote /dev/full".
    if Path::new("/dev/full").exists() {
        let (ok, stderr) = render_to(Path::new("/dev/full"));
        assert!(!ok, "{stderr}");
        assert!(!stderr.contains("wrote /dev/full"), "{stderr}");
        assert!(std::fs::metadata("/dev/full")
            .unwrap()
            .file_type()
            .is_char_device());
    }
    // A socket is refused before any work, and stays a socket.
    let sock = dir.path().join("s.wav");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let (ok, stderr) = render_to(&sock);
    assert!(!ok && stderr.contains("not a regular file"), "{stderr}");
    assert!(
        !stderr.contains("loading"),
        "the model loaded first: {stderr}"
    );
    assert!(std::fs::metadata(&sock).unwrap().file_type().is_socket());
    // Nothing else was left in the folder (no temporary files).
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
}

#[test]
fn an_overlong_prompt_is_cut_to_the_encoder_length_with_a_warning() {
    let tok =
        baton::model::text::TextTokenizer::from_file(fixture("tiny-a/tokenizer.json")).unwrap();
    let long = vec!["piano"; 4096].join(" ");
    let ids = tok.encode(&long).unwrap();
    assert_eq!(ids.len(), baton::model::text::MAX_PROMPT_TOKENS);
    assert_eq!(ids.last(), Some(&tok.eos_id()));
    assert!(tok.length_warning(&long).unwrap().is_some());
    assert!(tok.length_warning("piano").unwrap().is_none());
    assert_eq!(tok.encode("piano").unwrap().last(), Some(&tok.eos_id()));
}

#[test]
fn layer_weights_that_keep_no_block_are_refused_on_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.wav");
    let output = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args([
            "render",
            "--prompt",
            "a",
            "--max-new-tokens",
            "8",
            "--model",
        ])
        .arg(fixture("tiny-a"))
        .arg("--steer")
        .arg(format!(
            "{}:0.5",
            fixture("steer-direction.safetensors").display()
        ))
        .args(["--layer-weights", "top:0", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("keep no block"), "{stderr}");
    assert!(!out.exists());
}

#[cfg(unix)]
#[test]
fn ctrl_c_during_a_render_leaves_no_file_and_exits_130() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("long.wav");
    // A minute of music in windows: seconds of work on tiny-a, long enough to interrupt.
    let child = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(["render", "--prompt", "a", "--seconds", "60", "--model"])
        .arg(fixture("tiny-a"))
        .arg("--out")
        .arg(&out)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(700));
    let killed = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    if output.status.success() {
        // Finished before the signal arrived (a very fast machine): nothing to check.
        return;
    }
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}
