//! 2-D projections of subject embeddings: PCA and exact t-SNE, both deterministic.
//!
//! PCA: block power (subspace) iteration on the covariance with Rayleigh–Ritz, never forming
//! the d×d covariance (cost O(n·d) per step, so 768-dimensional embeddings are cheap); the small
//! projected problem is solved with cyclic Jacobi. Components are sign-normalised so the largest
//! loading is positive.
//!
//! t-SNE: exact O(n²) t-SNE after van der Maaten & Hinton, "Visualizing Data using t-SNE"
//! (JMLR 2008): Gaussian affinities with a per-point precision found by binary search on the
//! perplexity, symmetrised P, Student-t Q, early exaggeration, momentum gradient descent with
//! per-parameter gains, initialisation from a seeded ChaCha8 stream. Meant for at most
//! [`TSNE_MAX_POINTS`] points (two n×n matrices of f64).
//!
//! Both accept ragged input (short vectors are zero-padded) and treat non-finite values as 0, so
//! they never panic; [`crate::Report::validate`] rejects such embeddings before a report is drawn.

use rand::Rng;

/// The most points the report runs exact t-SNE on; larger sets are subsampled by the report.
pub const TSNE_MAX_POINTS: usize = 2000;

/// Block size of the subspace iteration: Ritz vectors 1 and 2 converge at the rate λ_{k+1}/λ_2.
const PCA_BLOCK: usize = 16;
const PCA_MAX_ITERS: usize = 500;
/// Stop when ‖C q − λ q‖ ≤ tol · λ₁ for both components.
const PCA_TOL: f64 = 1e-10;

/// A fitted two-component PCA.
#[derive(Debug, Clone, PartialEq)]
pub struct Pca {
    /// Mean of the input vectors.
    pub mean: Vec<f64>,
    /// Unit principal axes, largest variance first (a zero vector where the data has no
    /// second direction, e.g. one-dimensional input).
    pub components: [Vec<f64>; 2],
    /// Variance along each axis (denominator n − 1), descending.
    pub variances: [f64; 2],
    /// Total variance of the data (trace of the covariance), for "% of variance" labels.
    pub total_variance: f64,
    /// The centred inputs projected on the two axes.
    pub coords: Vec<[f64; 2]>,
}

/// Rows as an n×d f64 matrix, zero-padded to the longest row, non-finite values as 0.
fn to_matrix(data: &[Vec<f32>]) -> (Vec<f64>, usize) {
    let d = data.iter().map(Vec::len).max().unwrap_or(0);
    let mut m = vec![0.0; data.len() * d];
    for (i, row) in data.iter().enumerate() {
        for (j, &v) in row.iter().enumerate() {
            if v.is_finite() {
                m[i * d + j] = f64::from(v);
            }
        }
    }
    (m, d)
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Orthonormalises columns in place (modified Gram–Schmidt, twice for stability); a column that
/// is numerically dependent on the previous ones becomes zero.
fn orthonormalise(cols: &mut [Vec<f64>]) {
    for c in 0..cols.len() {
        let before = dot(&cols[c], &cols[c]).sqrt();
        for _ in 0..2 {
            for p in 0..c {
                let (done, rest) = cols.split_at_mut(c);
                let proj = dot(&done[p], &rest[0]);
                for (x, q) in rest[0].iter_mut().zip(&done[p]) {
                    *x -= proj * q;
                }
            }
        }
        let norm = dot(&cols[c], &cols[c]).sqrt();
        if norm <= 1e-10 * before || norm == 0.0 || !norm.is_finite() {
            cols[c].iter_mut().for_each(|x| *x = 0.0);
        } else {
            cols[c].iter_mut().for_each(|x| *x /= norm);
        }
    }
}

/// Eigen-decomposition of a symmetric k×k matrix (row-major) by cyclic Jacobi rotations.
/// Returns eigenvalues descending and the matching eigenvectors as columns `vecs[row][col]`.
pub fn jacobi_eigen(a: &[f64], k: usize) -> (Vec<f64>, Vec<Vec<f64>>) {
    let mut a = a.to_vec();
    let mut v = vec![vec![0.0; k]; k];
    for (i, row) in v.iter_mut().enumerate() {
        row[i] = 1.0;
    }
    let scale: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    for _sweep in 0..100 {
        let off: f64 = (0..k)
            .flat_map(|i| (0..k).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * k + j].powi(2))
            .sum();
        if off.sqrt() <= 1e-15 * scale || scale == 0.0 {
            break;
        }
        for p in 0..k {
            for q in p + 1..k {
                let apq = a[p * k + q];
                if apq == 0.0 {
                    continue;
                }
                // Rotation angle that zeroes a[p][q] (Golub & Van Loan, Algorithm 8.4.1).
                let theta = (a[q * k + q] - a[p * k + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for r in 0..k {
                    let (arp, arq) = (a[r * k + p], a[r * k + q]);
                    a[r * k + p] = c * arp - s * arq;
                    a[r * k + q] = s * arp + c * arq;
                }
                for r in 0..k {
                    let (apr, aqr) = (a[p * k + r], a[q * k + r]);
                    a[p * k + r] = c * apr - s * aqr;
                    a[q * k + r] = s * apr + c * aqr;
                }
                for row in v.iter_mut() {
                    let (vp, vq) = (row[p], row[q]);
                    row[p] = c * vp - s * vq;
                    row[q] = s * vp + c * vq;
                }
            }
        }
    }
    let mut order: Vec<usize> = (0..k).collect();
    order.sort_by(|&i, &j| a[j * k + j].total_cmp(&a[i * k + i]));
    let values = order.iter().map(|&i| a[i * k + i]).collect();
    let vectors = (0..k).map(|r| order.iter().map(|&i| v[r][i]).collect()).collect();
    (values, vectors)
}

/// Fits a two-component PCA; see the module docs for the method.
pub fn pca_fit(data: &[Vec<f32>]) -> Pca {
    let n = data.len();
    let (mut x, d) = to_matrix(data);
    let mut mean = vec![0.0; d];
    for row in x.chunks_exact(d.max(1)).take(n) {
        for (m, v) in mean.iter_mut().zip(row) {
            *m += v / n as f64;
        }
    }
    for row in x.chunks_exact_mut(d.max(1)).take(n) {
        for (v, m) in row.iter_mut().zip(&mean) {
            *v -= m;
        }
    }
    if n < 2 || d == 0 || x.iter().all(|&v| v == 0.0) {
        let components = [vec![0.0; d], vec![0.0; d]];
        return Pca { mean, components, variances: [0.0; 2], total_variance: 0.0, coords: vec![[0.0; 2]; n] };
    }
    let denom = (n - 1) as f64;
    let total_variance = x.iter().map(|v| v * v).sum::<f64>() / denom;
    let xr: Vec<&[f64]> = x.chunks_exact(d).collect();
    // C q = Xᵀ (X q) / (n − 1), without forming C.
    let cov_times = |q: &[f64]| -> Vec<f64> {
        let mut out = vec![0.0; d];
        for &r in &xr {
            let s = dot(r, q) / denom;
            for (o, v) in out.iter_mut().zip(r) {
                *o += s * v;
            }
        }
        out
    };
    let k = PCA_BLOCK.min(d).min(n);
    let mut rng = deper_core::rng::seeded(0, "deper-report/pca");
    let mut q: Vec<Vec<f64>> = (0..k).map(|_| (0..d).map(|_| rng.gen::<f64>() - 0.5).collect()).collect();
    orthonormalise(&mut q);
    let mut values = vec![0.0; k];
    for iter in 0..PCA_MAX_ITERS {
        let z: Vec<Vec<f64>> = q.iter().map(|c| cov_times(c)).collect();
        // Rayleigh–Ritz: T = Qᵀ C Q, rotate Q and C Q by T's eigenvectors.
        let mut t = vec![0.0; k * k];
        for i in 0..k {
            for j in 0..k {
                t[i * k + j] = 0.5 * (dot(&q[i], &z[j]) + dot(&q[j], &z[i]));
            }
        }
        let (vals, vecs) = jacobi_eigen(&t, k);
        let rotate = |m: &[Vec<f64>]| -> Vec<Vec<f64>> {
            (0..k)
                .map(|c| {
                    let mut col = vec![0.0; d];
                    for (r, src) in m.iter().enumerate() {
                        let w = vecs[r][c];
                        for (o, v) in col.iter_mut().zip(src) {
                            *o += w * v;
                        }
                    }
                    col
                })
                .collect()
        };
        let qr = rotate(&q);
        let zr = rotate(&z);
        values = vals;
        let lead = values[0].abs().max(f64::MIN_POSITIVE);
        let converged = (0..k.min(2)).all(|c| {
            let res: f64 = zr[c].iter().zip(&qr[c]).map(|(z, q)| (z - values[c] * q).powi(2)).sum();
            res.sqrt() <= PCA_TOL * lead
        });
        // The last step keeps the Ritz vectors even unconverged, so the axes stay sorted.
        if converged || iter + 1 == PCA_MAX_ITERS {
            q = qr;
            break;
        }
        q = zr;
        orthonormalise(&mut q);
    }
    let mut components = [vec![0.0; d], vec![0.0; d]];
    let mut variances = [0.0; 2];
    for c in 0..k.min(2) {
        let mut axis = q[c].clone();
        let norm = dot(&axis, &axis).sqrt();
        if norm == 0.0 {
            continue;
        }
        // Sign convention: largest |loading| positive, so the picture does not flip between runs.
        let big = axis.iter().copied().fold(0.0_f64, |m, v| if v.abs() > m.abs() { v } else { m });
        let sign = if big < 0.0 { -1.0 } else { 1.0 };
        axis.iter_mut().for_each(|v| *v *= sign / norm);
        components[c] = axis;
        variances[c] = values[c].max(0.0);
    }
    let coords = xr.iter().map(|r| [dot(r, &components[0]), dot(r, &components[1])]).collect();
    Pca { mean, components, variances, total_variance, coords }
}

/// The inputs projected on their first two principal axes.
pub fn pca(data: &[Vec<f32>]) -> Vec<[f64; 2]> {
    pca_fit(data).coords
}

/// t-SNE hyperparameters. The defaults are those of the reference implementations (van der
/// Maaten's bhtsne, scikit-learn): 1000 iterations, exaggeration 12 for the first 250, momentum
/// 0.5 then 0.8, learning rate 200.
#[derive(Debug, Clone, PartialEq)]
pub struct TsneConfig {
    /// `None`: 30, or n/3 when there are fewer than 90 points (kept within [1, n − 1]).
    pub perplexity: Option<f64>,
    pub iterations: usize,
    pub early_exaggeration: f64,
    pub exaggeration_iterations: usize,
    pub learning_rate: f64,
    /// Momentum while exaggerating, then after.
    pub momentum: (f64, f64),
    pub seed: u64,
}

impl Default for TsneConfig {
    fn default() -> Self {
        Self {
            perplexity: None,
            iterations: 1000,
            early_exaggeration: 12.0,
            exaggeration_iterations: 250,
            learning_rate: 200.0,
            momentum: (0.5, 0.8),
            seed: 0,
        }
    }
}

/// Exact t-SNE to 2-D with the default configuration and `seed`.
pub fn tsne(data: &[Vec<f32>], seed: u64) -> Vec<[f64; 2]> {
    tsne_with(data, &TsneConfig { seed, ..TsneConfig::default() })
}

/// Row `i` of the conditional affinities P(j|i), with the precision found by binary search so
/// the row's perplexity matches `perplexity`.
fn conditional_row(dist: &[f64], i: usize, perplexity: f64, out: &mut [f64]) {
    let target = perplexity.ln();
    // Distances shifted by the nearest neighbour's: exp never underflows to an all-zero row.
    let dmin = dist.iter().enumerate().filter(|&(j, _)| j != i).map(|(_, &v)| v).fold(f64::INFINITY, f64::min);
    let (mut beta, mut lo, mut hi) = (1.0, 0.0, f64::INFINITY);
    let mean = dist.iter().sum::<f64>() / (dist.len().max(2) - 1) as f64;
    if mean > 0.0 {
        beta = 1.0 / mean;
    }
    for _ in 0..200 {
        let mut sum = 0.0;
        let mut weighted = 0.0;
        for (j, (&dj, o)) in dist.iter().zip(out.iter_mut()).enumerate() {
            let p = match j == i {
                true => 0.0,
                false if dj <= dmin => 1.0,
                false => (-(dj - dmin) * beta).exp(),
            };
            *o = p;
            sum += p;
            weighted += (dj - dmin) * p;
        }
        let entropy = sum.ln() + beta * weighted / sum;
        let diff = entropy - target;
        if diff.abs() < 1e-5 {
            break;
        }
        let next = if diff > 0.0 {
            lo = beta;
            if hi.is_finite() {
                (beta + hi) / 2.0
            } else {
                beta * 2.0
            }
        } else {
            hi = beta;
            (beta + lo) / 2.0
        };
        // All neighbours equidistant: no precision reaches the target; keep the last row.
        if !next.is_finite() || next == 0.0 {
            break;
        }
        beta = next;
    }
    let sum: f64 = out.iter().sum();
    out.iter_mut().for_each(|p| *p /= sum);
}

/// Exact t-SNE to 2-D; see the module docs. Deterministic for a given input and config.
pub fn tsne_with(data: &[Vec<f32>], cfg: &TsneConfig) -> Vec<[f64; 2]> {
    let n = data.len();
    if n < 2 {
        return vec![[0.0; 2]; n];
    }
    let (x, d) = to_matrix(data);
    let mut dist = vec![0.0; n * n];
    for i in 0..n {
        for j in i + 1..n {
            let s: f64 = (0..d).map(|c| (x[i * d + c] - x[j * d + c]).powi(2)).sum();
            dist[i * n + j] = s;
            dist[j * n + i] = s;
        }
    }
    let perplexity = cfg.perplexity.unwrap_or(if n < 90 { n as f64 / 3.0 } else { 30.0 }).clamp(1.0, (n - 1) as f64);
    let mut p = vec![0.0; n * n];
    for i in 0..n {
        conditional_row(&dist[i * n..(i + 1) * n], i, perplexity, &mut p[i * n..(i + 1) * n]);
    }
    drop(dist);
    // Symmetrise: p_ij = (p_j|i + p_i|j) / 2n, floored so log terms and ratios stay finite.
    for i in 0..n {
        for j in i + 1..n {
            let s = ((p[i * n + j] + p[j * n + i]) / (2.0 * n as f64)).max(1e-12);
            p[i * n + j] = s;
            p[j * n + i] = s;
        }
        p[i * n + i] = 0.0;
    }
    let mut rng = deper_core::rng::seeded(cfg.seed, "deper-report/tsne");
    let mut y: Vec<[f64; 2]> = (0..n)
        .map(|_| {
            // Box–Muller: N(0, 1e-4²) as in the reference implementation.
            let u1: f64 = 1.0 - rng.gen::<f64>();
            let u2: f64 = rng.gen();
            let r = (-2.0 * u1.ln()).sqrt() * 1e-4;
            let a = std::f64::consts::TAU * u2;
            [r * a.cos(), r * a.sin()]
        })
        .collect();
    let mut update = vec![[0.0; 2]; n];
    let mut gains = vec![[1.0; 2]; n];
    let mut attract = vec![[0.0; 2]; n];
    let mut repulse = vec![[0.0; 2]; n];
    for iter in 0..cfg.iterations {
        let exaggerating = iter < cfg.exaggeration_iterations;
        let exag = if exaggerating { cfg.early_exaggeration } else { 1.0 };
        let momentum = if exaggerating { cfg.momentum.0 } else { cfg.momentum.1 };
        // ∂C/∂y_i = 4 Σ_j (p_ij − w_ij / Z) w_ij (y_i − y_j) with w_ij = 1 / (1 + ‖y_i − y_j‖²) and
        // Z = Σ w. Summing the attractive (p·w) and repulsive (w²) parts separately lets one pass
        // over the pairs (each once, by symmetry) find Z and both parts; they combine afterwards.
        attract.iter_mut().chain(repulse.iter_mut()).for_each(|v| *v = [0.0; 2]);
        let mut z = 0.0;
        for i in 0..n {
            let (yi, pi) = (y[i], &p[i * n..(i + 1) * n]);
            let (mut ai, mut ri) = ([0.0; 2], [0.0; 2]);
            for j in i + 1..n {
                let d0 = yi[0] - y[j][0];
                let d1 = yi[1] - y[j][1];
                let w = 1.0 / (1.0 + d0 * d0 + d1 * d1);
                z += 2.0 * w;
                let a = exag * pi[j] * w;
                let r = w * w;
                ai[0] += a * d0;
                ai[1] += a * d1;
                ri[0] += r * d0;
                ri[1] += r * d1;
                attract[j][0] -= a * d0;
                attract[j][1] -= a * d1;
                repulse[j][0] -= r * d0;
                repulse[j][1] -= r * d1;
            }
            for c in 0..2 {
                attract[i][c] += ai[c];
                repulse[i][c] += ri[c];
            }
        }
        for i in 0..n {
            for c in 0..2 {
                let grad = 4.0 * (attract[i][c] - repulse[i][c] / z);
                // Gains grow where the gradient flips sign against the running update.
                gains[i][c] = if (grad > 0.0) != (update[i][c] > 0.0) { gains[i][c] + 0.2 } else { gains[i][c] * 0.8 };
                gains[i][c] = f64::max(gains[i][c], 0.01);
                update[i][c] = momentum * update[i][c] - cfg.learning_rate * gains[i][c] * grad;
            }
        }
        let mut mean = [0.0; 2];
        for (yi, u) in y.iter_mut().zip(&update) {
            yi[0] += u[0];
            yi[1] += u[1];
            mean[0] += yi[0] / n as f64;
            mean[1] += yi[1] / n as f64;
        }
        for yi in &mut y {
            yi[0] -= mean[0];
            yi[1] -= mean[1];
        }
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jacobi_matches_a_known_decomposition() {
        // [[2,1],[1,2]] has eigenvalues 3 (axis (1,1)/√2) and 1.
        let (vals, vecs) = jacobi_eigen(&[2.0, 1.0, 1.0, 2.0], 2);
        assert!((vals[0] - 3.0).abs() < 1e-12 && (vals[1] - 1.0).abs() < 1e-12, "{vals:?}");
        assert!((vecs[0][0].abs() - 0.5f64.sqrt()).abs() < 1e-12 && (vecs[0][0] - vecs[1][0]).abs() < 1e-12);
    }

    #[test]
    fn binary_search_hits_the_target_perplexity() {
        // Squared distances of one point to 40 others, spread over three orders of magnitude.
        let dist: Vec<f64> = (0..41).map(|j| if j == 5 { 0.0 } else { 0.01 * (1.0 + j as f64).powf(2.5) }).collect();
        for perplexity in [2.0, 10.0, 30.0] {
            let mut row = vec![0.0; dist.len()];
            conditional_row(&dist, 5, perplexity, &mut row);
            assert_eq!(row[5], 0.0, "no self-affinity");
            assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-12);
            let entropy: f64 = -row.iter().filter(|&&p| p > 0.0).map(|p| p * p.ln()).sum::<f64>();
            assert!((entropy.exp() / perplexity - 1.0).abs() < 1e-4, "perplexity {} vs {perplexity}", entropy.exp());
            // Nearer points get more affinity.
            assert!(row[0] > row[20] && row[20] > row[40]);
        }
    }

    #[test]
    fn degenerate_inputs_do_not_panic() {
        assert!(pca(&[]).is_empty());
        assert_eq!(pca(&[vec![1.0, 2.0]]), vec![[0.0, 0.0]]);
        assert_eq!(pca(&[vec![1.0, 2.0], vec![1.0, 2.0]]), vec![[0.0; 2]; 2]);
        // One-dimensional data: the second axis is empty.
        let f = pca_fit(&[vec![0.0], vec![1.0], vec![2.0]]);
        assert_eq!(f.components[1], vec![0.0]);
        assert!((f.variances[0] - 1.0).abs() < 1e-12);
        // Ragged and non-finite input is padded / zeroed rather than rejected.
        assert_eq!(pca(&[vec![1.0], vec![f32::NAN, 3.0], vec![]]).len(), 3);
        assert!(tsne(&[], 1).is_empty());
        assert_eq!(tsne(&[vec![1.0]], 1), vec![[0.0, 0.0]]);
        let two = tsne(&[vec![0.0], vec![1.0]], 1);
        assert!(two.iter().flatten().all(|v| v.is_finite()), "{two:?}");
        let same = tsne(&vec![vec![1.0, 1.0]; 5], 1);
        assert!(same.iter().flatten().all(|v| v.is_finite()), "{same:?}");
    }
}
