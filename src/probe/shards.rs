//! Features shard files (`baton.format = features-shard/1`), what `baton features --shard K/N`
//! writes, and [`merge`], which joins a complete set of them into the features file one process
//! writes (`baton merge`).
//!
//! A shard file is a features file's tensors for the rows [`Shard::range`] gives, with the
//! whole dataset's classes (a shard's clips may lack some), plus each clip's residual norm per
//! block (`norm.{l}`, f32 `[rows]`; the features file keeps only their mean, which the merge
//! recomputes in the same order, so it is the same to the bit) and metadata `shard` (`K/N`),
//! `total` (rows of the whole dataset) and `dataset` (a hash of the dataset's manifest, so
//! shards of different datasets are not joined). Its own format tag keeps `baton train` from
//! reading one shard as a whole dataset.
//!
//! [`merge_readings`] does the same for the readings files of `baton eval --shard K/N`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::extract::mean_norm;
use super::features::{FeatureSet, Labels};
use crate::files::{self as st, FormatError, OwnedTensor};
use crate::shard::Shard;

/// The format tag of features shard files.
pub const FEATURES_SHARD_FORMAT: &str = "features-shard/1";

/// Errors joining features shards.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    /// A shard file cannot be read.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// No shard files were given.
    #[error("no shard files to merge")]
    Nothing,
    /// Shards of different runs (dataset, model, blocks, pooling, number of shards).
    #[error("{a} and {b} are shards of different runs ({what}); merge the shards of one run")]
    Mixed {
        /// One shard file.
        a: PathBuf,
        /// Another, that differs.
        b: PathBuf,
        /// How they differ.
        what: String,
    },
    /// The same shard twice.
    #[error("shard {shard} is given twice ({a} and {b})")]
    Twice {
        /// The shard.
        shard: Shard,
        /// One file.
        a: PathBuf,
        /// The other.
        b: PathBuf,
    },
    /// Shards missing from the set.
    #[error("the set is incomplete: missing shard(s) {missing} of {count} (run them, e.g. `--shard {first}`, then merge again)")]
    Missing {
        /// The missing shards, comma-separated (`2/4, 4/4`).
        missing: String,
        /// N.
        count: usize,
        /// The first missing shard.
        first: Shard,
    },
}

/// One shard of a features file.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureShard {
    /// Which shard.
    pub shard: Shard,
    /// Rows (clips) of the whole dataset.
    pub total: usize,
    /// Hash of the dataset's `manifest.jsonl`.
    pub dataset: String,
    /// This shard's rows (`set.n` of them), with the whole dataset's classes; no
    /// `residual_norms` (see `clip_norms`).
    pub set: FeatureSet,
    /// Each row's residual norm, per block.
    pub clip_norms: BTreeMap<usize, Vec<f32>>,
}

impl FeatureShard {
    /// Writes the shard file atomically.
    pub fn write(&self, path: &Path) -> Result<(), FormatError> {
        let (mut tensors, mut metadata) = self.set.contents();
        for (l, norms) in &self.clip_norms {
            tensors.push(OwnedTensor::f32(
                format!("norm.{l}"),
                vec![norms.len()],
                norms,
            ));
        }
        metadata.insert("baton.format".into(), FEATURES_SHARD_FORMAT.into());
        metadata.insert("shard".into(), self.shard.to_string());
        metadata.insert("total".into(), self.total.to_string());
        metadata.insert("dataset".into(), self.dataset.clone());
        st::write(path, &tensors, metadata)
    }

    /// Reads and validates a shard file.
    pub fn read(path: &Path) -> Result<Self, FormatError> {
        let r = st::Reader::open(path, FEATURES_SHARD_FORMAT)?;
        let set = FeatureSet::from_reader(&r)?;
        let shard: Shard = r
            .meta("shard")?
            .parse()
            .map_err(|e| FormatError::invalid(path, format!("metadata `shard`: {e}")))?;
        let total: usize = r
            .meta("total")?
            .parse()
            .map_err(|_| FormatError::invalid(path, "metadata `total` is not a number of rows"))?;
        if shard.range(total).len() != set.n {
            return Err(FormatError::invalid(
                path,
                format!(
                    "holds {} rows, but shard {shard} of {total} rows has {}",
                    set.n,
                    shard.range(total).len()
                ),
            ));
        }
        let mut clip_norms = BTreeMap::new();
        for &l in set.layers.keys() {
            let (shape, norms) = r.f32(&format!("norm.{l}"))?;
            if shape != [set.n] {
                return Err(FormatError::invalid(
                    path,
                    format!("`norm.{l}` has shape {shape:?}, expected [{}]", set.n),
                ));
            }
            clip_norms.insert(l, norms);
        }
        Ok(FeatureShard {
            shard,
            total,
            dataset: r.meta("dataset")?.to_string(),
            set,
            clip_norms,
        })
    }
}

/// What two shards of one run share, as `(what, value)` pairs; the first that differs is named.
fn identity(s: &FeatureShard) -> Vec<(&'static str, String)> {
    let labels = match &s.set.labels {
        Labels::Classes(_) => "classes",
        Labels::Values(_) => "values",
    };
    vec![
        ("dataset manifest", s.dataset.clone()),
        ("rows", s.total.to_string()),
        ("concept", s.set.concept.clone()),
        ("model", s.set.model.clone()),
        ("pooling", s.set.pooling.clone()),
        ("classes", s.set.classes.join(",")),
        ("labels", labels.to_string()),
        (
            "blocks",
            s.set
                .layers
                .keys()
                .map(|l| l.to_string())
                .collect::<Vec<_>>()
                .join(","),
        ),
        ("model blocks", format!("{:?}", s.set.num_layers)),
        ("width", s.set.hidden_size.to_string()),
    ]
}

/// Joins shard files, given in any order, into the features file one process writes: every
/// row in the dataset's order, its labels and metadata. Refuses a set with a shard missing or
/// given twice, or shards of different runs.
pub fn merge(shards: Vec<(PathBuf, FeatureShard)>) -> Result<FeatureSet, MergeError> {
    let Some((first_path, first)) = shards.first() else {
        return Err(MergeError::Nothing);
    };
    // The shard count is compared by `complete_set`, first of all.
    let reference = identity(first);
    let order = complete_set(
        shards
            .iter()
            .map(|(path, shard)| (path, shard.shard, identity(shard))),
        first_path,
        &reference,
    )?;
    let parts: Vec<&FeatureShard> = order.iter().map(|&i| &shards[i].1).collect();
    let mut layers: BTreeMap<usize, Vec<f32>> = BTreeMap::new();
    let mut norms: BTreeMap<usize, Vec<f32>> = BTreeMap::new();
    for part in &parts {
        for (l, rows) in &part.set.layers {
            layers.entry(*l).or_default().extend_from_slice(rows);
        }
        for (l, n) in &part.clip_norms {
            norms.entry(*l).or_default().extend_from_slice(n);
        }
    }
    let labels = match &first.set.labels {
        Labels::Classes(_) => Labels::Classes(
            parts
                .iter()
                .flat_map(|p| match &p.set.labels {
                    Labels::Classes(ids) => ids.clone(),
                    Labels::Values(_) => Vec::new(),
                })
                .collect(),
        ),
        Labels::Values(_) => Labels::Values(
            parts
                .iter()
                .flat_map(|p| match &p.set.labels {
                    Labels::Values(v) => v.clone(),
                    Labels::Classes(_) => Vec::new(),
                })
                .collect(),
        ),
    };
    Ok(FeatureSet {
        concept: first.set.concept.clone(),
        model: first.set.model.clone(),
        pooling: first.set.pooling.clone(),
        classes: first.set.classes.clone(),
        n: first.total,
        hidden_size: first.set.hidden_size,
        num_layers: first.set.num_layers,
        layers,
        labels,
        residual_norms: norms.iter().map(|(&l, n)| (l, mean_norm(n))).collect(),
    })
}

/// Checks that `shards` (path, shard, identity) are one run's (each identity is `reference`,
/// the identity of `first`) and each of its N shards once; returns their positions in shard
/// order.
fn complete_set<'a>(
    shards: impl Iterator<Item = (&'a PathBuf, Shard, Vec<(&'static str, String)>)>,
    first: &Path,
    reference: &[(&'static str, String)],
) -> Result<Vec<usize>, MergeError> {
    let mut by_index: BTreeMap<usize, (&PathBuf, usize)> = BTreeMap::new();
    let mut count = None;
    for (position, (path, shard, ident)) in shards.enumerate() {
        let differs = reference
            .iter()
            .zip(&ident)
            .find(|(a, b)| a.1 != b.1)
            .map(|(a, b)| format!("{} {} vs {}", a.0, a.1, b.1));
        let differs = differs.or_else(|| {
            (*count.get_or_insert(shard.count()) != shard.count()).then(|| {
                format!(
                    "number of shards {} vs {}",
                    count.unwrap_or(0),
                    shard.count()
                )
            })
        });
        if let Some(what) = differs {
            return Err(MergeError::Mixed {
                a: first.to_path_buf(),
                b: path.clone(),
                what,
            });
        }
        if let Some((earlier, _)) = by_index.insert(shard.index(), (path, position)) {
            return Err(MergeError::Twice {
                shard,
                a: earlier.clone(),
                b: path.clone(),
            });
        }
    }
    let Some(count) = count else {
        return Err(MergeError::Nothing);
    };
    let missing: Vec<Shard> = (1..=count)
        .filter(|k| !by_index.contains_key(k))
        .filter_map(|k| Shard::new(k, count).ok())
        .collect();
    if let Some(&first_missing) = missing.first() {
        return Err(MergeError::Missing {
            missing: missing
                .iter()
                .map(Shard::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            count,
            first: first_missing,
        });
    }
    Ok(by_index.values().map(|&(_, i)| i).collect())
}

/// The key of an eval readings file that says which shard it holds (`baton eval --shard K/N
/// --json F` writes F.shard-K-of-N.json): `{"shard": "K/N", "clips": total, "list": hash of
/// every clip's path}`; the file is otherwise the one-process file with this shard's readings.
pub const EVAL_SHARD_KEY: &str = "shard";

/// Joins the readings files of `baton eval --shard K/N --json F`, given in any order, into the
/// readings file one process writes (every reading in clip order, no shard key). Refuses what
/// [`merge`] refuses.
pub fn merge_readings(
    docs: Vec<(PathBuf, serde_json::Value)>,
) -> Result<serde_json::Value, MergeError> {
    let Some((first_path, _)) = docs.first() else {
        return Err(MergeError::Nothing);
    };
    let mut parsed = Vec::with_capacity(docs.len());
    for (path, doc) in &docs {
        let shard: Shard = doc[EVAL_SHARD_KEY]["shard"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| {
                FormatError::invalid(
                    path,
                    "is not a readings shard (`baton eval --shard K/N --json F` writes them)",
                )
            })?;
        let ident: Vec<(&'static str, String)> = [
            ("clip list", &doc[EVAL_SHARD_KEY]["list"]),
            ("clips", &doc[EVAL_SHARD_KEY]["clips"]),
            ("probe", &doc["probe"]),
            ("model", &doc["model"]),
            ("block", &doc["block"]),
            ("kind", &doc["kind"]),
            ("classes", &doc["classes"]),
        ]
        .into_iter()
        .map(|(k, v)| (k, v.to_string()))
        .collect();
        parsed.push((path, shard, ident));
    }
    let reference = parsed[0].2.clone();
    let order = complete_set(parsed.into_iter(), first_path, &reference)?;
    let mut whole = docs[order[0]].1.clone();
    let readings: Vec<serde_json::Value> = order
        .iter()
        .flat_map(|&i| {
            docs[i].1["readings"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .collect();
    if let Some(obj) = whole.as_object_mut() {
        obj.remove(EVAL_SHARD_KEY);
        obj.insert("readings".into(), readings.into());
    }
    Ok(whole)
}

/// Reads every shard file and [`merge`]s them.
pub fn merge_files(paths: &[PathBuf]) -> Result<FeatureSet, MergeError> {
    let shards = paths
        .iter()
        .map(|p| FeatureShard::read(p).map(|s| (p.clone(), s)))
        .collect::<Result<Vec<_>, _>>()?;
    merge(shards)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A dataset of `total` rows (hidden 2, blocks 0 and 3) and its shard `k/n`.
    fn shard(k: usize, n: usize, total: usize) -> FeatureShard {
        let s = Shard::new(k, n).unwrap();
        let r = s.range(total);
        let rows = |scale: f32| -> Vec<f32> {
            r.clone()
                .flat_map(|i| [i as f32 * scale, -(i as f32)])
                .collect()
        };
        FeatureShard {
            shard: s,
            total,
            dataset: "abc".into(),
            set: FeatureSet {
                concept: "notes".into(),
                model: "tiny".into(),
                pooling: "mean".into(),
                classes: vec!["a".into(), "b".into(), "c".into()],
                n: r.len(),
                hidden_size: 2,
                num_layers: Some(4),
                layers: BTreeMap::from([(0, rows(1.0)), (3, rows(0.5))]),
                labels: Labels::Classes(r.clone().map(|i| (i % 3) as i64).collect()),
                residual_norms: BTreeMap::new(),
            },
            clip_norms: BTreeMap::from([
                (0, r.clone().map(|i| 1.0 + i as f32 / 3.0).collect()),
                (3, r.clone().map(|i| 2.0 + i as f32 / 7.0).collect()),
            ]),
        }
    }

    fn named(parts: Vec<FeatureShard>) -> Vec<(PathBuf, FeatureShard)> {
        parts
            .into_iter()
            .map(|s| {
                (
                    PathBuf::from(format!("f.shard-{}.safetensors", s.shard.tag())),
                    s,
                )
            })
            .collect()
    }

    #[test]
    fn shards_in_any_order_join_into_the_whole_rows_labels_and_norms() {
        let whole = merge(named(vec![shard(1, 1, 7)])).unwrap();
        let joined = merge(named(vec![shard(3, 3, 7), shard(1, 3, 7), shard(2, 3, 7)])).unwrap();
        assert_eq!(joined, whole);
        assert_eq!(whole.n, 7);
        assert_eq!(whole.layers[&0].len(), 14);
        // more shards than rows: some are empty
        let many = merge(named((1..=9).map(|k| shard(k, 9, 7)).collect())).unwrap();
        assert_eq!(many, whole);
    }

    #[test]
    fn shard_files_round_trip_and_are_not_features_files() {
        let dir = tempfile::tempdir().unwrap();
        for part in [shard(2, 3, 7), shard(3, 9, 2)] {
            let path = dir.path().join("f.safetensors");
            part.write(&path).unwrap();
            assert_eq!(FeatureShard::read(&path).unwrap(), part);
            let err = FeatureSet::read(&path).unwrap_err().to_string();
            assert!(err.contains("features-shard/1"), "{err}");
        }
    }

    #[test]
    fn incomplete_duplicated_and_mixed_sets_are_refused_by_name() {
        let err = merge(named(vec![shard(1, 4, 9), shard(3, 4, 9)]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing shard(s) 2/4, 4/4 of 4"), "{err}");
        let err = merge(named(vec![shard(1, 2, 9), shard(1, 2, 9)]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("shard 1/2 is given twice"), "{err}");
        let err = merge(named(vec![shard(1, 2, 9), shard(2, 3, 9)]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("number of shards 2 vs 3"), "{err}");
        let mut other = shard(2, 2, 9);
        other.dataset = "def".into();
        let err = merge(named(vec![shard(1, 2, 9), other]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("dataset manifest abc vs def"), "{err}");
        let mut other = shard(2, 2, 9);
        other.set.model = "big".into();
        let err = merge(named(vec![shard(1, 2, 9), other]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("model tiny vs big"), "{err}");
        assert!(matches!(merge(Vec::new()), Err(MergeError::Nothing)));
    }
}
