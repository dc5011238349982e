//! Matrix products on the CPU (NdArray) backend without burn-ndarray's copies.
//!
//! burn-ndarray 0.21's matmul reshapes both operands (its reshape copies) and `matrixmultiply` then
//! packs the weight again, single-threaded for a 2-D product. Here the `gemm` crate multiplies the
//! backend's own arrays where they are (any strides), with AVX2/AVX-512 kernels:
//! - many rows (prefill): one GEMM split over rayon's pool;
//! - at most [`MAX_ROWS`] rows (decoding, small batches): memory-bound matrix-vector work, so each
//!   thread streams one contiguous part of the weight: `x · W` (`W` `[in, out]`) is split over the
//!   input dimension (rows of `W`) and the partial products summed; `x · Eᵀ` (`E` `[out, in]`, the tied
//!   embedding table) is split over the rows of `E`. Splitting `W` by output columns instead makes each
//!   thread read short strided runs (~25 % slower on two threads for the bench model's text weights).
//!
//! - weights repacked into [`PanelMatrix`] (the language model's projections, see
//!   [`crate::decoder::TextModel::pack_for_cpu`]): stored as the column panels gemm's kernel reads, so
//!   no call packs the weight again; each thread multiplies a contiguous run of panels.
//!
//! It is used only when the backend is `NdArray<f32>` (checked by type, then by downcasting the
//! tensor primitive); otherwise the callers use burn's matmul. Results equal burn's up to float
//! summation order.

use burn::backend::NdArray;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorPrimitive};
use burn_ndarray::NdArrayTensor;
use ndarray::{s, ArrayView2, Ix2, Ix4};
use rayon::prelude::*;
use std::any::{Any, TypeId};
use std::fmt;

/// Rows up to which the split matrix-vector path is used (decode steps and small batches).
pub const MAX_ROWS: usize = 8;

/// The f32 NdArray array behind a tensor of a backend known to be `NdArray`.
fn ndarray_f32<B: Backend, const D: usize>(t: Tensor<B, D>) -> Option<burn_ndarray::SharedArray<f32>> {
    let primitive: Box<dyn Any> = Box::new(t.into_primitive().tensor());
    match *primitive.downcast::<NdArrayTensor>().ok()? {
        NdArrayTensor::F32(storage) => Some(storage.into_shared()),
        _ => None,
    }
}

fn from_ndarray<B: Backend, const D: usize>(array: burn_ndarray::SharedArray<f32>) -> Option<Tensor<B, D>> {
    let primitive: Box<dyn Any> = Box::new(NdArrayTensor::from(array));
    let primitive = *primitive.downcast::<B::FloatTensorPrimitive>().ok()?;
    Some(Tensor::from_primitive(TensorPrimitive::Float(primitive)))
}

fn matrix<B: Backend>(values: Vec<f32>, rows: usize, cols: usize) -> Option<Tensor<B, 2>> {
    shaped(values, &[rows, cols])
}

/// A row-major buffer of `shape` as an NdArray tensor.
fn shaped<B: Backend, const D: usize>(values: Vec<f32>, shape: &[usize]) -> Option<Tensor<B, D>> {
    let array = ndarray::Array::from_shape_vec(ndarray::IxDyn(shape), values).ok()?.into_shared();
    from_ndarray(array)
}

pub(crate) fn is_cpu_f32<B: Backend>() -> bool {
    TypeId::of::<B>() == TypeId::of::<NdArray<f32>>()
}

/// `x · W (+ bias)` for `x` `[rows, in]` and `W` `[in, out]`, or `None` when this path does not apply.
pub fn rows_times<B: Backend>(
    x: &Tensor<B, 2>,
    weight: &Tensor<B, 2>,
    bias: Option<&Tensor<B, 1>>,
) -> Option<Tensor<B, 2>> {
    let [rows, k] = x.dims();
    if !is_cpu_f32::<B>() || weight.dims()[0] != k {
        return None;
    }
    let w = ndarray_f32(weight.clone())?;
    let w: ArrayView2<f32> = w.view().into_dimensionality::<Ix2>().ok()?;
    let n = w.ncols();
    let x = ndarray_f32(x.clone())?;
    let x: ArrayView2<f32> = x.view().into_dimensionality::<Ix2>().ok()?;
    // The bias first; the product is accumulated onto it.
    let mut out = match bias {
        Some(b) => ndarray_f32(b.clone())?.iter().copied().collect::<Vec<f32>>().repeat(rows),
        None => vec![0f32; rows * n],
    };
    let threads = rayon::current_num_threads().max(1);
    if rows > MAX_ROWS || threads == 1 || k < 2 * threads {
        gemm_into(&mut out, x, w, bias.is_some(), gemm::Parallelism::Rayon(threads));
    } else {
        // One contiguous band of W's rows per thread, partial products summed.
        let band = k.div_ceil(threads);
        let partials: Vec<Vec<f32>> = (0..k.div_ceil(band))
            .into_par_iter()
            .map(|p| {
                let (start, end) = (p * band, ((p + 1) * band).min(k));
                let mut part = vec![0f32; rows * n];
                let (xs, ws) = (x.slice(s![.., start..end]), w.slice(s![start..end, ..]));
                gemm_into(&mut part, xs, ws, false, gemm::Parallelism::None);
                part
            })
            .collect();
        for part in &partials {
            out.iter_mut().zip(part).for_each(|(o, v)| *o += v);
        }
    }
    matrix(out, rows, n)
}

/// `x · Eᵀ` for `x` `[rows, in]` and `E` `[out, in]` (e.g. a tied embedding table as LM head), or
/// `None` when this path does not apply.
pub fn rows_times_transposed<B: Backend>(x: &Tensor<B, 2>, e: &Tensor<B, 2>) -> Option<Tensor<B, 2>> {
    let [rows, k] = x.dims();
    if !is_cpu_f32::<B>() || e.dims()[1] != k {
        return None;
    }
    let e = ndarray_f32(e.clone())?;
    let e: ArrayView2<f32> = e.view().into_dimensionality::<Ix2>().ok()?;
    let n = e.nrows();
    let x = ndarray_f32(x.clone())?;
    let x: ArrayView2<f32> = x.view().into_dimensionality::<Ix2>().ok()?;
    let threads = rayon::current_num_threads().max(1);
    let mut out = vec![0f32; rows * n];
    if rows > MAX_ROWS || threads == 1 || n < 2 * threads {
        gemm_into(&mut out, x, e.t(), false, gemm::Parallelism::Rayon(threads));
        return matrix(out, rows, n);
    }
    // One contiguous band of E's rows (output columns) per thread, written into place afterwards.
    let band = n.div_ceil(threads);
    let parts: Vec<Vec<f32>> = (0..n.div_ceil(band))
        .into_par_iter()
        .map(|p| {
            let (start, end) = (p * band, ((p + 1) * band).min(n));
            let mut part = vec![0f32; rows * (end - start)];
            gemm_into(&mut part, x, e.slice(s![start..end, ..]).t(), false, gemm::Parallelism::None);
            part
        })
        .collect();
    for (p, part) in parts.iter().enumerate() {
        let (start, width) = (p * band, part.len() / rows);
        for r in 0..rows {
            out[r * n + start..r * n + start + width].copy_from_slice(&part[r * width..(r + 1) * width]);
        }
    }
    matrix(out, rows, n)
}

/// `silu(gate) · up` (SwiGLU) in one parallel pass over same-shaped tensors; burn's ops where this
/// does not apply. burn's sigmoid goes through `exp` and `log` in separate passes.
pub fn silu_mul<B: Backend, const D: usize>(gate: Tensor<B, D>, up: Tensor<B, D>) -> Tensor<B, D> {
    match try_silu_mul(&gate, &up) {
        Some(out) => out,
        None => burn::tensor::activation::silu(gate) * up,
    }
}

fn try_silu_mul<B: Backend, const D: usize>(gate: &Tensor<B, D>, up: &Tensor<B, D>) -> Option<Tensor<B, D>> {
    if !is_cpu_f32::<B>() || gate.dims() != up.dims() {
        return None;
    }
    let (g, u) = (ndarray_f32(gate.clone())?, ndarray_f32(up.clone())?);
    let (gs, us) = (g.as_slice()?, u.as_slice()?); // standard layout only
    let mut out = vec![0f32; gs.len()];
    out.par_chunks_mut(4096).zip(gs.par_chunks(4096).zip(us.par_chunks(4096))).for_each(|(o, (g, u))| {
        for ((o, &g), &u) in o.iter_mut().zip(g).zip(u) {
            *o = g / (1.0 + (-g).exp()) * u;
        }
    });
    shaped(out, g.shape())
}

/// `x · sigmoid(1.702 · x)` (quick GELU) in one parallel pass; burn's ops where this does not apply.
pub fn quick_gelu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    match try_quick_gelu(&x) {
        Some(out) => out,
        None => x.clone() * burn::tensor::activation::sigmoid(x * 1.702),
    }
}

fn try_quick_gelu<B: Backend, const D: usize>(x: &Tensor<B, D>) -> Option<Tensor<B, D>> {
    if !is_cpu_f32::<B>() {
        return None;
    }
    let a = ndarray_f32(x.clone())?;
    let xs = a.as_slice()?; // standard layout only
    let mut out = vec![0f32; xs.len()];
    out.par_chunks_mut(4096).zip(xs.par_chunks(4096)).for_each(|(o, x)| {
        for (o, &x) in o.iter_mut().zip(x) {
            *o = x / (1.0 + (-(x * 1.702)).exp());
        }
    });
    shaped(out, a.shape())
}

/// A `Linear` on `[rows, in]` through [`rows_times`], or burn's where that does not apply.
pub fn linear<B: Backend>(layer: &burn::nn::Linear<B>, x: Tensor<B, 2>) -> Tensor<B, 2> {
    let bias = layer.bias.as_ref().map(|p| p.val());
    match rows_times(&x, &layer.weight.val(), bias.as_ref()) {
        Some(y) => y,
        None => layer.forward(x),
    }
}

/// Output columns per weight panel: a multiple of every x86/ARM f32 kernel's row block (gemm's
/// AVX-512 kernel takes 4 × 16 rows of the transposed problem, AVX2 3 × 8 … ).
pub const PANEL: usize = 64;
/// A weight `W` `[in, out]` stored as column panels: panel `p` holds columns `64p .. 64p + 64` as a
/// contiguous `[in, 64]` row-major block (the last one zero-padded to 64 columns).
///
/// gemm copies ("packs") a row-major weight into this kind of layout on every call, which costs a
/// third of a 76-token prefill on two threads (~40 % of the linears' time, the whole weight read
/// and written again); stored this way the weight is packed once, when the model is loaded.
/// Measured on the 128.5 M benchmark model, 76 rows, two threads, cold weights: 1024 → 2816
/// 2.95 → 1.88 ms, 2816 → 1024 2.34 → 1.76 ms, 1024 → 1024 1.19 → 0.69 ms; bit-identical results.
#[derive(Clone)]
pub struct PanelMatrix {
    inputs: usize,
    outputs: usize,
    data: Vec<f32>,
    /// Added to every output row when set (`[out]`).
    bias: Option<Vec<f32>>,
}

impl fmt::Debug for PanelMatrix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PanelMatrix [{}, {}]", self.inputs, self.outputs)
    }
}

impl PanelMatrix {
    /// Packs `W` `[in, out]` (any strides).
    pub fn pack(weight: ArrayView2<f32>) -> Self {
        let (inputs, outputs) = weight.dim();
        let panels = outputs.div_ceil(PANEL);
        let mut data = vec![0f32; panels * inputs * PANEL];
        data.par_chunks_mut((inputs * PANEL).max(1)).enumerate().for_each(|(p, block)| {
            let (start, end) = (p * PANEL, ((p + 1) * PANEL).min(outputs));
            for (row, dst) in weight.outer_iter().zip(block.chunks_mut(PANEL)) {
                for (d, &w) in dst.iter_mut().zip(row.slice(s![start..end])) {
                    *d = w;
                }
            }
        });
        Self { inputs, outputs, data, bias: None }
    }

    /// The same weight with a bias added to every product (`None` if its length is not `out`).
    pub fn with_bias(mut self, bias: Vec<f32>) -> Option<Self> {
        (bias.len() == self.outputs).then(|| {
            self.bias = Some(bias);
            self
        })
    }

    /// Packs the weight of a tensor on the `NdArray<f32>` backend; `None` on other backends.
    pub fn from_tensor<B: Backend>(weight: &Tensor<B, 2>) -> Option<Self> {
        if !is_cpu_f32::<B>() {
            return None;
        }
        let w = ndarray_f32(weight.clone())?;
        Some(Self::pack(w.view().into_dimensionality::<Ix2>().ok()?))
    }

    /// `[in, out]`.
    pub fn dims(&self) -> [usize; 2] {
        [self.inputs, self.outputs]
    }

    /// Parameters held (`in · out` weights and the bias; the padding not counted).
    pub fn weights(&self) -> usize {
        self.inputs * self.outputs + self.bias.as_ref().map_or(0, Vec::len)
    }

    /// `W` back in its `[in, out]` row-major layout (tests, export).
    pub fn unpack(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.inputs * self.outputs];
        for (r, row) in out.chunks_mut(self.outputs.max(1)).enumerate() {
            for (c, v) in row.iter_mut().enumerate() {
                *v = self.data[(c / PANEL) * self.inputs * PANEL + r * PANEL + c % PANEL];
            }
        }
        out
    }

    /// `x · W (+ bias)` for `x` `[rows, in]`, row-major `[rows, out]`. Each thread takes a contiguous
    /// run of panels (so decoding streams one contiguous part of the weight per thread, and prefill
    /// splits the work the same way).
    fn rows_times(&self, x: ArrayView2<f32>) -> Vec<f32> {
        let rows = x.nrows();
        let (k, n) = (self.inputs, self.outputs);
        let panels = n.div_ceil(PANEL);
        // The few-rows kernel reads `x` as contiguous rows.
        let x_rows: Vec<f32> = if rows <= MAX_ROWS { x.iter().copied().collect() } else { Vec::new() };
        let threads = rayon::current_num_threads().clamp(1, panels.max(1));
        let per_thread = panels.div_ceil(threads).max(1);
        // Columns `first .. first + width` of the output, row-major `[rows, width]`.
        let run = |first_panel: usize, last_panel: usize| -> Vec<f32> {
            let (first, end) = (first_panel * PANEL, (last_panel * PANEL).min(n));
            let width = end - first;
            let mut part = match &self.bias {
                Some(b) => (0..rows).flat_map(|_| b[first..end].iter().copied()).collect(),
                None => vec![0f32; rows * width],
            };
            for p in first_panel..last_panel {
                let cols = PANEL.min(n - p * PANEL);
                let panel = &self.data[p * k * PANEL..(p + 1) * k * PANEL];
                let column = (p - first_panel) * PANEL;
                if rows <= MAX_ROWS {
                    panel_times_few_rows(panel, cols, &x_rows, &mut part, width, column);
                    continue;
                }
                // All rows in one call: gemm then packs the (already contiguous, L2-resident) panel
                // itself, which measured faster than splitting the rows so it reads it in place.
                let panel = ArrayView2::from_shape((k, PANEL), panel).expect("a panel is [in, 64]");
                gemm_strided(&mut part[column..], width, x, panel.slice(s![.., ..cols]), true);
            }
            part
        };
        if threads == 1 || rows == 0 {
            return run(0, panels);
        }
        let parts: Vec<Vec<f32>> = (0..panels.div_ceil(per_thread))
            .into_par_iter()
            .map(|t| run(t * per_thread, ((t + 1) * per_thread).min(panels)))
            .collect();
        let mut out = vec![0f32; rows * n];
        for (t, part) in parts.iter().enumerate() {
            let (start, width) = (t * per_thread * PANEL, part.len() / rows);
            for r in 0..rows {
                out[r * n + start..r * n + start + width].copy_from_slice(&part[r * width..(r + 1) * width]);
            }
        }
        out
    }
}

/// `part[r · width + column + j] += Σ_i x[r, i] · panel[i, j]` for `j < cols`: a few rows (decoding),
/// `x` row-major `[rows, in]`, against one `[in, 64]` panel. Memory-bound: the panel is read as four
/// streams (the quarters of the inputs, summed at the end), which a core pulls from memory faster
/// than one or two (decoding the benchmark model on one thread: 24 tokens/s with two streams, 29 with
/// four, 26 with gemm's matrix-vector product on the row-major weight). Plain loops the compiler
/// vectorises, built for AVX-512 or AVX2 + FMA when the CPU has them (the baseline x86-64 build has
/// only SSE2, whose 16 registers cannot hold the sums).
fn panel_times_few_rows(panel: &[f32], cols: usize, x: &[f32], part: &mut [f32], width: usize, column: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has AVX-512F and FMA (checked just above), the only requirement of this call.
            #[allow(unsafe_code)]
            unsafe {
                few_rows_avx512(panel, cols, x, part, width, column)
            };
            return;
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has AVX2 and FMA (checked just above), the only requirement of this call.
            #[allow(unsafe_code)]
            unsafe {
                few_rows_avx2(panel, cols, x, part, width, column)
            };
            return;
        }
    }
    few_rows::<false>(panel, cols, x, part, width, column);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
fn few_rows_avx512(panel: &[f32], cols: usize, x: &[f32], part: &mut [f32], width: usize, column: usize) {
    few_rows::<true>(panel, cols, x, part, width, column);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn few_rows_avx2(panel: &[f32], cols: usize, x: &[f32], part: &mut [f32], width: usize, column: usize) {
    few_rows::<true>(panel, cols, x, part, width, column);
}

/// `acc = x · w + acc` lane by lane; `FUSED` uses fused multiply-add (only where the CPU has it:
/// elsewhere `mul_add` is a slow library call).
#[inline(always)]
fn axpy<const FUSED: bool>(acc: &mut [f32], x: f32, w: &[f32]) {
    for (a, &w) in acc.iter_mut().zip(w) {
        *a = if FUSED { x.mul_add(w, *a) } else { *a + x * w };
    }
}

/// The loop of [`panel_times_few_rows`].
#[inline(always)]
fn few_rows<const FUSED: bool>(panel: &[f32], cols: usize, x: &[f32], part: &mut [f32], width: usize, column: usize) {
    let inputs = panel.len() / PANEL;
    let quarter = inputs / 4;
    let (q01, q23) = panel.split_at(2 * quarter * PANEL);
    let ((q0, q1), (q2, q3)) = (q01.split_at(quarter * PANEL), q23.split_at(quarter * PANEL));
    for (r, x_row) in x.chunks_exact(inputs.max(1)).enumerate() {
        let mut acc = [[0f32; PANEL]; 4];
        let weights =
            q0.chunks_exact(PANEL).zip(q1.chunks_exact(PANEL)).zip(q2.chunks_exact(PANEL).zip(q3.chunks_exact(PANEL)));
        let (x0, x1, x2, x3) = (
            &x_row[..quarter],
            &x_row[quarter..2 * quarter],
            &x_row[2 * quarter..3 * quarter],
            &x_row[3 * quarter..4 * quarter],
        );
        let xs = x0.iter().zip(x1).zip(x2.iter().zip(x3));
        for (((&xa, &xb), (&xc, &xd)), ((wa, wb), (wc, wd))) in xs.zip(weights) {
            let [a, b, c, d] = &mut acc;
            axpy::<FUSED>(a, xa, wa);
            axpy::<FUSED>(b, xb, wb);
            axpy::<FUSED>(c, xc, wc);
            axpy::<FUSED>(d, xd, wd);
        }
        // The inputs left over after four equal streams (at most three).
        for i in 4 * quarter..inputs {
            axpy::<FUSED>(&mut acc[0], x_row[i], &panel[i * PANEL..(i + 1) * PANEL]);
        }
        let [a, b, c, d] = acc;
        for (j, o) in part[r * width + column..][..cols].iter_mut().enumerate() {
            *o += (a[j] + b[j]) + (c[j] + d[j]);
        }
    }
}

/// `x · W (+ its bias)` with `W` in panels (`[rows, in]` → `[rows, out]`), or `None` when the backend
/// is not `NdArray<f32>` or the input width does not match.
pub fn panels_times<B: Backend>(x: &Tensor<B, 2>, weight: &PanelMatrix) -> Option<Tensor<B, 2>> {
    let [rows, k] = x.dims();
    if !is_cpu_f32::<B>() || k != weight.inputs {
        return None;
    }
    let x = ndarray_f32(x.clone())?;
    let x: ArrayView2<f32> = x.view().into_dimensionality::<Ix2>().ok()?;
    matrix(weight.rows_times(x), rows, weight.outputs)
}

/// `silu(gate) · up` where each row of `x` `[rows, 2·n]` holds `[gate | up]` (a fused gate-and-up
/// projection); `None` off `NdArray<f32>` or for an odd width.
pub fn silu_mul_halves<B: Backend>(x: &Tensor<B, 2>) -> Option<Tensor<B, 2>> {
    let [rows, width] = x.dims();
    if !is_cpu_f32::<B>() || width % 2 != 0 {
        return None;
    }
    let n = width / 2;
    let a = ndarray_f32(x.clone())?;
    let xs = a.as_slice()?; // standard layout only
    let mut out = vec![0f32; rows * n];
    out.par_chunks_mut(n.max(1)).zip(xs.par_chunks(width.max(1))).for_each(|(o, row)| {
        let (gate, up) = row.split_at(n);
        for ((o, &g), &u) in o.iter_mut().zip(gate).zip(up) {
            *o = g / (1.0 + (-g).exp()) * u;
        }
    });
    matrix(out, rows, n)
}

/// Work (multiply-adds or elements) below which the attention helpers stay on the calling thread.
const MIN_PARALLEL_WORK: usize = 1 << 18;

/// Rotary position embedding, rotate-half style: `x · cos + rotate_half(x) · sin` with
/// `rotate_half(x) = [-x₂, x₁]`, in one parallel pass (burn's ops take six, one thread each), the same
/// products and sum in the same order, so the result equals burn's. Output in standard layout.
///
/// # Shapes
/// - x: `[b, heads, L, hd]` (any strides); cos, sin: `[1 or b, 1, L, hd]`
/// - output: `[b, heads, L, hd]`
pub fn rotary<B: Backend>(x: &Tensor<B, 4>, cos: &Tensor<B, 4>, sin: &Tensor<B, 4>) -> Option<Tensor<B, 4>> {
    let [b, heads, l, hd] = x.dims();
    let [cb, one, cl, chd] = cos.dims();
    if !is_cpu_f32::<B>()
        || sin.dims() != cos.dims()
        || one != 1
        || cl != l
        || chd != hd
        || hd % 2 != 0
        || (cb != 1 && cb != b)
    {
        return None;
    }
    let (xa, ca, sa) = (ndarray_f32(x.clone())?, ndarray_f32(cos.clone())?, ndarray_f32(sin.clone())?);
    let xa = xa.view().into_dimensionality::<Ix4>().ok()?;
    let (ca, sa) = (ca.view().into_dimensionality::<Ix4>().ok()?, sa.view().into_dimensionality::<Ix4>().ok()?);
    let half = hd / 2;
    let mut out = vec![0f32; b * heads * l * hd];
    let rotate = |(bh, o): (usize, &mut [f32])| {
        let (bi, hi) = (bh / heads, bh % heads);
        let ci = if cb == 1 { 0 } else { bi };
        for (i, o) in o.chunks_mut(hd).enumerate() {
            let (xr, c, sn) = (xa.slice(s![bi, hi, i, ..]), ca.slice(s![ci, 0, i, ..]), sa.slice(s![ci, 0, i, ..]));
            for d in 0..hd {
                let rotated = if d < half { -xr[d + half] } else { xr[d - half] };
                o[d] = xr[d] * c[d] + rotated * sn[d];
            }
        }
    };
    if out.len() < MIN_PARALLEL_WORK {
        out.chunks_mut((l * hd).max(1)).enumerate().for_each(rotate);
    } else {
        out.par_chunks_mut((l * hd).max(1)).enumerate().for_each(rotate);
    }
    shaped(out, &[b, heads, l, hd])
}

/// Which keys each query sees in [`attention`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRange {
    /// Query `i` (absolute position `past + i`) sees keys `0 ..= past + i`; the keys are exactly
    /// `past + L`.
    Causal { past: usize },
    /// Every query sees every key (the vision tower).
    All,
}

/// Scaled-dot-product attention with grouped-query heads, one parallel task per query head; softmax
/// as burn computes it (`exp(s − max) / Σ`). Replaces burn's score matmul, scaling, mask, softmax,
/// value matmul and the head-merging copy (seven passes on one thread).
///
/// # Shapes
/// - q: `[b, H, L, hd]`; k, v: `[b, KVH, T, hd]` (any strides); query head `j` uses KV head
///   `j / (H / KVH)`
/// - output: `[b, L, H · hd]`
pub fn attention<B: Backend>(
    q: &Tensor<B, 4>,
    k: &Tensor<B, 4>,
    v: &Tensor<B, 4>,
    keys: KeyRange,
    scale: f32,
) -> Option<Tensor<B, 3>> {
    let [b, heads, l, hd] = q.dims();
    let [kb, kv_heads, total, khd] = k.dims();
    let past = match keys {
        KeyRange::Causal { past } if total == past + l => Some(past),
        KeyRange::Causal { .. } => return None,
        KeyRange::All => None,
    };
    if !is_cpu_f32::<B>() || v.dims() != k.dims() || kb != b || khd != hd || kv_heads == 0 || heads % kv_heads != 0 {
        return None;
    }
    let (qa, ka, va) = (ndarray_f32(q.clone())?, ndarray_f32(k.clone())?, ndarray_f32(v.clone())?);
    let qa = qa.view().into_dimensionality::<Ix4>().ok()?;
    let (ka, va) = (ka.view().into_dimensionality::<Ix4>().ok()?, va.view().into_dimensionality::<Ix4>().ok()?);
    let rep = heads / kv_heads;
    // One `[L, hd]` block per (batch row, query head): scores `Q·Kᵀ` and `P·V` by gemm on the views.
    let head = |bh: usize| {
        let (bi, hi) = (bh / heads, bh % heads);
        let g = hi / rep;
        let (query, keys, values) =
            (qa.slice(s![bi, hi, .., ..]), ka.slice(s![bi, g, .., ..]), va.slice(s![bi, g, .., ..]));
        let mut scores = vec![0f32; l * total];
        gemm_into(&mut scores, query, keys.t(), false, gemm::Parallelism::None);
        for (i, row) in scores.chunks_mut(total.max(1)).enumerate() {
            let seen = past.map_or(total, |past| past + i + 1);
            row.iter_mut().for_each(|s| *s *= scale);
            let max = row[..seen].iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0f32;
            for s in &mut row[..seen] {
                *s = (*s - max).exp();
                sum += *s;
            }
            row[..seen].iter_mut().for_each(|s| *s /= sum);
            row[seen..].iter_mut().for_each(|s| *s = 0.0);
        }
        let mut block = vec![0f32; l * hd];
        let probs = ArrayView2::from_shape((l, total), &scores).expect("[L, T] scores");
        gemm_into(&mut block, probs, values, false, gemm::Parallelism::None);
        block
    };
    // A decode step's few thousand products finish before rayon would wake a thread.
    let blocks: Vec<Vec<f32>> = if b * heads * l * total * hd < MIN_PARALLEL_WORK {
        (0..b * heads).map(head).collect()
    } else {
        (0..b * heads).into_par_iter().map(head).collect()
    };
    let width = heads * hd;
    let mut out = vec![0f32; b * l * width];
    for (bh, block) in blocks.iter().enumerate() {
        let (bi, hi) = (bh / heads, bh % heads);
        for (i, row) in block.chunks(hd.max(1)).enumerate() {
            let start = (bi * l + i) * width + hi * hd;
            out[start..start + hd].copy_from_slice(row);
        }
    }
    shaped(out, &[b, l, width])
}

/// `out (+)= a · b` for `a` `[m, k]` and `b` `[k, n]` in any strides, `out` `[m, n]` row-major; with
/// `accumulate` the product is added to what `out` holds.
fn gemm_into(
    out: &mut [f32],
    a: ArrayView2<f32>,
    b: ArrayView2<f32>,
    accumulate: bool,
    parallelism: gemm::Parallelism,
) {
    assert!(out.len() == a.nrows() * b.ncols(), "gemm_into: {:?} · {:?} into {}", a.dim(), b.dim(), out.len());
    gemm_rows(out, b.ncols(), a, b, accumulate, parallelism);
}

/// [`gemm_into`] on one thread, into rows `out_row_stride` apart: the product's row `i` is
/// `out[i · out_row_stride ..][.. n]`.
fn gemm_strided(out: &mut [f32], out_row_stride: usize, a: ArrayView2<f32>, b: ArrayView2<f32>, accumulate: bool) {
    gemm_rows(out, out_row_stride, a, b, accumulate, gemm::Parallelism::None);
}

fn gemm_rows(
    out: &mut [f32],
    out_row_stride: usize,
    a: ArrayView2<f32>,
    b: ArrayView2<f32>,
    accumulate: bool,
    parallelism: gemm::Parallelism,
) {
    let ((m, k), (k2, n)) = (a.dim(), b.dim());
    assert!(
        k == k2 && n <= out_row_stride && (m == 0 || out.len() >= (m - 1) * out_row_stride + n),
        "gemm: [{m}, {k}] · [{k2}, {n}] into {} (row stride {out_row_stride})",
        out.len()
    );
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    let (sa, sb) = (a.strides(), b.strides());
    // gemm packs a block of the weight (its lhs after it transposes a row-major problem) only when
    // there are more than `threshold · 6` rows; its multi-threaded default (16) leaves a prompt of
    // 48..96 rows reading the weight unpacked, ~1.7x slower here. One threshold for both modes.
    static TUNED: std::sync::Once = std::sync::Once::new();
    TUNED.call_once(|| gemm::set_lhs_packing_threshold_multi_thread(gemm::DEFAULT_LHS_PACKING_THRESHOLD_SINGLE_THREAD));
    // SAFETY: the pointers come from live borrows for the whole call (`out` mutably, `a` and `b`
    // shared, so `out` does not alias them); every offset gemm forms, `i·row_stride + j·col_stride`
    // for `i`, `j` within the dimensions passed, is an element of that view (ndarray's strides and
    // `as_ptr` describe exactly its elements; `out` row `i < m`, column `j < n` is
    // `i·out_row_stride + j`, in bounds as checked above).
    #[allow(unsafe_code)]
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            out_row_stride as isize,
            accumulate,
            a.as_ptr(),
            sa[1],
            sa[0],
            b.as_ptr(),
            sb[1],
            sb[0],
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    fn tensor<B: Backend, const D: usize>(values: Vec<f32>, shape: [usize; D]) -> Tensor<B, D> {
        Tensor::from_data(TensorData::new(values, shape), &Default::default())
    }

    fn values(t: Tensor<NdArray, 2>) -> Vec<f32> {
        t.into_data().to_vec().unwrap_or_default()
    }

    fn max_diff(a: Tensor<NdArray, 2>, b: Tensor<NdArray, 2>) -> f32 {
        values(a).iter().zip(values(b)).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max)
    }

    #[test]
    fn cpu_paths_equal_burn_matmul() {
        // Odd sizes leave partial bands and kernel tails.
        let (k, n) = (37, 531);
        let w: Vec<f32> = (0..k * n).map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 700.0).collect();
        let b: Vec<f32> = (0..n).map(|i| (i as f32).sin()).collect();
        // One thread (a single GEMM) and three (the split paths, whatever this machine has).
        for threads in [1, 3] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("pool");
            pool.install(|| {
                for rows in [1, 3, MAX_ROWS, MAX_ROWS + 1, 70] {
                    let x: Vec<f32> = (0..rows * k).map(|i| ((i * 31 % 17) as f32 - 8.0) / 5.0).collect();
                    let (xt, wt, bt) = (
                        tensor::<NdArray, 2>(x, [rows, k]),
                        tensor::<NdArray, 2>(w.clone(), [k, n]),
                        tensor(b.clone(), [n]),
                    );
                    let fast = rows_times(&xt, &wt, Some(&bt)).expect("the path applies to NdArray<f32>");
                    let reference = xt.clone().matmul(wt.clone()) + bt.clone().unsqueeze();
                    let err = max_diff(fast, reference);
                    assert!(err < 1e-4, "threads {threads}, rows {rows}: {err}");

                    let e = wt.clone().transpose(); // [n, k] as a strided view of W
                    let fast = rows_times_transposed(&xt, &e).expect("applies");
                    let reference = xt.clone().matmul(e.clone().transpose());
                    let err = max_diff(fast, reference.clone());
                    assert!(err < 1e-4, "transposed, threads {threads}, rows {rows}: {err}");
                    // The same product with E in standard layout.
                    let e = tensor::<NdArray, 2>(e.into_data().to_vec().unwrap_or_default(), [n, k]);
                    let err = max_diff(rows_times_transposed(&xt, &e).expect("applies"), reference);
                    assert!(err < 1e-4, "transposed contiguous, threads {threads}, rows {rows}: {err}");
                }
            });
        }
        // Another backend: not taken.
        type Ad = burn::backend::Autodiff<NdArray>;
        assert!(PanelMatrix::from_tensor(&tensor::<Ad, 2>(vec![1.0; 8], [2, 4])).is_none());
        let x = tensor::<Ad, 2>(vec![1.0; k], [1, k]);
        assert!(rows_times(&x, &tensor::<Ad, 2>(vec![1.0; k * 4], [k, 4]), None).is_none());
    }

    #[test]
    fn panels_equal_burn_matmul_and_unpack_exactly() {
        // Widths that leave a partial last panel, one panel, and several; rows on both paths.
        for (k, n) in [(37, 531), (5, 64), (64, 3), (130, 200)] {
            let w: Vec<f32> = (0..k * n).map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 700.0).collect();
            let wt = tensor::<NdArray, 2>(w.clone(), [k, n]);
            let packed = PanelMatrix::from_tensor(&wt).expect("NdArray<f32>");
            assert_eq!(packed.dims(), [k, n]);
            assert_eq!(packed.weights(), k * n);
            assert_eq!(packed.unpack(), w, "unpack restores the row-major weight");
            let b: Vec<f32> = (0..n).map(|i| (i as f32).cos()).collect();
            let bt = tensor::<NdArray, 1>(b.clone(), [n]);
            let with_bias = packed.clone().with_bias(b).expect("bias of width out");
            assert_eq!(with_bias.weights(), k * n + n);
            for threads in [1, 3] {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("pool");
                pool.install(|| {
                    for rows in [1, 2, MAX_ROWS, MAX_ROWS + 1, 49, 100] {
                        let x: Vec<f32> = (0..rows * k).map(|i| ((i * 31 % 17) as f32 - 8.0) / 5.0).collect();
                        let xt = tensor::<NdArray, 2>(x, [rows, k]);
                        let reference = xt.clone().matmul(wt.clone()) + bt.clone().unsqueeze();
                        let fast = panels_times(&xt, &with_bias).expect("applies");
                        let err = max_diff(fast, reference.clone());
                        assert!(err < 1e-4, "[{k}, {n}] threads {threads}, rows {rows}: {err}");
                        let fast = panels_times(&xt, &packed).expect("applies");
                        let err = max_diff(fast, reference - bt.clone().unsqueeze());
                        assert!(err < 1e-4, "no bias, [{k}, {n}] threads {threads}, rows {rows}: {err}");
                    }
                });
            }
            // A mismatched input width or bias is refused, not multiplied.
            assert!(panels_times(&tensor::<NdArray, 2>(vec![0.0; k + 1], [1, k + 1]), &packed).is_none());
            assert!(packed.clone().with_bias(vec![0.0; n + 1]).is_none());
        }
    }

    fn tensor4(shape: [usize; 4], seed: usize) -> Tensor<NdArray, 4> {
        let len = shape.iter().product();
        tensor((0..len).map(|i| (((i + seed) * 7919 % 997) as f32 - 498.0) / 400.0).collect(), shape)
    }

    fn max_diff_any<const D: usize>(a: Tensor<NdArray, D>, b: Tensor<NdArray, D>) -> f32 {
        let (a, b): (Vec<f32>, Vec<f32>) =
            (a.into_data().to_vec().unwrap_or_default(), b.into_data().to_vec().unwrap_or_default());
        assert_eq!(a.len(), b.len());
        a.iter().zip(&b).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max)
    }

    #[test]
    fn silu_mul_halves_equals_burn_ops() {
        let (rows, n) = (5, 9);
        let x: Vec<f32> = (0..rows * 2 * n).map(|i| ((i * 37 % 23) as f32 - 11.0) / 4.0).collect();
        let x = tensor::<NdArray, 2>(x, [rows, 2 * n]);
        let (gate, up) = (x.clone().narrow(1, 0, n), x.clone().narrow(1, n, n));
        let reference = burn::tensor::activation::silu(gate) * up;
        assert!(max_diff(silu_mul_halves(&x).expect("applies"), reference) < 1e-6);
        assert!(silu_mul_halves(&tensor::<NdArray, 2>(vec![0.0; 3], [1, 3])).is_none());
    }

    #[test]
    fn quick_gelu_equals_burn_ops() {
        let x = tensor4([2, 3, 5, 8], 7) * 4.0;
        let reference = x.clone() * burn::tensor::activation::sigmoid(x.clone() * 1.702);
        let err = max_diff_any(quick_gelu(x), reference);
        assert!(err < 1e-6, "{err}");
    }

    #[test]
    fn rotary_equals_burn_ops() {
        let (b, heads, l, hd) = (2, 3, 5, 8);
        // A strided input (heads and positions swapped), as the attention passes it.
        let x = tensor4([b, l, heads, hd], 1).swap_dims(1, 2);
        for cos_rows in [1, b] {
            let (cos, sin) = (tensor4([cos_rows, 1, l, hd], 2), tensor4([cos_rows, 1, l, hd], 3));
            let fast = rotary(&x, &cos, &sin).expect("applies");
            let reference = crate::decoder::apply_rotary(x.clone(), cos.clone(), sin.clone());
            assert_eq!(max_diff_any(fast, reference), 0.0, "same products in the same order");
        }
        // Tables for another length: not taken.
        assert!(rotary(&x, &tensor4([1, 1, l + 1, hd], 2), &tensor4([1, 1, l + 1, hd], 3)).is_none());
    }

    #[test]
    fn attention_equals_burn_ops() {
        use burn::tensor::activation::softmax;
        use burn::tensor::Bool;
        let (b, heads, kv_heads, hd) = (2, 4, 2, 8);
        let scale = 1.0 / (hd as f32).sqrt();
        // A prompt (no past) and steps after a cache of 6 positions.
        for (past, l) in [(0, 7), (6, 1), (6, 3)] {
            let total = past + l;
            let q = tensor4([b, l, heads, hd], 4).swap_dims(1, 2);
            let (k, v) = (tensor4([b, kv_heads, total, hd], 5), tensor4([b, kv_heads, total, hd], 6));
            let fast = attention(&q, &k, &v, KeyRange::Causal { past }, scale).expect("applies");
            // Reference: repeat KV heads, masked softmax, weighted sum, heads merged.
            let rep = heads / kv_heads;
            let expand = |t: Tensor<NdArray, 4>| {
                Tensor::cat(
                    (0..kv_heads).flat_map(|g| std::iter::repeat_n(t.clone().narrow(1, g, 1), rep)).collect(),
                    1,
                )
            };
            let scores = q.clone().matmul(expand(k.clone()).swap_dims(2, 3)) * f64::from(scale);
            let mask = Tensor::<NdArray, 2, Bool>::tril_mask([l, total], past as i64, &Default::default());
            let scores = scores.mask_fill(mask.reshape([1, 1, l, total]), f32::NEG_INFINITY);
            let out = softmax(scores, 3).matmul(expand(v.clone()));
            let reference = out.swap_dims(1, 2).reshape([b, l, heads * hd]);
            let err = max_diff_any(fast, reference);
            assert!(err < 1e-5, "past {past}, L {l}: {err}");
        }
        // Keys that do not cover past + L: not taken.
        let q = tensor4([1, 2, 3, hd], 1);
        let (k, v) = (tensor4([1, 1, 2, hd], 2), tensor4([1, 1, 2, hd], 3));
        assert!(attention(&q, &k, &v, KeyRange::Causal { past: 0 }, scale).is_none());
        // Every key seen (no mask), here fewer keys than queries.
        let fast = attention(&q, &k, &v, KeyRange::All, scale).expect("applies");
        let scores = q.clone().matmul(Tensor::cat(vec![k.clone(), k], 1).swap_dims(2, 3)) * f64::from(scale);
        let reference = softmax(scores, 3).matmul(Tensor::cat(vec![v.clone(), v], 1));
        let err = max_diff_any(fast, reference.swap_dims(1, 2).reshape([1, 3, 2 * hd]));
        assert!(err < 1e-5, "all keys: {err}");
    }
}
