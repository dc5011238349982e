//! Metric tables as in the paper (Tables 1–3): one row per method, the caption metrics in
//! COCO-eval order, then the subject metrics, then any other metric alphabetically. The best
//! finite value of each column is bold (all of them on a tie); `None` renders as "n/a" with a
//! footnote, NaN as "–".

use crate::escape;
use crate::MetricTable;

/// Metrics in the order the paper's tables show them; others follow alphabetically.
pub const COLUMN_ORDER: [&str; 10] = [
    "Bleu_1",
    "Bleu_2",
    "Bleu_3",
    "Bleu_4",
    "METEOR",
    "ROUGE_L",
    "CIDEr",
    "subject_acc",
    "subject_f1",
    "personalization",
];

/// Footnote for "n/a" cells.
pub const NA_NOTE: &str =
    "n/a: not applicable to this split (e.g. the per-subject PT baseline cannot describe unseen subjects).";
/// Footnote for "–" cells.
pub const NAN_NOTE: &str = "–: the metric is undefined for this method (NaN).";

/// One rendered cell.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cell {
    Value {
        value: f64,
        best: bool,
    },
    /// `None` or absent: not applicable.
    NotApplicable,
    /// NaN or infinite.
    Undefined,
}

/// A table resolved into columns and cells, shared by the Markdown and HTML renderers.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    pub columns: Vec<String>,
    /// `cells[row][column]`.
    pub cells: Vec<Vec<Cell>>,
    pub has_na: bool,
    pub has_undefined: bool,
}

/// The columns of `table`: every metric any row has, in [`COLUMN_ORDER`] then alphabetical.
pub fn columns(table: &MetricTable) -> Vec<String> {
    let mut names: Vec<&String> = table.rows.iter().flat_map(|r| r.metrics.keys()).collect();
    names.sort_by_key(|n| (COLUMN_ORDER.iter().position(|k| k == n).unwrap_or(COLUMN_ORDER.len()), n.as_str()));
    names.dedup();
    names.into_iter().cloned().collect()
}

/// Resolves cells and marks the best finite value of each column.
pub fn layout(table: &MetricTable) -> Layout {
    let columns = columns(table);
    let mut cells: Vec<Vec<Cell>> = table
        .rows
        .iter()
        .map(|row| {
            columns
                .iter()
                .map(|c| match row.metrics.get(c).copied().flatten() {
                    None => Cell::NotApplicable,
                    Some(v) if !v.is_finite() => Cell::Undefined,
                    Some(value) => Cell::Value { value, best: false },
                })
                .collect()
        })
        .collect();
    for (j, name) in columns.iter().enumerate() {
        let lower = table.lower_is_better.contains(name);
        let best = cells
            .iter()
            .filter_map(|r| match r[j] {
                Cell::Value { value, .. } => Some(value),
                _ => None,
            })
            .reduce(|a, b| if (lower && b < a) || (!lower && b > a) { b } else { a });
        if let Some(best_value) = best {
            for row in &mut cells {
                if let Cell::Value { value, best } = &mut row[j] {
                    *best = *value == best_value;
                }
            }
        }
    }
    let has_na = cells.iter().flatten().any(|c| *c == Cell::NotApplicable);
    let has_undefined = cells.iter().flatten().any(|c| *c == Cell::Undefined);
    Layout { columns, cells, has_na, has_undefined }
}

/// The table as GitHub-flavoured Markdown, footnotes below it.
pub fn markdown(table: &MetricTable) -> String {
    if table.rows.is_empty() {
        return "no data\n".to_string();
    }
    let l = layout(table);
    let mut out = String::from("| Method |");
    for c in &l.columns {
        out.push_str(&format!(" {} |", escape::markdown(c)));
    }
    out.push_str("\n|:--|");
    out.push_str(&"--:|".repeat(l.columns.len()));
    out.push('\n');
    for (row, cells) in table.rows.iter().zip(&l.cells) {
        out.push_str(&format!("| {} |", escape::markdown(&row.method)));
        for cell in cells {
            let text = match *cell {
                Cell::Value { value, best: true } => format!("**{}**", escape::number(value)),
                Cell::Value { value, best: false } => escape::number(value),
                Cell::NotApplicable => "n/a\\*".to_string(),
                Cell::Undefined => "–".to_string(),
            };
            out.push_str(&format!(" {text} |"));
        }
        out.push('\n');
    }
    if l.has_na {
        out.push_str(&format!("\n\\* {NA_NOTE}\n"));
    }
    if l.has_undefined {
        out.push_str(&format!("\n{NAN_NOTE}\n"));
    }
    out
}

/// The table as an HTML `<table>` (best values in `<strong>`), footnotes below it.
pub fn html(table: &MetricTable) -> String {
    if table.rows.is_empty() {
        return "<p class=\"empty\">no data</p>\n".to_string();
    }
    let l = layout(table);
    let mut out = String::from("<table class=\"metrics\">\n<thead><tr><th>Method</th>");
    for c in &l.columns {
        out.push_str(&format!("<th>{}</th>", escape::xml(c)));
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    for (row, cells) in table.rows.iter().zip(&l.cells) {
        out.push_str(&format!("<tr><th>{}</th>", escape::xml(&row.method)));
        for cell in cells {
            let text = match *cell {
                Cell::Value { value, best: true } => format!("<strong>{}</strong>", escape::number(value)),
                Cell::Value { value, best: false } => escape::number(value),
                Cell::NotApplicable => "<span class=\"na\">n/a<sup>*</sup></span>".to_string(),
                Cell::Undefined => "<span class=\"nan\">–</span>".to_string(),
            };
            out.push_str(&format!("<td>{text}</td>"));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody>\n</table>\n");
    if l.has_na {
        out.push_str(&format!("<p class=\"footnote\"><sup>*</sup> {}</p>\n", escape::xml(NA_NOTE)));
    }
    if l.has_undefined {
        out.push_str(&format!("<p class=\"footnote\">{}</p>\n", escape::xml(NAN_NOTE)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MetricRow;

    fn row(method: &str, metrics: &[(&str, Option<f64>)]) -> MetricRow {
        MetricRow { method: method.into(), metrics: metrics.iter().map(|(k, v)| (k.to_string(), *v)).collect() }
    }

    #[test]
    fn columns_follow_paper_order_then_alphabetical() {
        let t = MetricTable {
            split: "seen".into(),
            rows: vec![
                row("a", &[("zeta", Some(1.0)), ("CIDEr", Some(1.0)), ("Bleu_1", Some(1.0))]),
                row("b", &[("alpha", Some(1.0)), ("subject_acc", Some(1.0)), ("Bleu_4", Some(1.0))]),
            ],
            ..Default::default()
        };
        assert_eq!(columns(&t), ["Bleu_1", "Bleu_4", "CIDEr", "subject_acc", "alpha", "zeta"]);
    }

    #[test]
    fn best_respects_direction_and_ties() {
        let t = MetricTable {
            split: "unseen".into(),
            rows: vec![
                row("a", &[("CIDEr", Some(0.5)), ("dist", Some(3.0))]),
                row("b", &[("CIDEr", Some(0.9)), ("dist", Some(1.0))]),
                row("c", &[("CIDEr", Some(0.9)), ("dist", Some(f64::NAN))]),
                row("d", &[("CIDEr", None)]),
            ],
            lower_is_better: ["dist".to_string()].into(),
        };
        let l = layout(&t);
        let best: Vec<Vec<bool>> =
            l.cells.iter().map(|r| r.iter().map(|c| matches!(c, Cell::Value { best: true, .. })).collect()).collect();
        assert_eq!(best, [[false, false], [true, true], [true, false], [false, false]]);
        assert_eq!(l.cells[2][1], Cell::Undefined);
        assert_eq!(l.cells[3][1], Cell::NotApplicable, "absent metric counts as n/a");
        assert!(l.has_na && l.has_undefined);
    }
}
