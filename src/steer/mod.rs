//! Steering plans: directions x schedules x layer weights x gate, evaluated per generation step
//! into one vector per decoder block.
//!
//! At step `t` (time `t / frame_rate` seconds, or beats when the plan has a tempo), block `l`
//! gets `h += sum_m eta0_m * w_lm * phi_m(t) * b_t * q_lm`, where term `m` has strength `eta0`,
//! schedule `phi`, layer weights `w` (from the probe's per-block scores, see [`LayerWeights`]),
//! gate probability `p` (`b_t ~ Bernoulli(p)`, one seeded draw per step shared by every term with
//! the same `p`; item `b` of a batch draws as the plan seeded `seed + b` does alone) and
//! direction `q` (times the block's residual norm for a term in [`StrengthUnit::Residual`]).
//! Schedules are sampled for every step before generation starts ([`Plan::strengths`]; a
//! lone generation's gated values are [`Plan::coefficients`]); the decoder only sees the
//! resulting vectors through [`PlanHook`], which computes each step's per-block vectors once (a
//! weighted sum of the terms' directions). A term whose schedule reads a knob
//! ([`Schedule::knob`], set by a MIDI controller) is evaluated again as each step is made.
//!
//! This module knows nothing of Rhai: recipes build plans through `crate::script`.

pub mod direction;
pub mod knobs;
pub mod layer_weights;
pub mod library;
pub mod plan;
pub mod schedule;

pub use direction::Direction;
pub use layer_weights::LayerWeights;
pub use plan::{gate_open, Plan, PlanHook, StrengthUnit, Term};
pub use schedule::{Interp, Schedule, ScheduleError};

/// Errors from building or evaluating a steering plan.
#[derive(Debug, thiserror::Error)]
pub enum SteerError {
    /// Directions or model do not fit together (widths, block counts).
    #[error("{0}")]
    Mismatch(String),
    /// A value given by the user is out of range or malformed.
    #[error("{0}")]
    BadInput(String),
    /// A schedule could not be evaluated.
    #[error(transparent)]
    Schedule(#[from] ScheduleError),
    /// Tensor work failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}
