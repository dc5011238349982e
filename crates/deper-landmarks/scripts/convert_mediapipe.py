#!/usr/bin/env python3
"""Converts MediaPipe's face detector and face-mesh models to ONNX and writes the test fixtures.

Run once by hand (never in CI); it needs npm, PyPI and a venv:

    python3 -m venv ../venv-landmarks
    ../venv-landmarks/bin/pip install tensorflow-cpu==2.21.0 tf2onnx==1.17.0 onnx==1.23.2 \
        onnxruntime==1.32.0 pillow==13.0.0 numpy==2.4.6
    ../venv-landmarks/bin/python crates/deper-landmarks/scripts/convert_mediapipe.py

What it does:
1. `npm pack @mediapipe/face_mesh@0.4.1657299874` (Apache-2.0) into a temp dir and cuts
   `face_landmark.tflite` and `face_detection_short_range.tflite` out of
   `face_mesh_solution_packed_assets.data` at the byte ranges listed in
   `face_mesh_solution_packed_assets_loader.js`.
2. Converts both with `tf2onnx --tflite` into `models/*.onnx` and writes `models/NOTICE`.
3. Builds the test images from public-domain / CC0 photos shipped in the scikit-image wheel
   (pip download, no install): `astronaut.png` (Eileen Collins, NASA, public domain) and
   `coffee.png` (CC0, Rachel Michetti). It writes full frames for the end-to-end tests and the exact
   model-sized inputs (128x128 and 192x192 PNG) for the raw-output tests.
4. Runs the ORIGINAL .tflite models with TensorFlow's TFLite interpreter on those inputs and saves
   their outputs as little-endian float32 .npy files next to the inputs: the Rust tests compare
   tract's outputs for the converted ONNX models against them.
"""

import hashlib
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import tensorflow as tf
from PIL import Image

FACE_MESH_VERSION = "0.4.1657299874"
SKIMAGE_VERSION = "0.26.0"
ONNX_OPSET = 13

CRATE = Path(__file__).resolve().parent.parent
MODELS = CRATE / "models"
FIXTURES = CRATE / "tests" / "fixtures"

WANTED = {
    "face_detection_short_range.tflite": "face_detection_short_range.onnx",
    "face_landmark.tflite": "face_landmark.onnx",
}


def run(cmd, cwd=None):
    print("+", " ".join(str(c) for c in cmd), flush=True)
    subprocess.run(cmd, cwd=cwd, check=True)


def extract_tflite(tmp: Path) -> dict:
    run(["npm", "pack", f"@mediapipe/face_mesh@{FACE_MESH_VERSION}", "--silent"], cwd=tmp)
    with tarfile.open(tmp / f"mediapipe-face_mesh-{FACE_MESH_VERSION}.tgz") as tar:
        tar.extractall(tmp, filter="data")
    pkg = tmp / "package"
    loader = (pkg / "face_mesh_solution_packed_assets_loader.js").read_text()
    listing = json.loads(re.search(r"loadPackage\((\{.*?\})\);", loader).group(1))
    data = (pkg / "face_mesh_solution_packed_assets.data").read_bytes()
    assert len(data) == listing["remote_package_size"], "packed assets size differs from the loader's"
    out = {}
    for f in listing["files"]:
        name = Path(f["filename"]).name
        if name in WANTED:
            path = tmp / name
            path.write_bytes(data[f["start"] : f["end"]])
            out[name] = path
            print(f"{name}: bytes {f['start']}..{f['end']}")
    assert set(out) == set(WANTED), f"missing models in the package: {set(WANTED) - set(out)}"
    shutil.copy(pkg / "package.json", tmp / "face_mesh_package.json")
    return out


def convert(tflite: dict) -> None:
    MODELS.mkdir(parents=True, exist_ok=True)
    for name, path in tflite.items():
        run([sys.executable, "-m", "tf2onnx.convert", "--tflite", path, "--output", MODELS / WANTED[name],
             "--opset", str(ONNX_OPSET)])
    (MODELS / "NOTICE").write_text(NOTICE)


NOTICE = f"""The ONNX files in this folder are converted from MediaPipe models:

  face_detection_short_range.onnx  <- face_detection_short_range.tflite (BlazeFace, short range)
  face_landmark.onnx               <- face_landmark.tflite (Face Mesh, 468 landmarks)

Source: the npm package @mediapipe/face_mesh@{FACE_MESH_VERSION} (face_mesh_solution_packed_assets.data),
Copyright The MediaPipe Authors (Google LLC), licensed under the Apache License, Version 2.0:

    Licensed under the Apache License, Version 2.0 (the "License");
    you may not use these files except in compliance with the License.
    You may obtain a copy of the License at

        http://www.apache.org/licenses/LICENSE-2.0

    Unless required by applicable law or agreed to in writing, software
    distributed under the License is distributed on an "AS IS" BASIS,
    WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
    See the License for the specific language governing permissions and
    limitations under the License.

Modification: converted from TFLite to ONNX (opset {ONNX_OPSET}) with tf2onnx {__import__("tf2onnx").__version__}
by crates/deper-landmarks/scripts/convert_mediapipe.py; weights and graph are otherwise unchanged.
Model cards: https://storage.googleapis.com/mediapipe-assets/MediaPipe%20BlazeFace%20Model%20Card%20(Short%20Range).pdf
and https://storage.googleapis.com/mediapipe-assets/Model%20Card%20MediaPipe%20Face%20Mesh.pdf
"""


def skimage_images(tmp: Path) -> dict:
    run([sys.executable, "-m", "pip", "download", f"scikit-image=={SKIMAGE_VERSION}", "--no-deps", "-q",
         "-d", tmp / "wheels"])
    wheel = next((tmp / "wheels").glob("scikit_image-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        return {n: Image.open(z.open(f"skimage/data/{n}.png")).convert("RGB") for n in ("astronaut", "coffee")}


def save_png(img: Image.Image, path: Path) -> np.ndarray:
    img.save(path, optimize=True)
    # Read back what was written, so Python and Rust start from the same bytes.
    return np.asarray(Image.open(path).convert("RGB"))


def letterbox(img: Image.Image, size: int) -> Image.Image:
    """Fit into a size x size square keeping the aspect ratio, zero padding centred (as MediaPipe's
    ImageToTensorCalculator with keep_aspect_ratio)."""
    scale = size / max(img.width, img.height)
    w, h = round(img.width * scale), round(img.height * scale)
    canvas = Image.new("RGB", (size, size))
    canvas.paste(img.resize((w, h), Image.BILINEAR), ((size - w) // 2, (size - h) // 2))
    return canvas


def make_frames(src: dict) -> dict:
    """Full frames for the end-to-end tests and the raw model inputs."""
    frames = {}
    astro = src["astronaut"].resize((256, 256), Image.LANCZOS)
    frames["astronaut"] = astro
    # Rotated by 30 degrees (counter-clockwise) about the face centre, pasted into a landscape frame:
    # exercises the ROI rotation and the letterbox removal. The test derives the expected landmarks
    # from the upright frame's through this same affine map (recorded in the manifest).
    frames["astronaut_rot30"] = rotated_frame(astro)
    frames["coffee"] = src["coffee"].resize((200, 133), Image.LANCZOS)
    return frames


ROT_DEG = 30.0
ROT_CANVAS = (320, 240)
ROT_CENTRE_SRC = (112.0, 60.0)  # face centre in the 256x256 astronaut frame
ROT_CENTRE_DST = (160.0, 120.0)  # where it lands in the 320x240 frame


def rotation_forward() -> np.ndarray:
    a = np.deg2rad(ROT_DEG)
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, s], [-s, c]])


def rotated_frame(astro: Image.Image) -> Image.Image:
    # PIL's affine transform maps output pixel centres back to input: inverse of the forward map
    # p_dst = R (p_src - c_src) + c_dst, with R a counter-clockwise rotation on screen (y down).
    inv = np.linalg.inv(rotation_forward())
    off = np.array(ROT_CENTRE_SRC) - inv @ np.array(ROT_CENTRE_DST)
    coeffs = (inv[0, 0], inv[0, 1], off[0], inv[1, 0], inv[1, 1], off[1])
    return astro.transform(ROT_CANVAS, Image.AFFINE, coeffs, resample=Image.BILINEAR, fillcolor=(128, 128, 128))


def run_tflite(path: Path, x: np.ndarray) -> dict:
    interp = tf.lite.Interpreter(model_path=str(path))
    interp.allocate_tensors()
    (inp,) = interp.get_input_details()
    assert tuple(inp["shape"]) == x.shape, (inp["shape"], x.shape)
    interp.set_tensor(inp["index"], x)
    interp.invoke()
    return {d["name"]: interp.get_tensor(d["index"]).copy() for d in interp.get_output_details()}


def main() -> None:
    FIXTURES.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        tflite = extract_tflite(tmp)
        convert(tflite)
        frames = make_frames(skimage_images(tmp))
        manifest = {
            "source": "scikit-image " + SKIMAGE_VERSION + " skimage/data: astronaut.png (NASA, public domain), "
            "coffee.png (CC0, Rachel Michetti)",
            "npm_package": f"@mediapipe/face_mesh@{FACE_MESH_VERSION}",
            "tensorflow": tf.__version__,
            # Only the sources: tf2onnx names its constant-folded initializers differently from run to
            # run, so the .onnx bytes are not reproducible (weights and graph are).
            "sha256": {p.name: sha256(p) for p in tflite.values()},
            "frames": {},
            "raw": [],
            "rot30": {
                "comment": "astronaut_rot30 pixel = forward @ (astronaut pixel - centre_src) + centre_dst",
                "forward": rotation_forward().tolist(),
                "centre_src": ROT_CENTRE_SRC,
                "centre_dst": ROT_CENTRE_DST,
            },
        }
        for name, img in frames.items():
            save_png(img, FIXTURES / f"{name}.png")
            manifest["frames"][name] = {"width": img.width, "height": img.height}

        # Raw detector inputs: the full frames letterboxed to 128x128, scaled to [-1, 1].
        for name, img in frames.items():
            px = save_png(letterbox(img, 128), FIXTURES / f"{name}_det128.png")
            x = (px.astype(np.float32) / np.float32(127.5) - np.float32(1.0))[None]
            outs = run_tflite(tflite["face_detection_short_range.tflite"], x)
            record(manifest, "detector", f"{name}_det128.png", outs)

        # Raw landmark inputs: square crops around the face (upright, rotated, no face), scaled to [0, 1].
        crops = {
            "astronaut": frames["astronaut"].crop((62, 10, 162, 110)),
            "astronaut_rot30": frames["astronaut_rot30"].crop((110, 70, 210, 170)),
            "coffee": frames["coffee"].crop((40, 10, 160, 130)),
        }
        for name, img in crops.items():
            px = save_png(img.resize((192, 192), Image.BILINEAR), FIXTURES / f"{name}_lm192.png")
            x = (px.astype(np.float32) / np.float32(255.0))[None]
            outs = run_tflite(tflite["face_landmark.tflite"], x)
            record(manifest, "landmarks", f"{name}_lm192.png", outs)

        (FIXTURES / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    for p in sorted(MODELS.iterdir()):
        print(f"{p.name}: {p.stat().st_size} bytes")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def record(manifest: dict, model: str, input_png: str, outs: dict) -> None:
    entry = {"model": model, "input": input_png, "outputs": {}}
    for tensor, value in outs.items():
        fname = f"{Path(input_png).stem}.{re.sub(r'[^A-Za-z0-9_]', '_', tensor)}.npy"
        np.save(FIXTURES / fname, value.astype("<f4"))
        entry["outputs"][tensor] = {"file": fname, "shape": list(value.shape)}
        print(f"{input_png} {tensor} {value.shape} min {value.min():.4f} max {value.max():.4f}")
    manifest["raw"].append(entry)


if __name__ == "__main__":
    main()
