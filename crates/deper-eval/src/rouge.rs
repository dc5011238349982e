//! ROUGE-L as pycocoevalcap computes it (rouge/rouge.py): longest common subsequence against each
//! reference, the best precision and the best recall (taken separately), F-measure with beta = 1.2;
//! the corpus score is the mean of the per-image scores.

/// pycocoevalcap's beta.
pub const BETA: f64 = 1.2;

/// Length of the longest common subsequence of two token lists.
pub fn lcs_len<T: PartialEq>(a: &[T], b: &[T]) -> usize {
    let mut prev = vec![0usize; b.len() + 1];
    let mut cur = vec![0usize; b.len() + 1];
    for x in a {
        for (j, y) in b.iter().enumerate() {
            cur[j + 1] = if x == y { prev[j] + 1 } else { prev[j + 1].max(cur[j]) };
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// ROUGE-L of a tokenised candidate against tokenised references.
///
/// Tokens come from splitting on single spaces, as the reference does (`"".split(" ")` is one
/// empty token, so an empty candidate has length 1 and scores 0).
pub fn rouge_l(candidate: &str, references: &[String]) -> f64 {
    let c: Vec<&str> = candidate.split(' ').collect();
    let (mut prec_max, mut rec_max) = (0.0f64, 0.0f64);
    for r in references {
        let rt: Vec<&str> = r.split(' ').collect();
        let lcs = lcs_len(&rt, &c) as f64;
        prec_max = prec_max.max(lcs / c.len() as f64);
        rec_max = rec_max.max(lcs / rt.len() as f64);
    }
    if prec_max != 0.0 && rec_max != 0.0 {
        ((1.0 + BETA * BETA) * prec_max * rec_max) / (rec_max + BETA * BETA * prec_max)
    } else {
        0.0
    }
}
