//! A performance: a piece generated, decoded and sent out while it is made, to any number of
//! [`Sink`]s: a WAV stream on stdout ([`WavOut`]), a file that is valid whenever the piece stops
//! ([`WavFile`]), a player program reading stdin ([`PlayerSink`], with its own buffer and
//! underrun reports).
//!
//! [`perform`] is a [`PieceStream`] and an [`AudioStream`](crate::model::stream::AudioStream) in one loop: every few frames
//! (`chunk_frames`) the new frames are decoded and the audio that is final goes out, so the
//! first sound leaves after a few steps, not after the piece. The steering hook is asked at
//! every step, so a hook whose plan changes while it plays (the REPL's, a MIDI knob's) is
//! heard from the next frames on.

pub mod live;
pub mod midi;

use std::collections::VecDeque;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::audio::play::Player;
use crate::audio::{SampleFormat, WavStream};
use crate::files::{create_temp_sibling, move_into_place, untrack_in_flight};
use crate::model::{Extent, GenerateOptions, ModelError, MusicGen, PieceStream, ResidualHook};
use candle_core::Tensor;

/// Errors of a performance.
#[derive(Debug, thiserror::Error)]
pub enum PerformError {
    /// Generating or decoding failed.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// An output could not be written.
    #[error("cannot write {what}: {source}")]
    Write {
        /// Which output.
        what: String,
        /// Why.
        source: std::io::Error,
    },
    /// The player could not be started or stopped early.
    #[error("{0}")]
    Player(String),
    /// The reader of a stream closed it (a player quit, `| head`): the piece stops there, as
    /// if asked to. Holds what happened, for the user.
    #[error("{0}")]
    Closed(String),
}

/// Where a performance's audio goes.
pub trait Sink {
    /// Takes the next samples (mono, at the model's rate).
    fn write(&mut self, samples: &[f32]) -> Result<(), PerformError>;
    /// The piece is over: it ended, or was `stopped` early.
    fn finish(&mut self, stopped: bool) -> Result<(), PerformError>;
}

/// How a performance is going, after each step.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// Decoder steps taken.
    pub steps: usize,
    /// Steps of the whole piece; `None` when endless.
    pub total_steps: Option<usize>,
    /// Seconds of audio sent out.
    pub audio_s: f64,
    /// Seconds since the performance started.
    pub elapsed_s: f64,
    /// The listened concept's reading at this step ([`Listen`]), when one is listened to.
    pub reading: Option<f64>,
}

/// A concept to read while the piece plays: the projection of decoder block `block`'s output
/// (first batch item, conditional row) on `direction` (a unit vector, as a probe's direction
/// bundle holds it), step by step.
#[derive(Debug, Clone)]
pub struct Listen {
    /// The decoder block read.
    pub block: usize,
    /// The concept's direction at that block.
    pub direction: Vec<f32>,
}

impl Progress {
    /// Decoder steps per second so far.
    pub fn steps_per_s(&self) -> f64 {
        self.steps as f64 / self.elapsed_s.max(1e-9)
    }
}

/// The last readings of a listened concept, drawn as a line of block characters: what the
/// status line shows while a piece plays.
#[derive(Debug, Clone)]
pub struct Sparkline {
    values: VecDeque<f64>,
    capacity: usize,
}

impl Sparkline {
    /// Keeps the last `capacity` readings (at 50 steps a second, 250 are five seconds).
    pub fn new(capacity: usize) -> Self {
        Sparkline {
            values: VecDeque::with_capacity(capacity),
            capacity: capacity.max(1),
        }
    }

    /// Adds a reading, dropping the oldest when full.
    pub fn push(&mut self, value: f64) {
        if self.values.len() == self.capacity {
            self.values.pop_front();
        }
        self.values.push_back(value);
    }

    /// The readings kept, oldest first.
    pub fn values(&self) -> impl Iterator<Item = f64> + '_ {
        self.values.iter().copied()
    }

    /// `width` characters (or fewer, when fewer readings are kept), each the mean of its share
    /// of the readings, scaled between their least and greatest.
    pub fn draw(&self, width: usize) -> String {
        let n = self.values.len();
        if n == 0 || width == 0 {
            return String::new();
        }
        let cells = width.min(n);
        let means: Vec<f64> = (0..cells)
            .map(|c| {
                let (from, to) = (c * n / cells, ((c + 1) * n / cells).max(c * n / cells + 1));
                self.values.range(from..to).sum::<f64>() / (to - from) as f64
            })
            .collect();
        let lo = means.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = means.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        crate::progress::bars(&means, lo, hi)
    }
}

impl Listen {
    /// The concept a plan steers first (its first term), read at the direction's best block;
    /// `None` for a plan that steers nothing.
    pub fn first_term(plan: &crate::steer::Plan) -> Option<Listen> {
        let direction = &plan.terms.first()?.direction;
        let (block, _) = direction.best_block()?;
        let v = direction.vectors.get(&block)?;
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        (norm > 0.0).then(|| Listen {
            block,
            direction: v.iter().map(|x| x / norm).collect(),
        })
    }
}

/// What a performance did.
#[derive(Debug, Clone)]
pub struct Report {
    /// Decoder steps taken.
    pub steps: usize,
    /// Seconds of audio sent out.
    pub audio_s: f64,
    /// Seconds it took, text encoding included.
    pub elapsed_s: f64,
    /// Seconds from the start until the first audio went out (`None`: none did).
    pub first_audio_s: Option<f64>,
    /// Whether it was stopped before the piece's end.
    pub stopped: bool,
    /// Why the piece stopped early when an output's reader closed it (`stdout was closed by
    /// its reader`, `the player quit`).
    pub closed: Option<String>,
}

/// Frames decoded at once by default: 0.2 s at MusicGen's 50 frames per second, so the
/// codec's context (a few frames either side) costs little.
pub const DEFAULT_CHUNK_FRAMES: usize = 10;

/// Generates `prompt` as `options` and `extent` say (an endless extent runs until
/// `should_stop`), sending its audio to every sink as it becomes final, and reading `listen`'s
/// concept at every step ([`Progress::reading`]). `should_stop` is asked
/// before each step; `on_progress` hears after it. Every sink is finished, also after an error
/// or a stop, so files are left whole.
#[allow(clippy::too_many_arguments)]
pub fn perform(
    model: &MusicGen,
    prompt: &str,
    options: &GenerateOptions,
    extent: &Extent,
    mut hook: Option<&mut dyn ResidualHook>,
    listen: Option<&Listen>,
    sinks: &mut [&mut dyn Sink],
    chunk_frames: usize,
    should_stop: &mut dyn FnMut() -> bool,
    on_progress: &mut dyn FnMut(&Progress),
) -> Result<Report, PerformError> {
    let start = Instant::now();
    let rate = model.sample_rate() as f64;
    let mut report = Report {
        steps: 0,
        audio_s: 0.0,
        elapsed_s: 0.0,
        first_audio_s: None,
        stopped: false,
        closed: None,
    };
    let mut send = |samples: &[f32], report: &mut Report| -> Result<(), PerformError> {
        if samples.is_empty() {
            return Ok(());
        }
        for sink in sinks.iter_mut() {
            sink.write(samples)?;
        }
        report.audio_s += samples.len() as f64 / rate;
        report
            .first_audio_s
            .get_or_insert(start.elapsed().as_secs_f64());
        Ok(())
    };
    let result = (|| -> Result<(), PerformError> {
        let mut stream = PieceStream::new(
            model,
            &[prompt],
            options,
            extent,
            hook.as_mut().map(|h| &mut **h as &mut dyn ResidualHook),
            None,
        )?;
        let mut audio = model.decode_stream()?;
        stream.listen(listen.map(|l| l.block))?;
        let direction = listen
            .map(|l| Tensor::from_slice(&l.direction, l.direction.len(), &candle_core::Device::Cpu))
            .transpose()
            .map_err(ModelError::from)?;
        let mut pushed = 0;
        loop {
            if should_stop() {
                report.stopped = true;
                break;
            }
            let more = stream.step(hook.as_mut().map(|h| &mut **h as &mut dyn ResidualHook))?;
            report.steps = stream.steps_done();
            if !more || stream.frames_done() - stream.frames_taken() >= chunk_frames.max(1) {
                let frames = stream.take_frames()?;
                pushed += frames[0][0].len();
                send(&audio.push(&frames)?[0], &mut report)?;
            }
            if !more {
                break;
            }
            let reading = match (stream.heard(), &direction) {
                (Some(h), Some(d)) => Some(
                    h.get(0)
                        .and_then(|row| row.to_device(&candle_core::Device::Cpu))
                        .and_then(|row| row.to_dtype(candle_core::DType::F32))
                        .and_then(|row| (row * d)?.sum_all()?.to_scalar::<f32>())
                        .map_err(ModelError::from)? as f64,
                ),
                _ => None,
            };
            on_progress(&Progress {
                steps: report.steps,
                total_steps: stream.total_steps(),
                audio_s: report.audio_s,
                elapsed_s: start.elapsed().as_secs_f64(),
                reading,
            });
        }
        let frames = stream.take_frames()?;
        pushed += frames[0][0].len();
        if pushed > 0 {
            send(&audio.push(&frames)?[0], &mut report)?;
            send(&audio.finish()?[0], &mut report)?;
        }
        Ok(())
    })();
    // Every sink ends, whatever happened: the first error is the one reported.
    let mut finished = Ok(());
    for sink in sinks.iter_mut() {
        let r = sink.finish(report.stopped || result.is_err());
        if finished.is_ok() {
            finished = r;
        }
    }
    match result {
        // A reader that closed its stream ended the piece: a stop, not a failure.
        Err(PerformError::Closed(what)) => {
            report.stopped = true;
            report.closed = Some(what);
        }
        other => other?,
    }
    finished?;
    report.elapsed_s = start.elapsed().as_secs_f64();
    Ok(report)
}

/// A WAV stream into any writer (stdout for `--out -`), lengths left open.
pub struct WavOut<W: Write> {
    what: String,
    stream: WavStream<W>,
}

impl<W: Write> WavOut<W> {
    /// Starts the stream (writes the header); `what` names the output in errors.
    pub fn new(
        what: &str,
        out: W,
        sample_rate: u32,
        format: SampleFormat,
    ) -> Result<Self, PerformError> {
        let stream =
            WavStream::start(out, sample_rate, format).map_err(|source| PerformError::Write {
                what: what.to_string(),
                source,
            })?;
        Ok(WavOut {
            what: what.to_string(),
            stream,
        })
    }
}

impl<W: Write> Sink for WavOut<W> {
    fn write(&mut self, samples: &[f32]) -> Result<(), PerformError> {
        self.stream.write(samples).map_err(|source| {
            if source.kind() == std::io::ErrorKind::BrokenPipe {
                PerformError::Closed(format!("{} was closed by its reader", self.what))
            } else {
                PerformError::Write {
                    what: self.what.clone(),
                    source,
                }
            }
        })
    }

    fn finish(&mut self, _stopped: bool) -> Result<(), PerformError> {
        Ok(())
    }
}

/// A WAV file written while the piece plays: into a temporary sibling, put in place with its
/// lengths set when the piece ends or is stopped, so the file is always whole.
pub struct WavFile {
    path: PathBuf,
    tmp: PathBuf,
    stream: Option<WavStream<File>>,
}

impl WavFile {
    /// Starts writing `path` (through its temporary sibling).
    pub fn create(
        path: &Path,
        sample_rate: u32,
        format: SampleFormat,
    ) -> Result<Self, PerformError> {
        let err = |source| PerformError::Write {
            what: path.display().to_string(),
            source,
        };
        let (tmp, file) = create_temp_sibling(path).map_err(err)?;
        let stream = WavStream::start(file, sample_rate, format).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            untrack_in_flight(&tmp);
            err(e)
        })?;
        Ok(WavFile {
            path: path.to_path_buf(),
            tmp,
            stream: Some(stream),
        })
    }

    fn error(&self, source: std::io::Error) -> PerformError {
        PerformError::Write {
            what: self.path.display().to_string(),
            source,
        }
    }
}

impl Sink for WavFile {
    fn write(&mut self, samples: &[f32]) -> Result<(), PerformError> {
        match &mut self.stream {
            Some(s) => s.write(samples).map_err(|e| self.error(e)),
            None => Ok(()),
        }
    }

    fn finish(&mut self, _stopped: bool) -> Result<(), PerformError> {
        let Some(stream) = self.stream.take() else {
            return Ok(());
        };
        let result = stream
            .close_file()
            .and_then(|()| move_into_place(&self.tmp, &self.path));
        if result.is_err() {
            let _ = std::fs::remove_file(&self.tmp);
        }
        untrack_in_flight(&self.tmp);
        result.map_err(|e| self.error(e))
    }
}

impl Drop for WavFile {
    fn drop(&mut self) {
        if self.stream.is_some() {
            let _ = std::fs::remove_file(&self.tmp);
            untrack_in_flight(&self.tmp);
        }
    }
}

/// What a [`PlayerSink`] tells about its playback.
#[derive(Debug, Clone, PartialEq)]
pub enum PlayEvent {
    /// Playback began with `buffered_s` seconds of audio ready, audio arriving at `speed`
    /// times real time.
    Started {
        /// Seconds buffered when it began.
        buffered_s: f64,
        /// Audio seconds generated per wall-clock second.
        speed: f64,
    },
    /// Generation is slower than real time and the piece is endless (or the buffer was set
    /// too small): playback will stall now and then.
    CannotKeepUp {
        /// Audio seconds generated per wall-clock second.
        speed: f64,
        /// Seconds buffered when playback began.
        buffered_s: f64,
    },
    /// The player ran out of audio at `at_s` seconds into the piece and waited `gap_s`.
    Underrun {
        /// Where in the piece.
        at_s: f64,
        /// How long there was nothing to play.
        gap_s: f64,
    },
}

impl std::fmt::Display for PlayEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PlayEvent::Started { buffered_s, speed } => write!(
                f,
                "playing ({buffered_s:.1} s buffered, generating at {speed:.2}x real time)"
            ),
            PlayEvent::CannotKeepUp { speed, buffered_s } => write!(
                f,
                "warning: generating at {speed:.2}x real time, slower than playback: with \
                 {buffered_s:.1} s buffered the music will stop now and then"
            ),
            PlayEvent::Underrun { at_s, gap_s } => {
                write!(f, "underrun at {at_s:.1} s: {gap_s:.2} s without sound")
            }
        }
    }
}

/// How a [`PlayerSink`] buffers.
#[derive(Debug, Clone, Copy)]
pub struct Buffering {
    /// Seconds of the whole piece (`None`: endless), to work out the buffer that plays it
    /// through.
    pub piece_s: Option<f64>,
    /// Seconds to buffer before playing, instead of working it out.
    pub fixed_s: Option<f64>,
    /// Seconds of audio allowed ahead of what is heard once playing: the control latency.
    pub max_ahead_s: f64,
}

/// The least buffered before playback starts: covers the player's start and a chunk's jitter.
const MIN_BUFFER_S: f64 = 0.5;

impl Buffering {
    /// Seconds to buffer before playing, given audio arriving at `speed` times real time: what
    /// is left would otherwise arrive late (a piece of `T` seconds at speed `r < 1` needs
    /// `T (1 - r)` in hand). The speed is taken a tenth lower (steps slow down as the window
    /// fills, and the start is measured early) and the buffer a tenth longer. `None` when no
    /// buffer plays an endless piece through.
    pub fn needed_s(&self, speed: f64) -> Option<f64> {
        if let Some(fixed) = self.fixed_s {
            return Some(fixed.max(0.0));
        }
        if speed >= 1.05 {
            return Some(MIN_BUFFER_S);
        }
        let piece = self.piece_s?;
        Some((piece * (1.0 - 0.9 * speed) * 1.1).max(MIN_BUFFER_S))
    }
}

enum Msg {
    Audio(Vec<f32>),
    End { stopped: bool },
}

/// State the generating side reads to hold back (the buffer ahead of the ear).
struct Shared {
    /// Samples handed to the player so far, and when playback began (none yet: `u64::MAX`
    /// nanoseconds after `origin`).
    written: AtomicU64,
    queued: AtomicU64,
    started_ns: AtomicU64,
    origin: Instant,
    /// Seconds buffered when playback began (f64 bits): generation is never held back below
    /// it, or a slow piece would starve the buffer that was meant to play it through.
    start_buffer: AtomicU64,
}

impl Shared {
    fn ahead_s(&self, rate: f64) -> Option<f64> {
        let started = self.started_ns.load(Ordering::SeqCst);
        if started == u64::MAX {
            return None;
        }
        let played =
            (self.origin.elapsed().as_nanos() as u64).saturating_sub(started) as f64 * 1e-9;
        let have = (self.written.load(Ordering::SeqCst) + self.queued.load(Ordering::SeqCst))
            as f64
            / rate;
        Some(have - played)
    }
}

/// The playback clock of a [`PlayerSink`], readable from anywhere.
#[derive(Clone)]
pub struct PlayerClock {
    shared: Arc<Shared>,
    rate: f64,
}

impl PlayerClock {
    /// Seconds of audio handed over but not yet heard (`None` before playback starts).
    pub fn ahead_s(&self) -> Option<f64> {
        self.shared.ahead_s(self.rate)
    }
}

/// Plays while generating through a player program that reads a WAV stream on stdin (aplay,
/// paplay, pw-cat, ffplay, sox's play). It buffers before it starts as [`Buffering`] says,
/// holds generation back to `max_ahead_s` once playing, and reports each underrun.
pub struct PlayerSink {
    tx: Option<SyncSender<Msg>>,
    thread: Option<JoinHandle<Result<(), PerformError>>>,
    shared: Arc<Shared>,
    rate: f64,
    max_ahead_s: f64,
}

impl PlayerSink {
    /// Starts `player` and its feeding thread; `events` hears what playback does.
    pub fn start(
        player: &Player,
        sample_rate: u32,
        format: SampleFormat,
        buffering: Buffering,
        events: Arc<dyn Fn(PlayEvent) + Send + Sync>,
    ) -> Result<Self, PerformError> {
        let child = player.spawn_streaming().map_err(PerformError::Player)?;
        let (tx, rx) = mpsc::sync_channel(4096);
        let shared = Arc::new(Shared {
            written: AtomicU64::new(0),
            queued: AtomicU64::new(0),
            started_ns: AtomicU64::new(u64::MAX),
            origin: Instant::now(),
            start_buffer: AtomicU64::new(0),
        });
        let feeder = Feeder {
            rx,
            child,
            shared: shared.clone(),
            rate: sample_rate as f64,
            format,
            buffering,
            events,
        };
        let thread = std::thread::spawn(move || feeder.run());
        Ok(PlayerSink {
            tx: Some(tx),
            thread: Some(thread),
            shared,
            rate: sample_rate as f64,
            max_ahead_s: buffering.max_ahead_s,
        })
    }

    /// Seconds of audio handed over but not yet heard (`None` before playback starts).
    pub fn ahead_s(&self) -> Option<f64> {
        self.shared.ahead_s(self.rate)
    }

    /// A handle on the playback clock that stays readable while the sink is in use.
    pub fn clock(&self) -> PlayerClock {
        PlayerClock {
            shared: self.shared.clone(),
            rate: self.rate,
        }
    }

    fn send(&mut self, msg: Msg) -> Result<(), PerformError> {
        let gone = || PerformError::Player("the player stopped".into());
        let tx = self.tx.as_ref().ok_or_else(gone)?;
        if tx.send(msg).is_ok() {
            return Ok(());
        }
        // The feeder ended early: its error says why.
        Err(match self.thread.take().map(JoinHandle::join) {
            Some(Ok(Err(e))) => e,
            _ => gone(),
        })
    }
}

impl Sink for PlayerSink {
    fn write(&mut self, samples: &[f32]) -> Result<(), PerformError> {
        // Once playing, generation waits while more than max_ahead_s is in hand (or than the
        // start's buffer, which a slower-than-real-time piece needs whole): a change of steering
        // is heard that much later at most. Read afresh each time: playback may begin, and set
        // its buffer, while this waits.
        let limit = || {
            self.max_ahead_s.max(f64::from_bits(
                self.shared.start_buffer.load(Ordering::SeqCst),
            ))
        };
        while self.ahead_s().is_some_and(|ahead| ahead > limit()) {
            if self.thread.as_ref().is_some_and(|t| t.is_finished()) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.shared
            .queued
            .fetch_add(samples.len() as u64, Ordering::SeqCst);
        self.send(Msg::Audio(samples.to_vec()))
    }

    fn finish(&mut self, stopped: bool) -> Result<(), PerformError> {
        let sent = self.send(Msg::End { stopped });
        self.tx = None;
        let joined = match self.thread.take().map(JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(PerformError::Player("the player thread failed".into())),
            None => Ok(()),
        };
        joined.and(sent.or(Ok(())))
    }
}

/// The thread between the generation and the player.
struct Feeder {
    rx: Receiver<Msg>,
    child: Child,
    shared: Arc<Shared>,
    rate: f64,
    format: SampleFormat,
    buffering: Buffering,
    events: Arc<dyn Fn(PlayEvent) + Send + Sync>,
}

/// Wall time playback is allowed to run ahead of the audio before a gap counts as an underrun
/// (the player's own buffer hides less than this).
const UNDERRUN_SLACK_S: f64 = 0.05;

impl Feeder {
    fn run(mut self) -> Result<(), PerformError> {
        let stdin = self
            .child
            .stdin
            .take()
            .ok_or_else(|| PerformError::Player("the player has no stdin".into()))?;
        let result = self.feed(stdin);
        let status = self.child.wait();
        result?;
        match status {
            Ok(s) if s.success() => Ok(()),
            Ok(s) => Err(PerformError::Player(format!("the player ended with {s}"))),
            Err(e) => Err(PerformError::Player(format!(
                "the player could not be waited for: {e}"
            ))),
        }
    }

    fn feed(&mut self, stdin: ChildStdin) -> Result<(), PerformError> {
        // A player that quits (its window closed) ends the piece, as Ctrl-C would.
        let broke = |e: std::io::Error| {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                PerformError::Closed("the player quit".into())
            } else {
                PerformError::Player(format!("the player stopped reading: {e}"))
            }
        };
        let mut out = Some(WavStream::start(stdin, self.rate as u32, self.format).map_err(broke)?);
        let mut waiting: VecDeque<Vec<f32>> = VecDeque::new();
        let mut buffered = 0usize;
        let mut first_arrival: Option<Instant> = None;
        // Once playing: when it began, and the gaps the player waited through.
        let mut playing: Option<(Instant, f64)> = None;
        let mut written = 0usize;
        loop {
            let msg = self.rx.recv().unwrap_or(Msg::End { stopped: true });
            let (ended, stopped) = match msg {
                Msg::Audio(samples) => {
                    first_arrival.get_or_insert_with(Instant::now);
                    buffered += samples.len();
                    waiting.push_back(samples);
                    (false, false)
                }
                Msg::End { stopped } => (true, stopped),
            };
            if stopped {
                // Stopped: silence now, not after the buffer.
                let _ = self.child.kill();
                return Ok(());
            }
            if playing.is_none() {
                let arrived_s = buffered as f64 / self.rate;
                let wall = first_arrival.map_or(0.0, |t| t.elapsed().as_secs_f64());
                // The speed is judged on at least a second of either kind.
                let judged = wall >= 1.0 || arrived_s >= 1.0;
                let speed = if wall > 0.0 {
                    arrived_s / wall
                } else {
                    f64::INFINITY
                };
                let start = ended
                    || (judged
                        && match self.buffering.needed_s(speed) {
                            Some(need) => arrived_s >= need,
                            None => {
                                let buffer = 2.0_f64.max(MIN_BUFFER_S);
                                if arrived_s >= buffer {
                                    (self.events)(PlayEvent::CannotKeepUp {
                                        speed,
                                        buffered_s: arrived_s,
                                    });
                                }
                                arrived_s >= buffer
                            }
                        });
                if start {
                    (self.events)(PlayEvent::Started {
                        buffered_s: arrived_s,
                        speed,
                    });
                    self.shared
                        .start_buffer
                        .store(arrived_s.to_bits(), Ordering::SeqCst);
                    let now = Instant::now();
                    self.shared.started_ns.store(
                        now.duration_since(self.shared.origin).as_nanos() as u64,
                        Ordering::SeqCst,
                    );
                    playing = Some((now, 0.0));
                }
            }
            if let Some((began, gaps)) = &mut playing {
                while let Some(samples) = waiting.pop_front() {
                    let heard_s = began.elapsed().as_secs_f64() - *gaps;
                    let have_s = written as f64 / self.rate;
                    if heard_s > have_s + UNDERRUN_SLACK_S {
                        let gap_s = heard_s - have_s;
                        *gaps += gap_s;
                        (self.events)(PlayEvent::Underrun {
                            at_s: have_s,
                            gap_s,
                        });
                        // The clock the generator reads moves on by the gap too.
                        self.shared
                            .started_ns
                            .fetch_add((gap_s * 1e9) as u64, Ordering::SeqCst);
                    }
                    if let Some(o) = out.as_mut() {
                        o.write(&samples).map_err(broke)?;
                    }
                    written += samples.len();
                    self.shared
                        .queued
                        .fetch_sub(samples.len() as u64, Ordering::SeqCst);
                    self.shared.written.store(written as u64, Ordering::SeqCst);
                }
            }
            if ended {
                // Closing stdin tells the player the stream is over; it plays what it holds.
                drop(out.take());
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sparkline_draws_the_last_readings_between_their_extremes() {
        let mut line = Sparkline::new(4);
        assert_eq!(line.draw(10), "");
        for v in [9.0, 0.0, 1.0, 2.0, 3.0] {
            line.push(v);
        }
        // The oldest (9) fell out; 0..3 rise from the lowest bar to the highest.
        assert_eq!(line.values().collect::<Vec<_>>(), vec![0.0, 1.0, 2.0, 3.0]);
        assert_eq!(line.draw(4), "▁▃▆█");
        // Two cells: the means of (0, 1) and (2, 3).
        assert_eq!(line.draw(2), "▁█");
    }

    #[test]
    fn the_buffer_plays_a_slow_piece_through() {
        let b = Buffering {
            piece_s: Some(30.0),
            fixed_s: None,
            max_ahead_s: 1.0,
        };
        assert_eq!(b.needed_s(2.0), Some(MIN_BUFFER_S));
        // At half real time, 30 s need 15 s in hand; with the margins, 30 (1 - 0.45) 1.1.
        assert!((b.needed_s(0.5).unwrap() - 18.15).abs() < 1e-9);
        let endless = Buffering { piece_s: None, ..b };
        assert_eq!(endless.needed_s(0.5), None);
        assert_eq!(endless.needed_s(1.5), Some(MIN_BUFFER_S));
        let fixed = Buffering {
            fixed_s: Some(3.0),
            ..endless
        };
        assert_eq!(fixed.needed_s(0.1), Some(3.0));
    }
}
