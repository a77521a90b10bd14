//! `baton watch` and `baton repl` end to end on the tiny checkpoint: watch renders what `baton
//! render` renders, re-renders only the edited piece, and keeps the last good files when an edit
//! breaks the recipe; the REPL keeps its session across lines and reads piped input.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn tiny() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tiny-a")
        .display()
        .to_string()
}

fn baton() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_baton"));
    c.env("NO_COLOR", "1").env("BATON_HISTORY", "none");
    c
}

/// Kills the watcher even when an assertion fails.
struct Watcher(Child);

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `baton watch piece.rhai --out out EXTRA...` on the tiny checkpoint in `dir`; returns
/// the watcher and its log.
fn watch(dir: &Path, extra: &[&str]) -> (Watcher, PathBuf) {
    let log = dir.join("watch.log");
    let child = baton()
        .args(["watch", "piece.rhai", "--out", "out", "--model", &tiny()])
        .args(extra)
        .current_dir(dir)
        .stderr(std::fs::File::create(&log).unwrap())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    (Watcher(child), log)
}

/// Waits until `ok` holds.
fn wait_until(what: &str, ok: impl Fn() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "not {what} after 60 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until `log` holds `text` (the watcher reports each run on stderr).
fn wait_for(log: &Path, text: &str) -> String {
    let start = Instant::now();
    loop {
        let seen = std::fs::read_to_string(log).unwrap_or_default();
        if seen.contains(text) {
            return seen;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no {text:?} after 120 s; the watcher said:\n{seen}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

const RECIPE: &str = r#"
render(piece("lofi piano", 0.4).seed(1), "a.wav");
render(piece("jazz trio", 0.4).seed(2), "b.wav");
"#;

#[test]
fn watch_renders_edits_and_keeps_the_last_good_files() {
    let dir = tempfile::tempdir().unwrap();
    let recipe = dir.path().join("piece.rhai");
    std::fs::write(&recipe, RECIPE).unwrap();
    let out = dir.path().join("out");
    // A "player" that leaves a mark beside each file it is given.
    let (_watcher, log) = watch(dir.path(), &["--player", "touch {}.played"]);
    wait_for(&log, "run 1: ok");
    let played = |name: &str| out.join(format!("{name}.played"));
    wait_until("both takes played", || {
        played("a.wav").exists() && played("b.wav").exists()
    });
    std::fs::remove_file(played("a.wav")).unwrap();
    std::fs::remove_file(played("b.wav")).unwrap();
    let read = |name: &str| std::fs::read(out.join(name)).unwrap();
    let (a1, b1) = (read("a.wav"), read("b.wav"));

    // The same recipe through `baton render` gives the same audio.
    let rendered = baton()
        .args(["render", "piece.rhai", "--out", "once", "--model", &tiny()])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(rendered.status.success(), "{rendered:?}");
    assert_eq!(a1, std::fs::read(dir.path().join("once/a.wav")).unwrap());

    // Editing piece b renders b alone.
    std::fs::write(&recipe, RECIPE.replace("seed(2)", "seed(3)")).unwrap();
    let seen = wait_for(&log, "run 2: ok");
    assert!(seen.contains("1 rendered, 1 unchanged"), "{seen}");
    assert!(seen.contains("changed: piece.rhai\n"), "{seen}");
    wait_until("the new take played", || played("b.wav").exists());
    assert!(
        !played("a.wav").exists(),
        "an unchanged take was played again"
    );
    assert_eq!(read("a.wav"), a1);
    let b2 = read("b.wav");
    assert_ne!(b2, b1);

    // An edit that renders a new "a" and then fails replaces nothing.
    std::fs::write(
        &recipe,
        "render(piece(\"lofi piano\", 0.4).seed(7), \"a.wav\");\nlet x = nosuch(1);\n",
    )
    .unwrap();
    let seen = wait_for(&log, "run 3: failed");
    assert!(seen.contains("piece.rhai:2:"), "{seen}");
    assert_eq!(read("a.wav"), a1);
    assert_eq!(read("b.wav"), b2);
    let files: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|f| !f.ends_with(".played"))
        .collect();
    assert_eq!(files.len(), 2, "staged files left behind: {files:?}");

    // Fixed, the next save goes through.
    std::fs::write(
        &recipe,
        "render(piece(\"lofi piano\", 0.4).seed(7), \"a.wav\");\n",
    )
    .unwrap();
    wait_for(&log, "run 4: ok");
    assert_ne!(read("a.wav"), a1);
}

/// A steered piece whose strength jumps at 0.3 s, by `jump`.
fn steered(jump: &str) -> String {
    format!(
        "render(piece(\"lofi piano\", 0.4).seed(4)\n\
         .steer(direction(\"dir.safetensors\"), 4.0 * (rise(0.0, 0.4) + {jump} * step(0.3))), \"a.wav\");\n"
    )
}

#[test]
fn watch_generates_only_from_a_late_change_on() {
    let dir = tempfile::tempdir().unwrap();
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    std::fs::copy(
        fixtures.join("steer-direction.safetensors"),
        dir.path().join("dir.safetensors"),
    )
    .unwrap();
    let recipe = dir.path().join("piece.rhai");
    std::fs::write(&recipe, steered("0.5")).unwrap();
    let (_watcher, log) = watch(dir.path(), &[]);
    wait_for(&log, "run 1: ok");
    let first = std::fs::read(dir.path().join("out/a.wav")).unwrap();
    std::fs::write(&recipe, steered("2.0")).unwrap();
    let seen = wait_for(&log, "run 2: ok");
    // 0.3 s at the tiny model's 50 Hz: steps 0..15 are shared.
    assert!(seen.contains("reusing 15 of 23 steps"), "{seen}");
    let reused = std::fs::read(dir.path().join("out/a.wav")).unwrap();
    assert_ne!(reused, first);
    // What a fresh render of the edited recipe gives.
    let fresh = baton()
        .args(["render", "piece.rhai", "--out", "fresh", "--model", &tiny()])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(fresh.status.success(), "{fresh:?}");
    assert_eq!(
        reused,
        std::fs::read(dir.path().join("fresh/a.wav")).unwrap()
    );
}

#[test]
fn watch_refuses_a_missing_recipe() {
    let dir = tempfile::tempdir().unwrap();
    let out = baton()
        .args(["watch", "nope.rhai"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no recipe file nope.rhai"));
}

#[test]
fn repl_keeps_its_session_across_lines() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("start.rhai"),
        "let swell = linear(0.0, 1.0, 0.0, 4.0);\n",
    )
    .unwrap();
    let mut child = baton()
        .args(["repl", "start.rhai", "--model", &tiny(), "--greedy"])
        .current_dir(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let input = "swell.value(1.0)\n\
                 let p = piece(\"lofi\",\n  0.4).seed(3);\n\
                 render(p, \"take.wav\");\n\
                 :vars\n\
                 nosuch(1)\n\
                 :quit\n\
                 print(\"not reached\");\n";
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Piped, an input that failed makes the exit status non-zero (`:quit` included).
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stdout.contains("\n0.25\n"), "{stdout}");
    assert!(stdout.contains("wrote ./take.wav"), "{stdout}");
    assert!(
        stdout.contains("p      Piece") && stdout.contains("swell  Schedule"),
        "{stdout}"
    );
    assert!(!stdout.contains("not reached"), "{stdout}");
    assert!(stderr.contains("unknown function `nosuch`"), "{stderr}");
    assert!(stderr.contains("input 4:1:1"), "{stderr}");
    assert!(dir.path().join("take.wav").is_file());
}

#[cfg(unix)]
#[test]
fn watch_live_steers_the_playing_piece_on_each_save_and_plays_on_through_a_broken_one() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let heard = dir.path().join("heard.wav");
    let player = dir.path().join("player.sh");
    std::fs::write(&player, format!("#!/bin/sh\ncat > '{}'\n", heard.display())).unwrap();
    std::fs::set_permissions(&player, std::fs::Permissions::from_mode(0o755)).unwrap();
    let direction = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/steer-direction.safetensors");
    let recipe = dir.path().join("piece.rhai");
    let piece = "piece(\"a\", 60).seed(1)";
    std::fs::write(&recipe, format!("render({piece}, \"a.wav\");\n")).unwrap();
    let log = dir.path().join("watch.log");
    let file = std::fs::File::create(&log).unwrap();
    let child = baton()
        .args([
            "watch",
            "piece.rhai",
            "--out",
            "out",
            "--model",
            &tiny(),
            "--live",
        ])
        .arg("--player")
        .arg(&player)
        .current_dir(dir.path())
        .stderr(file.try_clone().unwrap())
        .stdout(file)
        .spawn()
        .unwrap();
    let _watcher = Watcher(child);
    wait_for(&log, "playing \"a\" for 60 s");
    let size = || std::fs::metadata(&heard).map_or(0, |m| m.len());
    wait_until("playing", || size() > 32000 * 4);
    // A save that changes only the steering steers the piece playing: no restart.
    std::fs::write(
        &recipe,
        format!(
            "render({piece}.steer(direction(\"{}\"), 8.0), \"a.wav\");\n",
            direction.display()
        ),
    )
    .unwrap();
    let seen = wait_for(&log, "steering changed from step");
    assert_eq!(seen.matches("playing \"a\" for 60 s").count(), 1, "{seen}");
    // A broken save keeps the music going on the last good steering.
    std::fs::write(
        &recipe,
        format!("render({piece}.steer(nowhere, 8.0), \"a.wav\");\n"),
    )
    .unwrap();
    wait_for(&log, "failed");
    let before = size();
    wait_until("still playing", || size() > before + 32000 * 4 / 2);
    let seen = std::fs::read_to_string(&log).unwrap();
    assert_eq!(seen.matches("playing \"a\" for 60 s").count(), 1, "{seen}");
    assert!(
        !dir.path().join("out/a.wav").exists(),
        "live mode wrote the file"
    );
}

/// Runs `baton repl` on piped `lines`, sending it Ctrl-C (SIGINT) once the first
/// `interrupt_after` lines are in and it has printed `busy` (the input to stop prints it as it
/// starts: a fixed pause raced a slow start on a loaded machine, where the signal came before
/// the input ran and ended the session); returns (exit code, stdout, stderr).
#[cfg(unix)]
fn repl_interrupted(lines: &[&str], interrupt_after: usize, busy: &str) -> (i32, String, String) {
    use std::io::Read;
    use std::sync::{Arc, Mutex};
    let dir = tempfile::tempdir().unwrap();
    let mut child = baton()
        .args(["repl", "--model", &tiny(), "--out"])
        .arg(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // Both streams are read as they come, so the child never blocks on a full pipe.
    let collect = |mut from: Box<dyn Read + Send>| {
        let text = Arc::new(Mutex::new(String::new()));
        let sink = text.clone();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = from.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        (text, reader)
    };
    let (stdout, out_reader) = collect(Box::new(child.stdout.take().unwrap()));
    let (stderr, err_reader) = collect(Box::new(child.stderr.take().unwrap()));
    for line in &lines[..interrupt_after] {
        writeln!(stdin, "{line}").unwrap();
    }
    wait_until(&format!("busy ({busy:?} printed)"), || {
        stdout.lock().unwrap().contains(busy)
    });
    std::thread::sleep(Duration::from_millis(300));
    let killed = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    wait_until("the interrupt reported", || {
        stderr.lock().unwrap().contains("interrupted")
    });
    for line in &lines[interrupt_after..] {
        writeln!(stdin, "{line}").unwrap();
    }
    drop(stdin);
    let status = child.wait().unwrap();
    out_reader.join().unwrap();
    err_reader.join().unwrap();
    let (out, err) = (
        stdout.lock().unwrap().clone(),
        stderr.lock().unwrap().clone(),
    );
    (status.code().unwrap_or(-1), out, err)
}

#[cfg(unix)]
#[test]
fn ctrl_c_stops_the_running_input_and_the_session_goes_on() {
    // An endless loop, then a render far too long to finish: each is stopped by Ctrl-C and the
    // next line still sees the session's variables.
    let (code, stdout, stderr) = repl_interrupted(
        &[
            "print(\"looping\"); let x = 0; loop { x += 1; }",
            "print(`after the loop ${x > 0}`)",
        ],
        1,
        "looping",
    );
    assert!(stderr.contains("interrupted (Ctrl-C)"), "{stderr}");
    assert!(stdout.contains("after the loop true"), "{stdout}\n{stderr}");
    // Piped input that had an error exits non-zero.
    assert_eq!(code, 1, "{stderr}");
    let (_, stdout, stderr) = repl_interrupted(
        &[
            "let p = piece(\"a\", 3000);",
            "print(\"rendering\"); render(p, \"long.wav\")",
            "print(`still here ${p}`)",
        ],
        2,
        "rendering",
    );
    assert!(stderr.contains("interrupted (Ctrl-C)"), "{stderr}");
    assert!(
        stdout.contains("still here piece \"a\""),
        "{stdout}\n{stderr}"
    );
}

/// Runs `baton repl ARGS` on piped `input`; returns its output.
fn piped_repl(args: &[&str], input: &str) -> std::process::Output {
    let mut child = baton()
        .arg("repl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{input}").unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn a_piped_repl_without_errors_exits_zero() {
    let out = piped_repl(&[], "let a = 1 + 1;\nprint(a)");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains('2'));
}

#[test]
fn a_printed_piece_shows_the_overrides_in_force() {
    let out = piped_repl(&["--seconds", "0.5", "--greedy"], "piece(\"a\", 8)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("rendered with --seconds 0.5 --greedy (command line)"),
        "{stdout}"
    );
}

#[test]
fn curves_can_be_read_and_plotted() {
    let out = piped_repl(
        &[],
        "let c = curve(|t| t * 2.0);\nc.value(1.5)\n(0.5 * c).value(3.0)\nplot(c, 4.0)",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("\n3.0\n"), "{stdout}");
    assert!(stdout.contains("[0.000 .. 8.000]  over 0..4"), "{stdout}");
}
