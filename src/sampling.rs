//! Picking the next token from (already penalised) logits.
//!
//! The engine has one random generator for all requests, seeded once per process, so its own
//! sampler cannot reproduce a request from a seed. We sample here instead: the random draw for
//! step `n` of a request depends only on the request's seed and `n`, so a seeded request gives
//! the same text whether it runs alone or batched with others.
//!
//! Order of operations follows Hugging Face / OpenAI: temperature, then top-k, top-p, min-p.

/// The sampling settings that act on logits (penalties are applied by the engine before us).
#[derive(Clone, Debug, PartialEq)]
pub struct PickSettings {
    /// `0.0` means greedy.
    pub temperature: f64,
    /// `0` disables it.
    pub top_k: usize,
    /// `1.0` disables it.
    pub top_p: f64,
    /// `0.0` disables it.
    pub min_p: f64,
    pub seed: u64,
}

/// SplitMix64: tiny, stable across versions and platforms, good enough for one draw a step.
fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A uniform number in [0, 1) for step `step` of a request seeded with `seed`.
pub fn uniform_for_step(seed: u64, step: usize) -> f64 {
    let bits = splitmix64(splitmix64(seed) ^ (step as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93));
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// Index of the largest logit that is neither NaN nor negative infinity; the first one on
/// ties. `None` if there is none.
///
/// Two passes in lanes of 16 that the compiler turns into vector instructions (a 262,144-entry
/// vocabulary took a quarter of a millisecond per sequence and step one element at a time):
/// the largest value (a NaN never compares greater), then the first chunk holding it.
pub fn argmax(logits: &[f32]) -> Option<u32> {
    const LANES: usize = 16;
    let chunks = logits.chunks_exact(LANES);
    let tail = chunks.remainder();
    let mut lanes = [f32::NEG_INFINITY; LANES];
    for chunk in chunks {
        for (m, &l) in lanes.iter_mut().zip(chunk) {
            *m = if l > *m { l } else { *m };
        }
    }
    let max = lanes
        .iter()
        .chain(tail)
        .fold(f32::NEG_INFINITY, |m, &l| if l > m { l } else { m });
    if max == f32::NEG_INFINITY {
        return None;
    }
    let chunk = logits
        .chunks(LANES)
        .position(|c| c.iter().fold(false, |hit, &l| hit | (l == max)))?;
    let within = logits[chunk * LANES..].iter().position(|&l| l == max)?;
    Some((chunk * LANES + within) as u32)
}

/// Picks the token for `step`.
pub fn pick(logits: &[f32], settings: &PickSettings, step: usize) -> Option<u32> {
    if settings.temperature == 0.0 || settings.top_k == 1 {
        return argmax(logits);
    }
    let inv_t = (1.0 / settings.temperature) as f32;
    let mut cands: Vec<(u32, f32)> = logits
        .iter()
        .enumerate()
        .filter(|(_, l)| l.is_finite())
        .map(|(i, &l)| (i as u32, l * inv_t))
        .collect();
    if cands.is_empty() {
        return None;
    }
    let by_logit_desc = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));

    if settings.top_k > 0 && settings.top_k < cands.len() {
        cands.select_nth_unstable_by(settings.top_k - 1, by_logit_desc);
        cands.truncate(settings.top_k);
    }
    let max = cands.iter().map(|c| c.1).fold(f32::NEG_INFINITY, f32::max);
    // Probabilities, unnormalised; f64 sums keep 262k-entry vocabularies exact enough.
    let mut probs: Vec<(u32, f64)> = cands
        .iter()
        .map(|&(i, l)| (i, ((l - max) as f64).exp()))
        .collect();
    let total: f64 = probs.iter().map(|p| p.1).sum();

    if settings.min_p > 0.0 {
        // The best token has probability 1/total (its weight is exp(0) = 1).
        let floor = settings.min_p;
        probs.retain(|p| p.1 >= floor);
    }
    if settings.top_p < 1.0 {
        probs = nucleus(probs, settings.top_p * total);
    }
    let kept: f64 = probs.iter().map(|p| p.1).sum();
    let mut target = uniform_for_step(settings.seed, step) * kept;
    // A fixed order makes the draw independent of how the candidates were gathered.
    probs.sort_unstable_by_key(|p| p.0);
    for &(i, p) in &probs {
        if target < p {
            return Some(i);
        }
        target -= p;
    }
    probs.last().map(|p| p.0)
}

/// Keeps the smallest set of most probable tokens whose weight reaches `mass`.
///
/// Sorting a whole 262k vocabulary every step costs milliseconds; the nucleus is almost always
/// among a few hundred tokens, so we select a growing top slice and sort only that.
fn nucleus(mut probs: Vec<(u32, f64)>, mass: f64) -> Vec<(u32, f64)> {
    let desc = |a: &(u32, f64), b: &(u32, f64)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    let mut slice = 256usize;
    loop {
        let whole = slice >= probs.len();
        if !whole {
            probs.select_nth_unstable_by(slice - 1, desc);
        }
        let head_len = slice.min(probs.len());
        let head = &mut probs[..head_len];
        head.sort_unstable_by(desc);
        let mut acc = 0.0;
        for (n, p) in head.iter().enumerate() {
            acc += p.1;
            if acc >= mass {
                probs.truncate(n + 1);
                return probs;
            }
        }
        if whole {
            return probs;
        }
        slice *= 8;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(temperature: f64, top_k: usize, top_p: f64, min_p: f64, seed: u64) -> PickSettings {
        PickSettings {
            temperature,
            top_k,
            top_p,
            min_p,
            seed,
        }
    }

    #[test]
    fn greedy_takes_the_first_maximum() {
        let logits = [0.0, 3.0, 3.0, -1.0];
        assert_eq!(pick(&logits, &settings(0.0, 0, 1.0, 0.0, 1), 0), Some(1));
        assert_eq!(pick(&logits, &settings(1.0, 1, 1.0, 0.0, 1), 0), Some(1));
    }

    #[test]
    fn argmax_skips_masked_entries() {
        assert_eq!(argmax(&[f32::NEG_INFINITY, f32::NAN, -5.0]), Some(2));
        assert_eq!(argmax(&[f32::NEG_INFINITY]), None);
        assert_eq!(argmax(&[f32::NAN; 40]), None);
        assert_eq!(argmax(&[]), None);
    }

    #[test]
    fn argmax_is_the_first_largest_at_every_position() {
        // Lengths around the lane width, the best value in every position, ties after it.
        for len in [1usize, 15, 16, 17, 33, 100] {
            for best in 0..len {
                let mut logits: Vec<f32> = (0..len).map(|i| -((i * 7 % 13) as f32)).collect();
                logits[best] = 2.0;
                if best + 1 < len {
                    logits[len - 1] = 2.0;
                }
                if best > 0 {
                    logits[best - 1] = f32::NAN;
                }
                assert_eq!(argmax(&logits), Some(best as u32), "len {len}, best {best}");
            }
        }
    }

    #[test]
    fn same_seed_same_draws_and_different_seeds_differ() {
        let logits: Vec<f32> = (0..1000).map(|i| ((i * 37) % 101) as f32 / 20.0).collect();
        let s = |seed| settings(1.0, 0, 1.0, 0.0, seed);
        let run = |seed| {
            (0..64)
                .map(|step| pick(&logits, &s(seed), step).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    #[test]
    fn top_k_limits_to_the_k_best() {
        let logits: Vec<f32> = (0..100).map(|i| i as f32 / 10.0).collect();
        for step in 0..200 {
            let t = pick(&logits, &settings(5.0, 3, 1.0, 0.0, 3), step).unwrap();
            assert!(t >= 97, "token {t} is outside the top 3");
        }
    }

    #[test]
    fn top_p_keeps_the_nucleus_only() {
        // Token 0 holds ~0.88 of the mass, so top_p 0.5 keeps it alone.
        let mut logits = vec![0.0f32; 1000];
        logits[0] = 10.0;
        for step in 0..200 {
            assert_eq!(pick(&logits, &settings(1.0, 0, 0.5, 0.0, 9), step), Some(0));
        }
        // With top_p 1.0 other tokens appear.
        let others = (0..200)
            .filter(|&s| pick(&logits, &settings(1.0, 0, 1.0, 0.0, 9), s) != Some(0))
            .count();
        assert!(others > 0);
    }

    #[test]
    fn nucleus_grows_past_the_first_slice() {
        // A flat distribution needs almost the whole vocabulary for top_p 0.99.
        let probs: Vec<(u32, f64)> = (0..5000).map(|i| (i, 1.0)).collect();
        assert_eq!(nucleus(probs, 0.99 * 5000.0).len(), 4950);
    }

    #[test]
    fn min_p_drops_unlikely_tokens() {
        let logits = [5.0f32, 4.9, 0.0, 0.0];
        for step in 0..200 {
            let t = pick(&logits, &settings(1.0, 0, 1.0, 0.2, 11), step).unwrap();
            assert!(t < 2, "min_p should have removed token {t}");
        }
    }

    #[test]
    fn draws_follow_the_distribution() {
        // Two tokens at logits 0 and ln 3: expect about 1/4 and 3/4.
        let logits = [0.0f32, 3.0f32.ln()];
        let ones = (0..4000)
            .filter(|&s| pick(&logits, &settings(1.0, 0, 1.0, 0.0, 5), s) == Some(1))
            .count();
        assert!((2850..3150).contains(&ones), "{ones} of 4000");
    }

    #[test]
    fn uniform_is_in_range() {
        for step in 0..1000 {
            let u = uniform_for_step(42, step);
            assert!((0.0..1.0).contains(&u));
        }
    }
}
