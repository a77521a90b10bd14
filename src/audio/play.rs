//! Playing files through an external player, in the background: watch mode and the REPL play
//! what they just rendered, and a new batch cuts the one still playing (live coding wants the
//! latest take, not a queue). baton links no audio library; any command-line player works.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Players tried in order when none is named: PulseAudio/PipeWire, ALSA, macOS, SoX, FFmpeg.
const KNOWN_PLAYERS: &[&str] = &[
    "paplay {}",
    "aplay -q {}",
    "afplay {}",
    "play -q {}",
    "ffplay -nodisp -autoexit -loglevel quiet {}",
];

/// Players tried in order for a stream on stdin (`baton play`): the same programs, reading `-`.
const KNOWN_STREAM_PLAYERS: &[&str] = &[
    "paplay",
    "aplay -q -",
    "pw-cat -p -",
    "play -q -t wav -",
    "ffplay -nodisp -autoexit -loglevel quiet -i -",
];

/// A player command: a program and its arguments, where `{}` stands for the file (appended when
/// absent). Arguments are split on whitespace, never passed to a shell.
#[derive(Debug, Clone, PartialEq)]
pub struct Player {
    words: Vec<String>,
}

impl Player {
    /// Parses a command template such as `"aplay -q {}"`.
    pub fn parse(template: &str) -> Result<Player, String> {
        let mut words: Vec<String> = template.split_whitespace().map(str::to_string).collect();
        if words.is_empty() {
            return Err("the player command is empty".into());
        }
        if !words.iter().any(|w| w.contains("{}")) {
            words.push("{}".into());
        }
        Ok(Player { words })
    }

    /// Parses a command that plays a WAV stream on its stdin (`"aplay -q -"`); a `{}` in it
    /// stands for `-`, and nothing is appended.
    pub fn parse_streaming(template: &str) -> Result<Player, String> {
        let words: Vec<String> = template
            .split_whitespace()
            .map(|w| w.replace("{}", "-"))
            .collect();
        if words.is_empty() {
            return Err("the player command is empty".into());
        }
        Ok(Player { words })
    }

    /// The first of the usual players found on `PATH`.
    pub fn find() -> Result<Player, String> {
        Self::find_in(KNOWN_PLAYERS, Player::parse)
    }

    /// The first of the usual players found on `PATH`, reading stdin.
    pub fn find_streaming() -> Result<Player, String> {
        Self::find_in(KNOWN_STREAM_PLAYERS, Player::parse_streaming)
    }

    fn find_in(
        known: &[&str],
        parse: fn(&str) -> Result<Player, String>,
    ) -> Result<Player, String> {
        known
            .iter()
            .filter_map(|t| parse(t).ok())
            .find(|p| on_path(&p.words[0]))
            .ok_or_else(|| {
                let tried: Vec<&str> = known
                    .iter()
                    .filter_map(|t| t.split_whitespace().next())
                    .collect();
                format!(
                    "no audio player found on PATH (tried {}); name one with --player \"CMD {{}}\"",
                    tried.join(", ")
                )
            })
    }

    /// Starts the player with a pipe on its stdin (what [`Player::parse_streaming`] parses).
    pub fn spawn_streaming(&self) -> Result<Child, String> {
        let mut cmd = Command::new(&self.words[0]);
        cmd.args(&self.words[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::null());
        cmd.spawn().map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                format!("the player program {:?} was not found", self.words[0])
            } else {
                format!("cannot start the player {:?}: {e}", self.words[0])
            }
        })
    }

    /// The command that plays `file`.
    fn command(&self, file: &Path) -> Command {
        let file = file.display().to_string();
        let mut words = self.words.iter().map(|w| w.replace("{}", &file));
        let mut cmd = Command::new(words.next().unwrap_or_default());
        cmd.args(words)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        cmd
    }
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// Plays batches of files one after the other, in the background.
pub struct Playback {
    player: Player,
    /// Number of the batch allowed to play; an older batch stops at its next file.
    batch: Arc<AtomicU64>,
    current: Arc<Mutex<Option<Child>>>,
}

impl Playback {
    /// Playback through `player`.
    pub fn new(player: Player) -> Self {
        Playback {
            player,
            batch: Arc::new(AtomicU64::new(0)),
            current: Arc::new(Mutex::new(None)),
        }
    }

    /// Stops what is playing and plays `files` in order; no files leave the current take
    /// playing. Returns at once; a player that fails to start is reported on stderr and the
    /// batch ends. Stopping kills the player process itself: a player that is a wrapper script
    /// may leave what it started running.
    pub fn play(&self, files: Vec<PathBuf>) {
        if files.is_empty() {
            return;
        }
        let mine = self.batch.fetch_add(1, Ordering::SeqCst) + 1;
        self.stop_current();
        let (player, batch, current) = (
            self.player.clone(),
            self.batch.clone(),
            self.current.clone(),
        );
        std::thread::spawn(move || {
            for file in files {
                let Ok(mut slot) = current.lock() else { return };
                // Checked under the lock, so a newer batch's stop cannot slip in between.
                if batch.load(Ordering::SeqCst) != mine {
                    return;
                }
                match player.command(&file).spawn() {
                    Ok(child) => *slot = Some(child),
                    Err(e) => {
                        if e.kind() == std::io::ErrorKind::NotFound {
                            eprintln!(
                                "cannot play {}: the player program {:?} was not found",
                                file.display(),
                                player.words[0]
                            );
                        } else {
                            eprintln!("cannot play {}: {e}", file.display());
                        }
                        return;
                    }
                }
                drop(slot);
                // Wait without holding the lock, so `stop_current` can kill the child.
                loop {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    let Ok(mut slot) = current.lock() else { return };
                    match slot.as_mut().map(Child::try_wait) {
                        Some(Ok(None)) => continue,
                        _ => {
                            // Reaped either way, so no zombie is left behind.
                            if let Some(mut child) = slot.take() {
                                let _ = child.wait();
                            }
                            break;
                        }
                    }
                }
            }
        });
    }

    fn stop_current(&self) {
        if let Ok(mut slot) = self.current.lock() {
            if let Some(mut child) = slot.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

impl Drop for Playback {
    fn drop(&mut self) {
        self.batch.fetch_add(1, Ordering::SeqCst);
        self.stop_current();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn templates_put_the_file_where_asked() {
        let p = Player::parse("aplay -q {}").unwrap();
        let c = p.command(Path::new("out/a b.wav"));
        let args: Vec<_> = c
            .get_args()
            .map(|a| a.to_string_lossy().to_string())
            .collect();
        assert_eq!(c.get_program(), "aplay");
        assert_eq!(args, vec!["-q", "out/a b.wav"]);
        let p = Player::parse("mpv").unwrap();
        let args: Vec<_> = p
            .command(Path::new("x.wav"))
            .get_args()
            .map(|a| a.to_string_lossy().to_string())
            .collect();
        assert_eq!(args, vec!["x.wav"]);
        assert!(Player::parse("   ").is_err());
    }

    fn wait_until(what: &str, ok: impl Fn() -> bool) {
        let start = Instant::now();
        while !ok() {
            assert!(start.elapsed() < Duration::from_secs(20), "{what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn a_batch_plays_in_order_and_a_new_one_cuts_it() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        // A "player" that notes the file, takes a while, then notes that it finished.
        let script = dir.path().join("player.sh");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\necho \"$1\" >> {log}\nsleep \"$2\"\necho \"end $1\" >> {log}\n",
                log = log.display()
            ),
        )
        .unwrap();
        let play = |secs: &str| {
            Playback::new(Player::parse(&format!("sh {} {{}} {secs}", script.display())).unwrap())
        };
        let quick = play("0");
        quick.play(vec!["a".into(), "b".into()]);
        let read = || std::fs::read_to_string(&log).unwrap_or_default();
        wait_until("both played", || read() == "a\nend a\nb\nend b\n");

        std::fs::remove_file(&log).unwrap();
        let slow = play("2");
        slow.play(vec!["c".into(), "d".into()]);
        wait_until("c started", || read() == "c\n");
        // Nothing to play keeps the current take.
        slow.play(Vec::new());
        slow.play(vec!["e".into()]);
        wait_until("e started", || read() == "c\ne\n");
        wait_until("e finished", || read() == "c\ne\nend e\n");
        std::thread::sleep(Duration::from_millis(300));
        // c was killed mid-take (never finished) and d never started.
        assert_eq!(read(), "c\ne\nend e\n");
    }
}
