//! `--shard K/N` and `--shard-count N`, shared by the verbs that scale out (dataset, features,
//! sweep, eval): parsing, the scheduler's environment, and the one line that says which shard
//! a process is.

use baton::shard::{Resolved, Shard, ShardSource};
use clap::Args;

fn parse_shard(s: &str) -> Result<Shard, String> {
    s.parse()
        .map_err(|e: baton::shard::ShardError| e.to_string())
}

/// Which part of the job this process does.
#[derive(Args, Debug, Clone, Default)]
pub struct ShardArgs {
    /// Do only shard K of N (1-based) of the items, so that N processes (a Slurm array, a
    /// Kubernetes Indexed Job) together do the whole job, each item exactly as one process
    /// would. Default: from SLURM_ARRAY_TASK_ID (with SLURM_ARRAY_TASK_MIN/MAX/STEP, or
    /// SLURM_ARRAY_TASK_COUNT with ids from 0), or from Kubernetes' 0-based
    /// JOB_COMPLETION_INDEX with --shard-count; the whole job when none is set. `--shard 1/1`
    /// ignores the environment.
    #[arg(long, value_name = "K/N", value_parser = parse_shard)]
    pub shard: Option<Shard>,
    /// The number of shards N when the shard's index comes from JOB_COMPLETION_INDEX
    /// (Kubernetes does not export the job's completions) [env: BATON_SHARD_COUNT].
    #[arg(long, value_name = "N")]
    pub shard_count: Option<usize>,
}

impl ShardArgs {
    /// This process's shard, from the flags or the environment; says so on stderr when it is
    /// not the whole job, or when it came from the environment.
    pub fn resolve(&self) -> miette::Result<Shard> {
        let Resolved { shard, source } =
            Shard::resolve(self.shard, self.shard_count, |k| std::env::var(k).ok())
                .map_err(|e| miette::miette!("{e}"))?;
        match source {
            ShardSource::Whole => {}
            ShardSource::Flag if shard.is_whole() => {}
            ShardSource::Flag => eprintln!("shard {shard}"),
            other => eprintln!("shard {shard} (from {})", other.name()),
        }
        Ok(shard)
    }
}
