//! MIDI-level event lists: what a clip plays, built directly in Rust (no MIDI files).

/// The General MIDI percussion channel (0-based).
pub const DRUM_CHANNEL: u8 = 9;

/// The channel SynTheory plays its tonal concepts on (0-based, as in its MIDI files).
pub const MELODY_CHANNEL: u8 = 2;

/// Velocity of every tonal note SynTheory writes.
pub const MELODY_VELOCITY: u8 = 64;

/// GM controller number of the reverb send.
pub const REVERB_SEND: u8 = 91;

/// What happens at an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// Selects an instrument on the channel.
    Program(u8),
    /// Sets a controller (e.g. [`REVERB_SEND`]).
    Control { controller: u8, value: u8 },
    /// Releases a key.
    NoteOff { key: u8 },
    /// Strikes a key.
    NoteOn { key: u8, velocity: u8 },
}

impl EventKind {
    /// Order among events at the same instant: set-up first, then releases, then strikes, so a
    /// note repeated back to back is released before it is struck again.
    fn rank(&self) -> u8 {
        match self {
            EventKind::Program(_) | EventKind::Control { .. } => 0,
            EventKind::NoteOff { .. } => 1,
            EventKind::NoteOn { .. } => 2,
        }
    }
}

/// One MIDI instruction at a time in seconds from the start of the performance.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Event {
    /// Seconds from the start.
    pub time: f64,
    /// MIDI channel, 0..=15.
    pub channel: u8,
    /// The instruction.
    pub kind: EventKind,
}

/// A performance and the window of it that becomes the clip.
///
/// Click-track concepts play a long performance and keep a 4 s window at a random offset (as
/// SynTheory trims its 20-30 s click tracks), so the audio before `start` is rendered (reverb tails
/// carry over) and then dropped.
#[derive(Debug, Clone, PartialEq)]
pub struct Score {
    /// Events sorted by time (see [`ScoreBuilder::build`]).
    pub events: Vec<Event>,
    /// Start of the kept window, seconds.
    pub start: f64,
    /// Length of the kept window, seconds.
    pub length: f64,
}

impl Score {
    /// Key numbers struck in the score, in order of their first strike.
    pub fn keys(&self) -> Vec<u8> {
        let mut keys = Vec::new();
        for e in &self.events {
            if let EventKind::NoteOn { key, .. } = e.kind {
                if !keys.contains(&key) {
                    keys.push(key);
                }
            }
        }
        keys
    }

    /// Times of the note-on events, seconds from the start of the kept window.
    pub fn onsets(&self) -> Vec<f64> {
        let mut times: Vec<f64> = self
            .events
            .iter()
            .filter(|e| matches!(e.kind, EventKind::NoteOn { .. }))
            .map(|e| e.time - self.start)
            .collect();
        times.dedup();
        times
    }
}

/// Builds a [`Score`] from notes placed in beats at a tempo.
#[derive(Debug, Clone)]
pub struct ScoreBuilder {
    seconds_per_beat: f64,
    events: Vec<Event>,
}

impl ScoreBuilder {
    /// A score at `bpm` quarter notes per minute.
    pub fn new(bpm: f64) -> Self {
        Self {
            seconds_per_beat: 60.0 / bpm,
            events: Vec::new(),
        }
    }

    fn push(&mut self, beat: f64, channel: u8, kind: EventKind) {
        self.events.push(Event {
            time: beat * self.seconds_per_beat,
            channel,
            kind,
        });
    }

    /// Selects `program` on `channel` at the start.
    pub fn program(mut self, channel: u8, program: u8) -> Self {
        self.push(0.0, channel, EventKind::Program(program));
        self
    }

    /// Sets a controller on `channel` at the start.
    pub fn control(mut self, channel: u8, controller: u8, value: u8) -> Self {
        self.push(0.0, channel, EventKind::Control { controller, value });
        self
    }

    /// Plays `keys` together from `start` to `end` beats.
    pub fn chord(mut self, channel: u8, keys: &[u8], velocity: u8, start: f64, end: f64) -> Self {
        for &key in keys {
            self.push(start, channel, EventKind::NoteOn { key, velocity });
            self.push(end, channel, EventKind::NoteOff { key });
        }
        self
    }

    /// Plays one key from `start` to `end` beats.
    pub fn note(self, channel: u8, key: u8, velocity: u8, start: f64, end: f64) -> Self {
        self.chord(channel, &[key], velocity, start, end)
    }

    /// Sorts the events (stable: set-up, releases, strikes at equal times) and keeps the window
    /// `[start, start + length)` seconds.
    pub fn build(mut self, start: f64, length: f64) -> Score {
        self.events.sort_by(|a, b| {
            a.time
                .total_cmp(&b.time)
                .then(a.kind.rank().cmp(&b.kind.rank()))
        });
        Score {
            events: self.events,
            start,
            length,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_note_is_released_before_it_is_struck_again() {
        let score = ScoreBuilder::new(120.0)
            .program(2, 40)
            .note(2, 60, 64, 0.0, 2.0)
            .note(2, 60, 64, 2.0, 4.0)
            .build(0.0, 2.0);
        let kinds: Vec<EventKind> = score.events.iter().map(|e| e.kind).collect();
        assert_eq!(kinds[0], EventKind::Program(40));
        assert_eq!(kinds[2], EventKind::NoteOff { key: 60 });
        assert_eq!(
            kinds[3],
            EventKind::NoteOn {
                key: 60,
                velocity: 64
            }
        );
        assert_eq!(score.events[3].time, 1.0);
        assert_eq!(score.onsets(), vec![0.0, 1.0]);
        assert_eq!(score.keys(), vec![60]);
    }
}
