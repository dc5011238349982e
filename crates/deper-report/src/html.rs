//! `report.html`: the whole report as one self-contained page — inline CSS, inline SVG, images
//! as `data:` URIs, no script and no external request, so it opens offline and can be mailed.
//! Void elements are self-closed, so the page is also well-formed XML (the tests parse it).

use crate::escape::{self, xml};
use crate::project::{self, TSNE_MAX_POINTS};
use crate::svg::{self, ScatterPoint, Series};
use crate::{table, unique_in_order, Report};
use std::fmt::Write;

/// Seed of the report's t-SNE map, fixed so a report re-renders identically.
pub const TSNE_SEED: u64 = 0;

const CSS: &str = "
body { font-family: sans-serif; margin: 2em auto; max-width: 1200px; color: #222; padding: 0 1em; }
h1 { margin-bottom: 0.2em; }
.meta { color: #555; }
code { background: #f3f3f3; padding: 0.1em 0.3em; word-break: break-all; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; vertical-align: top; }
table.metrics td { text-align: right; font-variant-numeric: tabular-nums; }
table.metrics thead th, table.captions thead th { background: #f0f0f0; }
tr.subject th { background: #e8eef7; text-align: left; }
.na, .nan { color: #888; }
.footnote, .empty, figcaption { color: #555; font-size: 0.9em; }
figure { display: inline-block; margin: 0.5em; vertical-align: top; }
.maps svg, figure svg { max-width: 100%; height: auto; }
img.thumb { max-width: 160px; height: auto; }
";

/// The page for `report`. Call [`Report::validate`] first: embeddings that fail it are drawn
/// padded/zeroed rather than rejected here.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let title = if report.title.is_empty() { "DEPER report" } else { report.title.as_str() };
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\"/>\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"/>\n<title>{}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<h1>{}</h1>\n",
        xml(title),
        xml(title)
    );
    if !report.created.is_empty() {
        let _ = writeln!(out, "<p class=\"meta\">Created {}</p>", xml(&report.created));
    }
    if !report.command.is_empty() {
        let _ = writeln!(out, "<p class=\"meta\">Command: <code>{}</code></p>", xml(&report.command));
    }

    out.push_str("<h2 id=\"metrics\">Metrics</h2>\n");
    if report.tables.is_empty() {
        out.push_str("<p class=\"empty\">no data</p>\n");
    }
    for t in &report.tables {
        let _ = writeln!(out, "<h3>{}</h3>", xml(&t.heading()));
        out.push_str(&table::html(t));
    }

    out.push_str("<h2 id=\"embeddings\">Subject embeddings</h2>\n");
    embeddings(&mut out, report);

    out.push_str("<h2 id=\"trajectories\">Attention trajectories</h2>\n");
    if report.trajectories.is_empty() {
        out.push_str("<p class=\"empty\">no data</p>\n");
    }
    for t in &report.trajectories {
        let _ = writeln!(
            out,
            "<figure>\n{}<figcaption>{} — subject {}</figcaption>\n</figure>",
            svg::trajectory_overlay(&t.image_png, &t.ground_truth, &t.reconstructed),
            xml(&t.image_id),
            xml(&t.subject)
        );
    }

    out.push_str("<h2 id=\"captions\">Example descriptions</h2>\n");
    captions(&mut out, report);

    out.push_str("<h2 id=\"curves\">Training curves</h2>\n");
    curves(&mut out, report);

    out.push_str("<h2 id=\"notes\">Notes</h2>\n");
    if report.notes.is_empty() {
        out.push_str("<p class=\"empty\">no notes</p>\n");
    } else {
        out.push_str("<ul>\n");
        for n in &report.notes {
            let _ = writeln!(out, "<li>{}</li>", xml(n));
        }
        out.push_str("</ul>\n");
    }
    out.push_str("</body>\n</html>\n");
    out
}

fn embeddings(out: &mut String, report: &Report) {
    let points = &report.embeddings;
    if points.is_empty() {
        out.push_str("<p class=\"empty\">no data</p>\n");
        return;
    }
    let mut subjects: Vec<(&str, bool)> = points.iter().map(|p| (p.subject.as_str(), p.seen)).collect();
    subjects.sort_unstable();
    subjects.dedup();
    let seen = subjects.iter().filter(|s| s.1).count();
    let _ = writeln!(
        out,
        "<p>{} points, {} subjects ({seen} seen, {} unseen). Filled markers: seen subjects; hollow: unseen.</p>",
        points.len(),
        subjects.len(),
        subjects.len() - seen
    );
    let vectors: Vec<Vec<f32>> = points.iter().map(|p| p.vector.clone()).collect();
    let scatter_points = |coords: &[[f64; 2]], idx: &[usize]| -> Vec<ScatterPoint> {
        idx.iter()
            .zip(coords)
            .map(|(&i, c)| ScatterPoint {
                x: c[0],
                y: c[1],
                group: points[i].subject.clone(),
                filled: points[i].seen,
                label: points[i].label.clone(),
            })
            .collect()
    };
    let all: Vec<usize> = (0..points.len()).collect();
    let fit = project::pca_fit(&vectors);
    let share = |v: f64| if fit.total_variance > 0.0 { 100.0 * v / fit.total_variance } else { 0.0 };
    let pca_svg = svg::scatter(
        "PCA",
        &format!("PC1 ({:.1}% of variance)", share(fit.variances[0])),
        &format!("PC2 ({:.1}% of variance)", share(fit.variances[1])),
        &scatter_points(&fit.coords, &all),
    );
    // Exact t-SNE is O(n²) in memory and time: beyond the cap, every k-th point is mapped.
    let stride = points.len().div_ceil(TSNE_MAX_POINTS);
    let idx: Vec<usize> = (0..points.len()).step_by(stride).collect();
    let subset: Vec<Vec<f32>> = idx.iter().map(|&i| vectors[i].clone()).collect();
    let tsne_svg =
        svg::scatter("t-SNE", "t-SNE 1", "t-SNE 2", &scatter_points(&project::tsne(&subset, TSNE_SEED), &idx));
    let _ = writeln!(out, "<div class=\"maps\">\n{pca_svg}{tsne_svg}</div>");
    if stride > 1 {
        let _ = writeln!(
            out,
            "<p class=\"footnote\">t-SNE of {} of {} points (one in {stride}); PCA of all.</p>",
            idx.len(),
            points.len()
        );
    }
}

fn captions(out: &mut String, report: &Report) {
    if report.captions.is_empty() {
        out.push_str("<p class=\"empty\">no data</p>\n");
        return;
    }
    // Methods in order of first appearance become columns; examples are grouped by subject.
    let methods = unique_in_order(report.captions.iter().flat_map(|c| c.predictions.iter().map(|(m, _)| m.as_str())));
    let subjects = unique_in_order(report.captions.iter().map(|c| c.subject.as_str()));
    out.push_str("<table class=\"captions\">\n<thead><tr><th>Image</th><th>Reference</th>");
    for m in &methods {
        let _ = write!(out, "<th>{}</th>", xml(m));
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    for s in subjects {
        let _ =
            writeln!(out, "<tr class=\"subject\"><th colspan=\"{}\">subject {}</th></tr>", methods.len() + 2, xml(s));
        for c in report.captions.iter().filter(|c| c.subject == s) {
            out.push_str("<tr><td>");
            if let Some(img) = c.image_png.as_deref().filter(|b| !b.is_empty()) {
                let _ = write!(
                    out,
                    "<img class=\"thumb\" src=\"{}\" alt=\"{}\"/><br/>",
                    escape::data_uri(img),
                    xml(&c.image_id)
                );
            }
            let _ = write!(out, "{}</td><td>{}</td>", xml(&c.image_id), xml(&c.reference));
            for m in &methods {
                let text: Vec<&str> = c.predictions.iter().filter(|(pm, _)| pm == m).map(|(_, t)| t.as_str()).collect();
                let cell =
                    if text.is_empty() { "<span class=\"na\">–</span>".to_string() } else { xml(&text.join(" / ")) };
                let _ = write!(out, "<td>{cell}</td>");
            }
            out.push_str("</tr>\n");
        }
    }
    out.push_str("</tbody>\n</table>\n");
}

fn curves(out: &mut String, report: &Report) {
    if report.curves.is_empty() {
        out.push_str("<p class=\"empty\">no data</p>\n");
        return;
    }
    for m in unique_in_order(report.curves.iter().map(|c| c.metric.as_str())) {
        let series: Vec<Series> = report
            .curves
            .iter()
            .filter(|c| c.metric == m)
            .map(|c| Series { name: c.run.clone(), points: c.points.clone() })
            .collect();
        out.push_str(&svg::line_chart(m, "epoch", m, &series));
    }
}
