//! RoI pooling weights built on the device by `shaders/roi_pool_weights.wgsl`, for burn's wgpu
//! backend (`Wgpu`, and `Autodiff<Wgpu>` in training): the boxes and mask stay on the device,
//! nothing is read back, and only a table of `2·(h + w)` bounds goes up per call.
//!
//! [`TrajectoryBatch::roi_weights`](crate::TrajectoryBatch::roi_weights) calls [`try_device_weights`],
//! which recognises those two backends by a `dyn Any` downcast and otherwise leaves the
//! weights to the host reference, [`roi_pool_weights`](crate::traj_tokens::roi_pool_weights).
//! The kernel takes, per grid axis, the smallest coordinate reaching each cell
//! ([`axis_bounds`]), derived from the reference's own rule so that the cells agree exactly.

use std::any::Any;

use burn::backend::wgpu::{
    into_contiguous, CubeDim, CubeTensor, KernelSource, SourceKernel, SourceTemplate, Wgpu, WgpuRuntime,
};
use burn::backend::Autodiff;
use burn::cubecl::prelude::KernelId;
use burn::cubecl::server::{KernelArguments, MetadataBindingInfo};
use burn::cubecl::CubeCount;
use burn::prelude::*;
use burn::tensor::{DType, FloatDType, TensorPrimitive};

use crate::traj_tokens::cell_range;

/// Invocations per workgroup (the shader's `{{ workgroup_size }}`).
const WORKGROUP: u32 = 64;

/// Workgroups per dispatch axis allowed by WebGPU.
const MAX_GROUPS: u32 = 65_535;

/// The WGSL source, specialised by its workgroup size.
struct RoiPoolWeights;

impl KernelSource for RoiPoolWeights {
    fn source(&self) -> SourceTemplate {
        SourceTemplate::new(include_str!("../../../shaders/roi_pool_weights.wgsl"))
            .register("workgroup_size", WORKGROUP.to_string())
    }

    fn id(&self) -> KernelId {
        KernelId::new::<Self>().info(WORKGROUP)
    }
}

/// The pooling weights built by the kernel when `B` is `Wgpu` or `Autodiff<Wgpu>` (then
/// without gradient: they are a function of the boxes that nothing learns through); `None` for
/// any other backend.
///
/// # Shapes
/// - `boxes`: `[batch, steps, 4]`, `mask`: `[batch, steps]`
/// - output: `[batch, steps, h·w]`
pub(crate) fn try_device_weights<B: Backend>(
    boxes: &Tensor<B, 3>,
    mask: &Tensor<B, 2, Bool>,
    h: usize,
    w: usize,
) -> Option<Tensor<B, 3>> {
    let inputs: Box<dyn Any> = Box::new((boxes.clone(), mask.clone()));
    let weights: Box<dyn Any> = match inputs.downcast::<(Tensor<Wgpu, 3>, Tensor<Wgpu, 2, Bool>)>() {
        Ok(inputs) => Box::new(device_weights(inputs.0, inputs.1, h, w)),
        Err(inputs) => {
            let (boxes, mask) =
                *inputs.downcast::<(Tensor<Autodiff<Wgpu>, 3>, Tensor<Autodiff<Wgpu>, 2, Bool>)>().ok()?;
            Box::new(Tensor::<Autodiff<Wgpu>, 3>::from_inner(device_weights(boxes.inner(), mask.inner(), h, w)))
        }
    };
    // `B` is the backend just matched, so this cannot fail.
    Some(*weights.downcast::<Tensor<B, 3>>().expect("weights on the backend of the boxes"))
}

/// Launches the kernel on the boxes' device.
///
/// # Shapes
/// - `boxes`: `[batch, steps, 4]`, `mask`: `[batch, steps]`
/// - output: `[batch, steps, h·w]`
pub(crate) fn device_weights(
    boxes: Tensor<Wgpu, 3>,
    mask: Tensor<Wgpu, 2, Bool>,
    h: usize,
    w: usize,
) -> Tensor<Wgpu, 3> {
    let device = boxes.device();
    let [batch, steps, _] = boxes.dims();
    let total = batch * steps * h * w;
    if total == 0 {
        return Tensor::zeros([batch, steps, h * w], &device);
    }
    // The kernel reads f32: the mask as 0/1 floats (burn stores bools per backend), the boxes cast
    // should a caller hold them in another float type.
    let valid = mask.float().cast(FloatDType::F32); // [batch, steps]
    let boxes = boxes.cast(FloatDType::F32);
    let (first_w, last_w) = axis_bounds(w);
    let (first_h, last_h) = axis_bounds(h);
    let bounds = [first_w, last_w, first_h, last_h].concat();
    let bounds = Tensor::<Wgpu, 1>::from_data(TensorData::new(bounds, [2 * (w + h)]), &device); // [2·w + 2·h]

    let boxes = into_contiguous(boxes.into_primitive().tensor());
    let valid = into_contiguous(valid.into_primitive().tensor());
    let bounds = into_contiguous(bounds.into_primitive().tensor());
    let client = boxes.client.clone();
    let out = CubeTensor::<WgpuRuntime>::new_contiguous(
        client.clone(),
        boxes.device.clone(),
        [batch, steps, h * w].into(),
        client.empty(total * size_of::<f32>()),
        DType::F32,
    );

    let groups = u32::try_from(total.div_ceil(WORKGROUP as usize)).expect("fewer than 2³² workgroups");
    let (x, y) = (groups.min(MAX_GROUPS), groups.div_ceil(MAX_GROUPS));
    let info = [batch * steps, h, w].map(|v| v as u64).to_vec();
    client.launch(
        Box::new(SourceKernel::new(RoiPoolWeights, CubeDim { x: WORKGROUP, y: 1, z: 1 })),
        CubeCount::Static(x, y, 1),
        KernelArguments::new()
            .with_buffers(vec![
                boxes.handle.binding(),
                valid.handle.binding(),
                bounds.handle.binding(),
                out.handle.clone().binding(),
            ])
            .with_info(MetadataBindingInfo::custom(info)),
    );
    Tensor::from_primitive(TensorPrimitive::Float(out))
}

/// The kernel's tables for an axis of `n` cells: `first[k]` is the smallest f32 `a` with
/// `cell_range(a, ·, n).0 >= k`, `last[k]` the smallest f32 `b` with `cell_range(0, b, n).1 >= k`
/// (entry 0 unused). Both are monotone in the coordinate, so the number of entries a coordinate
/// reaches is its cell: the kernel compares f32 values only and needs neither f64 nor the
/// epsilon.
pub(crate) fn axis_bounds(n: usize) -> (Vec<f32>, Vec<f32>) {
    let smallest = |reaches: &dyn Fn(f64) -> bool| {
        // Non-negative f32 order as their bits do; 0.0 reaches no cell k >= 1 and 1.0 reaches
        // every cell (a coordinate is clamped to [0, 1] first).
        let (mut below, mut at) = (0u32, 1f32.to_bits());
        while at - below > 1 {
            let mid = below + (at - below) / 2;
            if reaches(f32::from_bits(mid) as f64) {
                at = mid;
            } else {
                below = mid;
            }
        }
        f32::from_bits(at)
    };
    let mut first = vec![0.0; n];
    let mut last = vec![0.0; n];
    for k in 1..n {
        first[k] = smallest(&|a| cell_range(a, 1.0, n).0 >= k);
        last[k] = smallest(&|b| cell_range(0.0, b, n).1 >= k);
    }
    (first, last)
}
