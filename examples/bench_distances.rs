//! Times `baton fad`'s distances on random embedding rows shaped like musicgen-small's codec
//! latents (128 dimensions, 50 rows per second of audio): the Fréchet distance with every
//! file's leave-one-out change, and the kernel distance with every file's share.
//!
//! ```text
//! cargo run --release --example bench_distances -- [ROWS_PER_SET] [FILES]
//! ```
//! Defaults: 15000 rows per set (100 clips of 3 s) in 100 files. Prints one JSON line.

use std::time::Instant;

use baton::eval::distance::{
    frechet_leave_one_out, kernel_distance, median_pairwise_distance, FrechetReference, Gaussian,
};
use faer::Mat;

fn rows(n: usize, d: usize, seed: u64, shift: f64) -> Mat<f64> {
    Mat::from_fn(n, d, |i, j| {
        let h = baton::seed::splitmix64(seed ^ ((i * d + j) as u64).wrapping_mul(0x9E37_79B9));
        baton::seed::unit_from_hash(h) * 2.0 - 1.0 + shift
    })
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let n = args.first().copied().unwrap_or(15_000);
    let files = args.get(1).copied().unwrap_or(100).clamp(1, n);
    let d = 128;
    let (x, y) = (rows(n, d, 1, 0.0), rows(n, d, 2, 0.05));
    let per = n / files;
    let groups: Vec<_> = (0..files)
        .map(|f| f * per..if f + 1 == files { n } else { (f + 1) * per })
        .collect();

    let t = Instant::now();
    let reference = FrechetReference::new(Gaussian::fit(x.as_ref()).unwrap()).unwrap();
    let fad = reference
        .distance(&Gaussian::fit(y.as_ref()).unwrap())
        .unwrap();
    let fad_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    frechet_leave_one_out(&reference, y.as_ref(), &groups).unwrap();
    let loo_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let _ = baton::rfm::dense::mat_mul(x.as_ref(), y.as_ref().transpose());
    eprintln!(
        "one {n}x{n}x{d} product: {:.3} s",
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let h = median_pairwise_distance(x.as_ref());
    let median_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let kad = kernel_distance(x.as_ref(), y.as_ref(), &groups, Some(h)).unwrap();
    let kad_s = t.elapsed().as_secs_f64();
    println!(
        "{{\"rows_per_set\": {n}, \"dim\": {d}, \"files\": {files}, \"fad\": {fad}, \"fad_s\": \
         {fad_s:.3}, \"fad_leave_one_out_s\": {loo_s:.3}, \"median_s\": {median_s:.3}, \"kad\": {}, \"kad_with_shares_s\": {kad_s:.3}}}",
        kad.kad()
    );
}
