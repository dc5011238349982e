//! The two networks, loaded from ONNX bytes with tract and run on NHWC float tensors.
//! Inputs and outputs follow the converted MediaPipe models (see models/NOTICE and
//! scripts/convert_mediapipe.py): the detector takes `input` 1x128x128x3 in [-1, 1] and returns
//! `regressors` 1x896x16 and `classificators` 1x896x1 (logits); the landmark model takes `input_1`
//! 1x192x192x3 in [0, 1] and returns `conv2d_21` 1x1x1x1404 (468 x, y, z in input pixels) and
//! `conv2d_31` 1x1x1x1 (face-presence logit).

use tract_onnx::prelude::*;

use crate::error::{LandmarkError, Result};

/// A runnable ONNX model with one NHWC float input of fixed size.
#[derive(Debug)]
pub(crate) struct Network {
    name: &'static str,
    plan: Arc<TypedRunnableModel>,
    side: usize,
}

impl Network {
    /// Parses and optimises the ONNX bytes for a `1 x side x side x 3` input and checks that the model
    /// has the expected number of values in each output.
    pub(crate) fn load(
        name: &'static str,
        onnx: &[u8],
        side: usize,
        outputs: &[(&'static str, usize)],
    ) -> Result<Self> {
        let err = |e: TractError| LandmarkError::model(name, e);
        let plan = tract_onnx::onnx()
            .model_for_read(&mut std::io::Cursor::new(onnx))
            .map_err(err)?
            .with_input_fact(0, f32::fact([1, side, side, 3]).into())
            .map_err(err)?
            .into_optimized()
            .map_err(err)?
            .into_runnable()
            .map_err(err)?;
        let net = Self { name, plan, side };
        let model = net.plan.model();
        if model.output_outlets().map_err(err)?.len() != outputs.len() {
            return Err(LandmarkError::model(name, format!("expected {} outputs", outputs.len())));
        }
        for (i, &(output, expected)) in outputs.iter().enumerate() {
            let fact = model.output_fact(i).map_err(err)?;
            let got = fact.shape.as_concrete().map(|s| s.iter().product::<usize>());
            if got != Some(expected) {
                let got = got.unwrap_or(0);
                return Err(LandmarkError::OutputShape { model: name, output, got, expected });
            }
        }
        Ok(net)
    }

    pub(crate) fn side(&self) -> usize {
        self.side
    }

    /// Runs the model on a `side x side x 3` NHWC tensor; returns each output flattened.
    pub(crate) fn run(&self, input: &[f32]) -> Result<Vec<Vec<f32>>> {
        let expected = self.side * self.side * 3;
        if input.len() != expected {
            return Err(LandmarkError::input(
                "input",
                format!(
                    "{} values, expected {expected} ({}x{}x3) for the {} model",
                    input.len(),
                    self.side,
                    self.side,
                    self.name
                ),
            ));
        }
        let err = |e: TractError| LandmarkError::model(self.name, e);
        let tensor = Tensor::from_shape(&[1, self.side, self.side, 3], input).map_err(err)?;
        let outputs = self.plan.run(tvec!(tensor.into_tvalue())).map_err(err)?;
        outputs
            .iter()
            .map(|t| Ok(t.try_as_plain_ram().map_err(err)?.as_slice::<f32>().map_err(err)?.to_vec()))
            .collect()
    }
}
