//! The JavaScript API of deper-web (wasm32 only), used by `web/deper-worker.js`:
//!
//! * `start(prefer)`: chooses the compute device once per module — `"webgpu"` (burn's wgpu
//!   backend on the page's WebGPU adapter) unless `prefer` is `"cpu"` or no adapter is offered,
//!   else `"cpu"` (burn's NdArray). Calling it again switches to the CPU, or back to WebGPU
//!   when it initialised before.
//! * `Embedder.load(run_json, model_mpk)` → `embed(triplets)` (mean `z_s`, as native
//!   `deper embed`), `embed_each(triplets)`, `dim()`, `backend()`.
//! * `trajectory_from_mouse(samples, width, height)`: the trajectory native builds.
//!
//! Every error is a JavaScript `Error` whose message names the triplet and field. A Rust panic
//! aborts the module; the hook installed at load prints its message to the console first.
//! WebGPU cannot be read synchronously: results come back with `into_data_async`.

use burn::backend::wgpu::{graphics::WebGpu, init_setup_async, Wgpu, WgpuDevice};
use burn::backend::NdArray;
use burn::prelude::*;
use deper_core::Trajectory;
use deper_model::run::mean_vector;
use js_sys::{Array, Float32Array, Reflect, JSON};
use std::cell::RefCell;
use std::rc::Rc;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::{future_to_promise, JsFuture};

use crate::engine::{Engine, Triplet};
use crate::mouse;

/// Which device `start` chose, and whether WebGPU was initialised (it can be only once).
#[derive(Default)]
struct DeviceState {
    chosen: Option<Compute>,
    webgpu_ready: bool,
}

#[derive(Clone, Copy, PartialEq)]
enum Compute {
    WebGpu,
    Cpu,
}

impl Compute {
    fn name(self) -> &'static str {
        match self {
            Compute::WebGpu => "webgpu",
            Compute::Cpu => "cpu",
        }
    }
}

thread_local! {
    static DEVICE: RefCell<DeviceState> = RefCell::new(DeviceState::default());
}

fn js_error(message: impl AsRef<str>) -> JsValue {
    js_sys::Error::new(message.as_ref()).into()
}

/// Runs when the module is instantiated: panics print their message to the console.
#[wasm_bindgen(start)]
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| web_sys::console::error_1(&format!("deper-web panicked: {info}").into())));
}

/// Whether the global scope (page or worker) offers a WebGPU adapter. Asked here, not left to
/// wgpu, because wgpu panics (and a panic aborts the module) when there is none.
async fn webgpu_adapter_offered() -> bool {
    let global = js_sys::global();
    let Ok(navigator) = Reflect::get(&global, &"navigator".into()) else { return false };
    let Ok(gpu) = Reflect::get(&navigator, &"gpu".into()) else { return false };
    if gpu.is_undefined() || gpu.is_null() {
        return false;
    }
    let Ok(request) = Reflect::get(&gpu, &"requestAdapter".into()).and_then(|f| f.dyn_into::<js_sys::Function>())
    else {
        return false;
    };
    let Ok(promise) = request.call0(&gpu).and_then(|p| p.dyn_into::<js_sys::Promise>()) else { return false };
    matches!(JsFuture::from(promise).await, Ok(adapter) if !adapter.is_null() && !adapter.is_undefined())
}

/// Chooses the compute device (see the module docs) and returns its name, `"webgpu"` or `"cpu"`.
#[wasm_bindgen]
pub async fn start(prefer: String) -> Result<String, JsValue> {
    let want_gpu = prefer != "cpu";
    let ready = DEVICE.with(|d| d.borrow().webgpu_ready);
    let chosen = if want_gpu && (ready || webgpu_adapter_offered().await) {
        if !ready {
            init_setup_async::<WebGpu>(&WgpuDevice::default(), Default::default()).await;
            DEVICE.with(|d| d.borrow_mut().webgpu_ready = true);
        }
        Compute::WebGpu
    } else {
        Compute::Cpu
    };
    DEVICE.with(|d| d.borrow_mut().chosen = Some(chosen));
    Ok(chosen.name().into())
}

#[derive(Debug)]
enum Inner {
    Gpu(Box<Engine<Wgpu>>),
    Cpu(Box<Engine<NdArray>>),
}

/// A stage-1 run loaded on the device `start` chose.
#[wasm_bindgen]
#[derive(Debug)]
pub struct Embedder {
    inner: Rc<Inner>,
}

#[wasm_bindgen]
impl Embedder {
    /// Loads a run from its `run.json` text and `model.mpk` bytes; errors on bytes that are not
    /// the weights of the network `run.json` describes.
    pub async fn load(run_json: String, model_mpk: Vec<u8>) -> Result<Embedder, JsValue> {
        let chosen =
            DEVICE.with(|d| d.borrow().chosen).ok_or_else(|| js_error("call start() before Embedder.load()"))?;
        let inner = match chosen {
            Compute::WebGpu => {
                Inner::Gpu(Box::new(Engine::load(&run_json, model_mpk, &WgpuDevice::default()).map_err(js_error)?))
            }
            Compute::Cpu => {
                Inner::Cpu(Box::new(Engine::load(&run_json, model_mpk, &Default::default()).map_err(js_error)?))
            }
        };
        Ok(Embedder { inner: Rc::new(inner) })
    }

    /// The mean `z_s` over `triplets` (a `Float32Array` of `dim()` values), as native `deper embed`.
    ///
    /// `triplets`: `[{features: Float32Array, grid: [h, w, c], caption: string, trajectory}]`,
    /// `trajectory` as deper-core serialises it (`{source, steps: [{bbox: {x1, y1, x2, y2}, duration, …}]}`).
    pub fn embed(&self, triplets: JsValue) -> js_sys::Promise {
        let inner = Rc::clone(&self.inner);
        future_to_promise(async move {
            let rows = z_s_rows(&inner, &triplets).await?;
            let mean = mean_vector(&rows.iter().collect::<Vec<_>>());
            Ok(Float32Array::from(mean.as_slice()).into())
        })
    }

    /// `z_s` of every triplet: an `Array` of `Float32Array`s.
    pub fn embed_each(&self, triplets: JsValue) -> js_sys::Promise {
        let inner = Rc::clone(&self.inner);
        future_to_promise(async move {
            let rows = z_s_rows(&inner, &triplets).await?;
            Ok(rows.iter().map(|r| JsValue::from(Float32Array::from(r.as_slice()))).collect::<Array>().into())
        })
    }

    /// Width of `z_s`.
    pub fn dim(&self) -> usize {
        match &*self.inner {
            Inner::Gpu(e) => e.dim(),
            Inner::Cpu(e) => e.dim(),
        }
    }

    /// `"webgpu"` or `"cpu"`.
    pub fn backend(&self) -> String {
        match &*self.inner {
            Inner::Gpu(_) => "webgpu".into(),
            Inner::Cpu(_) => "cpu".into(),
        }
    }
}

async fn z_s_rows(inner: &Inner, triplets: &JsValue) -> Result<Vec<Vec<f32>>, JsValue> {
    let triplets = read_triplets(triplets).map_err(js_error)?;
    match inner {
        Inner::Gpu(e) => read_rows(e.z_s_batches(&triplets).map_err(js_error)?).await,
        Inner::Cpu(e) => read_rows(e.z_s_batches(&triplets).map_err(js_error)?).await,
    }
}

async fn read_rows<B: Backend>(batches: Vec<Tensor<B, 2>>) -> Result<Vec<Vec<f32>>, JsValue> {
    let mut rows = Vec::new();
    for z in batches {
        let [_, d] = z.dims();
        let data = z.into_data_async().await.map_err(|e| js_error(format!("reading z_s back: {e:?}")))?;
        let values: Vec<f32> =
            data.convert::<f32>().to_vec().map_err(|e| js_error(format!("reading z_s back: {e:?}")))?;
        rows.extend(values.chunks(d).map(<[f32]>::to_vec));
    }
    Ok(rows)
}

/// Reads the page's triplets; errors name the index and field.
fn read_triplets(value: &JsValue) -> Result<Vec<Triplet>, String> {
    if !Array::is_array(value) {
        return Err("triplets: expected an array".into());
    }
    Array::from(value).iter().enumerate().map(|(i, t)| read_triplet(i, &t)).collect()
}

fn field(i: usize, t: &JsValue, name: &str) -> Result<JsValue, String> {
    let v = Reflect::get(t, &name.into()).map_err(|_| format!("triplet {i}: not an object"))?;
    if v.is_undefined() {
        return Err(format!("triplet {i}: {name}: missing"));
    }
    Ok(v)
}

fn read_triplet(i: usize, t: &JsValue) -> Result<Triplet, String> {
    if !t.is_object() {
        return Err(format!("triplet {i}: expected an object"));
    }
    let features = field(i, t, "features")?;
    let features = if let Some(f) = features.dyn_ref::<Float32Array>() {
        f.to_vec()
    } else if Array::is_array(&features) {
        Float32Array::new(&features).to_vec()
    } else {
        return Err(format!("triplet {i}: features: expected a Float32Array"));
    };
    let grid = field(i, t, "grid")?;
    let grid_values: Vec<JsValue> = if Array::is_array(&grid) { Array::from(&grid).to_vec() } else { vec![] };
    let sizes: Vec<usize> = grid_values
        .iter()
        .filter_map(JsValue::as_f64)
        .filter(|v| v.fract() == 0.0 && *v >= 1.0 && *v <= 1e6)
        .map(|v| v as usize)
        .collect();
    let [h, w, c] = <[usize; 3]>::try_from(sizes)
        .map_err(|_| format!("triplet {i}: grid: expected [h, w, c], three positive integers"))?;
    let caption =
        field(i, t, "caption")?.as_string().ok_or_else(|| format!("triplet {i}: caption: expected a string"))?;
    let trajectory = field(i, t, "trajectory")?;
    let text = JSON::stringify(&trajectory)
        .ok()
        .and_then(|s| s.as_string())
        .ok_or_else(|| format!("triplet {i}: trajectory: not JSON"))?;
    let de = &mut serde_json::Deserializer::from_str(&text);
    let trajectory: Trajectory = serde_path_to_error::deserialize(de)
        .map_err(|e| format!("triplet {i}: trajectory.{}: {}", e.path(), e.inner()))?;
    Ok(Triplet { features, grid: [h, w, c], caption, trajectory })
}

/// Mouse samples `[{t_ms, x, y}]` (x, y normalised to the image) → a deper-core trajectory
/// (JSON object), built as the study export builds it. `width`, `height`: the image's
/// displayed size in pixels (must be positive).
#[wasm_bindgen]
pub fn trajectory_from_mouse(samples: JsValue, width: f64, height: f64) -> Result<JsValue, JsValue> {
    let text = JSON::stringify(&samples)
        .ok()
        .and_then(|s| s.as_string())
        .ok_or_else(|| js_error("mouse samples: not JSON"))?;
    let samples = mouse::parse_samples(&text).map_err(js_error)?;
    let trajectory = mouse::trajectory(&samples, width, height).map_err(js_error)?;
    let json = serde_json::to_string(&trajectory).map_err(|e| js_error(e.to_string()))?;
    JSON::parse(&json)
}
