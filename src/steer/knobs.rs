//! Knobs: control values set from outside while a piece plays (a MIDI controller's
//! control-change messages), read by [`super::Schedule::knob`] schedules at every step. A knob
//! is just another schedule: `0.8 * knob(1)` or `rise(0, 8) * knob(74)` steer as any
//! schedule does, with the knob's value at the moment the step is generated.
//!
//! The table is one per process, as a MIDI connection is: 128 controllers (MIDI's CC numbers),
//! each 0..=1, unset ones reading their schedule's initial value.

use std::sync::atomic::{AtomicU64, Ordering};

/// The number of knobs (MIDI control-change numbers 0..=127).
pub const KNOBS: usize = 128;

/// Bits of a value no knob was set to: knobs read as their schedule's initial value until set.
const UNSET: u64 = u64::MAX;

static TABLE: [AtomicU64; KNOBS] = [const { AtomicU64::new(UNSET) }; KNOBS];

/// Sets knob `cc` to `value` (clamped to 0..=1); out-of-range numbers are ignored.
pub fn set(cc: usize, value: f64) {
    if let Some(k) = TABLE.get(cc) {
        k.store(value.clamp(0.0, 1.0).to_bits(), Ordering::Relaxed);
    }
}

/// Sets knob `cc` from a MIDI control-change value (0..=127).
pub fn set_midi(cc: u8, value: u8) {
    set(cc as usize, value.min(127) as f64 / 127.0);
}

/// Knob `cc`'s value, or `None` while it has never been set.
pub fn get(cc: usize) -> Option<f64> {
    let bits = TABLE.get(cc)?.load(Ordering::Relaxed);
    (bits != UNSET).then(|| f64::from_bits(bits))
}

/// The value of a control-change message (`0xB0..=0xBF`, controller, value), as `(cc, value)`.
pub fn control_change(message: &[u8]) -> Option<(u8, u8)> {
    match message {
        [status, cc, value, ..] if status & 0xF0 == 0xB0 => Some((*cc & 0x7F, *value & 0x7F)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knobs_hold_clamped_values_and_read_midi_control_changes() {
        assert_eq!(get(120), None);
        set(120, 1.5);
        assert_eq!(get(120), Some(1.0));
        set_midi(120, 127);
        assert_eq!(get(120), Some(1.0));
        set_midi(120, 0);
        assert_eq!(get(120), Some(0.0));
        set(500, 0.5); // ignored
        assert_eq!(control_change(&[0xB3, 7, 64]), Some((7, 64)));
        assert_eq!(
            control_change(&[0x90, 60, 100]),
            None,
            "a note is not a knob"
        );
        assert_eq!(control_change(&[0xB0, 7]), None);
    }
}
