//! The persona adapter of DEPER (Xue et al., CVPR 2026, arXiv 2512.06662): the subject
//! embedding `z_s` → the persona token's embedding in the frozen VLM's prompt.
//!
//! One linear map without bias, `Linear(d_in → hidden)` with `d_in` the width of `z_s` (384 in
//! the paper) and `hidden` the VLM's hidden size. This follows the adapter in the authors'
//! `src/model.py` (cvlab-stonybrook/Personalized-Image-Description, commit 1526bed).
//!
//! Stage 2 trains it, evaluation turns each subject's mean `z_s` into a persona with it, and the
//! caption API applies it to a `z_s` sent by a client ([`PersonaAdapter::forward_vec`]): all three
//! run this one forward, so a persona is the same number wherever it is made.

use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;

/// Config of [`PersonaAdapter`].
#[derive(Config, Debug)]
pub struct PersonaAdapterConfig {
    /// Width of `z_s` (the subject encoder's `d_model`).
    pub d_in: usize,
    /// The VLM's hidden size: the width of a token embedding.
    pub hidden: usize,
}

impl PersonaAdapterConfig {
    /// A freshly initialised adapter (burn's default `Linear` initialisation, no bias).
    pub fn init<B: Backend>(&self, device: &B::Device) -> PersonaAdapter<B> {
        PersonaAdapter { linear: LinearConfig::new(self.d_in, self.hidden).with_bias(false).init(device) }
    }
}

/// `z_s` → persona embedding; see the module docs.
#[derive(Module, Debug)]
pub struct PersonaAdapter<B: Backend> {
    /// Weight `[d_in, hidden]` (burn's `Linear` layout), no bias.
    linear: Linear<B>,
}

/// Why [`PersonaAdapter::forward_vec`] gave no persona.
#[derive(Debug, thiserror::Error)]
pub enum AdapterError {
    #[error("z_s has {got} values; the persona adapter takes {expected}")]
    Width { got: usize, expected: usize },
    #[error("cannot read the persona back from the device: {0}")]
    Data(String),
}

impl<B: Backend> PersonaAdapter<B> {
    /// # Shapes
    /// - `z_s`: `[n, d_in]`
    /// - output: `[n, hidden]`, one persona embedding per row
    pub fn forward(&self, z_s: Tensor<B, 2>) -> Tensor<B, 2> {
        self.linear.forward(z_s)
    }

    /// [`PersonaAdapter::forward`] of one `z_s` given on the host (`d_in` values), read back as
    /// `hidden` values: the persona a caller without tensors (the caption API) gets.
    pub fn forward_vec(&self, z_s: &[f32]) -> Result<Vec<f32>, AdapterError> {
        let d_in = self.d_in();
        if z_s.len() != d_in {
            return Err(AdapterError::Width { got: z_s.len(), expected: d_in });
        }
        let device = self.linear.weight.device();
        let z = Tensor::<B, 2>::from_data(TensorData::new(z_s.to_vec(), [1, d_in]), &device);
        // [1, d_in] → [1, hidden]
        self.forward(z).into_data().convert::<f32>().to_vec::<f32>().map_err(|e| AdapterError::Data(format!("{e:?}")))
    }

    /// Width of the `z_s` it takes.
    pub fn d_in(&self) -> usize {
        self.linear.weight.dims()[0]
    }

    /// Width of the persona it makes (the VLM's hidden size).
    pub fn hidden(&self) -> usize {
        self.linear.weight.dims()[1]
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use burn::module::Param;

    type TestBackend = burn::backend::NdArray;

    /// An adapter with the weight `w` (`[d_in, hidden]`, row-major).
    fn adapter_with(w: Vec<f32>, d_in: usize, hidden: usize) -> PersonaAdapter<TestBackend> {
        let device = Default::default();
        let mut adapter = PersonaAdapterConfig::new(d_in, hidden).init::<TestBackend>(&device);
        adapter.linear.weight = Param::from_tensor(Tensor::from_data(TensorData::new(w, [d_in, hidden]), &device));
        adapter
    }

    #[test]
    fn forward_is_z_times_w_without_bias() {
        // W = [[1, 2, 3], [4, 5, 6]]: z · W for z = [1, -1] is [-3, -3, -3], for z = [0.5, 2] is [8.5, 11, 13.5].
        let adapter = adapter_with(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 2, 3);
        assert!(adapter.linear.bias.is_none());
        assert_eq!((adapter.d_in(), adapter.hidden()), (2, 3));
        let device = Default::default();
        let z = Tensor::<TestBackend, 2>::from_data(TensorData::new(vec![1.0f32, -1.0, 0.5, 2.0], [2, 2]), &device);
        let out = adapter.forward(z);
        assert_eq!(out.dims(), [2, 3]);
        let values = out.into_data().convert::<f32>().to_vec::<f32>().unwrap();
        assert_eq!(values, [-3.0, -3.0, -3.0, 8.5, 11.0, 13.5]);
        // The host path runs the same forward.
        assert_eq!(adapter.forward_vec(&[0.5, 2.0]).unwrap(), [8.5, 11.0, 13.5]);
        // A zero z_s gives a zero persona (no bias).
        assert_eq!(adapter.forward_vec(&[0.0, 0.0]).unwrap(), [0.0, 0.0, 0.0]);
    }

    #[test]
    fn host_forward_equals_tensor_forward_of_a_random_adapter() {
        let device = Default::default();
        let adapter = PersonaAdapterConfig::new(8, 5).init::<TestBackend>(&device);
        let z: Vec<f32> = (0..8).map(|i| (i as f32 * 0.37).sin()).collect();
        let tensor = adapter.forward(Tensor::from_data(TensorData::new(z.clone(), [1, 8]), &device));
        assert_eq!(adapter.forward_vec(&z).unwrap(), tensor.into_data().to_vec::<f32>().unwrap());
    }

    #[test]
    fn host_forward_rejects_another_width() {
        let adapter = adapter_with(vec![1.0; 6], 2, 3);
        let err = adapter.forward_vec(&[1.0, 2.0, 3.0]).unwrap_err();
        assert!(matches!(err, AdapterError::Width { got: 3, expected: 2 }), "{err}");
        assert!(err.to_string().contains("takes 2"), "{err}");
    }

    #[test]
    fn adapter_can_be_shared_between_threads() {
        fn shared<T: Send + Sync>() {}
        shared::<PersonaAdapter<TestBackend>>();
    }
}
