//! Scanpath comparison metrics on sequences of fixations (or attention steps) `(x, y, duration)`.
//!
//! - [`grid_string`] / [`string_edit_distance`]: Levenshtein distance between the sequences of
//!   grid cells visited (cells numbered row-major on a `cols x rows` grid over [0, 1]^2).
//! - [`scanmatch`]: a ScanMatch-style sequence score (Cristino et al., 2010): Needleman-Wunsch on
//!   the grid-cell strings with substitution `1 - d / threshold` (d: distance between cell centres,
//!   in cells), gap score 0 by default, optional temporal binning (a fixation repeated once per
//!   `bin` of duration), normalised by the longer string's length (the maximal substitution is 1).
//! - [`dtw`]: dynamic time warping with Euclidean point distance (total cost of the best warping).
//! - [`multimatch`]: the five MultiMatch similarities (Jarodzka et al., 2010; Dewhurst et al., 2012)
//!   as the `multimatch-gaze` package (0.1.3) computes them (agreement 1e-16 on the goldens):
//!   saccade vectors between consecutive fixations, the shortest path through the saccade vector-difference matrix (right, down or
//!   diagonal moves), medians of the differences along it, normalised by the screen diagonal.
//!   Simplification (grouping by direction and amplitude) is off unless [`Grouping`] is given, and
//!   then follows the package, including its bookkeeping of durations.

use serde::{Deserialize, Serialize};

use crate::personalization::needleman_wunsch;
use crate::EvalError;

/// One fixation or attention step. Coordinates are normalised to [0, 1] for the grid metrics;
/// MultiMatch takes any unit together with the matching screen size.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Fixation {
    pub x: f64,
    pub y: f64,
    pub duration: f64,
}

impl Fixation {
    pub fn new(x: f64, y: f64, duration: f64) -> Self {
        Self { x, y, duration }
    }
}

fn check_finite(path: &[Fixation], what: &str) -> Result<(), EvalError> {
    for (i, f) in path.iter().enumerate() {
        if !(f.x.is_finite() && f.y.is_finite() && f.duration.is_finite()) {
            return Err(EvalError::invalid(format!("{what} fixation {i}"), "non-finite x, y or duration"));
        }
    }
    Ok(())
}

fn check_grid(grid: (usize, usize)) -> Result<(), EvalError> {
    if grid.0 == 0 || grid.1 == 0 {
        return Err(EvalError::invalid("grid", format!("{}x{} has no cells", grid.0, grid.1)));
    }
    Ok(())
}

fn cell_of(v: f64, n: usize) -> usize {
    // Points on or past the far edge fall in the last cell.
    ((v.clamp(0.0, 1.0) * n as f64).floor() as usize).min(n - 1)
}

/// Row-major grid cell of every fixation on a `(cols, rows)` grid over [0, 1]^2.
pub fn grid_string(path: &[Fixation], grid: (usize, usize)) -> Result<Vec<usize>, EvalError> {
    check_grid(grid)?;
    check_finite(path, "scanpath")?;
    Ok(path.iter().map(|f| cell_of(f.y, grid.1) * grid.0 + cell_of(f.x, grid.0)).collect())
}

/// Levenshtein distance between two sequences.
pub fn levenshtein<T: PartialEq>(a: &[T], b: &[T]) -> usize {
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, x) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, y) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(x != y)).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// String edit distance between two scanpaths and its similarity `1 - d / max(len)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct EditDistance {
    pub distance: usize,
    pub similarity: f64,
}

/// Edit distance of the grid-cell strings of two scanpaths (similarity 1 for two empty paths).
pub fn string_edit_distance(a: &[Fixation], b: &[Fixation], grid: (usize, usize)) -> Result<EditDistance, EvalError> {
    let (sa, sb) = (grid_string(a, grid)?, grid_string(b, grid)?);
    let distance = levenshtein(&sa, &sb);
    let n = sa.len().max(sb.len());
    let similarity = if n == 0 { 1.0 } else { 1.0 - distance as f64 / n as f64 };
    Ok(EditDistance { distance, similarity })
}

/// Parameters of [`scanmatch`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ScanMatchParams {
    /// Grid (columns, rows).
    pub grid: (usize, usize),
    /// Cell distance at which substitution scores 0 (negative beyond).
    pub threshold: f64,
    /// Gap score (ScanMatch's default is 0).
    pub gap: f64,
    /// Temporal bin: each fixation is repeated `round(duration / bin)` times (at least once).
    pub temporal_bin: Option<f64>,
}

impl Default for ScanMatchParams {
    fn default() -> Self {
        Self { grid: (5, 5), threshold: 2.0, gap: 0.0, temporal_bin: None }
    }
}

/// ScanMatch-style normalised sequence score (1 for identical strings).
pub fn scanmatch(a: &[Fixation], b: &[Fixation], params: &ScanMatchParams) -> Result<f64, EvalError> {
    if params.threshold.is_nan() || params.threshold <= 0.0 {
        return Err(EvalError::invalid("scanmatch threshold", format!("{} is not positive", params.threshold)));
    }
    let expand = |p: &[Fixation]| -> Result<Vec<usize>, EvalError> {
        let cells = grid_string(p, params.grid)?;
        Ok(match params.temporal_bin {
            None => cells,
            Some(bin) if bin > 0.0 => cells
                .iter()
                .zip(p)
                .flat_map(|(&c, f)| std::iter::repeat_n(c, ((f.duration / bin).round() as usize).max(1)))
                .collect(),
            Some(bin) => return Err(EvalError::invalid("scanmatch temporal_bin", format!("{bin} is not positive"))),
        })
    };
    let (sa, sb) = (expand(a)?, expand(b)?);
    let n = sa.len().max(sb.len());
    if n == 0 {
        return Ok(1.0);
    }
    let cols = params.grid.0;
    let dist = |p: usize, q: usize| {
        let (dx, dy) = ((p % cols) as f64 - (q % cols) as f64, (p / cols) as f64 - (q / cols) as f64);
        (dx * dx + dy * dy).sqrt()
    };
    let score = needleman_wunsch(sa.len(), sb.len(), |i, j| 1.0 - dist(sa[i], sb[j]) / params.threshold, params.gap);
    Ok(score / n as f64)
}

/// Dynamic time warping cost with Euclidean distance between (x, y) points.
pub fn dtw(a: &[Fixation], b: &[Fixation]) -> Result<f64, EvalError> {
    check_finite(a, "first scanpath")?;
    check_finite(b, "second scanpath")?;
    if a.is_empty() || b.is_empty() {
        return Err(EvalError::invalid("dtw", "empty scanpath"));
    }
    let d = |p: &Fixation, q: &Fixation| ((p.x - q.x).powi(2) + (p.y - q.y).powi(2)).sqrt();
    let mut prev = vec![f64::INFINITY; b.len() + 1];
    prev[0] = 0.0;
    let mut cur = vec![f64::INFINITY; b.len() + 1];
    for p in a {
        cur[0] = f64::INFINITY;
        for (j, q) in b.iter().enumerate() {
            cur[j + 1] = d(p, q) + prev[j].min(prev[j + 1]).min(cur[j]);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    Ok(prev[b.len()])
}

/// Thresholds of MultiMatch's simplification (`grouping=True` in multimatch-gaze).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Grouping {
    /// Direction threshold in degrees.
    pub t_dir: f64,
    /// Duration threshold.
    pub t_dur: f64,
    /// Amplitude threshold, in screen units.
    pub t_amp: f64,
}

/// The five MultiMatch similarities, each in [0, 1] (1 = identical).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MultiMatch {
    pub vector: f64,
    pub direction: f64,
    pub length: f64,
    pub position: f64,
    pub duration: f64,
}

/// multimatch-gaze's scanpath structure: saccades between consecutive fixations and the list of
/// durations (which simplification can make one longer than the saccades + 1).
#[derive(Debug, Clone, Default)]
struct Path {
    dur: Vec<f64>,
    x: Vec<f64>,
    y: Vec<f64>,
    lenx: Vec<f64>,
    leny: Vec<f64>,
    theta: Vec<f64>,
    rho: Vec<f64>,
}

impl Path {
    fn new(f: &[Fixation]) -> Self {
        let mut p = Path { dur: f.iter().map(|f| f.duration).collect(), ..Default::default() };
        for w in f.windows(2) {
            let (dx, dy) = (w[1].x - w[0].x, w[1].y - w[0].y);
            p.x.push(w[0].x);
            p.y.push(w[0].y);
            p.push_vector(dx, dy);
        }
        p
    }

    fn push_vector(&mut self, dx: f64, dy: f64) {
        self.lenx.push(dx);
        self.leny.push(dy);
        self.rho.push((dx * dx + dy * dy).sqrt());
        self.theta.push(dy.atan2(dx));
    }

    /// keepsaccade: copies saccade `i` and duration `i` from `src`.
    fn keep(&mut self, src: &Path, i: usize) {
        self.x.push(src.x[i]);
        self.y.push(src.y[i]);
        self.lenx.push(src.lenx[i]);
        self.leny.push(src.leny[i]);
        self.theta.push(src.theta[i]);
        self.rho.push(src.rho[i]);
        self.dur.push(src.dur[i]);
    }

    /// Merges saccades `i` and `i + 1` of `src` into one starting at saccade `i`.
    fn merge(&mut self, src: &Path, i: usize) {
        self.x.push(src.x[i]);
        self.y.push(src.y[i]);
        self.push_vector(src.lenx[i] + src.lenx[i + 1], src.leny[i] + src.leny[i + 1]);
        self.dur.push(src.dur[i]);
    }
}

fn simplify_direction(p: &Path, t_dir: f64, t_dur: f64) -> Path {
    let n = p.x.len();
    if n < 1 {
        return p.clone();
    }
    let mut s = Path::default();
    let mut i = 0;
    while i < n {
        let angle = if i < n - 1 {
            let dot = p.lenx[i] * p.lenx[i + 1] + p.leny[i] * p.leny[i + 1];
            let norms =
                (p.lenx[i].powi(2) + p.leny[i].powi(2)).sqrt() * (p.lenx[i + 1].powi(2) + p.leny[i + 1].powi(2)).sqrt();
            (dot / norms).acos().to_degrees()
        } else {
            f64::INFINITY
        };
        if angle < t_dir && i < n - 1 && p.dur[i + 1] < t_dur {
            s.merge(p, i);
            i += 2;
        } else {
            s.keep(p, i);
            i += 1;
        }
    }
    s.dur.push(p.dur[p.dur.len() - 1]);
    s
}

fn simplify_length(p: &Path, t_amp: f64, t_dur: f64) -> Path {
    let n = p.x.len();
    if n < 1 {
        return p.clone();
    }
    let nd = p.dur.len();
    let mut s = Path::default();
    let mut i = 0;
    while i < n {
        if i == n - 1 {
            let j = s.x.len();
            // The package merges the last saccade into the previous kept one; with none kept (a
            // single saccade) it would index an empty list, so the saccade is kept instead.
            if p.rho[i] < t_amp && (p.dur[nd - 1] < t_dur || p.dur[nd - 2] < t_dur) && j > 0 && n >= 2 {
                let (vx, vy) = (p.lenx[n - 2] + p.lenx[n - 1], p.leny[n - 2] + p.leny[n - 1]);
                s.lenx[j - 1] = vx;
                s.leny[j - 1] = vy;
                s.rho[j - 1] = (vx * vx + vy * vy).sqrt();
                s.theta[j - 1] = vy.atan2(vx);
                s.dur.push(p.dur[i - 1]);
            } else {
                s.keep(p, i);
            }
            i += 1;
        } else if p.rho[i] < t_amp && (p.dur[i + 1] < t_dur || p.dur[i] < t_dur) {
            s.merge(p, i);
            i += 2;
        } else {
            s.keep(p, i);
            i += 1;
        }
    }
    s.dur.push(p.dur[nd - 1]);
    s
}

fn simplify(mut p: Path, g: &Grouping) -> Path {
    let mut prev = p.dur.len();
    loop {
        p = simplify_direction(&p, g.t_dir, g.t_dur);
        p = simplify_length(&p, g.t_amp, g.t_dur);
        if p.dur.len() == prev {
            return p;
        }
        prev = p.dur.len();
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// MultiMatch similarities of two scanpaths on a screen of `screen = (width, height)` in the
/// fixations' unit (use `(1.0, 1.0)` for normalised coordinates). `None` when either path has
/// fewer than 3 fixations (the package returns NaN).
pub fn multimatch(
    a: &[Fixation],
    b: &[Fixation],
    screen: (f64, f64),
    grouping: Option<&Grouping>,
) -> Result<Option<MultiMatch>, EvalError> {
    check_finite(a, "first scanpath")?;
    check_finite(b, "second scanpath")?;
    if screen.0.is_nan() || screen.1.is_nan() || screen.0 <= 0.0 || screen.1 <= 0.0 {
        return Err(EvalError::invalid("screen", format!("{screen:?} is not a positive size")));
    }
    if a.len() < 3 || b.len() < 3 {
        return Ok(None);
    }
    let (mut p1, mut p2) = (Path::new(a), Path::new(b));
    if let Some(g) = grouping {
        p1 = simplify(p1, g);
        p2 = simplify(p2, g);
    }
    let (n, m) = (p1.x.len(), p2.x.len());
    let vdiff = |i: usize, j: usize| ((p1.lenx[i] - p2.lenx[j]).powi(2) + (p1.leny[i] - p2.leny[j]).powi(2)).sqrt();
    // Shortest path from (0, 0) to (n-1, m-1) moving right, down or diagonally; entering a cell
    // costs its vector difference (the package runs Dijkstra on this DAG).
    let mut dist = vec![f64::INFINITY; n * m];
    let mut pred = vec![usize::MAX; n * m];
    dist[0] = 0.0;
    for i in 0..n {
        for j in 0..m {
            if i == 0 && j == 0 {
                continue;
            }
            let w = vdiff(i, j);
            let mut best = (f64::INFINITY, usize::MAX);
            // Diagonal first: on an exact tie the diagonal predecessor is kept.
            let diag = (i > 0 && j > 0).then(|| (i - 1) * m + j - 1);
            let left = (j > 0).then(|| i * m + j - 1);
            let up = (i > 0).then(|| (i - 1) * m + j);
            for u in [diag, left, up].into_iter().flatten() {
                if dist[u] + w < best.0 {
                    best = (dist[u] + w, u);
                }
            }
            dist[i * m + j] = best.0;
            pred[i * m + j] = best.1;
        }
    }
    let mut path = vec![n * m - 1];
    while let Some(&last) = path.last() {
        if last == 0 {
            break;
        }
        path.push(pred[last]);
    }
    path.reverse();
    let two_pi_angle = |t: f64| if t < 0.0 { std::f64::consts::PI + (std::f64::consts::PI + t) } else { t };
    let (mut vec_d, mut dir_d, mut len_d, mut pos_d, mut dur_d) = (vec![], vec![], vec![], vec![], vec![]);
    for &node in &path {
        let (i, j) = (node / m, node % m);
        vec_d.push(vdiff(i, j));
        let mut d = (two_pi_angle(p1.theta[i]) - two_pi_angle(p2.theta[j])).abs();
        if d > std::f64::consts::PI {
            d = 2.0 * std::f64::consts::PI - d;
        }
        dir_d.push(d);
        len_d.push((p1.rho[i] - p2.rho[j]).abs());
        pos_d.push(((p1.x[i] - p2.x[j]).powi(2) + (p1.y[i] - p2.y[j]).powi(2)).sqrt());
        dur_d.push((p1.dur[i] - p2.dur[j]).abs() / p1.dur[i].max(p2.dur[j]).abs());
    }
    let diag = (screen.0 * screen.0 + screen.1 * screen.1).sqrt();
    Ok(Some(MultiMatch {
        vector: 1.0 - median(vec_d) / (2.0 * diag),
        direction: 1.0 - median(dir_d) / std::f64::consts::PI,
        length: 1.0 - median(len_d) / diag,
        position: 1.0 - median(pos_d) / diag,
        duration: 1.0 - median(dur_d),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(v: &[(f64, f64)]) -> Vec<Fixation> {
        v.iter().map(|&(x, y)| Fixation::new(x, y, 0.2)).collect()
    }

    #[test]
    fn grid_and_edit_distance() {
        let a = path(&[(0.1, 0.1), (0.9, 0.1), (0.5, 0.5), (1.0, 1.0)]);
        assert_eq!(grid_string(&a, (3, 3)).unwrap(), [0, 2, 4, 8]);
        let b = path(&[(0.1, 0.1), (0.5, 0.5), (0.99, 0.99)]);
        let e = string_edit_distance(&a, &b, (3, 3)).unwrap();
        assert_eq!(e.distance, 1);
        assert!((e.similarity - 0.75).abs() < 1e-12);
        assert!(grid_string(&a, (0, 3)).is_err());
    }

    #[test]
    fn scanmatch_and_dtw() {
        let a = path(&[(0.1, 0.1), (0.9, 0.1), (0.5, 0.5)]);
        assert!((scanmatch(&a, &a, &ScanMatchParams::default()).unwrap() - 1.0).abs() < 1e-12);
        // One cell apart everywhere (5x5 grid, threshold 2): each substitution scores 0.5.
        let b = path(&[(0.3, 0.1), (0.7, 0.1), (0.3, 0.5)]);
        assert!((scanmatch(&a, &b, &ScanMatchParams::default()).unwrap() - 0.5).abs() < 1e-12);
        assert_eq!(dtw(&a, &a).unwrap(), 0.0);
        let c = path(&[(0.1, 0.1), (0.1, 0.1), (0.9, 0.1), (0.5, 0.5)]);
        assert_eq!(dtw(&a, &c).unwrap(), 0.0);
        let d = path(&[(0.1, 0.2)]);
        assert!((dtw(&d, &path(&[(0.1, 0.1)])).unwrap() - 0.1).abs() < 1e-12);
    }
}
