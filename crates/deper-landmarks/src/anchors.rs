//! SSD anchor boxes for BlazeFace, as MediaPipe's `SsdAnchorsCalculator` builds them
//! (mediapipe/calculators/tflite/ssd_anchors_calculator.cc) from the options in
//! mediapipe/modules/face_detection/face_detection_short_range.pbtxt.
//!
//! Short-range config: 4 layers, strides [8, 16, 16, 16], input 128x128, min_scale 0.1484375,
//! max_scale 0.75, aspect ratio 1.0 plus one interpolated-scale anchor per layer, anchor offset 0.5,
//! fixed anchor size. Consecutive layers with the same stride share one feature map, so the result is
//! 16x16 cells x 2 anchors + 8x8 cells x 6 anchors = 896 anchors, in the order the model emits boxes
//! (feature map, then row, then column, then anchor). With a fixed anchor size every anchor is 1x1 and
//! the scales only matter for counting anchors per cell.

/// One anchor centre in normalised input coordinates (0..1); width and height are 1 (fixed size).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Anchor {
    pub x: f32,
    pub y: f32,
}

/// The subset of `SsdAnchorsCalculatorOptions` the face detector uses.
#[derive(Debug, Clone, PartialEq)]
pub struct AnchorOptions {
    pub input_width: u32,
    pub input_height: u32,
    pub strides: Vec<u32>,
    /// Aspect ratios per layer; MediaPipe adds one more anchor per layer when
    /// `interpolated_scale_aspect_ratio` is positive (1.0 here).
    pub aspect_ratios: Vec<f32>,
    pub interpolated_scale_aspect_ratio: f32,
    pub anchor_offset: f32,
}

impl AnchorOptions {
    /// face_detection_short_range.tflite (BlazeFace front camera, 128x128).
    pub fn face_detection_short_range() -> Self {
        Self {
            input_width: 128,
            input_height: 128,
            strides: vec![8, 16, 16, 16],
            aspect_ratios: vec![1.0],
            interpolated_scale_aspect_ratio: 1.0,
            anchor_offset: 0.5,
        }
    }
}

/// All anchors, in the model's box order.
pub fn ssd_anchors(opts: &AnchorOptions) -> Vec<Anchor> {
    let per_layer = opts.aspect_ratios.len() + usize::from(opts.interpolated_scale_aspect_ratio > 0.0);
    let mut anchors = Vec::new();
    let mut layer = 0;
    while layer < opts.strides.len() {
        // Layers with the same stride are merged into one feature map with more anchors per cell.
        let stride = opts.strides[layer];
        let mut per_cell = 0;
        while layer < opts.strides.len() && opts.strides[layer] == stride {
            per_cell += per_layer;
            layer += 1;
        }
        let (fw, fh) = (opts.input_width.div_ceil(stride), opts.input_height.div_ceil(stride));
        for y in 0..fh {
            for x in 0..fw {
                let anchor = Anchor {
                    x: (x as f32 + opts.anchor_offset) / fw as f32,
                    y: (y as f32 + opts.anchor_offset) / fh as f32,
                };
                anchors.extend(std::iter::repeat_n(anchor, per_cell));
            }
        }
    }
    anchors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_range_has_896_anchors_in_model_order() {
        let a = ssd_anchors(&AnchorOptions::face_detection_short_range());
        assert_eq!(a.len(), 896);
        // First map: 16x16 cells, 2 anchors each, centres at (i + 0.5) / 16.
        assert_eq!(a[0], Anchor { x: 0.5 / 16.0, y: 0.5 / 16.0 });
        assert_eq!(a[1], a[0]);
        assert_eq!(a[2], Anchor { x: 1.5 / 16.0, y: 0.5 / 16.0 });
        assert_eq!(a[511], Anchor { x: 15.5 / 16.0, y: 15.5 / 16.0 });
        // Second map: 8x8 cells, 6 anchors each.
        assert_eq!(a[512], Anchor { x: 0.5 / 8.0, y: 0.5 / 8.0 });
        assert_eq!(a[517], a[512]);
        assert_eq!(a[518], Anchor { x: 1.5 / 8.0, y: 0.5 / 8.0 });
        assert_eq!(a[895], Anchor { x: 7.5 / 8.0, y: 7.5 / 8.0 });
    }
}
