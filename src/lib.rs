//! baton: steer Meta's MusicGen while it composes.
//!
//! Concept directions are found in the decoder's hidden states with Recursive Feature Machine
//! probes and added back during generation on time-varying schedules written as Rhai recipes.
//!
//! Stages and their dependency direction (see README.md, "Architecture"):
//! - [`model`], [`rfm`], [`concepts`], [`audio`] know nothing of each other's internals;
//! - [`probe`] uses model + concepts (and audio's file I/O); [`steer`] reads direction bundles and
//!   implements the model's `ResidualHook`;
//! - [`piece`] turns a piece's clip and length into the model's extent (continuation, windows)
//!   for every front end;
//! - [`script`] wires everything for recipes; [`live`] (watch mode) and [`repl`] sit on it;
//! - [`eval`] measures generated audio: FAD and KAD between sets in an embedding (the codec's),
//!   and CLAP's clip-text agreement, using model's loading and audio's resampling;
//! - [`perform`] plays a piece while it is generated (sinks, player buffering, live steering);
//! - [`files`] (atomic writes, safetensors helpers), [`seed`] (pure seeded randomness),
//!   [`shard`] (which part of a heavy job one of N processes does) and
//!   [`progress`] (progress bars) and [`interrupt`] (Ctrl-C as a stop request) are shared
//!   plumbing any stage may use.

pub mod audio;
pub mod concepts;
pub mod eval;
pub mod files;
pub mod interrupt;
pub mod live;
pub mod model;
pub mod perform;
pub mod piece;
pub mod probe;
pub mod progress;
pub mod repl;
pub mod rfm;
pub mod script;
pub mod seed;
pub mod shard;
pub mod steer;
