//! How the fit loop holds the Mahalanobis matrix `M`: explicitly (`d x d`, the "primal" form) or
//! through the training points, `M = X' C X` with `C` (`n x n`, the "dual" form).
//!
//! Every M after the first update is an AGOP, `X' A X` up to scale, so the dual form is exact.
//! It replaces the `n d^2` products of each round by `n^3` ones plus one `n^2 d`, which pays when
//! there are fewer training points than features (MusicRFM's binary probes: n = 1,158 and
//! d = 2,048). Both forms give the same numbers up to rounding.

use faer::Mat;

use super::agop::{agop, agop_dual};
use super::dense::{col_dots, mat_mul, row_dots, scale, sym_mul};

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
pub enum Rep {
    /// `M` itself.
    Primal(Option<Mat<f64>>),
    /// `C` with `M = X' C X`.
    Dual(Option<Mat<f64>>),
}

/// Training and validation inputs with the Gram matrices the dual form needs.
pub struct Points<'a> {
    /// Training points (`n x d`).
    pub x: &'a Mat<f64>,
    /// Validation points (`m x d`).
    pub xv: &'a Mat<f64>,
    /// `X X'` and `X_val X'` (dual form only).
    grams: Option<(Mat<f64>, Mat<f64>)>,
}

impl<'a> Points<'a> {
    /// Prepares the inputs for `form` (already resolved).
    pub fn new(x: &'a Mat<f64>, xv: &'a Mat<f64>, form: Form) -> Self {
        let grams = (form == Form::Dual).then(|| {
            (
                sym_mul(x.as_ref(), x.transpose()),
                mat_mul(xv.as_ref(), x.transpose()),
            )
        });
        Points { x, xv, grams }
    }
}

/// What one round needs from M.
pub struct Geometry {
    /// `x_i' M x_j` for the training points (becomes the kernel matrix).
    pub cross: Mat<f64>,
    /// `x_i' M x_i`.
    pub norms: Vec<f64>,
    /// `v_i' M x_j` for validation rows against training points.
    pub val_cross: Mat<f64>,
    /// `v_i' M v_i`.
    pub val_norms: Vec<f64>,
    /// `XM` (primal) or `E = X X' C` (dual; None when M = I), for the gradient step.
    factor: Option<Mat<f64>>,
}

impl Rep {
    /// The starting point, `M = I`, in `form`.
    pub fn identity(form: Form) -> Rep {
        match form {
            Form::Dual => Rep::Dual(None),
            _ => Rep::Primal(None),
        }
    }

    /// Cross products and norms under the current M.
    pub fn geometry(&self, p: &Points<'_>) -> Geometry {
        match (self, &p.grams) {
            (Rep::Dual(c), Some((g0, gv))) => match c {
                None => Geometry {
                    cross: g0.clone(),
                    norms: (0..g0.nrows()).map(|i| g0[(i, i)]).collect(),
                    val_cross: gv.clone(),
                    val_norms: row_dots(p.xv, p.xv),
                    factor: None,
                },
                Some(c) => {
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
            },
            (Rep::Primal(m), _) | (Rep::Dual(m), None) => {
                let (xm, vm) = match m {
                    Some(m) => (
                        mat_mul(p.x.as_ref(), m.as_ref()),
                        mat_mul(p.xv.as_ref(), m.as_ref()),
                    ),
                    None => (p.x.clone(), p.xv.clone()),
                };
                Geometry {
                    cross: sym_mul(xm.as_ref(), p.x.transpose()),
                    norms: row_dots(&xm, p.x),
                    val_cross: mat_mul(vm.as_ref(), p.x.transpose()),
                    val_norms: row_dots(&vm, p.xv),
                    factor: Some(xm),
                }
            }
        }
    }

    /// The next M: `AGOP / max(AGOP)` of the predictor `alpha` fitted under `geo`, with the
    /// gradient weights `grad`.
    pub fn update(
        &self,
        p: &Points<'_>,
        geo: &Geometry,
        alpha: &Mat<f64>,
        grad: &Mat<f64>,
        center: bool,
    ) -> Rep {
        match self {
            Rep::Primal(_) => {
                let xm = geo.factor.as_ref().unwrap_or(p.x);
                let mut g = agop(xm, alpha, grad, center);
                let max = super::dense::max_entry(&g);
                scale(&mut g, 1.0 / (max + 1e-30));
                Rep::Primal(Some(g))
            }
            Rep::Dual(_) => {
                let mut a = agop_dual(geo.factor.as_ref(), alpha, grad, center);
                // The AGOP X'AX is PSD, so its largest entry is its largest diagonal entry.
                let ax = mat_mul(a.as_ref(), p.x.as_ref());
                let max = col_dots(p.x, &ax)
                    .into_iter()
                    .fold(f64::NEG_INFINITY, f64::max);
                scale(&mut a, 1.0 / (max + 1e-30));
                Rep::Dual(Some(a))
            }
        }
    }

    /// M as a `d x d` matrix.
    pub fn materialise(&self, x: &Mat<f64>) -> Mat<f64> {
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
pub fn concept_matrix(
    rep: &Rep,
    p: &Points<'_>,
    geo: &Geometry,
    alpha: &Mat<f64>,
    grad: &Mat<f64>,
    center: bool,
) -> Mat<f64> {
    let mut g = match rep {
        Rep::Primal(_) => agop(geo.factor.as_ref().unwrap_or(p.x), alpha, grad, center),
        Rep::Dual(_) => {
            let a = agop_dual(geo.factor.as_ref(), alpha, grad, center);
            let ax = mat_mul(a.as_ref(), p.x.as_ref());
            sym_mul(p.x.transpose(), ax.as_ref())
        }
    };
    let max = super::dense::max_entry(&g);
    scale(&mut g, 1.0 / (max + 1e-30));
    g
}
