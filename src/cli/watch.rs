//! `baton watch`.

use clap::Args;

/// Arguments of `baton watch`.
#[derive(Args, Debug)]
pub struct WatchArgs {}

/// Runs `baton watch`.
pub fn run(_args: WatchArgs) -> miette::Result<()> {
    Err(miette::miette!("baton watch is not implemented yet"))
}
