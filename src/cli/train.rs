//! `baton train`.

use clap::Args;

/// Arguments of `baton train`.
#[derive(Args, Debug)]
pub struct TrainArgs {}

/// Runs `baton train`.
pub fn run(_args: TrainArgs) -> miette::Result<()> {
    Err(miette::miette!("baton train is not implemented yet"))
}
