//! Deterministic randomness for load shapes: a small PRNG, exponential inter-arrival
//! times (Poisson arrivals), uniform and Zipf key choice, weighted mixes.

use std::time::Duration;

/// xorshift64*: fast, seedable, good enough for load shapes.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (any value).
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Exponential inter-arrival time for `rate` events per second.
    pub fn exp_interval(&mut self, rate: f64) -> Duration {
        Duration::from_secs_f64(-(1.0 - self.unit()).ln() / rate)
    }
}

/// How shard keys are drawn.
#[derive(Clone, Debug)]
pub enum KeyDist {
    /// No shard key: the edge hashes the prompt prefix.
    None,
    /// Uniform over `n` keys.
    Uniform(u64),
    /// Zipf over `n` keys (cumulative weights for a binary search).
    Zipf(Vec<f64>),
}

impl KeyDist {
    /// Parses `none`, `uniform:N` or `zipf:S:N`.
    pub fn parse(s: &str) -> Result<KeyDist, String> {
        let parts: Vec<&str> = s.split(':').collect();
        let num = |v: &str| {
            v.parse::<f64>()
                .map_err(|_| format!("bad number `{v}` in `{s}`"))
        };
        match parts.as_slice() {
            ["none"] => Ok(KeyDist::None),
            ["uniform", n] => Ok(KeyDist::Uniform(num(n)?.max(1.0) as u64)),
            ["zipf", exp, n] => {
                let (exp, n) = (num(exp)?, num(n)?.max(1.0) as usize);
                let mut acc = 0.0;
                let cdf = (1..=n)
                    .map(|k| {
                        acc += 1.0 / (k as f64).powf(exp);
                        acc
                    })
                    .collect::<Vec<_>>();
                Ok(KeyDist::Zipf(cdf.iter().map(|c| c / acc).collect()))
            }
            _ => Err(format!("`{s}`: expected none, uniform:N or zipf:S:N")),
        }
    }

    /// Draws a key.
    pub fn draw(&self, rng: &mut Rng) -> Option<u64> {
        match self {
            KeyDist::None => None,
            KeyDist::Uniform(n) => Some(rng.next_u64() % n),
            KeyDist::Zipf(cdf) => {
                let u = rng.unit();
                Some(cdf.partition_point(|c| *c < u) as u64)
            }
        }
    }
}

/// A weighted choice among strings (`jp:3,fr:1`; `none` stands for absent).
#[derive(Clone, Debug, Default)]
pub struct Mix(Vec<(Option<String>, f64)>);

impl Mix {
    /// Parses `a:3,b:1` (weights default to 1).
    pub fn parse(s: &str) -> Result<Mix, String> {
        let mut out = Vec::new();
        for item in s.split(',').filter(|i| !i.is_empty()) {
            let (name, w) = match item.split_once(':') {
                Some((n, w)) => (
                    n,
                    w.parse::<f64>()
                        .map_err(|_| format!("bad weight in `{item}`"))?,
                ),
                None => (item, 1.0),
            };
            out.push(((name != "none").then(|| name.to_owned()), w));
        }
        Ok(Mix(out))
    }

    /// Draws one (None if the mix is empty or drew `none`).
    pub fn draw(&self, rng: &mut Rng) -> Option<String> {
        let total: f64 = self.0.iter().map(|(_, w)| w).sum();
        let mut x = rng.unit() * total;
        for (v, w) in &self.0 {
            if x < *w {
                return v.clone();
            }
            x -= w;
        }
        self.0.last().and_then(|(v, _)| v.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipf_favours_small_ranks_and_mix_respects_weights() {
        let z = KeyDist::parse("zipf:1.1:1000").unwrap();
        let mut rng = Rng::new(7);
        let hits = (0..10_000).filter(|_| z.draw(&mut rng) == Some(0)).count();
        assert!(hits > 1000, "rank 0 drew {hits} of 10000");
        let m = Mix::parse("jp:3,none:1").unwrap();
        let jp = (0..10_000).filter(|_| m.draw(&mut rng).is_some()).count();
        assert!((7000..8000).contains(&jp), "{jp}");
        let mean: f64 = (0..10_000)
            .map(|_| rng.exp_interval(100.0).as_secs_f64())
            .sum::<f64>()
            / 10_000.0;
        assert!((0.009..0.011).contains(&mean), "{mean}");
    }
}
