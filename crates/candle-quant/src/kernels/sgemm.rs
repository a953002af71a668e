//! f32 matrix products `c = a · bᵀ` with `b` repacked once: the dense layers of an
//! f32 encoder and its attention.
//!
//! `b` ([n, k], a linear layer's weight [out, in]) is stored in groups of 4 panels of
//! [`PANEL`] of its rows, k-major with the group's panels side by side:
//! `group[g][kk][p·16 + j] = b[(4g + p)·16 + j][kk]`, zero-padded to whole panels and
//! 64-byte aligned, so a k step of a tile reads one contiguous stretch. A micro-kernel then keeps a tile of up to
//! [`MR`] rows of `c` × 64 columns in registers, reads one vector of 16 `b` values
//! per panel and k step, and broadcasts one `a` value per row: no transposes, no
//! copies of `a`, and the k loop is blocked by [`KC`] so a tile's `a` values stay in
//! L1 while the panels stream from L2.
//!
//! Every element of `c` is one sequential chain of fused multiply-adds over k (or, in
//! the portable kernel, multiplies and adds) on one thread, so results do not depend
//! on the thread count, on the tiling, or on the other rows of `a`.

use std::ops::Range;

use super::{global_pool, Isa};
use crate::quant::QuantError;

/// Rows of `b` (columns of `c`) per panel: one AVX-512 vector.
pub const PANEL: usize = 16;
/// Panels a tile covers (64 columns of `c`).
const GROUP: usize = 4;
/// Rows of `c` a micro-kernel keeps in registers (6 × 4 AVX-512 accumulators).
pub(crate) const MR: usize = 6;
/// k values per pass of a tile (6 rows of `a` × 384 values are 9 KiB of L1).
pub(crate) const KC: usize = 384;
/// Rows of `c` per threaded task: with 64 columns, a task is ~100k multiply-adds per
/// 64 values of k, well above the pool's dispatch cost.
const TASK_ROWS: usize = 16 * MR;
/// Floats per 64-byte line, the alignment of the panels.
const LINE: usize = 16;

/// `b` [n, k] repacked for [`sgemm`] (see the module docs).
#[derive(Clone, Debug, Default)]
pub struct PackedB {
    n: usize,
    k: usize,
    data: Vec<f32>,
    /// Index of the first panel value in `data` (its 64-byte aligned start).
    start: usize,
}

impl PackedB {
    /// Packs `b`: [n, k] row-major (a linear layer's weight [out_features, in_features]).
    pub fn from_rows(b: &[f32], n: usize, k: usize) -> Result<PackedB, QuantError> {
        let mut packed = PackedB::default();
        packed.pack_rows(b, k, n, k)?;
        Ok(packed)
    }

    /// Rows of `b`: columns of the products.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Columns of `b`: the length of the dot products.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Repacks from `b` [n, k] with row stride `ldb`, reusing the allocation.
    pub fn pack_rows(
        &mut self,
        b: &[f32],
        ldb: usize,
        n: usize,
        k: usize,
    ) -> Result<(), QuantError> {
        check_strided(
            "PackedB::pack_rows",
            "b ((n - 1) * ldb + k, ldb >= k)",
            b,
            ldb,
            n,
            k,
        )?;
        self.reshape(n, k);
        let start = self.start;
        for j in 0..n {
            let (at, step) = self.place(j / PANEL, k);
            for (kk, &v) in b[j * ldb..j * ldb + k].iter().enumerate() {
                self.data[start + at + kk * step + j % PANEL] = v;
            }
        }
        Ok(())
    }

    /// Repacks from `bᵀ` [k, n] with row stride `ld` (`b`'s columns stored as rows,
    /// like the values of an attention head), reusing the allocation.
    pub fn pack_columns(
        &mut self,
        bt: &[f32],
        ld: usize,
        k: usize,
        n: usize,
    ) -> Result<(), QuantError> {
        check_strided(
            "PackedB::pack_columns",
            "bt ((k - 1) * ld + n, ld >= n)",
            bt,
            ld,
            k,
            n,
        )?;
        self.reshape(n, k);
        let start = self.start;
        for kk in 0..k {
            let row = &bt[kk * ld..kk * ld + n];
            for (p, chunk) in row.chunks(PANEL).enumerate() {
                let (at, step) = self.place(p, k);
                let at = start + at + kk * step;
                self.data[at..at + chunk.len()].copy_from_slice(chunk);
            }
        }
        Ok(())
    }

    /// Where panel `p`'s first value lies (from `start`), and the floats from one k
    /// step of its group to the next.
    fn place(&self, p: usize, k: usize) -> (usize, usize) {
        let (g, within) = (p / GROUP, p % GROUP);
        let step = self.group_panels(g) * PANEL;
        (g * GROUP * PANEL * k + within * PANEL, step)
    }

    /// Panels in group `g` (the last group may have fewer than [`GROUP`]).
    fn group_panels(&self, g: usize) -> usize {
        (self.n.div_ceil(PANEL) - g * GROUP).min(GROUP)
    }

    fn reshape(&mut self, n: usize, k: usize) {
        let len = n.div_ceil(PANEL) * PANEL * k;
        (self.n, self.k) = (n, k);
        self.data.clear();
        self.data.resize(len + LINE, 0.0);
        // Vec<f32> is only 4-byte aligned; start the panels on a cache line so no
        // vector load straddles two lines.
        self.start = self.data.as_ptr().align_offset(LINE * 4).min(LINE - 1);
    }

    fn panels(&self) -> &[f32] {
        &self.data[self.start..self.start + self.n.div_ceil(PANEL) * PANEL * self.k]
    }
}

/// A [rows, cols] matrix with row stride `ld` fits in `x`.
fn check_strided(
    op: &'static str,
    what: &'static str,
    x: &[f32],
    ld: usize,
    rows: usize,
    cols: usize,
) -> Result<(), QuantError> {
    let needed = match rows {
        0 => Some(0),
        _ => (rows - 1).checked_mul(ld).and_then(|v| v.checked_add(cols)),
    };
    match needed {
        Some(needed) if ld >= cols && x.len() >= needed => Ok(()),
        _ => Err(QuantError::SliceLength {
            op,
            what,
            expected: needed.unwrap_or(usize::MAX),
            got: x.len(),
        }),
    }
}

/// `c[i][j] = Σ_kk a[i][kk] · b[j][kk]` on the calling thread, for `a` [m, k] with row
/// stride `lda` and `c` [m, n] with row stride `ldc` (other values of `c` untouched).
pub fn sgemm(
    isa: Isa,
    a: &[f32],
    lda: usize,
    m: usize,
    b: &PackedB,
    c: &mut [f32],
    ldc: usize,
) -> Result<(), QuantError> {
    check_strided("sgemm", "a ((m - 1) * lda + k, lda >= k)", a, lda, m, b.k)?;
    check_strided("sgemm", "c ((m - 1) * ldc + n, ldc >= n)", c, ldc, m, b.n)?;
    let groups = b.n.div_ceil(PANEL * GROUP);
    for g in 0..groups {
        // SAFETY: the shapes were checked above.
        unsafe { block(isa, a.as_ptr(), lda, 0..m, b, g, c.as_mut_ptr(), ldc) };
    }
    Ok(())
}

/// A function of a finished stretch of one row of `c`: `(row, first column, values)`.
pub type Epilogue<'a> = &'a (dyn Fn(usize, usize, &mut [f32]) + Sync);

/// [`sgemm`] with `c` dense ([m, n]) over the [`global_pool`]'s threads, then
/// `epilogue` on every stretch of `c` while it is still in cache (a bias, an
/// activation, a residual).
pub fn sgemm_threaded(
    isa: Isa,
    a: &[f32],
    lda: usize,
    m: usize,
    b: &PackedB,
    c: &mut [f32],
    epilogue: Epilogue<'_>,
) -> Result<(), QuantError> {
    let n = b.n;
    let op = "sgemm_threaded";
    check_strided(op, "a ((m - 1) * lda + k, lda >= k)", a, lda, m, b.k)?;
    check_strided(op, "c (m * n)", c, n, m, n)?;
    let groups = n.div_ceil(PANEL * GROUP);
    let chunks = m.div_ceil(TASK_ROWS);
    let out = SharedC(c.as_mut_ptr());
    let out = &out;
    let a_ptr = SharedA(a.as_ptr());
    let a_ptr = &a_ptr;
    // Column-group-major, so the threads work on the same weights at the same time.
    global_pool()?.run(groups * chunks, &|task| {
        let (g, chunk) = (task / chunks, task % chunks);
        let rows = chunk * TASK_ROWS..((chunk + 1) * TASK_ROWS).min(m);
        // SAFETY: the shapes were checked above, and each task writes only its own
        // rows × column group of c.
        unsafe { block(isa, a_ptr.0, lda, rows.clone(), b, g, out.0, n) };
        let cols = g * PANEL * GROUP..((g + 1) * PANEL * GROUP).min(n);
        for r in rows {
            // SAFETY: as above; the slice is this task's part of row r.
            let values = unsafe {
                std::slice::from_raw_parts_mut(out.0.add(r * n + cols.start), cols.len())
            };
            epilogue(r, cols.start, values);
        }
    });
    Ok(())
}

struct SharedC(*mut f32);
// SAFETY: tasks write disjoint elements and the pool joins them before the borrow ends.
unsafe impl Sync for SharedC {}
struct SharedA(*const f32);
// SAFETY: read-only.
unsafe impl Sync for SharedA {}

/// Rows `rows` × column group `g` of `c`, all of k.
///
/// # Safety
/// `a` holds rows `rows` of [.., k] at stride `lda`, `c` rows `rows` of [.., b.n] at
/// stride `ldc`.
#[allow(clippy::too_many_arguments)]
unsafe fn block(
    isa: Isa,
    a: *const f32,
    lda: usize,
    rows: Range<usize>,
    b: &PackedB,
    g: usize,
    c: *mut f32,
    ldc: usize,
) {
    let k = b.k;
    let panels = b.panels();
    let first_panel = g * GROUP;
    let n_panels = b.group_panels(g);
    let cols = (b.n - first_panel * PANEL).min(GROUP * PANEL);
    let kernel = Kernel::for_isa(isa);
    for k0 in (0..k.max(1)).step_by(KC) {
        let kc = (k - k0).min(KC);
        let tile = TileArgs {
            kc,
            lda,
            b: panels
                .as_ptr()
                .add(first_panel * k * PANEL + k0 * n_panels * PANEL),
            step: n_panels * PANEL,
            n_panels,
            cols,
            ldc,
            accumulate: k0 > 0,
        };
        let mut r = rows.start;
        while r < rows.end {
            let mr = (rows.end - r).min(MR);
            kernel.run(
                &tile,
                mr,
                a.add(r * lda + k0),
                c.add(r * ldc + first_panel * PANEL),
            );
            r += mr;
        }
    }
}

/// What a micro-kernel needs besides its `a` and `c` corners.
pub(crate) struct TileArgs {
    /// k values of this pass.
    pub kc: usize,
    pub lda: usize,
    /// The group's values at this pass's first k.
    pub b: *const f32,
    /// Floats from one k step to the next (the group's panels side by side).
    pub step: usize,
    /// Panels in the group (1..=4).
    pub n_panels: usize,
    /// Columns of `c` to write (1..=64): the last panel may be partial.
    pub cols: usize,
    pub ldc: usize,
    /// Add to `c` (a later pass over k) instead of overwriting it.
    pub accumulate: bool,
}

#[derive(Clone, Copy)]
enum Kernel {
    Portable,
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    Avx2,
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    Avx512,
}

impl Kernel {
    fn for_isa(isa: Isa) -> Kernel {
        match isa {
            #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
            Isa::Avx512Vnni if isa.is_available() => Kernel::Avx512,
            #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
            Isa::Avx2 if isa.is_available() => Kernel::Avx2,
            _ => Kernel::Portable,
        }
    }

    /// # Safety
    /// `a` holds `mr` rows of `t.kc` values at stride `t.lda`; `c` `mr` rows of
    /// `t.cols` at stride `t.ldc`; `t.b` `t.n_panels` panels of `t.kc` k steps.
    unsafe fn run(self, t: &TileArgs, mr: usize, a: *const f32, c: *mut f32) {
        match self {
            Kernel::Portable => portable_tile(t, mr, a, c),
            #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
            Kernel::Avx2 => super::x86::sgemm::avx2_tile(t, mr, a, c),
            #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
            Kernel::Avx512 => super::x86::sgemm::avx512_tile(t, mr, a, c),
        }
    }
}

/// The kernel without SIMD intrinsics (lanes the compiler may vectorise).
///
/// # Safety
/// As [`Kernel::run`].
unsafe fn portable_tile(t: &TileArgs, mr: usize, a: *const f32, c: *mut f32) {
    for p in 0..t.n_panels {
        let width = (t.cols - p * PANEL).min(PANEL);
        let panel = t.b.add(p * PANEL);
        for r in 0..mr {
            let row = c.add(r * t.ldc + p * PANEL);
            let mut acc = [0f32; PANEL];
            if t.accumulate {
                for (j, v) in acc.iter_mut().enumerate().take(width) {
                    *v = *row.add(j);
                }
            }
            for kk in 0..t.kc {
                let x = *a.add(r * t.lda + kk);
                let bv = std::slice::from_raw_parts(panel.add(kk * t.step), PANEL);
                for (v, &w) in acc.iter_mut().zip(bv) {
                    *v += x * w;
                }
            }
            for (j, &v) in acc.iter().enumerate().take(width) {
                *row.add(j) = v;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f32], m: usize, k: usize, b: &[f32], n: usize) -> Vec<f32> {
        let mut c = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let s: f64 = (0..k)
                    .map(|kk| a[i * k + kk] as f64 * b[j * k + kk] as f64)
                    .sum();
                c[i * n + j] = s as f32;
            }
        }
        c
    }

    fn values(len: usize, seed: usize) -> Vec<f32> {
        (0..len)
            .map(|i| (((i * 7919 + seed * 104_729) % 2003) as f32 / 1001.5) - 1.0)
            .collect()
    }

    fn isas() -> Vec<Isa> {
        [Isa::Scalar, Isa::Avx2, Isa::Avx512Vnni]
            .into_iter()
            .filter(|i| i.is_available())
            .collect()
    }

    /// Every kernel against f64 sums, for shapes with every kind of tail: rows not a
    /// multiple of MR, columns not a multiple of a panel or a group, k over KC.
    #[test]
    fn products_match_f64_sums() {
        for &(m, n, k) in &[
            (1, 1, 1),
            (5, 17, 3),
            (7, 64, 32),
            (13, 100, 385),
            (97, 130, 800),
            (200, 48, 16),
        ] {
            let (a, b) = (values(m * k, 1), values(n * k, 2));
            let want = naive(&a, m, k, &b, n);
            let packed = PackedB::from_rows(&b, n, k).unwrap();
            for isa in isas() {
                let mut c = vec![f32::NAN; m * n];
                sgemm(isa, &a, k, m, &packed, &mut c, n).unwrap();
                let mut threaded = vec![f32::NAN; m * n];
                sgemm_threaded(isa, &a, k, m, &packed, &mut threaded, &|_, _, _| {}).unwrap();
                // Each value is a sum of k products of magnitude ≤ 1: f32 rounding of
                // k terms stays far below 1e-5 · k.
                let tol = 1e-5 * k as f32;
                for (i, ((&got, &t), &w)) in c.iter().zip(&threaded).zip(&want).enumerate() {
                    assert!(
                        (got - w).abs() <= tol,
                        "{isa:?} {m}x{n}x{k} [{i}]: {got} vs {w}"
                    );
                    assert_eq!(got.to_bits(), t.to_bits(), "{isa:?} threads changed [{i}]");
                }
            }
        }
    }

    /// Strided operands and the transposed packing (attention's layout), and the
    /// columns of `c` beyond n are left alone.
    #[test]
    fn strided_operands_and_transposed_packing() {
        let (m, n, k, lda, ldc) = (9, 20, 40, 50, 23);
        let a = values(m * lda, 3);
        let bt = values(k * n, 4); // [k, n]
        let b: Vec<f32> = (0..n * k).map(|i| bt[(i % k) * n + i / k]).collect();
        let dense_a: Vec<f32> = (0..m * k).map(|i| a[(i / k) * lda + i % k]).collect();
        let want = naive(&dense_a, m, k, &b, n);
        let mut packed = PackedB::default();
        packed.pack_columns(&bt, n, k, n).unwrap();
        for isa in isas() {
            let mut c = vec![7.0f32; m * ldc];
            sgemm(isa, &a, lda, m, &packed, &mut c, ldc).unwrap();
            for i in 0..m {
                for j in 0..ldc {
                    let got = c[i * ldc + j];
                    if j < n {
                        assert!((got - want[i * n + j]).abs() < 1e-4, "{isa:?} ({i},{j})");
                    } else {
                        assert_eq!(got, 7.0, "{isa:?} wrote outside c ({i},{j})");
                    }
                }
            }
        }
    }

    #[test]
    fn short_operands_are_errors() {
        let packed = PackedB::from_rows(&[1.0; 6], 2, 3).unwrap();
        let mut c = vec![0f32; 4];
        assert!(sgemm(Isa::Scalar, &[1.0; 5], 3, 2, &packed, &mut c, 2).is_err());
        assert!(sgemm(Isa::Scalar, &[1.0; 6], 3, 2, &packed, &mut c[..3], 2).is_err());
        assert!(PackedB::from_rows(&[1.0; 5], 2, 3).is_err());
    }
}
