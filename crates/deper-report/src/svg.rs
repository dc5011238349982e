//! SVG builders for the report: scatter plots (the subject-embedding map), line charts (training
//! curves) and trajectory overlays (attention boxes drawn on their image).
//!
//! Each returns one standalone `<svg>` element as a `String` (well-formed XML, no script, no
//! external reference; images are `data:` URIs). All user text is escaped; non-finite
//! coordinates are skipped, never written, and empty input draws a "no data" frame.

use crate::escape::{self, xml};
use crate::Step;
use std::fmt::Write;

/// 20 distinguishable colours (Tableau 20 order: strong hues first, then their light variants).
pub const PALETTE: [&str; 20] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
    "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5",
];

/// Ground-truth trajectory colour (Okabe–Ito blue).
pub const GROUND_TRUTH_COLOUR: &str = "#0072b2";
/// Reconstructed trajectory colour (Okabe–Ito orange).
pub const RECONSTRUCTED_COLOUR: &str = "#e69f00";

const FONT: &str = "font-family=\"sans-serif\"";

/// One point of a [`scatter`] plot.
#[derive(Debug, Clone, PartialEq)]
pub struct ScatterPoint {
    pub x: f64,
    pub y: f64,
    /// Points of one group share a colour (and a legend entry).
    pub group: String,
    /// Filled or hollow marker (seen / unseen subject).
    pub filled: bool,
    /// Extra tooltip text.
    pub label: Option<String>,
}

/// One line of a [`line_chart`].
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    /// `(x, y)`; a non-finite value ends the current segment.
    pub points: Vec<(f64, f64)>,
}

/// "Nice" tick values (1, 2 or 5 × 10^k apart) covering `[lo, hi]`, about `target` of them.
pub fn nice_ticks(lo: f64, hi: f64, target: usize) -> Vec<f64> {
    if !lo.is_finite() || !hi.is_finite() || hi <= lo {
        return if lo.is_finite() { vec![lo] } else { Vec::new() };
    }
    let raw = (hi - lo) / target.max(1) as f64;
    let exp = raw.log10().floor() as i32;
    let mag = 10f64.powi(exp);
    let mult = [1.0, 2.0, 5.0, 10.0].into_iter().find(|m| m * mag >= raw).unwrap_or(10.0);
    let step = mult * mag;
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    // i·m / 10^k rather than i·(m·10^-k): 0.3, not 0.30000000000000004.
    let tick = |i: i64| if exp < 0 { i as f64 * mult / 10f64.powi(-exp) } else { i as f64 * mult * mag };
    (first..=last).map(tick).collect()
}

/// Data range → pixel mapping of one plot area; a zero-width range is widened so nothing divides
/// by zero.
#[derive(Debug, Clone, Copy)]
struct Frame {
    x0: f64,
    y0: f64,
    w: f64,
    h: f64,
    xmin: f64,
    xmax: f64,
    ymin: f64,
    ymax: f64,
}

fn widen(lo: f64, hi: f64) -> (f64, f64) {
    if !lo.is_finite() || !hi.is_finite() {
        return (0.0, 1.0);
    }
    if hi > lo {
        let pad = (hi - lo) * 0.05;
        (lo - pad, hi + pad)
    } else {
        let half = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
        (lo - half, lo + half)
    }
}

impl Frame {
    fn new(
        area: (f64, f64, f64, f64),
        xs: impl Iterator<Item = f64> + Clone,
        ys: impl Iterator<Item = f64> + Clone,
    ) -> Self {
        let (xmin, xmax) = widen(xs.clone().fold(f64::INFINITY, f64::min), xs.fold(f64::NEG_INFINITY, f64::max));
        let (ymin, ymax) = widen(ys.clone().fold(f64::INFINITY, f64::min), ys.fold(f64::NEG_INFINITY, f64::max));
        Frame { x0: area.0, y0: area.1, w: area.2, h: area.3, xmin, xmax, ymin, ymax }
    }

    fn px(&self, x: f64) -> f64 {
        self.x0 + (x - self.xmin) / (self.xmax - self.xmin) * self.w
    }

    fn py(&self, y: f64) -> f64 {
        self.y0 + self.h - (y - self.ymin) / (self.ymax - self.ymin) * self.h
    }

    /// Axes box, ticks with labels and axis titles.
    fn axes(&self, out: &mut String, x_label: &str, y_label: &str) {
        let (x0, y0, w, h) = (self.x0, self.y0, self.w, self.h);
        let _ = writeln!(
            out,
            "<rect x=\"{x0:.1}\" y=\"{y0:.1}\" width=\"{w:.1}\" height=\"{h:.1}\" fill=\"none\" stroke=\"#888\"/>"
        );
        for t in nice_ticks(self.xmin, self.xmax, 6) {
            let x = self.px(t);
            let _ = writeln!(
                out,
                "<line x1=\"{x:.1}\" y1=\"{:.1}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#888\"/><text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"10\" {FONT}>{}</text>",
                y0 + h,
                y0 + h + 4.0,
                y0 + h + 15.0,
                xml(&escape::short(t))
            );
        }
        for t in nice_ticks(self.ymin, self.ymax, 5) {
            let y = self.py(t);
            let _ = writeln!(
                out,
                "<line x1=\"{:.1}\" y1=\"{y:.1}\" x2=\"{x0:.1}\" y2=\"{y:.1}\" stroke=\"#888\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" font-size=\"10\" {FONT}>{}</text>",
                x0 - 4.0,
                x0 - 6.0,
                y + 3.5,
                xml(&escape::short(t))
            );
        }
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"12\" {FONT}>{}</text>",
            x0 + w / 2.0,
            y0 + h + 32.0,
            xml(x_label)
        );
        let (lx, ly) = (x0 - 44.0, y0 + h / 2.0);
        let _ = writeln!(
            out,
            "<text x=\"{lx:.1}\" y=\"{ly:.1}\" transform=\"rotate(-90 {lx:.1} {ly:.1})\" text-anchor=\"middle\" font-size=\"12\" {FONT}>{}</text>",
            xml(y_label)
        );
    }
}

fn open_svg(out: &mut String, width: f64, height: f64, title: &str) {
    let _ = writeln!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{height:.0}\" viewBox=\"0 0 {width:.0} {height:.0}\" role=\"img\">\n<title>{}</title>\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>",
        xml(title)
    );
    let _ = writeln!(
        out,
        "<text x=\"{:.1}\" y=\"18\" text-anchor=\"middle\" font-size=\"14\" font-weight=\"bold\" {FONT}>{}</text>",
        width / 2.0,
        xml(title)
    );
}

fn no_data(out: &mut String, x: f64, y: f64) {
    let _ = writeln!(
        out,
        "<text x=\"{x:.1}\" y=\"{y:.1}\" text-anchor=\"middle\" font-size=\"14\" fill=\"#888\" {FONT}>no data</text>"
    );
}

/// Long legend names are cut so the legend stays inside the picture (the tooltip has the full name).
fn legend_name(name: &str) -> String {
    const MAX: usize = 26;
    if name.chars().count() > MAX {
        format!("{}…", name.chars().take(MAX - 1).collect::<String>())
    } else {
        name.to_string()
    }
}

/// Marker shape for the `k`-th colour cycle: groups beyond the palette get a new shape.
fn marker(out: &mut String, shape: usize, x: f64, y: f64, colour: &str, filled: bool, tooltip: &str) {
    let fill = if filled { colour } else { "white" };
    let r = 4.0;
    // Circle, square, triangle, diamond.
    let (tag, geometry) = match shape % 4 {
        0 => ("circle", format!("cx=\"{x:.2}\" cy=\"{y:.2}\" r=\"{r}\"")),
        1 => (
            "rect",
            format!("x=\"{:.2}\" y=\"{:.2}\" width=\"{:.1}\" height=\"{:.1}\"", x - r, y - r, 2.0 * r, 2.0 * r),
        ),
        2 => {
            let (dx, up, down) = (r * 1.1, r * 1.2, r * 0.8);
            (
                "polygon",
                format!("points=\"{x:.2},{:.2} {:.2},{:.2} {:.2},{:.2}\"", y - up, x - dx, y + down, x + dx, y + down),
            )
        }
        _ => {
            let e = r * 1.3;
            (
                "polygon",
                format!("points=\"{x:.2},{:.2} {:.2},{y:.2} {x:.2},{:.2} {:.2},{y:.2}\"", y - e, x + e, y + e, x - e),
            )
        }
    };
    let _ = writeln!(
        out,
        "<{tag} {geometry} fill=\"{fill}\" stroke=\"{colour}\" stroke-width=\"1.5\"><title>{}</title></{tag}>",
        xml(tooltip)
    );
}

/// A scatter plot coloured by group with a legend; filled markers for `filled` points, hollow for
/// the others. Zero points (or none finite) draw "no data"; one point sits in the middle.
pub fn scatter(title: &str, x_label: &str, y_label: &str, points: &[ScatterPoint]) -> String {
    let finite: Vec<&ScatterPoint> = points.iter().filter(|p| p.x.is_finite() && p.y.is_finite()).collect();
    let mut groups: Vec<&str> = finite.iter().map(|p| p.group.as_str()).collect();
    groups.sort_unstable();
    groups.dedup();
    let legend_rows = groups.len() + 3;
    let height = f64::max(460.0, 50.0 + 16.0 * legend_rows as f64);
    let width = 760.0;
    let mut out = String::new();
    open_svg(&mut out, width, height, title);
    let frame = Frame::new((64.0, 32.0, 460.0, 370.0), finite.iter().map(|p| p.x), finite.iter().map(|p| p.y));
    frame.axes(&mut out, x_label, y_label);
    if finite.is_empty() {
        no_data(&mut out, frame.x0 + frame.w / 2.0, frame.y0 + frame.h / 2.0);
    }
    let style_of = |g: &str| {
        let k = groups.binary_search(&g).unwrap_or(0);
        (PALETTE[k % PALETTE.len()], k / PALETTE.len())
    };
    for p in &finite {
        let (colour, shape) = style_of(&p.group);
        let state = if p.filled { "seen" } else { "unseen" };
        let tooltip = match &p.label {
            Some(l) => format!("{} ({state}): {l}", p.group),
            None => format!("{} ({state})", p.group),
        };
        marker(&mut out, shape, frame.px(p.x), frame.py(p.y), colour, p.filled, &tooltip);
    }
    // Legend: one row per group, then the filled/hollow key.
    let lx = frame.x0 + frame.w + 24.0;
    let mut ly = frame.y0 + 8.0;
    for g in &groups {
        let (colour, shape) = style_of(g);
        marker(&mut out, shape, lx, ly, colour, true, g);
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" {FONT}>{}</text>",
            lx + 10.0,
            ly + 4.0,
            xml(&legend_name(g))
        );
        ly += 16.0;
    }
    if finite.len() < points.len() {
        let _ = writeln!(out, "<text x=\"{lx:.1}\" y=\"{:.1}\" font-size=\"11\" fill=\"#888\" {FONT}>{} non-finite point(s) not drawn</text>", ly + 4.0, points.len() - finite.len());
        ly += 16.0;
    }
    ly += 8.0;
    for (filled, text) in [(true, "seen subject"), (false, "unseen subject")] {
        marker(&mut out, 0, lx, ly, "#444", filled, text);
        let _ =
            writeln!(out, "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" {FONT}>{text}</text>", lx + 10.0, ly + 4.0);
        ly += 16.0;
    }
    out.push_str("</svg>\n");
    out
}

/// A line chart, one line per series with a legend, axes with ticks and labels. Non-finite
/// values leave gaps; an isolated point is drawn as a dot.
pub fn line_chart(title: &str, x_label: &str, y_label: &str, series: &[Series]) -> String {
    let finite = |s: &Series| -> Vec<(f64, f64)> {
        s.points.iter().copied().filter(|(x, y)| x.is_finite() && y.is_finite()).collect()
    };
    let all: Vec<(f64, f64)> = series.iter().flat_map(finite).collect();
    let height = f64::max(360.0, 50.0 + 16.0 * series.len() as f64);
    let width = 760.0;
    let mut out = String::new();
    open_svg(&mut out, width, height, title);
    let frame = Frame::new((64.0, 32.0, 460.0, 270.0), all.iter().map(|p| p.0), all.iter().map(|p| p.1));
    frame.axes(&mut out, x_label, y_label);
    if all.is_empty() {
        no_data(&mut out, frame.x0 + frame.w / 2.0, frame.y0 + frame.h / 2.0);
    }
    let lx = frame.x0 + frame.w + 24.0;
    let mut ly = frame.y0 + 8.0;
    for (k, s) in series.iter().enumerate() {
        let colour = PALETTE[k % PALETTE.len()];
        // Split into runs of finite points.
        let mut runs: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
        for &(x, y) in &s.points {
            if x.is_finite() && y.is_finite() {
                if let Some(run) = runs.last_mut() {
                    run.push((frame.px(x), frame.py(y)));
                }
            } else if runs.last().is_some_and(|r| !r.is_empty()) {
                runs.push(Vec::new());
            }
        }
        let dash = if k / PALETTE.len() % 2 == 1 { " stroke-dasharray=\"6 3\"" } else { "" };
        let _ = writeln!(out, "<g><title>{}</title>", xml(&s.name));
        for run in runs.iter().filter(|r| !r.is_empty()) {
            if run.len() == 1 {
                let _ = writeln!(
                    out,
                    "<circle cx=\"{:.2}\" cy=\"{:.2}\" r=\"2.5\" fill=\"{colour}\"/>",
                    run[0].0, run[0].1
                );
                continue;
            }
            let d: Vec<String> = run
                .iter()
                .enumerate()
                .map(|(i, (x, y))| format!("{}{x:.2},{y:.2}", if i == 0 { "M" } else { "L" }))
                .collect();
            let _ = writeln!(
                out,
                "<path d=\"{}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.8\"{dash}/>",
                d.join(" ")
            );
        }
        out.push_str("</g>\n");
        let _ = writeln!(
            out,
            "<line x1=\"{lx:.1}\" y1=\"{ly:.1}\" x2=\"{:.1}\" y2=\"{ly:.1}\" stroke=\"{colour}\" stroke-width=\"2.5\"{dash}/><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" {FONT}>{}</text>",
            lx + 16.0,
            lx + 22.0,
            ly + 4.0,
            xml(&legend_name(&s.name))
        );
        ly += 16.0;
    }
    out.push_str("</svg>\n");
    out
}

/// Width and height of a PNG from its IHDR chunk; `None` for anything else.
pub fn png_size(bytes: &[u8]) -> Option<(u32, u32)> {
    const SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];
    if bytes.len() < 24 || bytes[..8] != SIGNATURE || &bytes[12..16] != b"IHDR" {
        return None;
    }
    let w = u32::from_be_bytes([bytes[16], bytes[17], bytes[18], bytes[19]]);
    let h = u32::from_be_bytes([bytes[20], bytes[21], bytes[22], bytes[23]]);
    (w > 0 && h > 0).then_some((w, h))
}

/// Ground-truth and reconstructed trajectories over their image: a box per step (solid for
/// ground truth, dashed for the reconstruction), its step number, a dot at its centre sized by
/// the dwell time, and a line through the box centres in step order. Steps with non-finite
/// coordinates are left out (the numbering keeps their place). Without image bytes the boxes
/// are drawn on a grey square; an image whose size cannot be read is stretched to a square.
pub fn trajectory_overlay(image: &[u8], ground_truth: &[Step], reconstructed: &[Step]) -> String {
    const WIDTH: f64 = 480.0;
    let aspect = png_size(image).map_or(1.0, |(w, h)| (f64::from(h) / f64::from(w)).clamp(0.25, 4.0));
    let (w, h) = (WIDTH, WIDTH * aspect);
    let legend_h = 24.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w:.0}\" height=\"{:.0}\" viewBox=\"0 0 {w:.0} {:.0}\" role=\"img\">\n<title>ground truth vs reconstructed trajectory</title>",
        h + legend_h,
        h + legend_h
    );
    if image.is_empty() {
        let _ = writeln!(out, "<rect width=\"{w:.1}\" height=\"{h:.1}\" fill=\"#ddd\"/>");
    } else {
        let _ = writeln!(
            out,
            "<image x=\"0\" y=\"0\" width=\"{w:.1}\" height=\"{h:.1}\" preserveAspectRatio=\"none\" href=\"{}\"/>",
            escape::data_uri(image)
        );
    }
    for (steps, colour, name, dash) in [
        (ground_truth, GROUND_TRUTH_COLOUR, "ground truth", ""),
        (reconstructed, RECONSTRUCTED_COLOUR, "reconstructed", " stroke-dasharray=\"5 3\""),
    ] {
        let drawn: Vec<(usize, [f64; 4], f64)> = steps
            .iter()
            .enumerate()
            .filter(|(_, s)| [s.x1, s.y1, s.x2, s.y2].iter().all(|v| v.is_finite()))
            .map(|(i, s)| {
                let (x1, x2) = (s.x1.min(s.x2).clamp(0.0, 1.0) * w, s.x1.max(s.x2).clamp(0.0, 1.0) * w);
                let (y1, y2) = (s.y1.min(s.y2).clamp(0.0, 1.0) * h, s.y1.max(s.y2).clamp(0.0, 1.0) * h);
                (i, [x1, y1, x2, y2], s.duration)
            })
            .collect();
        let _ = writeln!(out, "<g>");
        if drawn.len() > 1 {
            let pts: Vec<String> = drawn
                .iter()
                .map(|(_, b, _)| format!("{:.2},{:.2}", (b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0))
                .collect();
            let _ = writeln!(out, "<polyline points=\"{}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" stroke-opacity=\"0.9\"{dash}/>", pts.join(" "));
        }
        for (i, b, duration) in &drawn {
            let (cx, cy) = ((b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0);
            let r = if duration.is_finite() && *duration > 0.0 { (3.0 + 3.0 * duration.sqrt()).min(12.0) } else { 3.0 };
            let _ = writeln!(
                out,
                "<rect x=\"{:.2}\" y=\"{:.2}\" width=\"{:.2}\" height=\"{:.2}\" fill=\"{colour}\" fill-opacity=\"0.08\" stroke=\"{colour}\" stroke-width=\"2\"{dash}><title>{name} step {}: {} s</title></rect>",
                b[0],
                b[1],
                b[2] - b[0],
                b[3] - b[1],
                i + 1,
                xml(&escape::short(*duration))
            );
            let _ = writeln!(
                out,
                "<circle cx=\"{cx:.2}\" cy=\"{cy:.2}\" r=\"{r:.2}\" fill=\"{colour}\" fill-opacity=\"0.7\"/>"
            );
            let _ = writeln!(
                out,
                "<text x=\"{:.2}\" y=\"{:.2}\" font-size=\"12\" font-weight=\"bold\" fill=\"{colour}\" stroke=\"white\" stroke-width=\"3\" paint-order=\"stroke\" {FONT}>{}</text>",
                b[0] + 3.0,
                b[1] + 13.0,
                i + 1
            );
        }
        let _ = writeln!(out, "</g>");
    }
    let y = h + 16.0;
    let _ = writeln!(
        out,
        "<line x1=\"8\" y1=\"{:.1}\" x2=\"28\" y2=\"{:.1}\" stroke=\"{GROUND_TRUTH_COLOUR}\" stroke-width=\"2.5\"/><text x=\"34\" y=\"{y:.1}\" font-size=\"12\" {FONT}>ground truth ({} steps)</text>",
        y - 4.0,
        y - 4.0,
        ground_truth.len()
    );
    let _ = writeln!(
        out,
        "<line x1=\"200\" y1=\"{:.1}\" x2=\"220\" y2=\"{:.1}\" stroke=\"{RECONSTRUCTED_COLOUR}\" stroke-width=\"2.5\" stroke-dasharray=\"5 3\"/><text x=\"226\" y=\"{y:.1}\" font-size=\"12\" {FONT}>reconstructed ({} steps)</text>",
        y - 4.0,
        y - 4.0,
        reconstructed.len()
    );
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pt(x: f64, y: f64, group: &str) -> ScatterPoint {
        ScatterPoint { x, y, group: group.into(), filled: true, label: None }
    }

    fn coords(svg: &str, attr: &str) -> Vec<f64> {
        svg.split(&format!(" {attr}=\"")).skip(1).filter_map(|s| s.split('"').next()?.parse().ok()).collect()
    }

    #[test]
    fn nice_ticks_are_round_and_cover_the_range() {
        assert_eq!(nice_ticks(0.0, 10.0, 5), [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        assert_eq!(nice_ticks(0.13, 0.61, 5), [0.2, 0.3, 0.4, 0.5, 0.6]);
        assert_eq!(nice_ticks(3.0, 3.0, 5), [3.0]);
        assert!(nice_ticks(f64::NAN, 1.0, 5).is_empty());
    }

    #[test]
    fn scatter_of_zero_and_one_point_is_finite() {
        let empty = scatter("e", "x", "y", &[]);
        assert!(empty.contains("no data"));
        assert!(!empty.contains("NaN") && !empty.contains("inf"), "{empty}");
        let one = scatter("o", "x", "y", &[pt(5.0, -2.0, "s1")]);
        assert!(!one.contains("NaN") && !one.contains("inf"), "{one}");
        // The single point sits in the middle of the plot area.
        let cx = coords(&one, "cx");
        assert!((cx[0] - (64.0 + 230.0)).abs() < 1e-6, "{cx:?}");
        // Identical points and non-finite points do not divide by zero either.
        let same = scatter("s", "x", "y", &[pt(1.0, 1.0, "a"), pt(1.0, 1.0, "b"), pt(f64::NAN, 0.0, "c")]);
        assert!(!same.contains("NaN") && same.contains("1 non-finite point(s)"), "{same}");
    }

    #[test]
    fn scatter_colours_by_group_and_marks_unseen_hollow() {
        let mut p = vec![pt(0.0, 0.0, "a"), pt(1.0, 1.0, "b")];
        p[1].filled = false;
        let svg = scatter("t", "x", "y", &p);
        assert!(svg.contains(&format!("fill=\"{}\" stroke=\"{}\"", PALETTE[0], PALETTE[0])));
        assert!(svg.contains(&format!("fill=\"white\" stroke=\"{}\"", PALETTE[1])));
        // Past the palette, groups reuse colours with another marker shape.
        let many: Vec<ScatterPoint> = (0..21).map(|i| pt(i as f64, 0.0, &format!("g{i:02}"))).collect();
        let svg = scatter("t", "x", "y", &many);
        // g20 is a square in the first colour: its point and its legend entry.
        assert_eq!(svg.matches(&format!("height=\"8.0\" fill=\"{}\"", PALETTE[0])).count(), 2, "{svg}");
    }

    #[test]
    fn line_chart_breaks_at_nan_and_handles_empty() {
        let s = Series {
            name: "run".into(),
            points: vec![(0.0, 1.0), (1.0, 2.0), (2.0, f64::NAN), (3.0, 1.5), (4.0, 1.0)],
        };
        let svg = line_chart("loss", "epoch", "loss", &[s]);
        assert_eq!(svg.matches("<path").count(), 2, "{svg}");
        assert!(!svg.contains("NaN"));
        assert!(line_chart("empty", "x", "y", &[]).contains("no data"));
        let single = line_chart("one", "x", "y", &[Series { name: "r".into(), points: vec![(1.0, 1.0)] }]);
        assert!(single.contains("<circle") && !single.contains("NaN"));
    }

    #[test]
    fn png_size_reads_ihdr() {
        let mut png = vec![0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A, 0, 0, 0, 13];
        png.extend_from_slice(b"IHDR");
        png.extend_from_slice(&640u32.to_be_bytes());
        png.extend_from_slice(&480u32.to_be_bytes());
        assert_eq!(png_size(&png), Some((640, 480)));
        assert_eq!(png_size(b"not a png at all, really not"), None);
        let svg = trajectory_overlay(&png, &[], &[]);
        assert!(svg.contains("height=\"360.0\""), "{svg}");
    }

    #[test]
    fn overlay_draws_numbered_boxes_in_order() {
        let step = |x: f64| Step { x1: x, y1: 0.1, x2: x + 0.2, y2: 0.3, duration: 0.5 };
        let gt = [step(0.0), step(0.5)];
        let rec = [step(0.1), Step { x1: f64::NAN, ..step(0.2) }, step(0.7)];
        let svg = trajectory_overlay(&[], &gt, &rec);
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(
            svg.contains(&format!(
                "points=\"48.00,96.00 288.00,96.00\" fill=\"none\" stroke=\"{GROUND_TRUTH_COLOUR}\""
            )),
            "{svg}"
        );
        assert!(svg.contains("reconstructed step 3: 0.5 s"), "numbering keeps the skipped step's place");
        assert!(!svg.contains("reconstructed step 2:"));
        assert!(!svg.contains("NaN"));
    }
}
