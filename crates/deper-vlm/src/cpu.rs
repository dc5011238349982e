//! A matrix-vector path for decoding on the CPU (NdArray) backend.
//!
//! Decoding multiplies one row (or a few, in a batch) by every weight matrix. burn-ndarray 0.21's
//! matmul reshapes both operands, and its reshape copies; `matrixmultiply` then packs the weight
//! again. For a single row that is two full copies of the model per token around a multiply that
//! reads it once (a `perf` profile of `examples/bench.rs` showed ~10 % of the time in the multiply).
//! Here the weight is read in place from the backend's own array: `y = x · W` as a sum of scaled
//! weight rows (`W` is `[in, out]`, rows contiguous), and `y = x · Eᵀ` as dot products with the rows
//! of `E` (`[out, in]`, the tied embedding table), both split over output columns on rayon's pool and
//! vectorised for the widest instruction set the CPU has (`pulp`'s runtime dispatch).
//!
//! It is used only when the backend is `NdArray<f32>` (checked by type, then by downcasting the
//! tensor primitive, all safe code), the weight is in standard layout and there are at most
//! [`MAX_ROWS`] rows; otherwise the callers use burn's matmul. Results equal burn's up to float
//! summation order.

use burn::backend::NdArray;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorPrimitive};
use burn_ndarray::NdArrayTensor;
use ndarray::{ArrayView2, Ix2};
use rayon::prelude::*;
use std::any::{Any, TypeId};

/// Rows up to which the matrix-vector path is used (decode steps and small batches); prefill has
/// many rows and packs profitably.
pub const MAX_ROWS: usize = 8;

/// Output columns of one parallel task of the dot-product path.
const CHUNK: usize = 256;

/// Output columns of one task of the scaled-row path: one contiguous share per thread (whole rows on
/// one thread), so each weight row is read as long runs, in multiples of 64 floats.
fn column_chunk(n: usize) -> usize {
    n.div_ceil(rayon::current_num_threads().max(1)).next_multiple_of(64).max(64)
}

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
    if !is_cpu_f32::<B>() || rows > MAX_ROWS || weight.dims()[0] != k {
        return None;
    }
    let w = ndarray_f32(weight.clone())?;
    let w: ArrayView2<f32> = w.view().into_dimensionality::<Ix2>().ok()?;
    let w = w.as_slice()?; // standard layout only
    let n = w.len() / k.max(1);
    let x = ndarray_f32(x.clone())?;
    let x: Vec<f32> = x.iter().copied().collect(); // [rows, k], row-major
    let bias = match bias {
        Some(b) => Some(ndarray_f32(b.clone())?.iter().copied().collect::<Vec<f32>>()),
        None => None,
    };
    let mut out = vec![0f32; rows * n];
    // Column chunks of every row: task c owns out[r][c·chunk ..], reading W's rows in that range.
    let chunk = column_chunk(n);
    let mut columns: Vec<Vec<f32>> = vec![Vec::new(); n.div_ceil(chunk)];
    let arch = pulp::Arch::new();
    columns.par_iter_mut().enumerate().for_each(|(c, acc)| {
        let (start, end) = (c * chunk, ((c + 1) * chunk).min(n));
        let width = end - start;
        acc.resize(rows * width, 0.0);
        // Compiled once per instruction set; the widest the CPU has runs.
        arch.dispatch(|| {
            for i in 0..k {
                let w_row = &w[i * n + start..i * n + end];
                for r in 0..rows {
                    let xi = x[r * k + i];
                    if xi == 0.0 {
                        continue;
                    }
                    for (a, &wv) in acc[r * width..(r + 1) * width].iter_mut().zip(w_row) {
                        *a += xi * wv;
                    }
                }
            }
        });
        if let Some(bias) = &bias {
            for r in 0..rows {
                for (a, &bv) in acc[r * width..(r + 1) * width].iter_mut().zip(&bias[start..end]) {
                    *a += bv;
                }
            }
        }
    });
    for (c, acc) in columns.iter().enumerate() {
        let (start, end) = (c * chunk, ((c + 1) * chunk).min(n));
        for r in 0..rows {
            out[r * n + start..r * n + end].copy_from_slice(&acc[r * (end - start)..(r + 1) * (end - start)]);
        }
    }
    let array = ndarray::Array::from_shape_vec(ndarray::IxDyn(&[rows, n]), out).ok()?.into_shared();
    from_ndarray(array)
}

/// `x · Eᵀ` for `x` `[rows, in]` and `E` `[out, in]` (e.g. a tied embedding table as LM head), or
/// `None` when this path does not apply.
pub fn rows_times_transposed<B: Backend>(x: &Tensor<B, 2>, e: &Tensor<B, 2>) -> Option<Tensor<B, 2>> {
    let [rows, k] = x.dims();
    if !is_cpu_f32::<B>() || rows > MAX_ROWS || e.dims()[1] != k {
        return None;
    }
    let e = ndarray_f32(e.clone())?;
    let e: ArrayView2<f32> = e.view().into_dimensionality::<Ix2>().ok()?;
    let e = e.as_slice()?;
    let n = e.len() / k.max(1);
    let x = ndarray_f32(x.clone())?;
    let x: Vec<f32> = x.iter().copied().collect();
    let mut out_t = vec![0f32; n * rows]; // [out, rows]: each task writes its own rows
    let arch = pulp::Arch::new();
    out_t.par_chunks_mut(CHUNK * rows).enumerate().for_each(|(c, block)| {
        arch.dispatch(
            #[inline(always)]
            || {
                for (j, cell) in block.chunks_mut(rows).enumerate() {
                    let v = c * CHUNK + j;
                    let e_row = &e[v * k..(v + 1) * k];
                    for (r, y) in cell.iter_mut().enumerate() {
                        *y = dot(e_row, &x[r * k..(r + 1) * k]);
                    }
                }
            },
        )
    });
    let mut out = vec![0f32; rows * n];
    for v in 0..n {
        for r in 0..rows {
            out[r * n + v] = out_t[v * rows + r];
        }
    }
    let array = ndarray::Array::from_shape_vec(ndarray::IxDyn(&[rows, n]), out).ok()?.into_shared();
    from_ndarray(array)
}

/// A dot product in 8 independent lanes, so the compiler can vectorise the sum.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            lanes[l] += x[l] * y[l];
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    lanes.iter().sum::<f32>() + tail
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

    #[test]
    fn matrix_vector_paths_equal_burn_matmul() {
        // Sizes that leave partial chunks and dot-product tails.
        let (k, n) = (37, 2 * CHUNK + 19);
        let w: Vec<f32> = (0..k * n).map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 700.0).collect();
        let b: Vec<f32> = (0..n).map(|i| (i as f32).sin()).collect();
        for rows in [1, 3, MAX_ROWS] {
            let x: Vec<f32> = (0..rows * k).map(|i| ((i * 31 % 17) as f32 - 8.0) / 5.0).collect();
            let (xt, wt, bt) =
                (tensor::<NdArray, 2>(x, [rows, k]), tensor::<NdArray, 2>(w.clone(), [k, n]), tensor(b.clone(), [n]));
            let fast = rows_times(&xt, &wt, Some(&bt)).expect("the path applies to NdArray<f32>");
            let reference = xt.clone().matmul(wt.clone()) + bt.clone().unsqueeze();
            let err = values(fast).iter().zip(values(reference)).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(err < 1e-4, "rows {rows}: {err}");

            let e = wt.clone().transpose(); // [n, k], materialised so it is in standard layout
            let e = tensor::<NdArray, 2>(e.into_data().to_vec().unwrap_or_default(), [n, k]);
            let fast = rows_times_transposed(&xt, &e).expect("applies");
            let reference = xt.matmul(e.transpose());
            let err = values(fast).iter().zip(values(reference)).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(err < 1e-4, "transposed, rows {rows}: {err}");
        }
        // Too many rows, or another backend: not taken.
        let many = tensor::<NdArray, 2>(vec![0.5; (MAX_ROWS + 1) * k], [MAX_ROWS + 1, k]);
        assert!(rows_times(&many, &tensor::<NdArray, 2>(w, [k, n]), None).is_none());
        type Ad = burn::backend::Autodiff<NdArray>;
        let x = tensor::<Ad, 2>(vec![1.0; k], [1, k]);
        assert!(rows_times(&x, &tensor::<Ad, 2>(vec![1.0; k * 4], [k, 4]), None).is_none());
    }
}
