//! One file per verb: its clap arguments and a `run` that calls the library.

pub mod clap_cli;
pub mod common;
pub mod dataset;
pub mod eval;
pub mod fad;
pub mod features;
pub mod generation;
pub mod info;
pub mod learn;
pub mod library;
pub mod merge;
pub mod output;
pub mod play;
pub mod recipe;
pub mod render;
pub mod repl;
pub mod shard;
pub mod sweep;
pub mod sweep_cost;
pub mod train;
pub mod watch;
