//! Probe inputs and outputs: audio -> EnCodec codes -> decoder hidden states -> pooled features,
//! the two file formats the stages exchange (see README.md, "File formats"):
//! [`DirectionBundle`] (`direction/1`) and [`FeatureSet`] (`features/1`, and its shards,
//! [`FeatureShard`], joined by [`shards::merge`]), and reading audio with
//! a trained probe ([`eval`], for `baton eval`). Training the probes lives in [`crate::rfm`]
//! (driven by `baton train`).

pub mod bundle;
pub mod eval;
pub mod extract;
pub mod features;
pub mod shards;

pub use crate::files::FormatError;
pub use bundle::DirectionBundle;
pub use extract::{
    check_entries, extract_dataset, extract_entries, extract_shard, DatasetPlan, ExtractError,
    ExtractOptions, Pooling,
};
pub use features::{FeatureSet, Labels};
pub use shards::{merge_files, FeatureShard, MergeError};
