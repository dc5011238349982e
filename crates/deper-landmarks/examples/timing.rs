//! Inference time per frame on this machine (not a benchmark with assertions): full detection +
//! landmarks, and landmarks only (the tracking path), on a committed test frame.
//!
//! `cargo run -p deper-landmarks --example timing [-- FRAME.png [RUNS]]` (the dev profile already
//! optimises dependencies, i.e. tract, at opt-level 2).

use std::time::Instant;

use deper_landmarks::{FaceMesh, Frame, PixelFormat, Roi};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path =
        args.next().unwrap_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/astronaut.png").into());
    let runs: u32 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(20);

    let t = Instant::now();
    let mesh = FaceMesh::bundled()?;
    println!("load + optimise both models: {:.1} ms", t.elapsed().as_secs_f64() * 1e3);

    let img = image::open(&path)?.to_rgb8();
    let (w, h) = img.dimensions();
    let frame = Frame::new(w, h, PixelFormat::Rgb8, img.as_raw())?;
    let face = mesh.process(&frame)?.ok_or("no face in the frame")?;
    let roi = Roi::from_landmarks(&face.landmarks).ok_or("landmarks without eye corners")?;

    let t = Instant::now();
    for _ in 0..runs {
        mesh.process(&frame)?;
    }
    let full = t.elapsed().as_secs_f64() * 1e3 / f64::from(runs);
    let t = Instant::now();
    for _ in 0..runs {
        mesh.landmarks_in(&frame, &roi)?;
    }
    let tracked = t.elapsed().as_secs_f64() * 1e3 / f64::from(runs);
    println!(
        "{path} ({w}x{h}), {runs} runs: detect + landmarks {full:.2} ms/frame, landmarks only {tracked:.2} ms/frame"
    );
    Ok(())
}
