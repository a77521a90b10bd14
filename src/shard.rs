//! Scale out: one of N processes (a Slurm array task, a Kubernetes indexed-job pod, or a shell
//! loop) does shard K of a heavy verb's items, and the shards together give exactly what one
//! process gives.
//!
//! - Which shard: `--shard K/N` (1-based), else the scheduler's environment ([`Shard::resolve`]):
//!   `SLURM_ARRAY_TASK_ID` with `SLURM_ARRAY_TASK_MIN`/`MAX` (and `STEP`), or with
//!   `SLURM_ARRAY_TASK_COUNT`; Kubernetes' 0-based `JOB_COMPLETION_INDEX` with the count from
//!   `--shard-count` or `BATON_SHARD_COUNT`. Nothing set: the whole job, one process.
//! - Which items: [`Shard::range`], a contiguous run of the full item list in its fixed order,
//!   the same in every process whatever it finds on disk. Items carry their own seeds, so an
//!   item is the same whichever shard makes it; contiguous runs keep a sweep's consecutive seeds
//!   together (batched generation) and make joining features a concatenation.
//!
//! Shards share one output folder (dataset, sweep) without a lock file, since a lock left by a
//! killed task would stall the rerun and locks are unreliable on the network file systems
//! clusters share. Instead:
//! - every item is its own file, written atomically ([`crate::files::write_atomic`]: a
//!   temporary name per process, then a rename), so a racing or killed shard never leaves half
//!   an item, and no two shards write the same item;
//! - the folder's summary file is a pure function of the item files on disk, so two shards that
//!   write it at once write the same bytes, and each shard looks at the folder only after
//!   writing its own items. A dataset's `manifest.jsonl` is written by whichever shard finds
//!   every clip there: of shards finishing at once, the one that looks last comes after every
//!   other's last clip, so it finds them all. A sweep's `sweep.json`, which lists whatever takes
//!   are done, is rewritten by [`settle`]: each shard, after its own last take, writes it and
//!   gathers again until what it gathered is what it wrote. The last rename of all is followed
//!   by its writer's gather, which comes after every other shard's takes (each shard writes its
//!   takes before its own renames), so the file left holds them all.
//! - the folder's record of its options (`dataset.json`) is created only if absent
//!   ([`crate::files::write_new`]), so of shards starting at once one creates it and the
//!   others check theirs against it.
//!
//! A shard that failed leaves its missing items missing: rerunning it (or a plain run without
//! `--shard`, which also finalises the summary) makes only those.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Slurm's array task id (its index in the array as the user numbered it).
pub const SLURM_TASK_ID: &str = "SLURM_ARRAY_TASK_ID";
/// Slurm's lowest array task id.
pub const SLURM_TASK_MIN: &str = "SLURM_ARRAY_TASK_MIN";
/// Slurm's highest array task id.
pub const SLURM_TASK_MAX: &str = "SLURM_ARRAY_TASK_MAX";
/// Slurm's array step (`--array=0-15:2`), 1 when absent.
pub const SLURM_TASK_STEP: &str = "SLURM_ARRAY_TASK_STEP";
/// Slurm's number of array tasks.
pub const SLURM_TASK_COUNT: &str = "SLURM_ARRAY_TASK_COUNT";
/// Kubernetes' 0-based index of a pod in an Indexed Job.
pub const K8S_INDEX: &str = "JOB_COMPLETION_INDEX";
/// The number of shards when the index comes from [`K8S_INDEX`] (Kubernetes does not export
/// the job's `completions`).
pub const COUNT_ENV: &str = "BATON_SHARD_COUNT";

/// Errors choosing a shard.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardError {
    /// `--shard` is not `K/N`.
    #[error("shard `{0}` is not K/N: expected two whole numbers such as 2/8 (shard 2 of 8, numbered from 1)")]
    Syntax(String),
    /// `N` is 0.
    #[error("shard `{0}`: the number of shards N must be at least 1")]
    NoShards(String),
    /// `--shard-count` or `BATON_SHARD_COUNT` is 0.
    #[error("--shard-count/{COUNT_ENV} is 0: the number of shards must be at least 1")]
    ZeroCount,
    /// `K` is 0 or above `N`.
    #[error("shard `{text}`: K must be 1 to {count} (shards are numbered from 1)")]
    OutOfRange {
        /// What was given.
        text: String,
        /// `N`.
        count: usize,
    },
    /// A scheduler variable that is not what the scheduler sets.
    #[error("environment variable {var}={value:?} {why}")]
    BadEnv {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
        /// What is wrong with it.
        why: String,
    },
    /// Both Slurm's and Kubernetes' variables are set: which one numbers this process?
    #[error(
        "both {SLURM_TASK_ID} and {K8S_INDEX} are set, so the shard is ambiguous; pass --shard K/N"
    )]
    TwoSchedulers,
    /// A Kubernetes index without a count.
    #[error("{K8S_INDEX}={index} is set (a Kubernetes indexed job) but not the number of shards: pass --shard-count N (the job's completions) or set {COUNT_ENV}")]
    NoCount {
        /// The 0-based index.
        index: usize,
    },
    /// A count that contradicts the shard given or derived.
    #[error("--shard-count/{COUNT_ENV} says {count} shards but {source_name} says {shard}")]
    CountConflict {
        /// The count given.
        count: usize,
        /// The shard found.
        shard: Shard,
        /// Where it was found.
        source_name: &'static str,
    },
    /// A count with nothing to say which shard this process is.
    #[error("--shard-count/{COUNT_ENV} is {count} but neither --shard, {K8S_INDEX} nor {SLURM_TASK_ID} says which shard this process is")]
    CountWithoutIndex {
        /// The count given.
        count: usize,
    },
    /// A Slurm array whose ids are not an evenly stepped range (`--array=1,4,9`).
    #[error("the Slurm array has {count} tasks but ids {min}..={max} by {step} make {span}; for an array with gaps pass --shard K/N")]
    SlurmGaps {
        /// `SLURM_ARRAY_TASK_COUNT`.
        count: usize,
        /// `SLURM_ARRAY_TASK_MIN`.
        min: usize,
        /// `SLURM_ARRAY_TASK_MAX`.
        max: usize,
        /// `SLURM_ARRAY_TASK_STEP`.
        step: usize,
        /// The number of ids the range holds.
        span: usize,
    },
    /// Slurm's task id with neither its range nor its count.
    #[error("{SLURM_TASK_ID} is set but neither {SLURM_TASK_MIN}/{SLURM_TASK_MAX} nor {SLURM_TASK_COUNT}; pass --shard K/N")]
    SlurmNoRange,
}

/// Shard `index` of `count` (1-based): a contiguous run of a job's items.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shard {
    index: usize,
    count: usize,
}

impl Shard {
    /// The whole job in one process (`1/1`).
    pub const WHOLE: Shard = Shard { index: 1, count: 1 };

    /// Shard `index` of `count`, 1-based.
    pub fn new(index: usize, count: usize) -> Result<Self, ShardError> {
        let text = format!("{index}/{count}");
        if count == 0 {
            return Err(ShardError::NoShards(text));
        }
        if index == 0 || index > count {
            return Err(ShardError::OutOfRange { text, count });
        }
        Ok(Shard { index, count })
    }

    /// `K`, from 1.
    pub fn index(self) -> usize {
        self.index
    }

    /// `N`.
    pub fn count(self) -> usize {
        self.count
    }

    /// True for `1/1`: every item, and the summary is this process's to finish.
    pub fn is_whole(self) -> bool {
        self.count == 1
    }

    /// The items of a job of `total` items this shard does: shard K gets
    /// `[(K-1)·total/N, K·total/N)`, so shard sizes differ by at most one and the shards cover
    /// `0..total` once, in order (some are empty when `total < N`).
    pub fn range(self, total: usize) -> Range<usize> {
        let at = |k: usize| (k as u128 * total as u128 / self.count as u128) as usize;
        at(self.index - 1)..at(self.index)
    }

    /// `K-of-N`, how file names carry a shard.
    pub fn tag(self) -> String {
        format!("{}-of-{}", self.index, self.count)
    }

    /// The file a shard writes instead of `path`: `.shard-K-of-N` before its extension
    /// (`feats/notes.safetensors` -> `feats/notes.shard-2-of-8.safetensors`).
    pub fn file_for(self, path: &Path) -> PathBuf {
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let name = match path.extension() {
            Some(ext) => format!("{stem}.shard-{}.{}", self.tag(), ext.to_string_lossy()),
            None => format!("{stem}.shard-{}", self.tag()),
        };
        path.with_file_name(name)
    }

    /// Which shard this process is: `flag` (`--shard`) when given, else the scheduler's
    /// variables read through `env` (see the module doc), else the whole job. `count` is
    /// `--shard-count`; [`COUNT_ENV`] stands in for it when absent.
    pub fn resolve(
        flag: Option<Shard>,
        count: Option<usize>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Resolved, ShardError> {
        // Empty variables count as unset: job templates often export them blank.
        let var = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        let count = match count {
            Some(c) => Some(c),
            None => var(COUNT_ENV)
                .map(|v| env_number(COUNT_ENV, &v))
                .transpose()?,
        };
        if count == Some(0) {
            return Err(ShardError::ZeroCount);
        }
        let agree = |shard: Shard, source: ShardSource| match count {
            Some(c) if c != shard.count => Err(ShardError::CountConflict {
                count: c,
                shard,
                source_name: source.name(),
            }),
            _ => Ok(Resolved { shard, source }),
        };
        if let Some(shard) = flag {
            return agree(shard, ShardSource::Flag);
        }
        match (var(SLURM_TASK_ID), var(K8S_INDEX)) {
            (Some(_), Some(_)) => Err(ShardError::TwoSchedulers),
            (Some(id), None) => agree(slurm(&id, &var)?, ShardSource::Slurm),
            (None, Some(index)) => {
                let index = env_number(K8S_INDEX, &index)?;
                let Some(count) = count else {
                    return Err(ShardError::NoCount { index });
                };
                let shard =
                    Shard::new(index.saturating_add(1), count).map_err(|_| ShardError::BadEnv {
                        var: K8S_INDEX,
                        value: index.to_string(),
                        why: format!("is not below the number of shards, {count}"),
                    })?;
                Ok(Resolved {
                    shard,
                    source: ShardSource::Kubernetes,
                })
            }
            (None, None) => match count {
                Some(count) => Err(ShardError::CountWithoutIndex { count }),
                None => Ok(Resolved {
                    shard: Shard::WHOLE,
                    source: ShardSource::Whole,
                }),
            },
        }
    }
}

/// A whole number from a scheduler variable.
fn env_number(var: &'static str, value: &str) -> Result<usize, ShardError> {
    value.trim().parse().map_err(|_| ShardError::BadEnv {
        var,
        value: value.to_string(),
        why: "is not a whole number".into(),
    })
}

/// The shard of a Slurm array task: its position among the array's ids.
fn slurm(id: &str, var: &dyn Fn(&str) -> Option<String>) -> Result<Shard, ShardError> {
    let id = env_number(SLURM_TASK_ID, id)?;
    let number = |name: &'static str| var(name).map(|v| env_number(name, &v)).transpose();
    let (min, max, step, count) = (
        number(SLURM_TASK_MIN)?,
        number(SLURM_TASK_MAX)?,
        number(SLURM_TASK_STEP)?.unwrap_or(1),
        number(SLURM_TASK_COUNT)?,
    );
    let bad = |var: &'static str, value: usize, why: String| ShardError::BadEnv {
        var,
        value: value.to_string(),
        why,
    };
    if step == 0 {
        return Err(bad(SLURM_TASK_STEP, 0, "must be at least 1".into()));
    }
    match (min, max, count) {
        (Some(min), Some(max), _) => {
            if min > max {
                return Err(bad(
                    SLURM_TASK_MIN,
                    min,
                    format!("is above {SLURM_TASK_MAX}={max}"),
                ));
            }
            let span = (max - min) / step + 1;
            if let Some(count) = count.filter(|&c| c != span) {
                return Err(ShardError::SlurmGaps {
                    count,
                    min,
                    max,
                    step,
                    span,
                });
            }
            if id < min || id > max || (id - min) % step != 0 {
                return Err(bad(
                    SLURM_TASK_ID,
                    id,
                    format!("is not one of the array's ids {min}..={max} by {step}"),
                ));
            }
            Shard::new((id - min) / step + 1, span)
        }
        // Without the range the ids are taken as numbered from 0, as `--array=0-N` makes them.
        (_, _, Some(count)) => Shard::new(id.saturating_add(1), count).map_err(|_| {
            bad(
                SLURM_TASK_ID,
                id,
                format!(
                    "is not below {SLURM_TASK_COUNT}={count} (without {SLURM_TASK_MIN} ids are \
                     taken as numbered from 0)"
                ),
            )
        }),
        _ => Err(ShardError::SlurmNoRange),
    }
}

impl FromStr for Shard {
    type Err = ShardError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let text = s.trim();
        let (k, n) = text
            .split_once('/')
            .ok_or_else(|| ShardError::Syntax(s.to_string()))?;
        let number = |x: &str| -> Result<usize, ShardError> {
            let x = x.trim();
            if x.is_empty() || !x.bytes().all(|b| b.is_ascii_digit()) {
                return Err(ShardError::Syntax(s.to_string()));
            }
            x.parse().map_err(|_| ShardError::Syntax(s.to_string()))
        };
        let (index, count) = (number(k)?, number(n)?);
        Shard::new(index, count).map_err(|e| match e {
            ShardError::NoShards(_) => ShardError::NoShards(text.to_string()),
            ShardError::OutOfRange { count, .. } => ShardError::OutOfRange {
                text: text.to_string(),
                count,
            },
            other => other,
        })
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// Where a process's shard came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardSource {
    /// Nothing asked for shards: the whole job.
    Whole,
    /// `--shard K/N`.
    Flag,
    /// `SLURM_ARRAY_TASK_*`.
    Slurm,
    /// `JOB_COMPLETION_INDEX` (with `--shard-count` or `BATON_SHARD_COUNT`).
    Kubernetes,
}

impl ShardSource {
    /// How messages name it.
    pub fn name(self) -> &'static str {
        match self {
            ShardSource::Whole => "no --shard",
            ShardSource::Flag => "--shard",
            ShardSource::Slurm => SLURM_TASK_ID,
            ShardSource::Kubernetes => K8S_INDEX,
        }
    }
}

/// A process's shard and where it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resolved {
    /// The shard.
    pub shard: Shard,
    /// Where it came from.
    pub source: ShardSource,
}

/// Writes what `gather` returns with `write` until gathering again returns what was written,
/// and returns it: the lock-free way shards publish a summary of a shared folder (see the module
/// doc). `gather` must be a pure function of the item files on disk, which only ever grow while
/// shards run, so this ends.
pub fn settle<T: PartialEq, E>(
    mut gather: impl FnMut() -> Result<T, E>,
    mut write: impl FnMut(&T) -> Result<(), E>,
) -> Result<T, E> {
    let mut current = gather()?;
    loop {
        write(&current)?;
        let again = gather()?;
        if again == current {
            return Ok(current);
        }
        current = again;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    fn shard(k: usize, n: usize) -> Shard {
        Shard::new(k, n).expect("valid")
    }

    #[test]
    fn parses_k_of_n_and_refuses_the_rest_with_clear_messages() {
        assert_eq!("2/8".parse::<Shard>(), Ok(shard(2, 8)));
        assert_eq!(" 1/1 ".parse::<Shard>(), Ok(Shard::WHOLE));
        for (bad, why) in [
            ("0/3", "K must be 1 to 3"),
            ("4/3", "K must be 1 to 3"),
            ("1/0", "at least 1"),
            ("x", "is not K/N"),
            ("1/", "is not K/N"),
            ("-1/3", "is not K/N"),
            ("1/2/3", "is not K/N"),
            ("+1/3", "is not K/N"),
            ("99999999999999999999999/3", "is not K/N"),
        ] {
            let err = bad.parse::<Shard>().expect_err(bad).to_string();
            assert!(err.contains(why), "{bad}: {err}");
            assert!(err.contains(bad.trim()), "{bad}: names the input: {err}");
        }
        assert_eq!(shard(3, 8).to_string(), "3/8");
    }

    #[test]
    fn shards_cover_every_item_once_in_order_and_balanced() {
        for total in [0usize, 1, 2, 7, 8, 9, 100, 1001] {
            for n in [1usize, 2, 3, 8, 13] {
                let ranges: Vec<Range<usize>> = (1..=n).map(|k| shard(k, n).range(total)).collect();
                let flat: Vec<usize> = ranges.iter().cloned().flatten().collect();
                assert_eq!(flat, (0..total).collect::<Vec<_>>(), "{total} in {n}");
                let sizes: Vec<usize> = ranges.iter().map(|r| r.len()).collect();
                let (lo, hi) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
                assert!(hi - lo <= 1, "{total} in {n}: {sizes:?}");
            }
        }
        assert_eq!(shard(2, 3).range(9), 3..6);
        assert_eq!(Shard::WHOLE.range(5), 0..5);
        // no overflow at the edges of usize
        assert_eq!(shard(2, 2).range(usize::MAX).end, usize::MAX);
    }

    #[test]
    fn shard_files_carry_the_shard_before_the_extension() {
        let s = shard(2, 8);
        assert_eq!(
            s.file_for(Path::new("feats/notes.safetensors")),
            PathBuf::from("feats/notes.shard-2-of-8.safetensors")
        );
        assert_eq!(
            s.file_for(Path::new("out")),
            PathBuf::from("out.shard-2-of-8")
        );
        assert_eq!(
            s.file_for(Path::new("a.b.json")),
            PathBuf::from("a.b.shard-2-of-8.json")
        );
    }

    #[test]
    fn the_flag_wins_and_nothing_set_is_the_whole_job() {
        let slurm = env(&[(SLURM_TASK_ID, "3"), (SLURM_TASK_COUNT, "8")]);
        let r = Shard::resolve(Some(shard(1, 1)), None, &slurm).unwrap();
        assert_eq!((r.shard, r.source), (Shard::WHOLE, ShardSource::Flag));
        let r = Shard::resolve(None, None, env(&[])).unwrap();
        assert_eq!((r.shard, r.source), (Shard::WHOLE, ShardSource::Whole));
        // blank variables are unset
        let r = Shard::resolve(None, None, env(&[(SLURM_TASK_ID, ""), (K8S_INDEX, " ")])).unwrap();
        assert_eq!(r.shard, Shard::WHOLE);
    }

    #[test]
    fn slurm_arrays_number_shards_by_position() {
        let resolve = |vars: &[(&str, &str)]| Shard::resolve(None, None, env(vars));
        // --array=0-7
        let r = resolve(&[
            (SLURM_TASK_ID, "0"),
            (SLURM_TASK_MIN, "0"),
            (SLURM_TASK_MAX, "7"),
            (SLURM_TASK_COUNT, "8"),
        ])
        .unwrap();
        assert_eq!((r.shard, r.source), (shard(1, 8), ShardSource::Slurm));
        // --array=1-8
        let r = resolve(&[
            (SLURM_TASK_ID, "8"),
            (SLURM_TASK_MIN, "1"),
            (SLURM_TASK_MAX, "8"),
        ])
        .unwrap();
        assert_eq!(r.shard, shard(8, 8));
        // --array=10-16:2 is 10, 12, 14, 16
        let r = resolve(&[
            (SLURM_TASK_ID, "14"),
            (SLURM_TASK_MIN, "10"),
            (SLURM_TASK_MAX, "16"),
            (SLURM_TASK_STEP, "2"),
            (SLURM_TASK_COUNT, "4"),
        ])
        .unwrap();
        assert_eq!(r.shard, shard(3, 4));
        // only the count: ids from 0
        let r = resolve(&[(SLURM_TASK_ID, "2"), (SLURM_TASK_COUNT, "4")]).unwrap();
        assert_eq!(r.shard, shard(3, 4));
        for (vars, why) in [
            (
                vec![(SLURM_TASK_ID, "4"), (SLURM_TASK_COUNT, "4")],
                "not below SLURM_ARRAY_TASK_COUNT=4",
            ),
            (vec![(SLURM_TASK_ID, "4")], "neither"),
            (
                vec![(SLURM_TASK_ID, "x"), (SLURM_TASK_COUNT, "4")],
                "SLURM_ARRAY_TASK_ID=\"x\" is not a whole number",
            ),
            (
                vec![
                    (SLURM_TASK_ID, "4"),
                    (SLURM_TASK_MIN, "1"),
                    (SLURM_TASK_MAX, "9"),
                    (SLURM_TASK_COUNT, "3"),
                ],
                "array with gaps",
            ),
            (
                vec![
                    (SLURM_TASK_ID, "11"),
                    (SLURM_TASK_MIN, "10"),
                    (SLURM_TASK_MAX, "16"),
                    (SLURM_TASK_STEP, "2"),
                ],
                "not one of the array's ids",
            ),
            (
                vec![
                    (SLURM_TASK_ID, "1"),
                    (SLURM_TASK_MIN, "1"),
                    (SLURM_TASK_MAX, "4"),
                    (SLURM_TASK_STEP, "0"),
                ],
                "at least 1",
            ),
        ] {
            let err = resolve(&vars).expect_err(why).to_string();
            assert!(err.contains(why), "{vars:?}: {err}");
        }
    }

    #[test]
    fn kubernetes_indexes_need_a_count_from_the_flag_or_the_variable() {
        let pod = env(&[(K8S_INDEX, "0")]);
        let r = Shard::resolve(None, Some(4), &pod).unwrap();
        assert_eq!((r.shard, r.source), (shard(1, 4), ShardSource::Kubernetes));
        let r = Shard::resolve(None, None, env(&[(K8S_INDEX, "3"), (COUNT_ENV, "4")])).unwrap();
        assert_eq!(r.shard, shard(4, 4));
        // the flag's count is used over the variable's
        let r = Shard::resolve(None, Some(5), env(&[(K8S_INDEX, "3"), (COUNT_ENV, "4")])).unwrap();
        assert_eq!(r.shard, shard(4, 5));
        for (flag, count, vars, why) in [
            (None, None, vec![(K8S_INDEX, "0")], "--shard-count"),
            (
                None,
                Some(4),
                vec![(K8S_INDEX, "4")],
                "not below the number of shards, 4",
            ),
            (None, Some(0), vec![(K8S_INDEX, "0")], "at least 1"),
            (
                None,
                None,
                vec![(K8S_INDEX, "0"), (COUNT_ENV, "two")],
                "not a whole number",
            ),
            (
                None,
                None,
                vec![
                    (K8S_INDEX, "0"),
                    (SLURM_TASK_ID, "0"),
                    (SLURM_TASK_COUNT, "2"),
                ],
                "both",
            ),
            (None, Some(3), vec![], "neither --shard"),
            (
                Some(shard(1, 2)),
                Some(3),
                vec![],
                "says 3 shards but --shard says 1/2",
            ),
            (
                None,
                Some(3),
                vec![(SLURM_TASK_ID, "0"), (SLURM_TASK_COUNT, "2")],
                "SLURM_ARRAY_TASK_ID says 1/2",
            ),
        ] {
            let err = Shard::resolve(flag, count, env(&vars))
                .expect_err(why)
                .to_string();
            assert!(err.contains(why), "{vars:?}: {err}");
        }
    }

    #[test]
    fn settle_rewrites_until_a_gather_matches_what_was_written() {
        // Another shard's items land while this one writes: the second gather sees more.
        let appear =
            std::cell::RefCell::new(vec![vec![1], vec![1, 2], vec![1, 2, 3], vec![1, 2, 3]]);
        let written = std::cell::RefCell::new(Vec::new());
        let last = settle(
            || Ok::<_, ()>(appear.borrow_mut().remove(0)),
            |v: &Vec<i32>| {
                written.borrow_mut().push(v.clone());
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(last, vec![1, 2, 3]);
        assert_eq!(*written.borrow(), vec![vec![1], vec![1, 2], vec![1, 2, 3]]);
    }
}
