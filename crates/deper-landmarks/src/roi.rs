//! Regions of interest: the rotated square a face is cropped from, built as MediaPipe builds it
//! from a detection (mediapipe/modules/face_landmark/face_detection_front_detection_to_roi.pbtxt:
//! `DetectionsToRectsCalculator` with the eye keypoints 0 -> 1 as rotation vector and target angle 0,
//! then `RectTransformationCalculator` with scale 1.5 and `square_long`) or from the previous frame's
//! landmarks (face_landmark_landmarks_to_roi.pbtxt: landmarks 33 -> 263, same transformation).
//! Everything here is in frame pixels, which makes the rotation plain Euclidean.

use crate::detect::Detection;

/// MediaPipe enlarges the face box by this factor before cropping for the landmark model.
pub const ROI_SCALE: f32 = 1.5;
/// Face-mesh landmarks at the outer corners of the eyes (subject's right, then left), used for the
/// rotation when tracking from landmarks.
pub const RIGHT_EYE_OUTER: usize = 33;
pub const LEFT_EYE_OUTER: usize = 263;

/// A rectangle in frame pixels, rotated by `rotation` radians about its centre (clockwise on screen,
/// since y points down) — the area mapped onto a model's square input.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Roi {
    pub x_center: f32,
    pub y_center: f32,
    pub width: f32,
    pub height: f32,
    pub rotation: f32,
}

impl Roi {
    /// The whole frame centred in a square of its longer side (letterbox, no rotation).
    pub fn letterbox(frame_width: u32, frame_height: u32) -> Self {
        let side = frame_width.max(frame_height) as f32;
        Self {
            x_center: frame_width as f32 / 2.0,
            y_center: frame_height as f32 / 2.0,
            width: side,
            height: side,
            rotation: 0.0,
        }
    }

    /// The face crop for a detection (in frame pixels): centred on the box, rotated so that the eyes
    /// are level, a square of 1.5 times the box's longer side.
    pub fn from_detection(d: &Detection) -> Self {
        let [right_eye, left_eye, ..] = d.keypoints;
        let rotation = level_angle(right_eye, left_eye);
        Self::square_around(d.xmin + d.width / 2.0, d.ymin + d.height / 2.0, d.width.max(d.height), rotation)
    }

    /// The face crop for the next frame from this frame's landmarks (pixels): the landmarks'
    /// axis-aligned bounding box, rotated so that the outer eye corners are level.
    pub fn from_landmarks(landmarks: &[[f32; 3]]) -> Option<Self> {
        let right_eye = landmarks.get(RIGHT_EYE_OUTER)?;
        let left_eye = landmarks.get(LEFT_EYE_OUTER)?;
        let (mut x0, mut y0, mut x1, mut y1) = (f32::INFINITY, f32::INFINITY, f32::NEG_INFINITY, f32::NEG_INFINITY);
        for p in landmarks {
            x0 = x0.min(p[0]);
            y0 = y0.min(p[1]);
            x1 = x1.max(p[0]);
            y1 = y1.max(p[1]);
        }
        let rotation = level_angle([right_eye[0], right_eye[1]], [left_eye[0], left_eye[1]]);
        let roi = Self::square_around((x0 + x1) / 2.0, (y0 + y1) / 2.0, (x1 - x0).max(y1 - y0), rotation);
        roi.is_finite().then_some(roi)
    }

    fn square_around(x_center: f32, y_center: f32, long_side: f32, rotation: f32) -> Self {
        let side = long_side * ROI_SCALE;
        Self { x_center, y_center, width: side, height: side, rotation }
    }

    /// Frame pixel of the point at normalised ROI coordinates (0..1 across the model input).
    pub fn to_frame(&self, nx: f32, ny: f32) -> [f32; 2] {
        let (sin, cos) = self.rotation.sin_cos();
        let (lx, ly) = ((nx - 0.5) * self.width, (ny - 0.5) * self.height);
        [self.x_center + cos * lx - sin * ly, self.y_center + sin * lx + cos * ly]
    }

    pub fn is_finite(&self) -> bool {
        [self.x_center, self.y_center, self.width, self.height, self.rotation].iter().all(|v| v.is_finite())
    }
}

/// The rotation that makes the vector `from -> to` point along +x, in (-pi, pi]: MediaPipe's
/// `target_angle - atan2(-(y1 - y0), x1 - x0)` with target 0.
fn level_angle(from: [f32; 2], to: [f32; 2]) -> f32 {
    let a = -(-(to[1] - from[1])).atan2(to[0] - from[0]);
    // atan2 is already in [-pi, pi]; negation keeps it there, so only -pi needs folding.
    if a <= -std::f32::consts::PI {
        a + 2.0 * std::f32::consts::PI
    } else {
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detection_with_eyes(right: [f32; 2], left: [f32; 2]) -> Detection {
        Detection {
            score: 0.9,
            xmin: 10.0,
            ymin: 20.0,
            width: 40.0,
            height: 30.0,
            keypoints: [right, left, [0.0; 2], [0.0; 2], [0.0; 2], [0.0; 2]],
        }
    }

    #[test]
    fn level_eyes_give_no_rotation_and_a_scaled_square() {
        let roi = Roi::from_detection(&detection_with_eyes([20.0, 30.0], [40.0, 30.0]));
        assert_eq!(roi, Roi { x_center: 30.0, y_center: 35.0, width: 60.0, height: 60.0, rotation: 0.0 });
        assert_eq!(roi.to_frame(0.5, 0.5), [30.0, 35.0]);
        assert_eq!(roi.to_frame(0.0, 0.0), [0.0, 5.0]);
    }

    #[test]
    fn tilted_eyes_rotate_the_crop_along_the_eye_line() {
        // Left eye up and to the right of the right eye (face tilted counter-clockwise on screen).
        let roi = Roi::from_detection(&detection_with_eyes([20.0, 40.0], [40.0, 20.0]));
        assert!((roi.rotation + std::f32::consts::FRAC_PI_4).abs() < 1e-6, "{}", roi.rotation);
        // The crop's +x axis points from the right eye towards the left eye.
        let [x0, y0] = roi.to_frame(0.5, 0.5);
        let [x1, y1] = roi.to_frame(1.0, 0.5);
        let (dx, dy) = (x1 - x0, y1 - y0);
        assert!((dx - 30.0 / 2f32.sqrt()).abs() < 1e-4 && (dy + 30.0 / 2f32.sqrt()).abs() < 1e-4, "{dx} {dy}");
    }

    #[test]
    fn upside_down_face_turns_half_way() {
        let roi = Roi::from_detection(&detection_with_eyes([40.0, 30.0], [20.0, 30.0]));
        assert!((roi.rotation - std::f32::consts::PI).abs() < 1e-6, "{}", roi.rotation);
    }

    #[test]
    fn from_landmarks_needs_the_eye_corners() {
        assert_eq!(Roi::from_landmarks(&[[0.0; 3]; 10]), None);
        let mut lm = vec![[50.0, 50.0, 0.0]; 468];
        lm[0] = [40.0, 30.0, 0.0];
        lm[1] = [60.0, 80.0, 0.0];
        lm[RIGHT_EYE_OUTER] = [45.0, 50.0, 0.0];
        lm[LEFT_EYE_OUTER] = [55.0, 50.0, 0.0];
        let roi = Roi::from_landmarks(&lm).unwrap();
        assert_eq!(roi, Roi { x_center: 50.0, y_center: 55.0, width: 75.0, height: 75.0, rotation: 0.0 });
        lm[5] = [f32::NAN, 0.0, 0.0];
        lm[6] = [f32::INFINITY, 0.0, 0.0];
        assert_eq!(Roi::from_landmarks(&lm), None);
    }
}
