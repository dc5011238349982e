//! Subject identification metrics from (true, predicted) label lists: accuracy, and macro-averaged
//! precision, recall and F1 over the union of true and predicted labels (scikit-learn's
//! `precision_recall_fscore_support(average="macro")` with `zero_division=0`: a label never
//! predicted has precision 0, F1 is averaged per label, not computed from the averages).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::EvalError;

fn check<T>(truth: &[T], predicted: &[T]) -> Result<(), EvalError> {
    if truth.len() != predicted.len() {
        return Err(EvalError::LengthMismatch { truth: truth.len(), predicted: predicted.len() });
    }
    if truth.is_empty() {
        return Err(EvalError::EmptyLabels);
    }
    Ok(())
}

/// Fraction of positions where the prediction equals the truth.
pub fn accuracy<T: PartialEq>(truth: &[T], predicted: &[T]) -> Result<f64, EvalError> {
    check(truth, predicted)?;
    let hits = truth.iter().zip(predicted).filter(|(t, p)| t == p).count();
    Ok(hits as f64 / truth.len() as f64)
}

/// Macro-averaged precision, recall and F1, with the per-label values.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MacroPrf {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// Per label: (precision, recall, f1, support).
    pub per_label: BTreeMap<String, (f64, f64, f64, usize)>,
}

/// Macro precision/recall/F1 over the labels seen in either list.
pub fn macro_prf<T: Ord + Clone + ToString>(truth: &[T], predicted: &[T]) -> Result<MacroPrf, EvalError> {
    check(truth, predicted)?;
    // label -> (true positives, predicted count, true count)
    let mut counts: BTreeMap<T, (usize, usize, usize)> = BTreeMap::new();
    for (t, p) in truth.iter().zip(predicted) {
        counts.entry(t.clone()).or_default().2 += 1;
        let e = counts.entry(p.clone()).or_default();
        e.1 += 1;
        if t == p {
            e.0 += 1;
        }
    }
    let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let mut per_label = BTreeMap::new();
    let (mut ps, mut rs, mut fs) = (0.0, 0.0, 0.0);
    for (label, &(tp, npred, ntrue)) in &counts {
        let p = ratio(tp, npred);
        let r = ratio(tp, ntrue);
        let f = if p + r == 0.0 { 0.0 } else { 2.0 * p * r / (p + r) };
        ps += p;
        rs += r;
        fs += f;
        per_label.insert(label.to_string(), (p, r, f, ntrue));
    }
    let n = counts.len() as f64;
    Ok(MacroPrf { precision: ps / n, recall: rs / n, f1: fs / n, per_label })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        // Hand-computed: a (tp 1, predicted 2, true 2), b (tp 1, predicted 2, true 1), c (tp 0, 1, 1), x (0, 0, 1).
        let t = ["a", "a", "b", "c", "x"];
        let p = ["a", "b", "b", "a", "c"];
        let t: Vec<String> = t.iter().map(|s| s.to_string()).collect();
        let p: Vec<String> = p.iter().map(|s| s.to_string()).collect();
        assert!((accuracy(&t, &p).unwrap() - 0.4).abs() < 1e-12);
        let m = macro_prf(&t, &p).unwrap();
        // a: p 1/2 r 1/2; b: p 1/2 r 1; c: p 0 r 0; x: p 0 (never predicted) r 0.
        assert!((m.precision - (0.5 + 0.5) / 4.0).abs() < 1e-12);
        assert!((m.recall - (0.5 + 1.0) / 4.0).abs() < 1e-12);
        assert!((m.f1 - (0.5 + 2.0 / 3.0) / 4.0).abs() < 1e-12);
        assert!(matches!(accuracy(&t[..2], &p), Err(EvalError::LengthMismatch { truth: 2, predicted: 5 })));
    }
}
