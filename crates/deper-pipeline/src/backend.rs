//! Where tensors live. The burn backend is chosen here, from a [`DeviceKind`], by the crate's
//! `cuda` and `wgpu` features: everything below the pipeline stays generic over the backend.

use serde::{Deserialize, Serialize};

/// The kind of device a stage runs on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    /// burn's NdArray backend on the host CPU (always built).
    #[default]
    Cpu,
    /// burn's wgpu backend (Vulkan, Metal, DX12); needs the `wgpu` feature.
    Wgpu,
    /// burn's CUDA backend; needs the `cuda` feature and loads the driver at run time.
    Cuda,
}

impl DeviceKind {
    /// Every kind by the name the command line and the server's settings use.
    pub const ALL: [DeviceKind; 3] = [DeviceKind::Cpu, DeviceKind::Wgpu, DeviceKind::Cuda];

    pub fn name(self) -> &'static str {
        match self {
            DeviceKind::Cpu => "cpu",
            DeviceKind::Wgpu => "wgpu",
            DeviceKind::Cuda => "cuda",
        }
    }

    /// Whether this build has the kind's backend.
    pub fn is_built(self) -> bool {
        match self {
            DeviceKind::Cpu => true,
            DeviceKind::Wgpu => cfg!(feature = "wgpu"),
            DeviceKind::Cuda => cfg!(feature = "cuda"),
        }
    }
}

impl std::fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for DeviceKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown device `{s}` (cpu, wgpu or cuda)"))
    }
}

/// Runs `$body` with `$B` (inference backend), `$AD` (its autodiff) and `$device` bound for the
/// chosen device (and, in the second form, `$nth`: a function giving the device of that kind with
/// index `i`, for data-parallel training); backends not compiled in give an error naming the feature.
/// Crate-internal: the `cfg(feature)` arms must be read in this crate, where the features live.
macro_rules! with_backend {
    ($kind:expr, $B:ident, $AD:ident, $device:ident => $body:expr) => {
        $crate::backend::with_backend!($kind, $B, $AD, $device, _nth => $body)
    };
    ($kind:expr, $B:ident, $AD:ident, $device:ident, $nth:ident => $body:expr) => {
        match $kind {
            $crate::backend::DeviceKind::Cpu => {
                type $B = burn::backend::NdArray;
                #[allow(dead_code)]
                type $AD = burn::backend::Autodiff<$B>;
                let $device = Default::default();
                // One CPU device: several "devices" are several training threads on it.
                let $nth = |_: usize| -> burn::backend::ndarray::NdArrayDevice { Default::default() };
                $body
            }
            #[cfg(feature = "cuda")]
            $crate::backend::DeviceKind::Cuda => {
                type $B = burn::backend::Cuda;
                #[allow(dead_code)]
                type $AD = burn::backend::Autodiff<$B>;
                let $device = burn::backend::cuda::CudaDevice::default();
                $crate::backend::probe_device::<$B>(&$device, "cuda")?;
                let $nth = burn::backend::cuda::CudaDevice::new;
                $body
            }
            #[cfg(feature = "wgpu")]
            $crate::backend::DeviceKind::Wgpu => {
                type $B = burn::backend::Wgpu;
                #[allow(dead_code)]
                type $AD = burn::backend::Autodiff<$B>;
                let $device = burn::backend::wgpu::WgpuDevice::default();
                $crate::backend::probe_device::<$B>(&$device, "wgpu")?;
                let $nth = burn::backend::wgpu::WgpuDevice::DiscreteGpu;
                $body
            }
            #[allow(unreachable_patterns)]
            other => Err($crate::backend::missing_backend(other).into()),
        }
    };
}
pub(crate) use with_backend;

/// Fails now, with a clear message, when `kind` is not built in or its runtime cannot start (the
/// server checks its training device before it listens).
pub fn check_device(kind: DeviceKind) -> anyhow::Result<()> {
    with_backend!(kind, B, AD, device => {
        device_ready::<B>(&device);
        Ok(())
    })
}

/// Names the backend of `with_backend!` (its probe has already run a tensor op on the device).
fn device_ready<B: burn::tensor::backend::Backend>(_device: &B::Device) {}

/// Runs one tiny operation on `device`: GPU runtimes panic when no driver is found, and that must
/// be a clear error, not a crash.
#[allow(dead_code)] // used only with a GPU feature
pub(crate) fn probe_device<B: burn::tensor::backend::Backend>(device: &B::Device, name: &str) -> anyhow::Result<()> {
    let previous_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let probe = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        burn::tensor::Tensor::<B, 1>::ones([1], device).into_data().convert::<f32>().to_vec::<f32>().ok()
    }));
    std::panic::set_hook(previous_hook);
    match probe {
        Ok(Some(v)) if v == [1.0] => Ok(()),
        _ => anyhow::bail!(
            "--device {name}: the {name} runtime could not start on this machine (is a GPU driver installed and are its libraries on the library path?)"
        ),
    }
}

pub(crate) fn missing_backend(device: DeviceKind) -> anyhow::Error {
    let name = device.name();
    anyhow::anyhow!(
        "--device {name}: this build has no {name} backend; rebuild with `cargo build --release -p deper-server --features {name}`"
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn device_names_round_trip_and_unknown_names_are_refused() {
        for kind in DeviceKind::ALL {
            assert_eq!(kind.name().parse::<DeviceKind>().unwrap(), kind);
            assert_eq!(kind.to_string(), kind.name());
        }
        assert_eq!("CUDA".parse::<DeviceKind>().unwrap(), DeviceKind::Cuda);
        assert!("tpu".parse::<DeviceKind>().unwrap_err().contains("cpu, wgpu or cuda"));
    }

    #[test]
    fn a_backend_not_built_in_names_the_feature_to_build() {
        check_device(DeviceKind::Cpu).unwrap();
        for kind in [DeviceKind::Wgpu, DeviceKind::Cuda].into_iter().filter(|k| !k.is_built()) {
            let message = check_device(kind).unwrap_err().to_string();
            assert!(message.contains(&format!("--features {}", kind.name())), "{message}");
        }
    }
}
