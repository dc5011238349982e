//! The report's input: plain, serialisable data, independent of how it was computed.
//!
//! Image bytes serialise as standard base64 strings. Every list section may be empty (the
//! rendered report then says "no data") and defaults to empty when absent from JSON.

use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Everything one evaluation report shows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub title: String,
    /// The command line that produced the report, shown verbatim.
    #[serde(default)]
    pub command: String,
    /// When the report was made, as the producer formats it (e.g. RFC 3339).
    #[serde(default)]
    pub created: String,
    /// Metric tables, one per split (`"seen"`, `"unseen"`).
    #[serde(default)]
    pub tables: Vec<MetricTable>,
    /// Subject embeddings to map in 2-D (one per triplet, or one mean per subject).
    #[serde(default)]
    pub embeddings: Vec<EmbeddingPoint>,
    #[serde(default)]
    pub trajectories: Vec<TrajectoryExample>,
    #[serde(default)]
    pub captions: Vec<CaptionExample>,
    #[serde(default)]
    pub curves: Vec<TrainingCurve>,
    /// Free-text remarks, shown as a list.
    #[serde(default)]
    pub notes: Vec<String>,
}

/// Metric values of several methods on one split.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MetricTable {
    /// `"seen"` or `"unseen"` (any name is shown as given).
    pub split: String,
    pub rows: Vec<MetricRow>,
    /// Metrics where smaller is better (e.g. a scanpath distance); every other metric is
    /// taken as higher-is-better when the best value is marked.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub lower_is_better: BTreeSet<String>,
}

impl MetricTable {
    /// The table's heading: "seen subjects" / "unseen subjects" for the two splits, any other name
    /// as given.
    pub fn heading(&self) -> String {
        match self.split.as_str() {
            "seen" | "unseen" => format!("{} subjects", self.split),
            other => other.to_string(),
        }
    }
}

/// One method's metrics. `None` means "not applicable" (e.g. the per-subject PT baseline on
/// unseen subjects) and renders as "n/a" with a footnote; a NaN value renders as "–".
/// A metric absent from the map counts as `None`. JSON has no NaN: `serde_json` writes it as
/// `null`, so it reads back as `None`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MetricRow {
    pub method: String,
    pub metrics: BTreeMap<String, Option<f64>>,
}

/// One point of the subject-embedding map.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingPoint {
    pub subject: String,
    /// The embedding; every point of a report must have the same length.
    pub vector: Vec<f32>,
    /// Whether the subject was seen in training (filled marker) or not (hollow marker).
    pub seen: bool,
    /// Shown in the point's tooltip, e.g. the image id of the triplet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

/// One attention step: a box in normalised image coordinates and how long it was looked at.
/// A non-finite value is written to JSON as `null` and reads back as NaN (the step is not drawn).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// Left, top, right, bottom in [0, 1]; (0, 0) is the image's top-left corner.
    #[serde(deserialize_with = "null_as_nan::one")]
    pub x1: f64,
    #[serde(deserialize_with = "null_as_nan::one")]
    pub y1: f64,
    #[serde(deserialize_with = "null_as_nan::one")]
    pub x2: f64,
    #[serde(deserialize_with = "null_as_nan::one")]
    pub y2: f64,
    /// Seconds.
    #[serde(deserialize_with = "null_as_nan::one")]
    pub duration: f64,
}

impl From<&deper_core::AttentionStep> for Step {
    fn from(s: &deper_core::AttentionStep) -> Self {
        Step { x1: s.bbox.x1, y1: s.bbox.y1, x2: s.bbox.x2, y2: s.bbox.y2, duration: s.duration }
    }
}

/// A ground-truth trajectory and the model's reconstruction of it, drawn over the image.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrajectoryExample {
    pub image_id: String,
    pub subject: String,
    /// The image (PNG; JPEG, GIF and WebP are recognised too). Empty: drawn on a grey square.
    #[serde(default, with = "base64_bytes", skip_serializing_if = "Vec::is_empty")]
    pub image_png: Vec<u8>,
    pub ground_truth: Vec<Step>,
    pub reconstructed: Vec<Step>,
}

/// One image's reference description and each method's generated description.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CaptionExample {
    pub image_id: String,
    #[serde(default, with = "base64_opt", skip_serializing_if = "Option::is_none")]
    pub image_png: Option<Vec<u8>>,
    pub subject: String,
    pub reference: String,
    /// `(method, caption)` pairs; methods become the columns of the caption table.
    pub predictions: Vec<(String, String)>,
}

/// One metric of one training run over epochs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainingCurve {
    pub run: String,
    pub metric: String,
    /// `(epoch, value)`; a non-finite value leaves a gap in the line (JSON `null`, read as NaN).
    #[serde(deserialize_with = "null_as_nan::pairs")]
    pub points: Vec<(f64, f64)>,
}

impl Report {
    /// Reads a report from JSON; errors name the file, line, column and field.
    pub fn from_json_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let de = &mut serde_json::Deserializer::from_str(&text);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let inner = e.inner();
            Error::Json { path: path.to_path_buf(), message: format!("field `{}`: {inner}", e.path()) }
        })
    }

    /// Checks what the renderers cannot draw: embeddings of different lengths or with
    /// non-finite values. Everything else (NaN metrics, empty sections, odd boxes) renders.
    pub fn validate(&self) -> Result<()> {
        let Some(first) = self.embeddings.first() else { return Ok(()) };
        let dim = first.vector.len();
        if dim == 0 {
            return Err(Error::invalid("embeddings[0].vector", "is empty"));
        }
        for (i, p) in self.embeddings.iter().enumerate() {
            if p.vector.len() != dim {
                return Err(Error::invalid(
                    format!("embeddings[{i}].vector"),
                    format!("has {} values, embeddings[0] has {dim}", p.vector.len()),
                ));
            }
            if let Some(j) = p.vector.iter().position(|v| !v.is_finite()) {
                return Err(Error::invalid(format!("embeddings[{i}].vector[{j}]"), "is not finite"));
            }
        }
        Ok(())
    }

    /// The same report with every image byte removed (what `report_full.json` holds).
    pub fn without_images(&self) -> Report {
        let mut r = self.clone();
        for t in &mut r.trajectories {
            t.image_png.clear();
        }
        for c in &mut r.captions {
            c.image_png = None;
        }
        r
    }
}

/// Distinct items in order of first appearance (caption methods and subjects, curve metrics).
pub(crate) fn unique_in_order<'a>(items: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut out: Vec<&str> = Vec::new();
    for item in items {
        if !out.contains(&item) {
            out.push(item);
        }
    }
    out
}

/// serde_json writes NaN and infinities as `null`; these read `null` back as NaN so a written
/// report round-trips.
mod null_as_nan {
    use serde::{Deserialize, Deserializer};

    pub fn one<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
    }

    pub fn pairs<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(f64, f64)>, D::Error> {
        let raw = Vec::<(Option<f64>, Option<f64>)>::deserialize(d)?;
        Ok(raw.into_iter().map(|(x, y)| (x.unwrap_or(f64::NAN), y.unwrap_or(f64::NAN))).collect())
    }
}

/// `Vec<u8>` as a standard base64 string.
mod base64_bytes {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD.decode(text.as_bytes()).map_err(serde::de::Error::custom)
    }
}

/// `Option<Vec<u8>>` as a base64 string or `null`.
mod base64_opt {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(b) => s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(b)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|t| base64::engine::general_purpose::STANDARD.decode(t.as_bytes()).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_round_trip_as_base64_and_are_stripped() {
        let r = Report {
            title: "t".into(),
            trajectories: vec![TrajectoryExample { image_png: vec![0, 1, 2, 255], ..Default::default() }],
            captions: vec![CaptionExample { image_png: Some(vec![9, 8]), ..Default::default() }],
            ..Default::default()
        };
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains("\"AAEC/w==\""), "{json}");
        assert_eq!(serde_json::from_str::<Report>(&json).unwrap(), r);
        let stripped = serde_json::to_string(&r.without_images()).unwrap();
        assert!(!stripped.contains("image_png"), "{stripped}");
    }

    #[test]
    fn ragged_or_non_finite_embeddings_are_named() {
        let p = |v: Vec<f32>| EmbeddingPoint { subject: "s".into(), vector: v, seen: true, label: None };
        let r = Report { embeddings: vec![p(vec![1.0, 2.0]), p(vec![1.0])], ..Default::default() };
        let e = r.validate().unwrap_err().to_string();
        assert!(e.contains("embeddings[1].vector") && e.contains("1 values"), "{e}");
        let r = Report { embeddings: vec![p(vec![1.0, 2.0]), p(vec![1.0, f32::NAN])], ..Default::default() };
        let e = r.validate().unwrap_err().to_string();
        assert!(e.contains("embeddings[1].vector[1]"), "{e}");
    }
}
