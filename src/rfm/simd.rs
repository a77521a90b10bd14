//! Which instruction set the RFM's elementwise loops run with, picked once at run time.
//!
//! The crate is built for baseline x86-64 (SSE2), where a loop of f64 arithmetic runs two lanes
//! at a time. The kernel's maps ([`super::kernel`]) are compiled three times: for AVX-512 (8 f64
//! lanes), for AVX2 with FMA (4), and for the baseline; [`Simd::detect`] picks the best this CPU
//! has, or the one `BATON_RFM_SIMD` names (`avx512`, `avx2`, `baseline`) when the CPU runs it, for
//! benchmarks that stand in for an older CPU class. The GEMMs are faer's, which dispatch on their
//! own (`tests/reference/build_avx2_rfm.sh` builds a baton whose faer stops at AVX2). Tests run
//! every level the machine has through [`Simd::available`], so the paths a session's CPU does not
//! pick stay checked too.

use std::sync::OnceLock;

/// An instruction set level for the elementwise loops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Simd {
    /// AVX-512 F/DQ/VL with AVX2 and FMA (Intel Xeon since Skylake-SP, AMD Zen 4).
    Avx512,
    /// AVX2 with FMA (x86-64 since about 2013).
    Avx2,
    /// Whatever the build targets (SSE2 on x86-64; the only level elsewhere).
    Baseline,
}

impl Simd {
    /// The level the loops use (decided once): the best this CPU supports, or the one
    /// `BATON_RFM_SIMD` names when the CPU supports it.
    pub fn detect() -> Simd {
        static CHOSEN: OnceLock<Simd> = OnceLock::new();
        *CHOSEN.get_or_init(|| {
            Simd::choose(
                &Simd::available(),
                std::env::var("BATON_RFM_SIMD").ok().as_deref(),
            )
        })
    }

    /// The level named `pinned` when it is among `available`, else the best available.
    fn choose(available: &[Simd], pinned: Option<&str>) -> Simd {
        pinned
            .and_then(|name| available.iter().copied().find(|s| s.name() == name))
            .unwrap_or(available[0])
    }

    /// The level's name, as `BATON_RFM_SIMD` takes it.
    pub fn name(self) -> &'static str {
        match self {
            Simd::Avx512 => "avx512",
            Simd::Avx2 => "avx2",
            Simd::Baseline => "baseline",
        }
    }

    /// Every level this CPU supports, best first (always ends with [`Simd::Baseline`]).
    pub fn available() -> Vec<Simd> {
        let mut levels = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512dq")
                && std::arch::is_x86_feature_detected!("avx512vl")
                && std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                levels.push(Simd::Avx512);
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                levels.push(Simd::Avx2);
            }
        }
        levels.push(Simd::Baseline);
        levels
    }
}

/// Defines `$name(simd, args...)`, which runs the `#[inline(always)]` function `$body` compiled
/// for the given level. `simd` must be one that [`Simd::available`] lists. `$body` takes a
/// `const FMA: bool`, true where fused multiply-adds are available (see [`super::real::madd`]).
macro_rules! multiversion {
    ($(#[$doc:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) => $body:ident) => {
        $(#[$doc])*
        $vis fn $name(simd: $crate::rfm::simd::Simd, $($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx512dq,avx512vl,avx2,fma")]
            unsafe fn avx512($($arg: $ty),*) {
                $body::<true>($($arg),*)
            }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            unsafe fn avx2($($arg: $ty),*) {
                $body::<true>($($arg),*)
            }
            match simd {
                // SAFETY: `Simd::available` lists a level only when the CPU has its features.
                #[cfg(target_arch = "x86_64")]
                $crate::rfm::simd::Simd::Avx512 => unsafe { avx512($($arg),*) },
                // SAFETY: as above.
                #[cfg(target_arch = "x86_64")]
                $crate::rfm::simd::Simd::Avx2 => unsafe { avx2($($arg),*) },
                _ => $body::<false>($($arg),*),
            }
        }
    };
}
pub(crate) use multiversion;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pinned_level_is_used_only_where_the_cpu_has_it() {
        let all = [Simd::Avx512, Simd::Avx2, Simd::Baseline];
        assert_eq!(Simd::choose(&all, None), Simd::Avx512);
        assert_eq!(Simd::choose(&all, Some("avx2")), Simd::Avx2);
        assert_eq!(Simd::choose(&all, Some("baseline")), Simd::Baseline);
        // Unknown names and levels this CPU lacks fall back to the best it has.
        assert_eq!(Simd::choose(&all, Some("sse9")), Simd::Avx512);
        let old = [Simd::Avx2, Simd::Baseline];
        assert_eq!(Simd::choose(&old, Some("avx512")), Simd::Avx2);
        assert_eq!(Simd::available().last(), Some(&Simd::Baseline));
    }
}
