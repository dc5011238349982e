//! Small random helpers built on plain IEEE arithmetic only (no libm calls),
//! so a seed gives bit-identical draws on every platform.

use rand::Rng;

/// Uniform index in `0..n` (`n > 0`), drawn as a `u32` so the stream is the
/// same on 32- and 64-bit targets.
pub fn pick_index<R: Rng + ?Sized>(rng: &mut R, n: usize) -> usize {
    rng.gen_range(0..n as u32) as usize
}

/// Uniform value in `[lo, hi)`.
pub fn unit_range(rng: &mut impl Rng, lo: f64, hi: f64) -> f64 {
    lo + (hi - lo) * rng.gen::<f64>()
}

/// Approximately standard normal: the scaled sum of four uniforms (Irwin–Hall).
/// Tails are bounded at ±3.46, which suits jitter and durations.
pub fn normal(rng: &mut impl Rng) -> f64 {
    let s: f64 = (0..4).map(|_| rng.gen::<f64>()).sum();
    (s - 2.0) * 1.732_050_807_568_877_2
}

/// `exp(x)` by range reduction and a Taylor series: deterministic everywhere.
pub fn det_exp(x: f64) -> f64 {
    const LN2: f64 = std::f64::consts::LN_2;
    let x = x.clamp(-700.0, 700.0);
    let k = (x / LN2).round();
    let r = x - k * LN2;
    let mut term = 1.0;
    let mut sum = 1.0;
    for i in 1..=20 {
        term *= r / f64::from(i);
        sum += term;
    }
    let mut scale = 1.0;
    let (step, n) = if k >= 0.0 { (2.0, k as i64) } else { (0.5, -k as i64) };
    for _ in 0..n {
        scale *= step;
    }
    sum * scale
}

/// Log-normal draw whose median is `median`, with log-space spread `sigma`.
pub fn lognormal(rng: &mut impl Rng, median: f64, sigma: f64) -> f64 {
    median * det_exp(sigma * normal(rng))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_std() {
        for i in -60..60 {
            let x = f64::from(i) * 0.137;
            let (a, b) = (det_exp(x), x.exp());
            assert!(((a - b) / b).abs() < 1e-13, "{x}: {a} vs {b}");
        }
    }
}
