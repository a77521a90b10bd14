//! `baton features`.

use clap::Args;

/// Arguments of `baton features`.
#[derive(Args, Debug)]
pub struct FeaturesArgs {}

/// Runs `baton features`.
pub fn run(_args: FeaturesArgs) -> miette::Result<()> {
    Err(miette::miette!("baton features is not implemented yet"))
}
