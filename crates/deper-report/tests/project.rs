//! PCA and t-SNE on data with known structure: recovered axes, variance order, cluster separation,
//! determinism.

#![allow(clippy::unwrap_used)]

use deper_report::project::{pca, pca_fit, tsne};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn normal(rng: &mut ChaCha8Rng) -> f64 {
    let u1: f64 = 1.0 - rng.gen::<f64>();
    let u2: f64 = rng.gen();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn variance(v: &[f64]) -> f64 {
    let m = v.iter().sum::<f64>() / v.len() as f64;
    v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() - 1) as f64
}

/// An orthonormal basis of R^4 that is not axis-aligned (Gram–Schmidt of fixed vectors).
fn rotated_basis() -> Vec<Vec<f64>> {
    let raw = [[1.0, 2.0, -1.0, 0.5], [0.3, -1.0, 0.8, 2.0], [2.0, 0.1, 1.0, -0.7], [-0.4, 0.9, 1.5, 0.2]];
    let mut basis: Vec<Vec<f64>> = Vec::new();
    for r in raw {
        let mut v = r.to_vec();
        for b in &basis {
            let p = dot(&v, b);
            v.iter_mut().zip(b).for_each(|(x, y)| *x -= p * y);
        }
        let n = dot(&v, &v).sqrt();
        basis.push(v.into_iter().map(|x| x / n).collect());
    }
    basis
}

#[test]
fn pca_recovers_the_principal_axes_of_an_anisotropic_gaussian() {
    let basis = rotated_basis();
    let stds = [6.0, 3.0, 1.0, 0.5];
    let offset = [10.0, -4.0, 2.0, 7.0];
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let data: Vec<Vec<f32>> = (0..4000)
        .map(|_| {
            let z: Vec<f64> = stds.iter().map(|s| s * normal(&mut rng)).collect();
            (0..4).map(|j| (offset[j] + (0..4).map(|k| z[k] * basis[k][j]).sum::<f64>()) as f32).collect()
        })
        .collect();
    let fit = pca_fit(&data);
    // Axes match the generating directions up to sign.
    assert!(dot(&fit.components[0], &basis[0]).abs() > 0.995, "{:?}", fit.components[0]);
    assert!(dot(&fit.components[1], &basis[1]).abs() > 0.99, "{:?}", fit.components[1]);
    assert!(dot(&fit.components[0], &fit.components[1]).abs() < 1e-9);
    // Variances are ordered and near 36 and 9 (sampling error of a variance at n = 4000 is ~2%).
    assert!(fit.variances[0] > fit.variances[1]);
    assert!((fit.variances[0] / 36.0 - 1.0).abs() < 0.08, "{:?}", fit.variances);
    assert!((fit.variances[1] / 9.0 - 1.0).abs() < 0.08, "{:?}", fit.variances);
    assert!((fit.total_variance / (36.0 + 9.0 + 1.0 + 0.25) - 1.0).abs() < 0.08, "{}", fit.total_variance);
    // The reported variances are those of the returned coordinates, and the mean is removed.
    let c0: Vec<f64> = fit.coords.iter().map(|c| c[0]).collect();
    let c1: Vec<f64> = fit.coords.iter().map(|c| c[1]).collect();
    assert!((variance(&c0) / fit.variances[0] - 1.0).abs() < 1e-6);
    assert!((variance(&c1) / fit.variances[1] - 1.0).abs() < 1e-6);
    assert!(c0.iter().sum::<f64>().abs() / (c0.len() as f64) < 1e-6);
    assert!((fit.mean[0] - 10.0).abs() < 0.5 && (fit.mean[3] - 7.0).abs() < 0.5, "{:?}", fit.mean);
}

#[test]
fn pca_of_a_plane_in_high_dimension_preserves_distances() {
    // 6 points on a 2-D plane inside R^40 (fewer points than dimensions): the 2-D projection is
    // an isometry of that plane.
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let u: Vec<f64> = (0..40).map(|_| normal(&mut rng)).collect();
    let v: Vec<f64> = (0..40).map(|_| normal(&mut rng)).collect();
    let plane: Vec<(f64, f64)> = vec![(0.0, 0.0), (1.0, 0.0), (0.0, 2.0), (3.0, 1.0), (-1.0, 0.5), (2.0, -2.0)];
    let data: Vec<Vec<f32>> =
        plane.iter().map(|&(a, b)| (0..40).map(|j| (a * u[j] + b * v[j]) as f32).collect()).collect();
    let coords = pca(&data);
    for i in 0..data.len() {
        for j in 0..data.len() {
            let orig: f64 = data[i].iter().zip(&data[j]).map(|(x, y)| f64::from(x - y).powi(2)).sum::<f64>().sqrt();
            let proj = ((coords[i][0] - coords[j][0]).powi(2) + (coords[i][1] - coords[j][1]).powi(2)).sqrt();
            assert!((orig - proj).abs() < 1e-4 * (1.0 + orig), "{i},{j}: {orig} vs {proj}");
        }
    }
}

fn three_clusters(seed: u64, per: usize) -> (Vec<Vec<f32>>, Vec<usize>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let dim = 10;
    let centres: Vec<Vec<f64>> = (0..3).map(|c| (0..dim).map(|j| if j == c { 15.0 } else { 0.0 }).collect()).collect();
    let mut data = Vec::new();
    let mut labels = Vec::new();
    for (c, centre) in centres.iter().enumerate() {
        for _ in 0..per {
            data.push(centre.iter().map(|m| (m + normal(&mut rng)) as f32).collect());
            labels.push(c);
        }
    }
    (data, labels)
}

#[test]
fn tsne_separates_three_well_separated_clusters() {
    let (data, labels) = three_clusters(3, 50);
    let y = tsne(&data, 7);
    assert!(y.iter().flatten().all(|v| v.is_finite()));
    let agree = (0..y.len())
        .filter(|&i| {
            let nn = (0..y.len())
                .filter(|&j| j != i)
                .min_by(|&a, &b| {
                    let da = (y[i][0] - y[a][0]).powi(2) + (y[i][1] - y[a][1]).powi(2);
                    let db = (y[i][0] - y[b][0]).powi(2) + (y[i][1] - y[b][1]).powi(2);
                    da.total_cmp(&db)
                })
                .unwrap();
            labels[nn] == labels[i]
        })
        .count();
    let rate = agree as f64 / y.len() as f64;
    assert!(rate >= 0.95, "nearest-neighbour label agreement {rate}");
    // Clusters are also apart as wholes: each centroid is farther from the others than the
    // cluster's mean radius.
    let centroid = |c: usize| {
        let pts: Vec<&[f64; 2]> = y.iter().zip(&labels).filter(|(_, &l)| l == c).map(|(p, _)| p).collect();
        let n = pts.len() as f64;
        [pts.iter().map(|p| p[0]).sum::<f64>() / n, pts.iter().map(|p| p[1]).sum::<f64>() / n]
    };
    for c in 0..3 {
        let m = centroid(c);
        let radius = y
            .iter()
            .zip(&labels)
            .filter(|(_, &l)| l == c)
            .map(|(p, _)| ((p[0] - m[0]).powi(2) + (p[1] - m[1]).powi(2)).sqrt())
            .sum::<f64>()
            / 50.0;
        for o in (0..3).filter(|&o| o != c) {
            let mo = centroid(o);
            let d = ((m[0] - mo[0]).powi(2) + (m[1] - mo[1]).powi(2)).sqrt();
            assert!(d > 2.0 * radius, "clusters {c} and {o}: centroid distance {d}, radius {radius}");
        }
    }
}

#[test]
fn tsne_is_deterministic_for_a_seed() {
    let (data, _) = three_clusters(9, 20);
    let a = tsne(&data, 42);
    let b = tsne(&data, 42);
    assert_eq!(a, b, "same seed, same map");
    let c = tsne(&data, 43);
    assert_ne!(a, c, "another seed starts elsewhere");
}
