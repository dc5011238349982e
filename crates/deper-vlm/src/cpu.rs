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
//! It is used only when the backend is `NdArray<f32>` (checked by type, then by downcasting the
//! tensor primitive); otherwise the callers use burn's matmul. Results equal burn's up to float
//! summation order.

use burn::backend::NdArray;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorPrimitive};
use burn_ndarray::NdArrayTensor;
use ndarray::{s, ArrayView2, Ix2};
use rayon::prelude::*;
use std::any::{Any, TypeId};

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
    let array = ndarray::Array::from_shape_vec(ndarray::IxDyn(&[rows, cols]), values).ok()?.into_shared();
    from_ndarray(array)
}

fn is_cpu_f32<B: Backend>() -> bool {
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
    let array = ndarray::Array::from_shape_vec(ndarray::IxDyn(g.shape()), out).ok()?.into_shared();
    from_ndarray(array)
}

/// A `Linear` on `[rows, in]` through [`rows_times`], or burn's where that does not apply.
pub fn linear<B: Backend>(layer: &burn::nn::Linear<B>, x: Tensor<B, 2>) -> Tensor<B, 2> {
    let bias = layer.bias.as_ref().map(|p| p.val());
    match rows_times(&x, &layer.weight.val(), bias.as_ref()) {
        Some(y) => y,
        None => layer.forward(x),
    }
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
    let ((m, k), (k2, n)) = (a.dim(), b.dim());
    assert!(k == k2 && out.len() == m * n, "gemm_into: [{m}, {k}] · [{k2}, {n}] into {}", out.len());
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
    // `as_ptr` describe exactly its elements, and `out` is `m·n` row-major, checked above).
    #[allow(unsafe_code)]
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
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
        let x = tensor::<Ad, 2>(vec![1.0; k], [1, k]);
        assert!(rows_times(&x, &tensor::<Ad, 2>(vec![1.0; k * 4], [k, 4]), None).is_none());
    }
}
