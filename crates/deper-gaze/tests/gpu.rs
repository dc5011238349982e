//! The WGSL kernels (shaders/eye_patch_resize_grey.wgsl, shaders/histogram_equalize.wgsl) run
//! through wgpu on whatever adapter the machine has (lavapipe in CI) and must equal the CPU
//! reference of `deper_gaze::patch` byte for byte: both are integer-only, so no tolerance.
//!
//! Without an adapter the tests print a loud SKIPPED line and pass, unless
//! `DEPER_REQUIRE_GPU_TESTS=1`, which makes a missing adapter a failure (CI sets it).
#![cfg(feature = "wgpu")]
#![allow(clippy::unwrap_used)]

use deper_gaze::gpu::GpuPreprocessor;
use deper_gaze::patch::{equalize_hist, features_from_boxes, resize_grey, Frame, PatchBox, PixelFormat, PATCH_LEN};
use futures_lite::future::block_on;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn gpu() -> Option<GpuPreprocessor> {
    match block_on(GpuPreprocessor::new()) {
        Ok(gpu) => {
            eprintln!("deper-gaze GPU tests on {}", gpu.adapter());
            Some(gpu)
        }
        Err(e) if std::env::var("DEPER_REQUIRE_GPU_TESTS").as_deref() == Ok("1") => {
            panic!("DEPER_REQUIRE_GPU_TESTS=1 but no GPU: {e} (install mesa-vulkan-drivers for lavapipe)")
        }
        Err(e) => {
            eprintln!("\n!!!!!!!! SKIPPED deper-gaze GPU test: {e}. Install mesa-vulkan-drivers (lavapipe) or set DEPER_REQUIRE_GPU_TESTS=1 to fail instead. !!!!!!!!\n");
            None
        }
    }
}

fn random_box(rng: &mut ChaCha8Rng, width: u32, height: u32) -> PatchBox {
    // Sizes from 1 px (every sample clamps) through upsampling to several-fold downsampling.
    let w = rng.gen_range(1..=width.min(90));
    let h = rng.gen_range(1..=height.min(50));
    PatchBox { x: rng.gen_range(0..=width - w), y: rng.gen_range(0..=height - h), width: w, height: h }
}

fn cpu_resize(frame: &Frame<'_>, boxes: &[PatchBox; 2]) -> Vec<u8> {
    let mut out = resize_grey(frame, boxes[0], "left").unwrap().to_vec();
    out.extend(resize_grey(frame, boxes[1], "right").unwrap());
    out
}

#[test]
fn kernels_equal_cpu_reference_on_random_frames() {
    let Some(mut gpu) = gpu() else { return };
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    // Odd grey widths exercise the packing of four pixels per u32 word and the padded tail.
    let sizes = [
        (640, 480, PixelFormat::Rgba),
        (333, 97, PixelFormat::Grey),
        (37, 23, PixelFormat::Rgba),
        (1, 1, PixelFormat::Grey),
    ];
    let mut checked = 0;
    for (width, height, format) in sizes {
        let data: Vec<u8> = (0..width * height * format.bytes_per_pixel() as u32).map(|_| rng.gen()).collect();
        let frame = Frame::new(width, height, format, &data).unwrap();
        for round in 0..25 {
            let mut boxes = [random_box(&mut rng, width, height), random_box(&mut rng, width, height)];
            if round == 0 {
                // A box touching the bottom-right corner.
                boxes[1] = PatchBox {
                    x: width - width.min(13),
                    y: height - height.min(7),
                    width: width.min(13),
                    height: height.min(7),
                };
            }
            let resized = block_on(gpu.resize_grey(&frame, &boxes)).unwrap();
            assert_eq!(
                resized.to_vec(),
                cpu_resize(&frame, &boxes),
                "resize, {width}×{height} {format:?}, boxes {boxes:?}"
            );
            let features = block_on(gpu.features(&frame, &boxes)).unwrap();
            assert_eq!(
                features,
                features_from_boxes(&frame, &boxes).unwrap(),
                "features, {width}×{height} {format:?}, boxes {boxes:?}"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 100);
}

#[test]
fn equalize_kernel_matches_hand_cases_and_cpu() {
    let Some(mut gpu) = gpu() else { return };
    // Left: two levels → 0/255; right: 54×0, 1×1, 5×2 → 0, 43 (42.5 rounded up), 255.
    let mut patches = [0u8; 120];
    for (i, v) in patches[..PATCH_LEN].iter_mut().enumerate() {
        *v = if i % 2 == 0 { 10 } else { 200 };
    }
    patches[PATCH_LEN + 54] = 1;
    patches[PATCH_LEN + 55..].fill(2);
    let out = block_on(gpu.equalize(&patches)).unwrap();
    for (i, &v) in out[..PATCH_LEN].iter().enumerate() {
        assert_eq!(v, if i % 2 == 0 { 0 } else { 255 });
    }
    assert_eq!(&out[PATCH_LEN + 53..PATCH_LEN + 56], &[0, 43, 255]);
    // Constant patches keep their value; random ones equal the CPU.
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for round in 0..20 {
        let mut patches = [0u8; 120];
        if round == 0 {
            patches[..PATCH_LEN].fill(77);
            patches[PATCH_LEN..].fill(255);
        } else {
            // Few distinct levels make ties and repeated values common.
            let levels: Vec<u8> = (0..rng.gen_range(1..8)).map(|_| rng.gen()).collect();
            patches.iter_mut().for_each(|v| *v = levels[rng.gen_range(0..levels.len())]);
        }
        let mut expected = patches;
        equalize_hist(&mut expected[..PATCH_LEN]);
        equalize_hist(&mut expected[PATCH_LEN..]);
        assert_eq!(block_on(gpu.equalize(&patches)).unwrap(), expected, "round {round}: {patches:?}");
    }
}

#[test]
fn gpu_runner_rejects_bad_boxes_and_oversized_frames() {
    let Some(mut gpu) = gpu() else { return };
    let data = vec![0u8; 20 * 10];
    let frame = Frame::new(20, 10, PixelFormat::Grey, &data).unwrap();
    let inside = PatchBox { x: 0, y: 0, width: 20, height: 10 };
    let outside = PatchBox { x: 5, y: 0, width: 16, height: 10 };
    let err = block_on(gpu.features(&frame, &[inside, outside])).unwrap_err();
    assert!(err.to_string().starts_with("right eye: box"), "{err}");
    // A frame larger than the 128 MiB storage binding the device was opened with.
    let (w, h) = (12_000u32, 11_200u32);
    let big = vec![0u8; (w * h) as usize];
    let frame = Frame::new(w, h, PixelFormat::Grey, &big).unwrap();
    let err = block_on(gpu.features(&frame, &[inside, inside])).unwrap_err();
    assert!(err.to_string().contains("the device binds at most"), "{err}");
    // The runner is still usable afterwards.
    let frame = Frame::new(20, 10, PixelFormat::Grey, &data).unwrap();
    assert_eq!(block_on(gpu.features(&frame, &[inside, inside])).unwrap(), [0u8; 120]);
}
