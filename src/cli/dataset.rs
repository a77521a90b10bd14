//! `baton dataset`.

use clap::Args;

/// Arguments of `baton dataset`.
#[derive(Args, Debug)]
pub struct DatasetArgs {}

/// Runs `baton dataset`.
pub fn run(_args: DatasetArgs) -> miette::Result<()> {
    Err(miette::miette!("baton dataset is not implemented yet"))
}
