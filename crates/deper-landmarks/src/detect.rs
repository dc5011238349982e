//! BlazeFace output decoding and weighted non-maximum suppression, as MediaPipe's
//! `TensorsToDetectionsCalculator` and `NonMaxSuppressionCalculator` (WEIGHTED, IoU) do with the
//! options of mediapipe/modules/face_detection/face_detection_short_range.pbtxt:
//! 896 boxes x 16 coordinates (box centre x, y, width, height, then 6 keypoints x, y; x first, i.e.
//! `reverse_output_order`), all divided by 128 and offset by the anchor centre; scores clipped to
//! +-100 and passed through a sigmoid, kept from 0.5; suppression threshold 0.3.

use crate::anchors::Anchor;

/// Number of keypoints BlazeFace predicts: right eye, left eye, nose tip, mouth centre,
/// right ear tragion, left ear tragion (the subject's left/right).
pub const NUM_KEYPOINTS: usize = 6;
/// Values per box in the `regressors` output.
pub const NUM_COORDS: usize = 4 + 2 * NUM_KEYPOINTS;

/// Decoding and suppression settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DetectorOptions {
    /// Minimum face score (after the sigmoid).
    pub min_score: f32,
    /// Boxes overlapping a better one by more than this IoU are merged into it.
    pub nms_threshold: f32,
    /// Raw logits are clipped to +-this before the sigmoid.
    pub score_clip: f32,
    /// Raw box and keypoint offsets are in input pixels: divide by the input size.
    pub coord_scale: f32,
}

impl Default for DetectorOptions {
    fn default() -> Self {
        Self { min_score: 0.5, nms_threshold: 0.3, score_clip: 100.0, coord_scale: 128.0 }
    }
}

/// A detected face: score, box and keypoints, in whatever coordinates the caller mapped them to
/// (normalised model input coordinates while decoding, frame pixels once returned).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Detection {
    pub score: f32,
    pub xmin: f32,
    pub ymin: f32,
    pub width: f32,
    pub height: f32,
    pub keypoints: [[f32; 2]; NUM_KEYPOINTS],
}

impl Detection {
    /// Applies a point map to the box corners and keypoints. The map must be a uniform scale plus
    /// translation (the letterbox removal), so the box stays axis-aligned.
    pub(crate) fn map(&self, f: impl Fn(f32, f32) -> [f32; 2]) -> Self {
        let [x0, y0] = f(self.xmin, self.ymin);
        let [x1, y1] = f(self.xmin + self.width, self.ymin + self.height);
        Self {
            score: self.score,
            xmin: x0,
            ymin: y0,
            width: x1 - x0,
            height: y1 - y0,
            keypoints: self.keypoints.map(|[x, y]| f(x, y)),
        }
    }

    fn iou(&self, other: &Detection) -> f32 {
        let ix = (self.xmin + self.width).min(other.xmin + other.width) - self.xmin.max(other.xmin);
        let iy = (self.ymin + self.height).min(other.ymin + other.height) - self.ymin.max(other.ymin);
        if ix <= 0.0 || iy <= 0.0 {
            return 0.0;
        }
        let inter = ix * iy;
        let union = self.width * self.height + other.width * other.height - inter;
        if union > 0.0 {
            inter / union
        } else {
            0.0
        }
    }
}

/// Decodes raw boxes (`anchors.len() * NUM_COORDS`) and logits (`anchors.len()`) into detections
/// above `opts.min_score`, in normalised input coordinates. Lengths are checked by the caller.
pub fn decode(boxes: &[f32], logits: &[f32], anchors: &[Anchor], opts: &DetectorOptions) -> Vec<Detection> {
    let s = opts.coord_scale;
    let mut out = Vec::new();
    for ((raw, &logit), a) in boxes.chunks_exact(NUM_COORDS).zip(logits).zip(anchors) {
        let score = sigmoid(logit.clamp(-opts.score_clip, opts.score_clip));
        if score.is_nan() || score < opts.min_score {
            continue;
        }
        let (xc, yc) = (raw[0] / s + a.x, raw[1] / s + a.y);
        let (w, h) = (raw[2] / s, raw[3] / s);
        let keypoints = std::array::from_fn(|k| [raw[4 + 2 * k] / s + a.x, raw[5 + 2 * k] / s + a.y]);
        let d = Detection { score, xmin: xc - w / 2.0, ymin: yc - h / 2.0, width: w, height: h, keypoints };
        if [d.xmin, d.ymin, d.width, d.height].iter().all(|v| v.is_finite()) && w > 0.0 && h > 0.0 {
            out.push(d);
        }
    }
    out
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// MediaPipe's weighted NMS: repeatedly take the best remaining detection, gather every remaining
/// detection overlapping it by more than `threshold` (itself included), and output the score-weighted
/// mean of their boxes and keypoints with the best score. Best first.
pub fn weighted_nms(mut dets: Vec<Detection>, threshold: f32) -> Vec<Detection> {
    dets.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut out = Vec::new();
    while let Some((&best, others)) = dets.split_first() {
        // The best box always joins its own cluster (even a zero-area one, which overlaps nothing).
        let (similar, rest): (Vec<Detection>, Vec<Detection>) =
            others.iter().copied().partition(|d| d.iou(&best) > threshold);
        let cluster: Vec<Detection> = std::iter::once(best).chain(similar).collect();
        dets = rest;
        let total: f32 = cluster.iter().map(|d| d.score).sum();
        let mean = |f: &dyn Fn(&Detection) -> f32| cluster.iter().map(|d| f(d) * d.score).sum::<f32>() / total;
        let (x0, y0) = (mean(&|d| d.xmin), mean(&|d| d.ymin));
        let (x1, y1) = (mean(&|d| d.xmin + d.width), mean(&|d| d.ymin + d.height));
        out.push(Detection {
            score: best.score,
            xmin: x0,
            ymin: y0,
            width: x1 - x0,
            height: y1 - y0,
            keypoints: std::array::from_fn(|k| [mean(&|d| d.keypoints[k][0]), mean(&|d| d.keypoints[k][1])]),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(score: f32, xmin: f32, ymin: f32, side: f32) -> Detection {
        Detection { score, xmin, ymin, width: side, height: side, keypoints: [[xmin, ymin]; NUM_KEYPOINTS] }
    }

    #[test]
    fn decode_offsets_by_anchor_and_scales() {
        let anchors = [Anchor { x: 0.25, y: 0.75 }, Anchor { x: 0.5, y: 0.5 }];
        let mut boxes = vec![0.0; 2 * NUM_COORDS];
        // First box: centre +12.8 px right of its anchor, 25.6 x 12.8 px, right eye at -6.4 px.
        boxes[..6].copy_from_slice(&[12.8, 0.0, 25.6, 12.8, -6.4, 0.0]);
        let logits = [2.0, -3.0];
        let d = decode(&boxes, &logits, &anchors, &DetectorOptions::default());
        assert_eq!(d.len(), 1, "the second box scores sigmoid(-3) < 0.5");
        let d = d[0];
        assert!((d.score - 1.0 / (1.0 + (-2.0f32).exp())).abs() < 1e-7);
        assert!((d.xmin - 0.25).abs() < 1e-6 && (d.ymin - 0.7).abs() < 1e-6, "{d:?}");
        assert!((d.width - 0.2).abs() < 1e-6 && (d.height - 0.1).abs() < 1e-6, "{d:?}");
        assert!((d.keypoints[0][0] - 0.2).abs() < 1e-6 && (d.keypoints[1][0] - 0.25).abs() < 1e-6);
    }

    #[test]
    fn decode_drops_nan_and_empty_boxes() {
        let anchors = [Anchor { x: 0.5, y: 0.5 }; 2];
        let mut boxes = vec![0.0; 2 * NUM_COORDS];
        boxes[2] = f32::NAN;
        boxes[3] = 10.0;
        let d = decode(&boxes, &[f32::NAN, 5.0], &anchors, &DetectorOptions::default());
        assert!(d.is_empty(), "{d:?}");
    }

    #[test]
    fn weighted_nms_merges_overlaps_by_score() {
        let a = det(0.9, 0.0, 0.0, 1.0);
        let b = det(0.6, 0.1, 0.0, 1.0); // IoU with a = 0.9 / 1.1 > 0.3
        let far = det(0.7, 5.0, 5.0, 1.0);
        let out = weighted_nms(vec![b, far, a], 0.3);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].score, 0.9);
        let expected_x = (0.9 * 0.0 + 0.6 * 0.1) / 1.5;
        assert!((out[0].xmin - expected_x).abs() < 1e-6 && (out[0].keypoints[3][0] - expected_x).abs() < 1e-6);
        assert!((out[0].width - 1.0).abs() < 1e-6);
        assert_eq!(out[1], far);
    }

    #[test]
    fn weighted_nms_keeps_disjoint_and_degenerate_boxes() {
        let zero = Detection { width: 0.0, height: 0.0, ..det(0.8, 1.0, 1.0, 1.0) };
        let out = weighted_nms(vec![det(0.6, 0.0, 0.0, 0.5), zero], 0.3);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0], zero);
    }
}
