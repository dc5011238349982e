//! `Report::write` end to end: the three files, tables, escaping, well-formed SVG, no external
//! requests, empty sections and NaN values.

#![allow(clippy::unwrap_used)]

use deper_report::{
    CaptionExample, EmbeddingPoint, MetricRow, MetricTable, Report, Step, TrainingCurve, TrajectoryExample,
};
use std::collections::BTreeMap;
use std::path::Path;

/// An 8×6 RGB PNG (made with Python's zlib: signature, IHDR, one IDAT, IEND).
const PNG: [u8; 74] = [
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52, 0x00, 0x00, 0x00,
    0x08, 0x00, 0x00, 0x00, 0x06, 0x08, 0x02, 0x00, 0x00, 0x00, 0x71, 0x67, 0x48, 0xac, 0x00, 0x00, 0x00, 0x11, 0x49,
    0x44, 0x41, 0x54, 0x78, 0xda, 0x63, 0x38, 0x21, 0x27, 0x87, 0x15, 0x31, 0x0c, 0xa4, 0x04, 0x00, 0x69, 0x88, 0x30,
    0xc1, 0x19, 0x6a, 0x3d, 0xfc, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
];

const SCRIPT: &str = "<script>alert('x')</script>";

fn row(method: &str, metrics: &[(&str, Option<f64>)]) -> MetricRow {
    MetricRow {
        method: method.into(),
        metrics: metrics.iter().map(|(k, v)| (k.to_string(), *v)).collect::<BTreeMap<_, _>>(),
    }
}

fn full_report() -> Report {
    let step = |x: f64, y: f64, d: f64| Step { x1: x, y1: y, x2: x + 0.2, y2: y + 0.25, duration: d };
    let embeddings = (0..24)
        .map(|i| {
            let s = i % 4;
            EmbeddingPoint {
                subject: if s == 3 { format!("S3 {SCRIPT}") } else { format!("S{s}") },
                vector: (0..6).map(|j| if j == s { 5.0 } else { 0.0 } + ((i * 7 + j * 3) % 5) as f32 * 0.1).collect(),
                seen: s < 2,
                label: Some(format!("img-{i} & <b>")),
            }
        })
        .collect();
    Report {
        title: "DEPER eval <seen & unseen>".into(),
        command: "deper eval --data d --out r".into(),
        created: "2026-11-26T01:00:00Z".into(),
        tables: vec![
            MetricTable {
                split: "seen".into(),
                rows: vec![
                    row("DEPER", &[("Bleu_1", Some(0.712)), ("CIDEr", Some(0.95)), ("subject_acc", Some(0.8))]),
                    row("PT", &[("Bleu_1", Some(0.655)), ("CIDEr", Some(1.21)), ("subject_acc", Some(f64::NAN))]),
                ],
                ..Default::default()
            },
            MetricTable {
                split: "unseen".into(),
                rows: vec![
                    row("DEPER", &[("Bleu_1", Some(0.688)), ("CIDEr", Some(0.81))]),
                    row("PT", &[("Bleu_1", None), ("CIDEr", None)]),
                ],
                ..Default::default()
            },
        ],
        embeddings,
        trajectories: vec![TrajectoryExample {
            image_id: "img-1".into(),
            subject: "S0".into(),
            image_png: PNG.to_vec(),
            ground_truth: vec![step(0.1, 0.1, 0.4), step(0.5, 0.4, 1.2), step(0.2, 0.6, 0.3)],
            reconstructed: vec![step(0.12, 0.1, 0.5), step(f64::NAN, 0.4, 1.0), step(0.25, 0.55, 0.2)],
        }],
        captions: vec![
            CaptionExample {
                image_id: "img-1".into(),
                image_png: Some(PNG.to_vec()),
                subject: "S0".into(),
                reference: "a red square".into(),
                predictions: vec![("DEPER".into(), format!("a dog {SCRIPT}")), ("Qwen2-VL".into(), "a cat".into())],
            },
            CaptionExample {
                image_id: "img-2".into(),
                image_png: None,
                subject: "S1".into(),
                reference: "two | pipes".into(),
                predictions: vec![("DEPER".into(), "people".into())],
            },
        ],
        curves: vec![
            TrainingCurve {
                run: "stage1".into(),
                metric: "loss".into(),
                points: vec![(0.0, 2.0), (1.0, 1.2), (2.0, 0.9)],
            },
            TrainingCurve {
                run: "stage1 cosine".into(),
                metric: "loss".into(),
                points: vec![(0.0, 2.1), (1.0, f64::NAN), (2.0, 0.8)],
            },
            TrainingCurve { run: "stage1".into(), metric: "CIDEr".into(), points: vec![(1.0, 0.5)] },
        ],
        notes: vec![format!("note with {SCRIPT}")],
    }
}

fn svg_parts(html: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut rest = html;
    while let Some(start) = rest.find("<svg") {
        let end = rest[start..].find("</svg>").expect("every <svg> is closed") + start + "</svg>".len();
        parts.push(&rest[start..end]);
        rest = &rest[end..];
    }
    parts
}

/// The page without the base64 payloads (which may contain "//" by chance).
fn strip_data_uris(html: &str) -> String {
    let mut out = String::new();
    let mut rest = html;
    while let Some(i) = rest.find(";base64,") {
        out.push_str(&rest[..i]);
        rest =
            rest[i + ";base64,".len()..].trim_start_matches(|c: char| c.is_ascii_alphanumeric() || "+/=".contains(c));
    }
    out.push_str(rest);
    out
}

fn write(report: &Report, dir: &Path) -> (String, String, String) {
    let paths = report.write(dir).unwrap();
    let read = |p: &Path| std::fs::read_to_string(p).unwrap();
    (read(&paths[0]), read(&paths[1]), read(&paths[2]))
}

#[test]
fn write_creates_the_three_files_and_json_drops_images() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("nested/report");
    let report = full_report();
    let (md, json, html) = write(&report, &out);
    for f in ["report.md", "report_full.json", "report.html"] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    assert!(md.contains("[report.html](report.html)"));
    assert!(!json.contains("image_png"), "image bytes left in the JSON");
    // The JSON is the report minus images (NaN becomes null, i.e. None).
    let back = Report::from_json_file(&out.join("report_full.json")).unwrap();
    assert_eq!(back.title, report.title);
    assert_eq!(back.embeddings, report.embeddings);
    assert_eq!(back.trajectories[0].ground_truth, report.trajectories[0].ground_truth);
    assert!(back.trajectories[0].reconstructed[1].x1.is_nan(), "null reads back as NaN");
    assert!(back.curves[1].points[1].1.is_nan());
    assert_eq!(back.curves[0], report.curves[0]);
    assert!(back.trajectories[0].image_png.is_empty() && back.captions[0].image_png.is_none());
    assert_eq!(back.tables[0].rows[1].metrics["subject_acc"], None);
    // Images are inlined in the page.
    assert!(html.contains("href=\"data:image/png;base64,iVBORw0KGgo"), "trajectory image not inlined");
    assert!(html.contains("src=\"data:image/png;base64,iVBORw0KGgo"), "caption image not inlined");
}

#[test]
fn tables_bold_the_best_value_and_render_na_with_a_footnote() {
    let dir = tempfile::tempdir().unwrap();
    let (md, _, html) = write(&full_report(), dir.path());
    assert!(md.contains("| DEPER | **0.712** | 0.950 | **0.800** |"), "{md}");
    assert!(md.contains("| PT | 0.655 | **1.210** | – |"), "{md}");
    assert!(md.contains("| PT | n/a\\* | n/a\\* |"), "{md}");
    assert!(md.contains("\\* n/a: not applicable"), "{md}");
    assert!(html.contains("<td><strong>0.712</strong></td>"));
    assert!(html.contains("<td><strong>1.210</strong></td><td><span class=\"nan\">–</span></td>"));
    assert!(html.contains("n/a<sup>*</sup>") && html.contains("class=\"footnote\"><sup>*</sup> n/a: not applicable"));
    // Column order: Bleu_1 before CIDEr before subject_acc.
    let header = md.lines().find(|l| l.starts_with("| Method")).unwrap();
    assert_eq!(header, "| Method | Bleu\\_1 | CIDEr | subject\\_acc |");
}

#[test]
fn every_svg_parses_as_xml_and_nothing_is_fetched() {
    let dir = tempfile::tempdir().unwrap();
    let (_, _, html) = write(&full_report(), dir.path());
    let svgs = svg_parts(&html);
    // PCA + t-SNE, one trajectory overlay, two curve charts.
    assert_eq!(svgs.len(), 5, "svg count");
    for s in &svgs {
        let doc = roxmltree::Document::parse(s).unwrap_or_else(|e| panic!("SVG is not XML ({e}):\n{s}"));
        assert_eq!(doc.root_element().tag_name().name(), "svg");
        assert!(!s.contains("NaN") && !s.contains("inf\""), "non-finite number in SVG");
    }
    // The whole page is well-formed XML too, and its sections are there.
    let options = roxmltree::ParsingOptions { allow_dtd: true, ..Default::default() };
    let page =
        roxmltree::Document::parse_with_options(&html, options).unwrap_or_else(|e| panic!("page is not XML: {e}"));
    let ids: Vec<&str> = page.descendants().filter_map(|n| n.attribute("id")).collect();
    assert_eq!(ids, ["metrics", "embeddings", "trajectories", "captions", "curves", "notes"]);
    let images = page.descendants().filter(|n| n.has_tag_name("img") || n.tag_name().name() == "image").count();
    assert_eq!(images, 2, "caption thumbnail and trajectory background");
    // No external request: the only URL is the SVG namespace; every src/href is a data: URI.
    let without_ns = strip_data_uris(&html).replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
    for needle in ["http:", "https:", "url(", "@import", "<script", "<link", "<iframe", "//"] {
        assert!(!without_ns.contains(needle), "found {needle:?}");
    }
    for attr in ["src=\"", "href=\""] {
        for value in html.split(attr).skip(1) {
            assert!(value.starts_with("data:image/"), "{attr}{}", &value[..value.len().min(40)]);
        }
    }
    // Legends and the seen/unseen key.
    assert!(html.contains("seen subject") && html.contains("unseen subject"));
    assert!(html.contains("fill=\"white\" stroke="), "hollow markers for unseen subjects");
}

#[test]
fn user_text_is_escaped_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let (md, json, html) = write(&full_report(), dir.path());
    assert!(!html.contains("<script"), "raw <script> in HTML");
    assert!(html.contains("a dog &lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"));
    assert!(html.contains("<title>DEPER eval &lt;seen &amp; unseen&gt;</title>"));
    assert!(html.contains("S3 &lt;script&gt;"), "subject name in the legend");
    assert!(!md.contains("<script"), "raw <script> in Markdown");
    assert!(md.contains("two \\| pipes"), "pipe would split the Markdown row");
    // JSON keeps the text as is.
    assert!(json.contains(SCRIPT));
}

#[test]
fn empty_report_says_no_data() {
    let dir = tempfile::tempdir().unwrap();
    let (md, json, html) = write(&Report { title: "empty".into(), ..Default::default() }, dir.path());
    assert_eq!(html.matches("no data").count(), 5, "{html}");
    assert_eq!(md.matches("no data").count(), 5, "{md}");
    assert!(svg_parts(&html).is_empty());
    let options = roxmltree::ParsingOptions { allow_dtd: true, ..Default::default() };
    roxmltree::Document::parse_with_options(&html, options).unwrap();
    let back: Report = serde_json::from_str(&json).unwrap();
    assert_eq!(back.title, "empty");
    // Sections may be missing from hand-written JSON.
    let minimal: Report = serde_json::from_str("{\"title\": \"t\"}").unwrap();
    assert!(minimal.tables.is_empty() && minimal.notes.is_empty());
}

#[test]
fn a_single_embedding_and_empty_table_render() {
    let dir = tempfile::tempdir().unwrap();
    let report = Report {
        title: "one".into(),
        tables: vec![
            MetricTable { split: "seen".into(), ..Default::default() },
            MetricTable { split: "trajectory reconstruction".into(), ..Default::default() },
        ],
        embeddings: vec![EmbeddingPoint { subject: "A".into(), vector: vec![1.0, 2.0], seen: false, label: None }],
        curves: vec![TrainingCurve { run: "r".into(), metric: "m".into(), points: vec![(0.0, f64::NAN)] }],
        ..Default::default()
    };
    let (_, _, html) = write(&report, dir.path());
    let svgs = svg_parts(&html);
    assert_eq!(svgs.len(), 3);
    for s in svgs {
        roxmltree::Document::parse(s).unwrap();
        assert!(!s.contains("NaN"));
    }
    assert!(html.contains("<h3>seen subjects</h3>\n<p class=\"empty\">no data</p>"));
    // Other tables keep their own names.
    assert!(html.contains("<h3>trajectory reconstruction</h3>"), "{html}");
    let md = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
    assert!(md.contains("### seen subjects\n") && md.contains("### trajectory reconstruction\n"), "{md}");
}

#[test]
fn invalid_embeddings_and_json_name_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let mut report = full_report();
    report.embeddings[5].vector.pop();
    let e = report.write(dir.path()).unwrap_err().to_string();
    assert!(e.contains("embeddings[5].vector"), "{e}");
    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        "{\n  \"title\": \"t\",\n  \"tables\": [{\"split\": \"seen\", \"rows\": [{\"method\": 3}]}]\n}",
    )
    .unwrap();
    let e = Report::from_json_file(&bad).unwrap_err().to_string();
    assert!(e.contains("bad.json") && e.contains("line 3") && e.contains("tables[0].rows[0].method"), "{e}");
}

#[test]
fn captions_sit_side_by_side_grouped_by_subject() {
    let dir = tempfile::tempdir().unwrap();
    let (md, _, html) = write(&full_report(), dir.path());
    assert!(html.contains("<th>Image</th><th>Reference</th><th>DEPER</th><th>Qwen2-VL</th></tr>"), "{html}");
    let s0 = html.find("<th colspan=\"4\">subject S0</th>").unwrap();
    let s1 = html.find("<th colspan=\"4\">subject S1</th>").unwrap();
    let img2 = html.find("<td>img-2</td>").unwrap();
    assert!(s0 < s1 && s1 < img2, "img-2 belongs under S1");
    // img-2 has no Qwen2-VL caption: an empty cell, not a shifted row.
    assert!(html[img2..]
        .starts_with("<td>img-2</td><td>two | pipes</td><td>people</td><td><span class=\"na\">–</span></td></tr>"));
    assert!(md.contains("### Subject S1") && md.contains("| | DEPER | people |"));
}
