//! `baton render`: a prompt (with optional `--steer` bundles) or a recipe to WAV.

use clap::Args;

/// Arguments of `baton render`.
#[derive(Args, Debug)]
pub struct RenderArgs {
    /// A Rhai recipe to run instead of --prompt.
    pub recipe: Option<std::path::PathBuf>,
}

/// Runs `baton render`.
pub fn run(_args: RenderArgs) -> miette::Result<()> {
    Err(miette::miette!("baton render is not implemented yet"))
}
