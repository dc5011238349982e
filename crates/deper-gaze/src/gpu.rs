//! The eye-patch preprocessing on the GPU: `shaders/eye_patch_resize_grey.wgsl` (crop, grey,
//! 10×6 bilinear) and `shaders/histogram_equalize.wgsl` (equalisation), dispatched through wgpu —
//! natively (Vulkan, Metal, DX12; lavapipe in the tests) or in the browser (WebGPU).
//!
//! Both kernels use integer arithmetic only, so their output equals the CPU reference of
//! [`crate::patch`] exactly (the tests compare byte for byte). The eye boxes are computed on the
//! CPU ([`crate::patch::eye_boxes`]: 32 landmark reads) and passed in a uniform.
//!
//! The API is `async` because reading results back is: natively [`wgpu::Device::poll`] runs the
//! mapping callback, in the browser the event loop does (there `poll` is a no-op).

use crate::error::{GazeError, Result};
use crate::patch::{Frame, PatchBox, PixelFormat, FEATURE_LEN, PATCH_LEN};

const RESIZE_WGSL: &str = include_str!("../../../shaders/eye_patch_resize_grey.wgsl");
const EQUALIZE_WGSL: &str = include_str!("../../../shaders/histogram_equalize.wgsl");
/// Invocations per workgroup of both kernels.
const WORKGROUP: u32 = 64;
/// Bytes of the 120-value u32 patch buffers.
const PATCH_BYTES: u64 = (FEATURE_LEN * 4) as u64;

/// Compiled kernels and their buffers; one per device, reused for every frame.
#[derive(Debug)]
pub struct GpuPreprocessor {
    device: wgpu::Device,
    queue: wgpu::Queue,
    resize: wgpu::ComputePipeline,
    equalize: wgpu::ComputePipeline,
    equalize_bind: wgpu::BindGroup,
    /// Uniform `Params` of the resize kernel (48 bytes).
    params: wgpu::Buffer,
    /// Resized grey patches: resize output, equalisation input.
    patches: wgpu::Buffer,
    equalised: wgpu::Buffer,
    readback: wgpu::Buffer,
    /// The frame's packed bytes; grown when a larger frame arrives.
    frame: Option<wgpu::Buffer>,
    adapter: String,
}

/// Which kernels one run dispatches and which buffer it reads back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stages {
    Resize,
    Equalize,
    Both,
}

impl GpuPreprocessor {
    /// Opens the default adapter of a new wgpu instance and compiles the kernels.
    pub async fn new() -> Result<Self> {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
        let adapter = instance
            .request_adapter(&wgpu::RequestAdapterOptions::default())
            .await
            .map_err(|e| GazeError::Gpu(format!("no adapter: {e}")))?;
        let info = adapter.get_info();
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("deper-gaze"),
                // The kernels need nothing beyond WebGPU's baseline.
                required_limits: wgpu::Limits::downlevel_defaults(),
                ..Default::default()
            })
            .await
            .map_err(|e| GazeError::Gpu(format!("request_device on {}: {e}", info.name)))?;
        Ok(Self::with_device(device, queue, format!("{} ({:?})", info.name, info.backend)))
    }

    /// Uses an existing device (e.g. the one burn's wgpu backend opened in the page).
    pub fn with_device(device: wgpu::Device, queue: wgpu::Queue, adapter: String) -> Self {
        let pipeline = |label: &str, source: &str| {
            let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(label),
                source: wgpu::ShaderSource::Wgsl(source.into()),
            });
            device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(label),
                layout: None,
                module: &module,
                entry_point: Some("main"),
                compilation_options: Default::default(),
                cache: None,
            })
        };
        let resize = pipeline("eye_patch_resize_grey", RESIZE_WGSL);
        let equalize = pipeline("histogram_equalize", EQUALIZE_WGSL);
        let buffer = |label: &str, size: u64, usage: wgpu::BufferUsages| {
            device.create_buffer(&wgpu::BufferDescriptor { label: Some(label), size, usage, mapped_at_creation: false })
        };
        use wgpu::BufferUsages as U;
        let params = buffer("params", 48, U::UNIFORM | U::COPY_DST);
        let patches = buffer("patches", PATCH_BYTES, U::STORAGE | U::COPY_SRC | U::COPY_DST);
        let equalised = buffer("equalised", PATCH_BYTES, U::STORAGE | U::COPY_SRC);
        let readback = buffer("readback", PATCH_BYTES, U::MAP_READ | U::COPY_DST);
        let equalize_bind = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("histogram_equalize"),
            layout: &equalize.get_bind_group_layout(0),
            entries: &[
                wgpu::BindGroupEntry { binding: 0, resource: patches.as_entire_binding() },
                wgpu::BindGroupEntry { binding: 1, resource: equalised.as_entire_binding() },
            ],
        });
        Self {
            device,
            queue,
            resize,
            equalize,
            equalize_bind,
            params,
            patches,
            equalised,
            readback,
            frame: None,
            adapter,
        }
    }

    /// The adapter's name and backend, for logs and test output.
    pub fn adapter(&self) -> &str {
        &self.adapter
    }

    /// The 120 features of a frame (resize then equalise): equals
    /// [`crate::patch::features_from_boxes`].
    pub async fn features(&mut self, frame: &Frame<'_>, boxes: &[PatchBox; 2]) -> Result<[u8; FEATURE_LEN]> {
        self.upload_frame(frame, boxes)?;
        self.run(Stages::Both).await
    }

    /// The resize kernel alone: both eyes' 10×6 grey patches, equal to
    /// [`crate::patch::resize_grey`] of each box.
    pub async fn resize_grey(&mut self, frame: &Frame<'_>, boxes: &[PatchBox; 2]) -> Result<[u8; FEATURE_LEN]> {
        self.upload_frame(frame, boxes)?;
        self.run(Stages::Resize).await
    }

    /// The equalisation kernel alone on two patches of 60 values, equal to
    /// [`crate::patch::equalize_hist`] of each half.
    pub async fn equalize(&mut self, patches: &[u8; FEATURE_LEN]) -> Result<[u8; FEATURE_LEN]> {
        let words: Vec<u8> = patches.iter().flat_map(|&v| u32::from(v).to_le_bytes()).collect();
        self.queue.write_buffer(&self.patches, 0, &words);
        self.run(Stages::Equalize).await
    }

    /// Checks the boxes and writes the frame and the `Params` uniform.
    fn upload_frame(&mut self, frame: &Frame<'_>, boxes: &[PatchBox; 2]) -> Result<()> {
        let (w, h) = (frame.width(), frame.height());
        if w.checked_mul(h).is_none() {
            return Err(GazeError::Gpu(format!("frame {w}×{h} has more pixels than a u32 index reaches")));
        }
        for (eye, b) in ["left", "right"].into_iter().zip(boxes) {
            if !b.fits(w, h) {
                return Err(GazeError::BadBox { eye, bbox: *b, width: w, height: h });
            }
        }
        let format = match frame.format() {
            PixelFormat::Grey => 0u32,
            PixelFormat::Rgba => 1,
        };
        let mut params = [w, h, format, 0].to_vec();
        for b in boxes {
            params.extend([b.x, b.y, b.width, b.height]);
        }
        let params: Vec<u8> = params.into_iter().flat_map(u32::to_le_bytes).collect();
        self.queue.write_buffer(&self.params, 0, &params);

        let data = frame.data();
        let size = (data.len() as u64).div_ceil(4).max(1) * 4;
        // Past the device's limits wgpu reports a validation error (a panic natively): refuse first.
        let limits = self.device.limits();
        let max = limits.max_storage_buffer_binding_size.min(limits.max_buffer_size);
        if size > max {
            return Err(GazeError::Gpu(format!("frame {w}×{h} needs {size} bytes, the device binds at most {max}")));
        }
        if self.frame.as_ref().is_none_or(|b| b.size() < size) {
            self.frame = Some(self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("frame"),
                size,
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }));
        }
        let Some(buffer) = &self.frame else { return Err(GazeError::Gpu("frame buffer missing".into())) };
        // write_buffer needs a multiple of 4 bytes: the whole words, then the tail zero-padded.
        let whole = data.len() / 4 * 4;
        if whole > 0 {
            self.queue.write_buffer(buffer, 0, &data[..whole]);
        }
        if whole < data.len() {
            let mut tail = [0u8; 4];
            tail[..data.len() - whole].copy_from_slice(&data[whole..]);
            self.queue.write_buffer(buffer, whole as u64, &tail);
        }
        Ok(())
    }

    async fn run(&mut self, stages: Stages) -> Result<[u8; FEATURE_LEN]> {
        let mut encoder =
            self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("deper-gaze") });
        if stages != Stages::Equalize {
            let Some(frame) = &self.frame else { return Err(GazeError::Gpu("no frame uploaded".into())) };
            let bind = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("eye_patch_resize_grey"),
                layout: &self.resize.get_bind_group_layout(0),
                entries: &[
                    wgpu::BindGroupEntry { binding: 0, resource: self.params.as_entire_binding() },
                    wgpu::BindGroupEntry { binding: 1, resource: frame.as_entire_binding() },
                    wgpu::BindGroupEntry { binding: 2, resource: self.patches.as_entire_binding() },
                ],
            });
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor::default());
            pass.set_pipeline(&self.resize);
            pass.set_bind_group(0, &bind, &[]);
            pass.dispatch_workgroups((FEATURE_LEN as u32).div_ceil(WORKGROUP), 1, 1);
        }
        if stages != Stages::Resize {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor::default());
            pass.set_pipeline(&self.equalize);
            pass.set_bind_group(0, &self.equalize_bind, &[]);
            // One workgroup per eye patch.
            pass.dispatch_workgroups((FEATURE_LEN / PATCH_LEN) as u32, 1, 1);
        }
        let source = if stages == Stages::Resize { &self.patches } else { &self.equalised };
        encoder.copy_buffer_to_buffer(source, 0, &self.readback, 0, PATCH_BYTES);
        self.queue.submit([encoder.finish()]);

        let (tx, rx) = futures_channel::oneshot::channel();
        self.readback.map_async(wgpu::MapMode::Read, .., move |r| {
            // The receiver only disappears if `run` was dropped mid-await; nothing to report then.
            let _ = tx.send(r);
        });
        self.device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| GazeError::Gpu(format!("poll: {e}")))?;
        rx.await
            .map_err(|_| GazeError::Gpu("buffer mapping was cancelled".into()))?
            .map_err(|e| GazeError::Gpu(format!("map_async: {e}")))?;
        let view = self.readback.get_mapped_range(..);
        let words: Vec<u32> = view.chunks_exact(4).map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]])).collect();
        drop(view);
        self.readback.unmap();
        let mut out = [0u8; FEATURE_LEN];
        for (o, &v) in out.iter_mut().zip(&words) {
            // The kernels write 0..=255; anything else is a kernel bug, not a value to clamp.
            *o = u8::try_from(v).map_err(|_| GazeError::Gpu(format!("kernel wrote {v}, not a grey level")))?;
        }
        Ok(out)
    }
}
