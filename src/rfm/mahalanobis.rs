//! How the fit loop holds the Mahalanobis matrix `M`: explicitly (`d x d`, the "primal" form) or
//! through the training points, `M = X' C X` with `C` (`n x n`, the "dual" form).
//!
//! Every M after the first update is an AGOP, `X' A X` up to scale, so the dual form is exact.
//! It replaces the `n d^2` products of each round by `n^3` ones plus one `n^2 d`, which pays when
//! there are fewer training points than features (MusicRFM's binary probes: n = 1,158 and
//! d = 2,048). Both forms give the same numbers up to rounding.

use std::sync::OnceLock;

use faer::Mat;

use super::agop::{agop, agop_dual};
use super::dense::{col_dots, mat_mul, max_entry, row_dots, scale, sym_mul};
use super::real::Real;

/// Which form the loop uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// Pick by size: dual when `n < 0.9 d`.
    Auto,
    /// Keep `M` (`d x d`).
    Primal,
    /// Keep `C` with `M = X' C X` (`n x n`).
    Dual,
}

impl Form {
    /// Resolves [`Form::Auto`] for `n` training points of width `d`.
    pub fn resolve(self, n: usize, d: usize) -> Form {
        match self {
            Form::Auto if (n as f64) < 0.9 * d as f64 => Form::Dual,
            Form::Auto => Form::Primal,
            f => f,
        }
    }
}

/// The current M in one of the two forms (`None` = identity).
#[derive(Debug, Clone)]
pub enum Rep<T: Real> {
    /// `M` itself.
    Primal(Option<Mat<T>>),
    /// `C` with `M = X' C X`.
    Dual(Option<Mat<T>>),
}

/// Training and validation inputs in the working precision, with what does not depend on M's
/// updates: the geometry under `M = I` (the dual form's Gram matrices), computed once and
/// shared by every fit on these points (a search's draws).
pub struct Points<T: Real> {
    /// Training points (`n x d`).
    pub x: Mat<T>,
    /// Validation points (`m x d`).
    pub xv: Mat<T>,
    form: Form,
    identity: OnceLock<Geometry<T>>,
}

impl<T: Real> Points<T> {
    /// Prepares the inputs for `form` (already resolved), in precision `T`.
    pub fn new(x: &Mat<f64>, xv: &Mat<f64>, form: Form) -> Self {
        Points {
            x: T::narrow(x.clone()),
            xv: T::narrow(xv.clone()),
            form,
            identity: OnceLock::new(),
        }
    }

    /// Computes the geometry under `M = I` now (it is otherwise computed when first needed).
    pub fn prepare(&self) {
        self.identity();
    }

    /// The geometry under `M = I`: Gram matrices of the raw points.
    fn identity(&self) -> &Geometry<T> {
        self.identity.get_or_init(|| {
            let cross = sym_mul(self.x.as_ref(), self.x.transpose());
            Geometry {
                norms: (0..cross.nrows()).map(|i| cross[(i, i)]).collect(),
                val_cross: mat_mul(self.xv.as_ref(), self.x.transpose()),
                val_norms: row_dots(&self.xv, &self.xv),
                cross,
                factor: None,
            }
        })
    }
}

/// What one round needs from M.
#[derive(Clone)]
pub struct Geometry<T: Real> {
    /// `x_i' M x_j` for the training points (becomes the kernel matrix).
    pub cross: Mat<T>,
    /// `x_i' M x_i`.
    pub norms: Vec<T>,
    /// `v_i' M x_j` for validation rows against training points.
    pub val_cross: Mat<T>,
    /// `v_i' M v_i`.
    pub val_norms: Vec<T>,
    /// `XM` (primal) or `E = X X' C` (dual), for the gradient step; None when M = I.
    factor: Option<Mat<T>>,
}

impl<T: Real> Rep<T> {
    /// The starting point, `M = I`, in `form`.
    pub fn identity(form: Form) -> Self {
        match form {
            Form::Dual => Rep::Dual(None),
            _ => Rep::Primal(None),
        }
    }

    /// Cross products and norms under the current M.
    pub fn geometry(&self, p: &Points<T>) -> Geometry<T> {
        match self {
            Rep::Primal(None) | Rep::Dual(None) => p.identity().clone(),
            Rep::Dual(Some(c)) if p.form == Form::Dual => {
                let base = p.identity();
                let (g0, gv) = (&base.cross, &base.val_cross);
                let e = mat_mul(g0.as_ref(), c.as_ref());
                let cross = sym_mul(e.as_ref(), g0.as_ref());
                let gvc = mat_mul(gv.as_ref(), c.as_ref());
                Geometry {
                    norms: (0..cross.nrows()).map(|i| cross[(i, i)]).collect(),
                    val_cross: mat_mul(gvc.as_ref(), g0.as_ref()),
                    val_norms: row_dots(&gvc, gv),
                    cross,
                    factor: Some(e),
                }
            }
            Rep::Primal(Some(m)) | Rep::Dual(Some(m)) => {
                let xm = mat_mul(p.x.as_ref(), m.as_ref());
                let vm = mat_mul(p.xv.as_ref(), m.as_ref());
                Geometry {
                    cross: sym_mul(xm.as_ref(), p.x.transpose()),
                    norms: row_dots(&xm, &p.x),
                    val_cross: mat_mul(vm.as_ref(), p.x.transpose()),
                    val_norms: row_dots(&vm, &p.xv),
                    factor: Some(xm),
                }
            }
        }
    }

    /// The next M: `AGOP / max(AGOP)` of the predictor `alpha` fitted under `geo`, with the
    /// gradient weights `grad`.
    pub fn update(
        &self,
        p: &Points<T>,
        geo: &Geometry<T>,
        alpha: &Mat<T>,
        grad: &Mat<T>,
        center: bool,
    ) -> Self {
        match self {
            Rep::Primal(_) => {
                let xm = geo.factor.as_ref().unwrap_or(&p.x);
                let mut g = agop(xm, alpha, grad, center);
                let max = max_entry(&g);
                scale(&mut g, T::of(1.0 / (max + 1e-30)));
                Rep::Primal(Some(g))
            }
            Rep::Dual(_) => {
                let mut a = agop_dual(geo.factor.as_ref(), alpha, grad, center);
                // The AGOP X'AX is PSD, so its largest entry is its largest diagonal entry.
                let ax = mat_mul(a.as_ref(), p.x.as_ref());
                let max = col_dots(&p.x, &ax)
                    .into_iter()
                    .fold(f64::NEG_INFINITY, |m, v| m.max(v.to_f64()));
                scale(&mut a, T::of(1.0 / (max + 1e-30)));
                Rep::Dual(Some(a))
            }
        }
    }

    /// M as a `d x d` matrix.
    pub fn materialise(&self, x: &Mat<T>) -> Mat<T> {
        let d = x.ncols();
        match self {
            Rep::Primal(Some(m)) => m.clone(),
            Rep::Dual(Some(c)) => {
                let cx = mat_mul(c.as_ref(), x.as_ref());
                sym_mul(x.transpose(), cx.as_ref())
            }
            _ => Mat::identity(d, d),
        }
    }
}

/// The normalised `d x d` AGOP of the predictor `alpha` fitted under `rep` (its concept matrix).
pub fn concept_matrix<T: Real>(
    rep: &Rep<T>,
    p: &Points<T>,
    geo: &Geometry<T>,
    alpha: &Mat<T>,
    grad: &Mat<T>,
    center: bool,
) -> Mat<T> {
    let mut g = match rep {
        Rep::Primal(_) => agop(geo.factor.as_ref().unwrap_or(&p.x), alpha, grad, center),
        Rep::Dual(_) => {
            let a = agop_dual(geo.factor.as_ref(), alpha, grad, center);
            let ax = mat_mul(a.as_ref(), p.x.as_ref());
            sym_mul(p.x.transpose(), ax.as_ref())
        }
    };
    let max = max_entry(&g);
    scale(&mut g, T::of(1.0 / (max + 1e-30)));
    g
}
