//! Scenes of the synthetic world: layout and rendering.
//!
//! A scene is a soft background (a two-shade gradient of one named colour with
//! light pixel noise) and 3–7 flat shapes of named kinds, colours and sizes.
//! Every object carries its ground-truth normalised box, kind, colour name,
//! size class and a name such as "red circle"; every scene carries one
//! subject-neutral caption in a single canonical template.
//!
//! Rendering is our own: exact inside-tests per shape, evaluated once per
//! pixel corner; only pixels whose corners disagree (edge pixels) are
//! supersampled (4×4). Everything uses plain IEEE arithmetic (no
//! transcendental functions), so a seed gives the same pixels everywhere.

use crate::rand_util::{normal, pick_index, unit_range};
use deper_core::rng::seeded;
use deper_core::BBox;
use rand::Rng;
use serde::{Deserialize, Serialize};

/// Shape kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Circle,
    Square,
    Triangle,
    Star,
    Diamond,
    Ring,
    Cross,
    Hexagon,
}

impl Kind {
    pub const ALL: [Kind; 8] =
        [Kind::Circle, Kind::Square, Kind::Triangle, Kind::Star, Kind::Diamond, Kind::Ring, Kind::Cross, Kind::Hexagon];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Circle => "circle",
            Kind::Square => "square",
            Kind::Triangle => "triangle",
            Kind::Star => "star",
            Kind::Diamond => "diamond",
            Kind::Ring => "ring",
            Kind::Cross => "cross",
            Kind::Hexagon => "hexagon",
        }
    }

    pub fn plural(self) -> &'static str {
        match self {
            Kind::Circle => "circles",
            Kind::Square => "squares",
            Kind::Triangle => "triangles",
            Kind::Star => "stars",
            Kind::Diamond => "diamonds",
            Kind::Ring => "rings",
            Kind::Cross => "crosses",
            Kind::Hexagon => "hexagons",
        }
    }

    /// Extent of the shape around its centre in units of its radius: (u_min, u_max, v_min, v_max).
    fn extent(self) -> (f64, f64, f64, f64) {
        match self {
            Kind::Circle | Kind::Ring | Kind::Diamond | Kind::Cross => (-1.0, 1.0, -1.0, 1.0),
            Kind::Square => (-SQUARE_HALF, SQUARE_HALF, -SQUARE_HALF, SQUARE_HALF),
            Kind::Triangle => (-TRI_HALF_W, TRI_HALF_W, -0.75, 0.75),
            Kind::Star => (-STAR_X_OUTER, STAR_X_OUTER, -1.0, STAR_Y_LOW),
            Kind::Hexagon => (-1.0, 1.0, -HEX_HALF_H, HEX_HALF_H),
        }
    }

    /// A point (in radius units) that is inside the shape, away from its edges.
    pub fn interior_point(self) -> (f64, f64) {
        match self {
            Kind::Ring => (0.78, 0.0),
            _ => (0.0, 0.0),
        }
    }
}

const SQUARE_HALF: f64 = 0.82;
/// Half the side of the equilateral triangle of height 1.5: 1.5 / √3.
const TRI_HALF_W: f64 = 0.866_025_403_784_438_6;
const SQRT3: f64 = 1.732_050_807_568_877_2;
const HEX_HALF_H: f64 = 0.866_025_403_784_438_6;
const RING_INNER: f64 = 0.55;
const CROSS_ARM: f64 = 0.32;
/// cos 18°, sin 18°, cos 54°, sin 54° (outer star vertices).
const STAR_X_OUTER: f64 = 0.951_056_516_295_153_6;
const STAR_Y_OUTER: f64 = 0.309_016_994_374_947_45;
const STAR_X_LOW: f64 = 0.587_785_252_292_473_1;
const STAR_Y_LOW: f64 = 0.809_016_994_374_947_4;
const STAR_INNER: f64 = 0.45;

/// The ten vertices of the five-pointed star (point up), in radius units.
const STAR: [(f64, f64); 10] = [
    (0.0, -1.0),
    (STAR_X_LOW * STAR_INNER, -STAR_Y_LOW * STAR_INNER),
    (STAR_X_OUTER, -STAR_Y_OUTER),
    (STAR_X_OUTER * STAR_INNER, STAR_Y_OUTER * STAR_INNER),
    (STAR_X_LOW, STAR_Y_LOW),
    (0.0, STAR_INNER),
    (-STAR_X_LOW, STAR_Y_LOW),
    (-STAR_X_OUTER * STAR_INNER, STAR_Y_OUTER * STAR_INNER),
    (-STAR_X_OUTER, -STAR_Y_OUTER),
    (-STAR_X_LOW * STAR_INNER, -STAR_Y_LOW * STAR_INNER),
];

/// Exact inside-test of a shape in radius units (centre at the origin, y down).
pub fn inside(kind: Kind, u: f64, v: f64) -> bool {
    let (au, av) = (u.abs(), v.abs());
    match kind {
        Kind::Circle => u * u + v * v <= 1.0,
        Kind::Ring => {
            let d = u * u + v * v;
            (RING_INNER * RING_INNER..=1.0).contains(&d)
        }
        Kind::Square => au <= SQUARE_HALF && av <= SQUARE_HALF,
        Kind::Diamond => au + av <= 1.0,
        Kind::Cross => (au <= CROSS_ARM && av <= 1.0) || (av <= CROSS_ARM && au <= 1.0),
        Kind::Triangle => v <= 0.75 && SQRT3 * au <= v + 0.75,
        Kind::Hexagon => av <= HEX_HALF_H && SQRT3 * au + av <= SQRT3,
        Kind::Star => {
            if au > STAR_X_OUTER || !(-1.0..=STAR_Y_LOW).contains(&v) {
                return false;
            }
            // Crossing-number test on the 10-gon.
            let mut inside = false;
            let mut prev = STAR[STAR.len() - 1];
            for &(xi, yi) in &STAR {
                let (xj, yj) = prev;
                if (yi > v) != (yj > v) && u < (xj - xi) * (v - yi) / (yj - yi) + xi {
                    inside = !inside;
                }
                prev = (xi, yi);
            }
            inside
        }
    }
}

/// Named object colours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Colour {
    Red,
    Green,
    Blue,
    Yellow,
    Purple,
    Orange,
    Black,
    White,
    Pink,
}

impl Colour {
    pub const ALL: [Colour; 9] = [
        Colour::Red,
        Colour::Green,
        Colour::Blue,
        Colour::Yellow,
        Colour::Purple,
        Colour::Orange,
        Colour::Black,
        Colour::White,
        Colour::Pink,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Colour::Red => "red",
            Colour::Green => "green",
            Colour::Blue => "blue",
            Colour::Yellow => "yellow",
            Colour::Purple => "purple",
            Colour::Orange => "orange",
            Colour::Black => "black",
            Colour::White => "white",
            Colour::Pink => "pink",
        }
    }

    /// The reference RGB of the colour name (objects vary slightly around it).
    pub fn rgb(self) -> [u8; 3] {
        match self {
            Colour::Red => [214, 40, 40],
            Colour::Green => [46, 160, 67],
            Colour::Blue => [40, 90, 210],
            Colour::Yellow => [240, 200, 30],
            Colour::Purple => [130, 60, 170],
            Colour::Orange => [245, 130, 30],
            Colour::Black => [30, 30, 30],
            Colour::White => [250, 250, 247],
            Colour::Pink => [240, 120, 180],
        }
    }
}

/// Small, medium or large; the radius is continuous inside each class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SizeClass {
    Small,
    Medium,
    Large,
}

impl SizeClass {
    pub const ALL: [SizeClass; 3] = [SizeClass::Small, SizeClass::Medium, SizeClass::Large];

    pub fn as_str(self) -> &'static str {
        match self {
            SizeClass::Small => "small",
            SizeClass::Medium => "medium",
            SizeClass::Large => "large",
        }
    }

    /// Radius range (normalised image units); the gaps keep the classes apart.
    pub fn radius_range(self) -> (f64, f64) {
        match self {
            SizeClass::Small => (0.045, 0.07),
            SizeClass::Medium => (0.08, 0.105),
            SizeClass::Large => (0.115, 0.15),
        }
    }

    fn smaller(self) -> Option<SizeClass> {
        match self {
            SizeClass::Small => None,
            SizeClass::Medium => Some(SizeClass::Small),
            SizeClass::Large => Some(SizeClass::Medium),
        }
    }
}

/// Gradient direction of the background.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Gradient {
    Vertical,
    Horizontal,
    Diagonal,
}

/// A soft background: `from` at the start of the gradient, `to` at its end, plus noise.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Background {
    pub name: String,
    pub from: [u8; 3],
    pub to: [u8; 3],
    pub gradient: Gradient,
    /// Amplitude of the background speckle, in 8-bit levels.
    pub noise: u8,
    /// Seed of the speckle pattern.
    pub noise_seed: u32,
}

const BACKGROUNDS: [(&str, [u8; 3]); 6] = [
    ("beige", [235, 222, 200]),
    ("light grey", [218, 218, 218]),
    ("pale blue", [203, 222, 240]),
    ("pale green", [208, 232, 206]),
    ("cream", [248, 240, 214]),
    ("lavender", [226, 216, 240]),
];

/// One object of a scene with its ground truth.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SceneObject {
    pub kind: Kind,
    pub colour: Colour,
    pub size: SizeClass,
    /// "red circle".
    pub name: String,
    /// Tight normalised box of the shape.
    pub bbox: BBox,
    /// Shape centre (normalised).
    pub cx: f64,
    pub cy: f64,
    /// Radius (normalised); the shape's extent is a fixed multiple of it per kind.
    pub radius: f64,
    /// The rendered fill colour (the named colour with a slight shade variation).
    pub rgb: [u8; 3],
}

impl SceneObject {
    /// Whether the normalised point lies inside the shape.
    pub fn contains(&self, x: f64, y: f64) -> bool {
        inside(self.kind, (x - self.cx) / self.radius, (y - self.cy) / self.radius)
    }

    /// A normalised point well inside the shape (the centre, or on the band of a ring).
    pub fn interior_point(&self) -> (f64, f64) {
        let (u, v) = self.kind.interior_point();
        (self.cx + u * self.radius, self.cy + v * self.radius)
    }

    fn area_key(&self) -> f64 {
        self.bbox.area()
    }
}

/// One scene: its image file, background, objects and neutral caption.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scene {
    pub id: String,
    /// Path of the PNG relative to the dataset folder.
    pub file: String,
    pub width: u32,
    pub height: u32,
    pub background: Background,
    /// In drawing order (later objects are drawn over earlier ones).
    pub objects: Vec<SceneObject>,
    /// Subject-neutral caption in the canonical template.
    pub neutral_caption: String,
}

/// Image id of the `index`-th scene.
pub fn scene_id(index: usize) -> String {
    format!("scene_{index:04}")
}

/// Picks "a" or "an" for the following word.
pub fn article(next: &str) -> &'static str {
    match next.chars().next() {
        Some('a' | 'e' | 'i' | 'o' | 'u') => "an",
        _ => "a",
    }
}

/// Joins phrases as "a, b and c".
pub fn join_list(items: &[String]) -> String {
    match items.len() {
        0 => String::new(),
        1 => items[0].clone(),
        n => format!("{} and {}", items[..n - 1].join(", "), items[n - 1]),
    }
}

impl Scene {
    /// Draws the layout of scene `index` from its own random stream, so scenes do
    /// not depend on the number of scenes or on anything else drawn.
    pub fn generate(seed: u64, index: usize, size: u32) -> Scene {
        let id = scene_id(index);
        let mut rng = seeded(seed, &format!("scene/{id}"));

        let (bg_name, base) = BACKGROUNDS[pick_index(&mut rng, BACKGROUNDS.len())];
        let shade = |c: [u8; 3], d: i32| c.map(|v| (i32::from(v) + d).clamp(0, 255) as u8);
        let d1 = rng.gen_range(-4..=10);
        let d2 = rng.gen_range(-18..=-6);
        let (from, to) =
            if rng.gen_bool(0.5) { (shade(base, d1), shade(base, d2)) } else { (shade(base, d2), shade(base, d1)) };
        let gradient = [Gradient::Vertical, Gradient::Horizontal, Gradient::Diagonal][pick_index(&mut rng, 3)];
        let background = Background {
            name: bg_name.to_string(),
            from,
            to,
            gradient,
            noise: rng.gen_range(4..=8),
            noise_seed: rng.gen(),
        };

        let n = 3 + pick_index(&mut rng, 5);
        let mut objects: Vec<SceneObject> = Vec::with_capacity(n);
        let mut attempts = 0;
        while objects.len() < n && attempts < 200 {
            attempts += 1;
            let kind = Kind::ALL[pick_index(&mut rng, Kind::ALL.len())];
            let colour = Colour::ALL[pick_index(&mut rng, Colour::ALL.len())];
            if objects.iter().any(|o| o.kind == kind && o.colour == colour) {
                continue; // names stay unique within a scene
            }
            let mut class = SizeClass::ALL[pick_index(&mut rng, 3)];
            let placed = loop {
                if let Some(p) = place(&mut rng, kind, class, &objects) {
                    break Some(p);
                }
                match class.smaller() {
                    Some(c) => class = c,
                    None => break None,
                }
            };
            let Some((cx, cy, radius)) = placed else { continue };
            let base = colour.rgb();
            let f = unit_range(&mut rng, 0.9, 1.06);
            let rgb = base.map(|c| {
                let jitter = normal(&mut rng) * 4.0;
                (f64::from(c) * f + jitter).round().clamp(0.0, 255.0) as u8
            });
            let (u0, u1, v0, v1) = kind.extent();
            let bbox = BBox { x1: cx + u0 * radius, y1: cy + v0 * radius, x2: cx + u1 * radius, y2: cy + v1 * radius };
            objects.push(SceneObject {
                kind,
                colour,
                size: class,
                name: format!("{} {}", colour.as_str(), kind.as_str()),
                bbox,
                cx,
                cy,
                radius,
                rgb,
            });
        }

        let neutral_caption = neutral_caption(&objects, &background.name);
        Scene { file: format!("images/{id}.png"), id, width: size, height: size, background, objects, neutral_caption }
    }

    /// Object indices in canonical order: largest area first, ties by position.
    pub fn canonical_order(&self) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..self.objects.len()).collect();
        idx.sort_by(|&a, &b| {
            let (oa, ob) = (&self.objects[a], &self.objects[b]);
            ob.area_key().total_cmp(&oa.area_key()).then(oa.cx.total_cmp(&ob.cx)).then(oa.cy.total_cmp(&ob.cy))
        });
        idx
    }

    /// Renders the scene to an RGB image of `width × height` pixels.
    pub fn render(&self) -> image::RgbImage {
        let (w, h) = (self.width as usize, self.height as usize);
        let mut buf = vec![0u8; w * h * 3];
        render_background(&mut buf, w, h, &self.background);
        for o in &self.objects {
            // A thin darker rim first, then the fill; the rim keeps white
            // objects visible on light backgrounds.
            let rim = o.rgb.map(|c| (f64::from(c) * 0.62).round() as u8);
            let rim_px = 1.6 / w.max(h) as f64;
            fill_shape(&mut buf, w, h, o, o.radius + rim_px, rim);
            fill_shape(&mut buf, w, h, o, o.radius, o.rgb);
        }
        // Sizes always match, so from_raw cannot fail; fall back to a blank image just in case.
        image::RgbImage::from_raw(self.width, self.height, buf)
            .unwrap_or_else(|| image::RgbImage::new(self.width, self.height))
    }
}

/// "a large red circle, a small blue square and a medium green triangle on a beige background."
pub fn neutral_caption(objects: &[SceneObject], background: &str) -> String {
    let mut order: Vec<&SceneObject> = objects.iter().collect();
    order.sort_by(|a, b| b.area_key().total_cmp(&a.area_key()).then(a.cx.total_cmp(&b.cx)).then(a.cy.total_cmp(&b.cy)));
    let phrases: Vec<String> = order
        .iter()
        .map(|o| {
            let size = o.size.as_str();
            format!("{} {} {} {}", article(size), size, o.colour.as_str(), o.kind.as_str())
        })
        .collect();
    format!("{} on {} {} background.", join_list(&phrases), article(background), background)
}

/// Finds a position for a new object of the class, or `None` after enough tries.
fn place(rng: &mut impl Rng, kind: Kind, class: SizeClass, placed: &[SceneObject]) -> Option<(f64, f64, f64)> {
    let (rmin, rmax) = class.radius_range();
    let (u0, u1, v0, v1) = kind.extent();
    const MARGIN: f64 = 0.015;
    for _ in 0..60 {
        let r = unit_range(rng, rmin, rmax);
        let (xlo, xhi) = (MARGIN - u0 * r, 1.0 - MARGIN - u1 * r);
        let (ylo, yhi) = (MARGIN - v0 * r, 1.0 - MARGIN - v1 * r);
        if xlo >= xhi || ylo >= yhi {
            continue;
        }
        let cx = unit_range(rng, xlo, xhi);
        let cy = unit_range(rng, ylo, yhi);
        // Slight overlap is fine, heavy overlap is not.
        let ok = placed.iter().all(|o| {
            let (dx, dy) = (o.cx - cx, o.cy - cy);
            let min = 0.9 * (o.radius + r);
            dx * dx + dy * dy >= min * min
        });
        if ok {
            return Some((cx, cy, r));
        }
    }
    None
}

fn render_background(buf: &mut [u8], w: usize, h: usize, bg: &Background) {
    // The gradient depends on x, y or x + y only: one lookup table of colours,
    // rows are then filled with slice copies (fast even without optimisation).
    let steps = match bg.gradient {
        Gradient::Vertical => h,
        Gradient::Horizontal => w,
        Gradient::Diagonal => w + h - 1,
    };
    let mut lut: Vec<u8> = Vec::with_capacity(steps * 3);
    for k in 0..steps {
        let t = k as f64 / (steps - 1).max(1) as f64;
        for ch in 0..3 {
            let (a, b) = (f64::from(bg.from[ch]), f64::from(bg.to[ch]));
            lut.push((a + (b - a) * t).round().clamp(0.0, 255.0) as u8);
        }
    }
    let row_len = w * 3;
    for (y, row) in buf.chunks_exact_mut(row_len).enumerate().take(h) {
        match bg.gradient {
            Gradient::Vertical => {
                row[..3].copy_from_slice(&lut[y * 3..y * 3 + 3]);
                let mut filled = 3;
                while filled < row_len {
                    let n = filled.min(row_len - filled);
                    row.copy_within(..n, filled);
                    filled += n;
                }
            }
            Gradient::Horizontal => row.copy_from_slice(&lut[..row_len]),
            Gradient::Diagonal => row.copy_from_slice(&lut[y * 3..y * 3 + row_len]),
        }
    }
    // Light paper-like texture: a sparse speckle of slightly darker or lighter pixels.
    let amp = i32::from(bg.noise);
    let mut state: u32 = bg.noise_seed | 1;
    let mut next = || {
        // xorshift32
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        state
    };
    let pixels = (w * h) as u64;
    let count = pixels * u64::from(SPECKLE) / 256;
    for _ in 0..count {
        let i = ((u64::from(next()) * pixels) >> 32) as usize * 3;
        let d = if next() & 1 == 0 { amp } else { -amp };
        for c in &mut buf[i..i + 3] {
            *c = (i32::from(*c) + d).clamp(0, 255) as u8;
        }
    }
}

/// Speckle density of the background texture: pixels out of 256.
const SPECKLE: u32 = 8;

/// Blends the shape (scaled to `radius`) over the buffer; edge pixels are supersampled 4×4.
fn fill_shape(buf: &mut [u8], w: usize, h: usize, o: &SceneObject, radius: f64, rgb: [u8; 3]) {
    let (u0, u1, v0, v1) = o.kind.extent();
    let (wf, hf) = (w as f64, h as f64);
    let px0 = (((o.cx + u0 * radius) * wf).floor() as i64 - 1).clamp(0, w as i64) as usize;
    let px1 = (((o.cx + u1 * radius) * wf).ceil() as i64 + 1).clamp(0, w as i64) as usize;
    let py0 = (((o.cy + v0 * radius) * hf).floor() as i64 - 1).clamp(0, h as i64) as usize;
    let py1 = (((o.cy + v1 * radius) * hf).ceil() as i64 + 1).clamp(0, h as i64) as usize;
    if px0 >= px1 || py0 >= py1 {
        return;
    }
    let inv = 1.0 / radius;
    let test = |x: f64, y: f64| inside(o.kind, (x - o.cx) * inv, (y - o.cy) * inv);
    // Inside flags at pixel corners: (px1 - px0 + 1) × (py1 - py0 + 1).
    let cw = px1 - px0 + 1;
    let mut corners = vec![false; cw * (py1 - py0 + 1)];
    for (j, y) in (py0..=py1).enumerate() {
        for (i, x) in (px0..=px1).enumerate() {
            corners[j * cw + i] = test(x as f64 / wf, y as f64 / hf);
        }
    }
    let col = rgb.map(f64::from);
    for py in py0..py1 {
        let j = py - py0;
        for px in px0..px1 {
            let i = px - px0;
            let n = usize::from(corners[j * cw + i])
                + usize::from(corners[j * cw + i + 1])
                + usize::from(corners[(j + 1) * cw + i])
                + usize::from(corners[(j + 1) * cw + i + 1]);
            let cover = if n == 4 {
                1.0
            } else if n == 0 && !test((px as f64 + 0.5) / wf, (py as f64 + 0.5) / hf) {
                continue;
            } else {
                let mut hits = 0u32;
                for sy in 0..4 {
                    for sx in 0..4 {
                        let x = (px as f64 + (f64::from(sx) + 0.5) / 4.0) / wf;
                        let y = (py as f64 + (f64::from(sy) + 0.5) / 4.0) / hf;
                        hits += u32::from(test(x, y));
                    }
                }
                f64::from(hits) / 16.0
            };
            let k = (py * w + px) * 3;
            if n == 4 {
                buf[k..k + 3].copy_from_slice(&rgb);
                continue;
            }
            for c in 0..3 {
                let dst = f64::from(buf[k + c]);
                buf[k + c] = (dst + (col[c] - dst) * cover).round() as u8;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_fill_their_boxes_and_nothing_outside() {
        for kind in Kind::ALL {
            let (u0, u1, v0, v1) = kind.extent();
            let mut hit = [false; 4];
            let n = 400;
            for j in 0..=n {
                for i in 0..=n {
                    let u = -1.2 + 2.4 * f64::from(i) / f64::from(n);
                    let v = -1.2 + 2.4 * f64::from(j) / f64::from(n);
                    if inside(kind, u, v) {
                        assert!(
                            u >= u0 - 1e-9 && u <= u1 + 1e-9 && v >= v0 - 1e-9 && v <= v1 + 1e-9,
                            "{kind:?} {u} {v}"
                        );
                        hit[0] |= u < u0 + 0.02;
                        hit[1] |= u > u1 - 0.02;
                        hit[2] |= v < v0 + 0.02;
                        hit[3] |= v > v1 - 0.02;
                    }
                }
            }
            assert!(hit.iter().all(|&h| h), "{kind:?} does not reach its box: {hit:?}");
            let (iu, iv) = kind.interior_point();
            assert!(inside(kind, iu, iv));
        }
    }

    #[test]
    fn layouts_are_valid() {
        for i in 0..200 {
            let s = Scene::generate(5, i, 448);
            assert!((3..=7).contains(&s.objects.len()), "{} has {}", s.id, s.objects.len());
            for o in &s.objects {
                let b = o.bbox;
                assert!(b.x1 >= 0.0 && b.y1 >= 0.0 && b.x2 <= 1.0 && b.y2 <= 1.0, "{b:?}");
                let (lo, hi) = o.size.radius_range();
                assert!(o.radius >= lo && o.radius <= hi);
            }
            assert!(s.neutral_caption.ends_with(" background."));
        }
    }

    #[test]
    fn caption_template() {
        let s = Scene::generate(0, 0, 448);
        let first = &s.objects[s.canonical_order()[0]];
        let expect = format!("a {} {} {}", first.size.as_str(), first.colour.as_str(), first.kind.as_str());
        assert!(s.neutral_caption.starts_with(&expect), "{}", s.neutral_caption);
    }
}
