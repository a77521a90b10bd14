//! `baton info`.

use clap::Args;

/// Arguments of `baton info`.
#[derive(Args, Debug)]
pub struct InfoArgs {}

/// Runs `baton info`.
pub fn run(_args: InfoArgs) -> miette::Result<()> {
    Err(miette::miette!("baton info is not implemented yet"))
}
