//! The two precisions the RFM's matrix products run in ([`Real`]: `f64`, and `f32` for the fast
//! mode) and branch-free f64 `exp`/`ln` for the kernel's elementwise maps.
//!
//! The kernel turns every entry of an `n x n` matrix into `exp(-d^q / L^q)`. glibc's `exp` is a
//! scalar call with a slow path for results that underflow, which the far pairs of a trained
//! Mahalanobis metric hit all the time: it took 40 % of a fit. These versions are plain
//! arithmetic on the float's bits (Cody-Waite reduction, a Taylor polynomial, the exponent
//! written into the bits), so the loops around them vectorise; see [`super::simd`] for the
//! instruction sets they are compiled for. Both are accurate to a few units in the last place
//! (tested against the standard library), for `exp` on `x <= 709` and for `ln` on positive
//! normal numbers (0 and subnormals give `-inf`).

use std::fmt::Debug;

use faer::Mat;

use super::dense::{col, col_mut};
use std::iter::Sum;
use std::ops::{Add, AddAssign, Div, Mul, MulAssign, Neg, Sub, SubAssign};

/// A float the RFM can compute in: `f64` (reference precision) or `f32`.
pub trait Real:
    faer::traits::RealField
    + Copy
    + Send
    + Sync
    + Debug
    + PartialOrd
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
    + SubAssign
    + MulAssign
    + Sum
    + 'static
{
    /// 0.
    const ZERO: Self;
    /// 1.
    const ONE: Self;
    /// The nearest value to `v`.
    fn of(v: f64) -> Self;
    /// As f64 (exact).
    fn to_f64(self) -> f64;
    /// True unless infinite or NaN.
    fn is_finite(self) -> bool;
    /// `m` in this precision (moved as it is when this is f64).
    fn narrow(m: Mat<f64>) -> Mat<Self>;
    /// `m` in f64 (moved as it is when this is f64).
    fn widen(m: Mat<Self>) -> Mat<f64>;
    /// A copy of `m` in f64.
    fn to_wide(m: &Mat<Self>) -> Mat<f64>;
    /// `factor * m` in this precision, in one pass.
    fn narrow_scaled(m: &Mat<f64>, factor: f64) -> Mat<Self>;
}

impl Real for f64 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    #[inline(always)]
    fn of(v: f64) -> Self {
        v
    }
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self
    }
    #[inline(always)]
    fn is_finite(self) -> bool {
        f64::is_finite(self)
    }
    fn narrow(m: Mat<f64>) -> Mat<Self> {
        m
    }
    fn widen(m: Mat<Self>) -> Mat<f64> {
        m
    }
    fn to_wide(m: &Mat<Self>) -> Mat<f64> {
        m.clone()
    }
    fn narrow_scaled(m: &Mat<f64>, factor: f64) -> Mat<Self> {
        map_entries(m, |v| v * factor)
    }
}

impl Real for f32 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    #[inline(always)]
    fn of(v: f64) -> Self {
        v as f32
    }
    #[inline(always)]
    fn to_f64(self) -> f64 {
        f64::from(self)
    }
    #[inline(always)]
    fn is_finite(self) -> bool {
        f32::is_finite(self)
    }
    fn narrow(m: Mat<f64>) -> Mat<Self> {
        map_entries(&m, |v| v as f32)
    }
    fn widen(m: Mat<Self>) -> Mat<f64> {
        Self::to_wide(&m)
    }
    fn to_wide(m: &Mat<Self>) -> Mat<f64> {
        map_entries(m, f64::from)
    }
    fn narrow_scaled(m: &Mat<f64>, factor: f64) -> Mat<Self> {
        map_entries(m, |v| (v * factor) as f32)
    }
}

/// `f` of every entry of `m`, column by column over slices so that the loop vectorises:
/// `Mat::from_fn` writes entry by entry through an indexing closure, which took 3 % of a
/// search's time (perf) for the f32 gram's copy to f64 alone.
fn map_entries<A: Real, B: Real>(m: &Mat<A>, f: impl Fn(A) -> B) -> Mat<B> {
    let mut out = Mat::<B>::zeros(m.nrows(), m.ncols());
    for j in 0..m.ncols() {
        for (o, &v) in col_mut(&mut out, j).iter_mut().zip(col(m, j)) {
            *o = f(v);
        }
    }
    out
}

/// `e^x` for f64: `x = k ln2 + r` with `|r| <= ln2 / 2`, `e^r` by its Taylor series to `r^13`
/// (truncation below 5e-18), `2^k` written into the exponent bits. Results below `e^-708`
/// (under 3.3e-308, at the edge of the subnormals) are 0.
#[inline(always)]
pub fn exp_f64(x: f64) -> f64 {
    exp_with::<false>(x)
}

/// `a * b + c`, fused into one rounding when `FMA` (for code compiled with the FMA feature;
/// elsewhere `mul_add` would be a slow library call).
#[inline(always)]
pub fn madd<const FMA: bool>(a: f64, b: f64, c: f64) -> f64 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// [`exp_f64`], its polynomial in fused multiply-adds when `FMA`.
#[inline(always)]
pub fn exp_with<const FMA: bool>(x: f64) -> f64 {
    // ln 2 split so that k * LN2_HI is exact for |k| < 2^11 (fdlibm's constants).
    const LN2_HI: f64 = f64::from_bits(0x3fe6_2e42_fee0_0000);
    const LN2_LO: f64 = f64::from_bits(0x3dea_39ef_3579_3c76);
    // Adding 1.5 * 2^52 rounds to an integer held in the low bits of the mantissa.
    const SHIFT: f64 = 6_755_399_441_055_744.0;
    let xc = x.clamp(-708.0, 709.0);
    let kf = xc * std::f64::consts::LOG2_E + SHIFT;
    let k = kf - SHIFT;
    let r = (xc - k * LN2_HI) - k * LN2_LO;
    let mut p = 1.0 / 6_227_020_800.0;
    for c in [
        1.0 / 479_001_600.0,
        1.0 / 39_916_800.0,
        1.0 / 3_628_800.0,
        1.0 / 362_880.0,
        1.0 / 40_320.0,
        1.0 / 5_040.0,
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
        1.0,
    ] {
        p = madd::<FMA>(p, r, c);
    }
    let k_int = kf.to_bits().wrapping_sub(SHIFT.to_bits()) as i64;
    let scale = f64::from_bits(((k_int + 1023) as u64) << 52);
    if x < -708.0 {
        0.0
    } else {
        p * scale
    }
}

/// `ln x` for f64: `x = 2^e m` with `m` in `[sqrt(1/2), sqrt(2))`, `ln m = 2 atanh(f)` with
/// `f = (m - 1) / (m + 1)` (`|f| < 0.172`) by its series to `f^23`.
#[inline(always)]
pub fn ln_f64(x: f64) -> f64 {
    ln_with::<false>(x)
}

/// [`ln_f64`], its series in fused multiply-adds when `FMA`.
#[inline(always)]
pub fn ln_with<const FMA: bool>(x: f64) -> f64 {
    let bits = x.to_bits();
    let mut e = ((bits >> 52) & 0x7ff) as i64 - 1023;
    let mut m = f64::from_bits((bits & 0x000f_ffff_ffff_ffff) | 0x3ff0_0000_0000_0000);
    let big = m > std::f64::consts::SQRT_2;
    m = if big { m * 0.5 } else { m };
    e += i64::from(big);
    let f = (m - 1.0) / (m + 1.0);
    let s = f * f;
    let mut p = 1.0 / 23.0;
    for c in [
        1.0 / 21.0,
        1.0 / 19.0,
        1.0 / 17.0,
        1.0 / 15.0,
        1.0 / 13.0,
        1.0 / 11.0,
        1.0 / 9.0,
        1.0 / 7.0,
        1.0 / 5.0,
        1.0 / 3.0,
        1.0,
    ] {
        p = madd::<FMA>(p, s, c);
    }
    let ln = e as f64 * std::f64::consts::LN_2 + 2.0 * f * p;
    if x < f64::MIN_POSITIVE {
        if x < 0.0 {
            f64::NAN
        } else {
            f64::NEG_INFINITY
        }
    } else if x == f64::INFINITY {
        x
    } else {
        ln
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ulps64(a: f64, b: f64) -> f64 {
        ((a - b) / (b.abs() * f64::EPSILON).max(f64::MIN_POSITIVE)).abs()
    }

    #[test]
    fn exp_matches_std() {
        let mut worst = 0.0f64;
        for i in 0..200_000 {
            let x = -708.0 + 1417.0 * (i as f64 / 200_000.0);
            worst = worst.max(ulps64(exp_f64(x), x.exp()));
            worst = worst.max(ulps64(exp_with::<true>(x), x.exp()));
        }
        assert!(worst < 4.0, "exp_f64 off by {worst} ulp");
        assert_eq!(exp_f64(0.0), 1.0);
        assert_eq!(exp_f64(-800.0), 0.0);
        assert_eq!(exp_f64(f64::NEG_INFINITY), 0.0);
        assert!(exp_f64(f64::NAN).is_nan());
    }

    #[test]
    fn ln_matches_std() {
        let mut worst = 0.0f64;
        let mut x = 1e-300f64;
        while x < 1e300 {
            let want = x.ln();
            for got in [ln_f64(x), ln_with::<true>(x)] {
                // Near 1, where ln is near 0, the absolute error is what matters.
                let err = if want.abs() < 1e-3 {
                    (got - want).abs() / f64::EPSILON
                } else {
                    ulps64(got, want)
                };
                worst = worst.max(err);
            }
            x *= 1.0137;
        }
        assert!(worst < 4.0, "ln_f64 off by {worst} ulp");
        assert_eq!(ln_f64(0.0), f64::NEG_INFINITY);
        assert!(ln_f64(-1.0).is_nan());
        assert_eq!(ln_f64(1.0), 0.0);
    }
}
