//! `baton repl`.

use clap::Args;

/// Arguments of `baton repl`.
#[derive(Args, Debug)]
pub struct ReplArgs {}

/// Runs `baton repl`.
pub fn run(_args: ReplArgs) -> miette::Result<()> {
    Err(miette::miette!("baton repl is not implemented yet"))
}
