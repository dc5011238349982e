//! `report.md`: the tables and a text summary of every figure, readable on a code host; the
//! figures themselves are in `report.html`, linked at the top.

use crate::escape::{markdown as md, number, short};
use crate::{table, unique_in_order, Report, HTML_FILE, JSON_FILE};
use std::fmt::Write;

/// The Markdown report.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let title = if report.title.is_empty() { "DEPER report" } else { report.title.as_str() };
    let _ = writeln!(out, "# {}\n", md(title));
    let _ = writeln!(out, "Figures: [{HTML_FILE}]({HTML_FILE}) · all data: [{JSON_FILE}]({JSON_FILE})\n");
    if !report.created.is_empty() {
        let _ = writeln!(out, "Created: {}\n", md(&report.created));
    }
    if !report.command.is_empty() {
        // A fence longer than any backtick run inside the command keeps it verbatim.
        let longest = report.command.split(|c| c != '`').map(str::len).max().unwrap_or(0);
        let fence = "`".repeat(longest.max(2) + 1);
        let _ = writeln!(out, "Command:\n\n{fence}\n{}\n{fence}\n", report.command);
    }

    out.push_str("## Metrics\n\n");
    if report.tables.is_empty() {
        out.push_str("no data\n\n");
    }
    for t in &report.tables {
        let _ = writeln!(out, "### {}\n\n{}", md(&t.heading()), table::markdown(t));
    }

    out.push_str("## Subject embeddings\n\n");
    if report.embeddings.is_empty() {
        out.push_str("no data\n\n");
    } else {
        let mut subjects: Vec<&str> = report.embeddings.iter().map(|p| p.subject.as_str()).collect();
        subjects.sort_unstable();
        subjects.dedup();
        let dim = report.embeddings[0].vector.len();
        let _ = writeln!(
            out,
            "{} points of dimension {dim}, {} subjects; PCA and t-SNE maps in [{HTML_FILE}]({HTML_FILE}#embeddings).\n",
            report.embeddings.len(),
            subjects.len()
        );
    }

    out.push_str("## Attention trajectories\n\n");
    if report.trajectories.is_empty() {
        out.push_str("no data\n\n");
    } else {
        out.push_str("| Image | Subject | Ground-truth steps | Reconstructed steps |\n|:--|:--|--:|--:|\n");
        for t in &report.trajectories {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} |",
                md(&t.image_id),
                md(&t.subject),
                t.ground_truth.len(),
                t.reconstructed.len()
            );
        }
        let _ = writeln!(out, "\nOverlays in [{HTML_FILE}]({HTML_FILE}#trajectories).\n");
    }

    out.push_str("## Example descriptions\n\n");
    if report.captions.is_empty() {
        out.push_str("no data\n\n");
    }
    for s in unique_in_order(report.captions.iter().map(|c| c.subject.as_str())) {
        let _ = writeln!(out, "### Subject {}\n\n| Image | Source | Description |\n|:--|:--|:--|", md(s));
        for c in report.captions.iter().filter(|c| c.subject == s) {
            let _ = writeln!(out, "| {} | reference | {} |", md(&c.image_id), md(&c.reference));
            for (m, text) in &c.predictions {
                let _ = writeln!(out, "| | {} | {} |", md(m), md(text));
            }
        }
        out.push('\n');
    }

    out.push_str("## Training curves\n\n");
    if report.curves.is_empty() {
        out.push_str("no data\n\n");
    } else {
        out.push_str("| Run | Metric | Points | Last epoch | Last value |\n|:--|:--|--:|--:|--:|\n");
        for c in &report.curves {
            let (epoch, value) =
                c.points.last().map_or(("–".to_string(), "–".to_string()), |&(e, v)| (short(e), number(v)));
            let _ = writeln!(out, "| {} | {} | {} | {epoch} | {value} |", md(&c.run), md(&c.metric), c.points.len());
        }
        let _ = writeln!(out, "\nCharts in [{HTML_FILE}]({HTML_FILE}#curves).\n");
    }

    out.push_str("## Notes\n\n");
    if report.notes.is_empty() {
        out.push_str("no notes\n");
    }
    for n in &report.notes {
        let _ = writeln!(out, "- {}", md(n));
    }
    out
}
