//! `baton render RECIPE.rhai`, and the `--steer` flags of prompt rendering.

use super::render::RenderArgs;
use baton::model::{MusicGen, ResidualHook};

/// Runs a recipe file (the `RECIPE` argument of `baton render`).
pub fn run(_args: &RenderArgs) -> miette::Result<()> {
    Err(miette::miette!("recipes are not implemented yet"))
}

/// Builds the steering hook asked for by `--steer`, `--layer-weights` and `--gate`, or `None`
/// when no `--steer` was given.
pub fn hook_from_flags(
    args: &RenderArgs,
    _model: &MusicGen,
) -> miette::Result<Option<Box<dyn ResidualHook>>> {
    if args.steer.is_empty() {
        return Ok(None);
    }
    Err(miette::miette!("--steer is not implemented yet"))
}
