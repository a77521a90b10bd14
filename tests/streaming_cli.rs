//! Streaming from the command line on tiny-a, with a scripted player instead of a sound card:
//! `render --out -` writes the same samples a file render does and nothing else, `play` feeds
//! its player the piece while writing the same into `--out`, `--seconds inf` runs until Ctrl-C
//! and leaves a whole WAV, and a missing player is named.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn tiny_a() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-a")
}

fn baton(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(args)
        .arg("--model")
        .arg(tiny_a())
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap()
}

/// Runs `baton repl --history none ARGS` on piped `input`; returns (success, stdout, stderr).
fn repl(args: &[&std::ffi::OsStr], input: &str) -> (bool, String, String) {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(["repl", "--history", "none"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// The samples of a float WAV, however its header is laid out.
fn samples(bytes: &[u8]) -> Vec<f32> {
    let at = bytes.windows(4).position(|w| w == b"data").unwrap() + 8;
    bytes[at..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn a_stream_on_stdout_holds_what_a_file_render_holds() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("whole.wav");
    let common = ["render", "--prompt", "a", "--seconds", "3", "--seed", "4"];
    let whole = baton(&[&common[..], &["--out", path_str(&file)]].concat());
    assert!(
        whole.status.success(),
        "{}",
        String::from_utf8_lossy(&whole.stderr)
    );
    let streamed = baton(&[&common[..], &["--out", "-"]].concat());
    let stderr = String::from_utf8_lossy(&streamed.stderr);
    assert!(streamed.status.success(), "{stderr}");
    let out = &streamed.stdout;
    // Nothing but the WAV on stdout: a 44-byte header with open lengths, then the samples.
    assert_eq!(&out[..4], b"RIFF");
    assert_eq!(&out[4..8], &[0xff; 4]);
    assert_eq!(&out[36..40], b"data");
    assert_eq!((out.len() - 44) % 4, 0);
    let want = samples(&std::fs::read(&file).unwrap());
    assert_eq!(samples(out), want);
    assert_eq!(want.len(), 3 * 32000);
    assert!(stderr.contains("first audio after"), "{stderr}");
}

#[test]
fn pcm16_streams_are_16_bit() {
    let out = baton(&[
        "render",
        "--prompt",
        "a",
        "--seconds",
        "1",
        "--out",
        "-",
        "--pcm16",
    ]);
    assert!(out.status.success());
    let bytes = &out.stdout;
    assert_eq!(u16::from_le_bytes([bytes[20], bytes[21]]), 1, "PCM tag");
    assert_eq!(u16::from_le_bytes([bytes[34], bytes[35]]), 16);
    assert_eq!(bytes.len() - 44, 32000 * 2);
}

/// A player script that copies its stdin to `into`.
#[cfg(unix)]
fn scripted_player(dir: &Path, into: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let script = dir.join("player.sh");
    std::fs::write(&script, format!("#!/bin/sh\ncat > '{}'\n", into.display())).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

#[cfg(unix)]
#[test]
fn play_feeds_the_player_the_piece_and_keeps_it_in_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let heard = dir.path().join("heard.wav");
    let kept = dir.path().join("kept.wav");
    let whole = dir.path().join("whole.wav");
    let player = scripted_player(dir.path(), &heard);
    let out = baton(&[
        "play",
        "--prompt",
        "a",
        "--seconds",
        "2",
        "--seed",
        "9",
        "--player",
        path_str(&player),
        "--out",
        path_str(&kept),
        "--ahead",
        "0.5",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("playing ("), "{stderr}");
    let rendered = baton(
        &[
            "render",
            "--prompt",
            "a",
            "--seconds",
            "2",
            "--seed",
            "9",
            "--out",
        ]
        .iter()
        .copied()
        .chain([path_str(&whole)])
        .collect::<Vec<_>>(),
    );
    assert!(rendered.status.success());
    let want = samples(&std::fs::read(&whole).unwrap());
    assert_eq!(samples(&std::fs::read(&heard).unwrap()), want);
    // The kept file is an ordinary WAV with its lengths set.
    let (kept_samples, rate) = baton::audio::read_wav_mono(&kept).unwrap();
    assert_eq!(rate, 32000);
    assert_eq!(kept_samples, want);
}

#[test]
fn a_missing_player_is_named() {
    let out = baton(&[
        "play",
        "--prompt",
        "a",
        "--seconds",
        "1",
        "--player",
        "no-such-player-program -",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("\"no-such-player-program\" was not found"),
        "{stderr}"
    );
}

#[test]
fn endless_and_streamed_renders_refuse_what_they_cannot_do() {
    for (args, want) in [
        (vec!["--seconds", "inf"], "never ends by itself"),
        (vec!["--out", "-", "--prompt", "b"], "give one --prompt"),
        (
            vec!["--out", "-", "--save-codes", "c.safetensors"],
            "--save-codes needs the whole piece",
        ),
        (vec!["--seconds=-inf", "--out", "-"], "positive number"),
    ] {
        let out = baton(&[&["render", "--prompt", "a"][..], &args].concat());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?} wrote to stdout");
    }
}

#[cfg(unix)]
#[test]
fn ctrl_c_ends_an_endless_piece_with_a_whole_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("endless.wav");
    let child = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(["render", "--prompt", "a", "--seconds", "inf", "--model"])
        .arg(tiny_a())
        .arg("--out")
        .arg(&out)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until some audio is out (the temporary file grows), then interrupt.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let grown = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .any(|e| e.metadata().is_ok_and(|m| m.len() > 32000 * 4 * 5));
        if grown || std::time::Instant::now() > deadline {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let killed = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("stopped after"), "{stderr}");
    let (audio, rate) = baton::audio::read_wav_mono(&out).unwrap();
    assert_eq!(rate, 32000);
    // More than five seconds: past tiny-a's window (its positions hold a few seconds).
    assert!(audio.len() > 5 * 32000, "{} samples", audio.len());
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("endless.wav")]);
}

#[cfg(unix)]
#[test]
fn the_repl_plays_in_the_background_and_steers_the_piece_while_it_plays() {
    let dir = tempfile::tempdir().unwrap();
    let heard = dir.path().join("heard.wav");
    let player = scripted_player(dir.path(), &heard);
    let direction = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/steer-direction.safetensors");
    let input = format!(
        "let p = piece(\"a\", 4).seed(3);\n\
         play(p, #{{keep: \"kept.wav\"}});\n\
         play(p.steer(direction(\"{}\"), 8.0));\n\
         print(playing());\n\
         wait();\n\
         play(piece(\"a\", 4).seed(3), #{{keep: \"unsteered.wav\"}});\n\
         wait()\n",
        direction.display()
    );
    let model = tiny_a();
    let (ok, stdout, stderr) = repl(
        &[
            "--player".as_ref(),
            player.as_os_str(),
            "--out".as_ref(),
            dir.path().as_os_str(),
            "--model".as_ref(),
            model.as_os_str(),
        ],
        &input,
    );
    assert!(ok, "{stdout}\n{stderr}");
    // play returned at once (the next lines ran while it played), and the second play of the
    // same piece steered it instead of starting it again.
    assert!(stdout.contains("playing \"a\" for 4 s"), "{stdout}");
    assert!(stdout.contains("steering changed from step"), "{stdout}");
    assert!(stdout.contains("playing: "), "{stdout}");
    assert!(stdout.contains("stopped: 4.0 s of audio"), "{stdout}");
    // The whole piece was played and kept, and it is not the unsteered piece.
    let (kept, _) = baton::audio::read_wav_mono(&dir.path().join("kept.wav")).unwrap();
    assert_eq!(kept.len(), 4 * 32000);
    let plain = dir.path().join("plain.wav");
    let rendered = baton(&[
        "render",
        "--prompt",
        "a",
        "--seconds",
        "4",
        "--seed",
        "3",
        "--out",
        path_str(&plain),
    ]);
    assert!(rendered.status.success());
    let (plain, _) = baton::audio::read_wav_mono(&plain).unwrap();
    let (unsteered, _) = baton::audio::read_wav_mono(&dir.path().join("unsteered.wav")).unwrap();
    assert!(
        unsteered == plain,
        "played unsteered, the piece is not the render"
    );
    // The player heard the last piece played, whole.
    assert!(samples(&std::fs::read(&heard).unwrap()) == unsteered);
    assert!(plain != kept, "the steering change was not heard");
}

#[test]
fn knobs_and_midi_ports_are_checked() {
    let out = baton(&["play", "--prompt", "a", "--knob", "300", "--player", "cat"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("knob numbers are MIDI controllers, 0 to 127"),
        "{stderr}"
    );
    // No such port (or no MIDI at all, as on a machine without a sound system): said, early.
    let out = baton(&[
        "play",
        "--prompt",
        "a",
        "--midi",
        "no-such-port",
        "--player",
        "cat",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("--midi: "), "{stderr}");
}

#[test]
fn a_knob_is_a_schedule_in_recipes() {
    let (_, stdout, stderr) = repl(
        &[],
        "0.5 * knob(7, 0.2)\n(0.5 * knob(7, 0.2)).value(3.0)\nknob(200)\n",
    );
    assert!(stdout.contains("knob(7, 0.2)"), "{stdout}");
    // Never moved: the initial value.
    assert!(stdout.contains("0.1"), "{stdout}");
    assert!(
        stderr.contains("knob numbers are MIDI controllers"),
        "{stderr}"
    );
}

#[cfg(unix)]
#[test]
fn play_plays_a_recipes_first_piece() {
    let dir = tempfile::tempdir().unwrap();
    let heard = dir.path().join("heard.wav");
    let kept = dir.path().join("kept.wav");
    let player = scripted_player(dir.path(), &heard);
    let recipe = dir.path().join("duo.rhai");
    std::fs::write(
        &recipe,
        "render(piece(\"a\", 2).seed(9), \"one.wav\");\nrender(piece(\"b\", 2), \"two.wav\");\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(["play", path_str(&recipe), "--player", path_str(&player)])
        .args(["--out", path_str(&kept), "--model"])
        .arg(tiny_a())
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("skipped"), "{stdout}");
    assert!(stderr.contains("stopped: 2.0 s of audio"), "{stderr}");
    // The first piece, as render makes it; nothing written but what was asked.
    let whole = dir.path().join("whole.wav");
    let rendered = baton(&[
        "render",
        "--prompt",
        "a",
        "--seconds",
        "2",
        "--seed",
        "9",
        "--out",
        path_str(&whole),
    ]);
    assert!(rendered.status.success());
    let want = samples(&std::fs::read(&whole).unwrap());
    assert!(samples(&std::fs::read(&heard).unwrap()) == want);
    assert!(samples(&std::fs::read(&kept).unwrap()) == want);
    assert!(!dir.path().join("one.wav").exists() && !dir.path().join("two.wav").exists());
    // A recipe sets its pieces: prompt flags are refused.
    let out = baton(&["play", path_str(&recipe), "--seed", "3", "--player", "cat"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--seed is for --prompt"));
}

#[test]
fn a_reader_that_closes_the_stream_stops_the_piece_quietly() {
    use std::io::Read;
    let mut child = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args([
            "render",
            "--prompt",
            "a",
            "--seconds",
            "60",
            "--out",
            "-",
            "--model",
        ])
        .arg(tiny_a())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // `| head -c 1000`: read a little, then close the pipe.
    let mut first = vec![0u8; 1000];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("stdout was closed by its reader"),
        "{stderr}"
    );
    assert_eq!(&first[..4], b"RIFF");
    // A player that quits stops the piece the same way.
    let out = baton(&[
        "play",
        "--prompt",
        "a",
        "--seconds",
        "60",
        "--player",
        "head -c 100",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("(the player quit)"), "{stderr}");
}
