//! SynTheory-style concept clips (notes, intervals, scales, chords, progressions, tempos, time
//! signatures) built as MIDI-level events and rendered in-process.
