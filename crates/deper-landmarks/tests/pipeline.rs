//! End to end on whole frames: detection, ROI, landmarks mapped back to frame pixels.
//! astronaut.png is a 256x256 portrait (face hand-marked below); astronaut_rot30.png is the same
//! picture rotated by 30 degrees into a 320x240 frame by a known affine map (manifest.json), so the
//! landmarks there must be that map applied to the upright ones; coffee.png has no face.
#![allow(clippy::unwrap_used)]
#![cfg(feature = "bundled")]

mod common;

use common::{manifest, mesh, rgb};
use deper_landmarks::{Face, FaceMesh, Frame, LandmarkError, PixelFormat, Roi, NUM_LANDMARKS};

/// The face in astronaut.png, hairline to chin and ear to ear, marked by hand (pixels):
/// x from 75 to 150, y from 15 to 105.
const ASTRONAUT_FACE: [f32; 4] = [75.0, 15.0, 150.0, 105.0];

fn process(mesh: &FaceMesh, name: &str) -> Option<Face> {
    let (pixels, w, h) = rgb(name);
    let frame = Frame::new(w, h, PixelFormat::Rgb8, &pixels).unwrap();
    mesh.process(&frame).unwrap()
}

#[test]
fn astronaut_landmarks_lie_on_the_face() {
    let face = process(&mesh(), "astronaut.png").expect("a face is detected");
    assert!(face.detection.unwrap().score > 0.5);
    assert!(face.presence > 0.9, "presence {}", face.presence);
    assert_eq!(face.landmarks.len(), NUM_LANDMARKS);
    let [x0, y0, x1, y1] = ASTRONAUT_FACE;
    for (i, p) in face.landmarks.iter().enumerate() {
        assert!((x0..=x1).contains(&p[0]) && (y0..=y1).contains(&p[1]), "landmark {i} at {p:?} is off the face");
    }
    // Anatomy: the subject's right eye corner (33) is left of the left one (263) in the picture,
    // the nose tip (1) is below the eyes and the chin (152) below the nose.
    let lm = &face.landmarks;
    assert!(lm[33][0] < lm[263][0]);
    assert!(lm[1][1] > lm[33][1].max(lm[263][1]));
    assert!(lm[152][1] > lm[1][1]);
    // The face spans a sensible part of the marked box (not collapsed to a point).
    let xs: Vec<f32> = lm.iter().map(|p| p[0]).collect();
    let width = xs.iter().fold(f32::MIN, |a, &b| a.max(b)) - xs.iter().fold(f32::MAX, |a, &b| a.min(b));
    assert!(width > 0.5 * (x1 - x0), "face width {width}");
}

#[test]
fn rotated_frame_gives_rotated_landmarks() {
    let mesh = mesh();
    let upright = process(&mesh, "astronaut.png").unwrap();
    let rotated = process(&mesh, "astronaut_rot30.png").expect("a face is detected in the rotated frame");
    let m = &manifest()["rot30"];
    let f = |r: usize, c: usize| m["forward"][r][c].as_f64().unwrap() as f32;
    let cs = |k: &str, i: usize| m[k][i].as_f64().unwrap() as f32;
    // The ROI follows the head's tilt (30 degrees counter-clockwise on screen).
    let tilt = rotated.roi.rotation - upright.roi.rotation;
    assert!((tilt + 30f32.to_radians()).abs() < 5f32.to_radians(), "ROI turned by {} degrees", tilt.to_degrees());
    let mut sum = 0.0;
    let mut worst = 0.0f32;
    for (p, q) in upright.landmarks.iter().zip(&rotated.landmarks) {
        let (dx, dy) = (p[0] - cs("centre_src", 0), p[1] - cs("centre_src", 1));
        let want =
            [f(0, 0) * dx + f(0, 1) * dy + cs("centre_dst", 0), f(1, 0) * dx + f(1, 1) * dy + cs("centre_dst", 1)];
        let d = (q[0] - want[0]).hypot(q[1] - want[1]);
        sum += d;
        worst = worst.max(d);
    }
    let mean = sum / NUM_LANDMARKS as f32;
    println!("rotated vs upright landmarks: mean {mean:.2} px, worst {worst:.2} px");
    // The face is ~65 px wide; the two runs see differently resampled crops, so points move by
    // about a pixel (MediaPipe's own frame-to-frame jitter is of that order).
    assert!(mean < 2.0 && worst < 5.0, "mean {mean} px, worst {worst} px");
}

#[test]
fn no_face_in_the_coffee_picture() {
    let mesh = mesh();
    assert!(process(&mesh, "coffee.png").is_none());
    // Forcing the landmark model onto the cup (the crop of coffee_lm192.png, where the TFLite model
    // gives a face logit of -2.1) reports a low face presence.
    let (pixels, w, h) = rgb("coffee.png");
    let frame = Frame::new(w, h, PixelFormat::Rgb8, &pixels).unwrap();
    let roi = Roi { x_center: 100.0, y_center: 70.0, width: 120.0, height: 120.0, rotation: 0.0 };
    let face = mesh.landmarks_in(&frame, &roi).unwrap();
    assert!(face.presence < 0.5, "presence {}", face.presence);
}

#[test]
fn tracking_from_landmarks_stays_on_the_face() {
    let mesh = mesh();
    let (pixels, w, h) = rgb("astronaut.png");
    let rgba: Vec<u8> = pixels.chunks(3).flat_map(|p| [p[0], p[1], p[2], 255]).collect();
    let frame = Frame::new(w, h, PixelFormat::Rgba8, &rgba).unwrap();
    let detected = mesh.process(&frame).unwrap().unwrap();
    // RGBA input gives the same result as RGB.
    assert_eq!(Some(&detected), process(&mesh, "astronaut.png").as_ref());
    let roi = Roi::from_landmarks(&detected.landmarks).unwrap();
    let tracked = mesh.landmarks_in(&frame, &roi).unwrap();
    assert!(tracked.presence > 0.9);
    let mean =
        detected.landmarks.iter().zip(&tracked.landmarks).map(|(p, q)| (p[0] - q[0]).hypot(p[1] - q[1])).sum::<f32>()
            / NUM_LANDMARKS as f32;
    println!("tracked vs detected landmarks: mean {mean:.2} px");
    assert!(mean < 2.0, "tracked landmarks moved by {mean} px on average");
}

#[test]
fn bad_inputs_are_errors() {
    let err = FaceMesh::from_onnx(b"not onnx", deper_landmarks::LANDMARK_ONNX).unwrap_err();
    assert!(matches!(err, LandmarkError::Model { model: "face detector", .. }), "{err}");
    // The two models swapped: the landmark model does not accept a 128x128 input.
    let err = FaceMesh::from_onnx(deper_landmarks::LANDMARK_ONNX, deper_landmarks::DETECTOR_ONNX).unwrap_err();
    assert!(matches!(err, LandmarkError::Model { .. } | LandmarkError::OutputShape { .. }), "{err}");

    let mesh = mesh();
    let err = mesh.run_detector(&[0.0; 10]).unwrap_err().to_string();
    assert!(err.contains("input") && err.contains("expected 49152"), "{err}");
    let err = mesh.run_landmarks(&[0.0; 49152]).unwrap_err().to_string();
    assert!(err.contains("expected 110592"), "{err}");
    let pixels = vec![0u8; 30];
    let frame = Frame::new(5, 2, PixelFormat::Rgb8, &pixels).unwrap();
    let roi = Roi { x_center: f32::NAN, y_center: 0.0, width: 1.0, height: 1.0, rotation: 0.0 };
    let err = mesh.landmarks_in(&frame, &roi).unwrap_err().to_string();
    assert!(err.contains("roi"), "{err}");
    // A tiny black frame is valid input and simply has no face.
    assert!(mesh.process(&frame).unwrap().is_none());
}
