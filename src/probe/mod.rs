//! Probes: audio -> EnCodec codes -> decoder hidden states -> pooled features, probe training and
//! the two file formats the stages exchange (see README.md, "File formats"):
//! [`DirectionBundle`] (`direction/1`) and [`FeatureSet`] (`features/1`).

pub mod bundle;
pub mod extract;
pub mod features;
mod st;

pub use bundle::DirectionBundle;
pub use extract::{extract_dataset, ExtractError, ExtractOptions, Pooling};
pub use features::{FeatureSet, Labels};
pub use st::FormatError;
