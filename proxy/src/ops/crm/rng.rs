//! Deterministic randomness for the generator: a splitmix64 stream per (seed, table, row) and small
//! bijections used to derive unique values from ids. Fixed algorithms, so a seed gives the same data on
//! every platform and every version. Not for: anything secret (this is not a cryptographic generator).

/// A splitmix64 stream.
#[derive(Debug, Clone)]
pub struct Rng(u64);

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Rng {
    /// The stream of one row of one table: independent of every other row, so tables can be generated
    /// in any order (or in parallel) and still give the same bytes.
    pub fn for_row(seed: u64, table: u64, row: u64) -> Self {
        Self(mix64(
            seed ^ mix64(table.wrapping_mul(GOLDEN) ^ mix64(row.wrapping_add(GOLDEN))),
        ))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GOLDEN);
        mix64(self.0)
    }

    /// Uniform in `0..n` (`n > 0`), by multiply-shift (bias below 2^-32 for the sizes used here).
    pub fn below(&mut self, n: u64) -> u64 {
        (((self.next_u64() >> 32) * n) >> 32).min(n.saturating_sub(1))
    }

    /// Uniform in `lo..=hi`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `percent / 100`.
    pub fn percent(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// One element of a non-empty slice.
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

/// A keyed bijection of `0..size` (`size <= 2^bits`, `bits <= 32`): xor-shift-multiply rounds on `bits`
/// bits, cycle-walked back into range. Distinct inputs give distinct outputs, which is how unique
/// columns (phone numbers, tax codes) are derived from ids while still looking random.
#[derive(Debug, Clone, Copy)]
pub struct Permutation {
    size: u64,
    bits: u32,
    key: u64,
}

impl Permutation {
    pub fn new(size: u64, bits: u32, key: u64) -> Self {
        debug_assert!(bits <= 32 && size <= 1 << bits);
        Self { size, bits, key }
    }

    fn round(&self, mut x: u64) -> u64 {
        let mask = (1u64 << self.bits) - 1;
        let half = self.bits / 2;
        for r in 0..3u64 {
            x = (x + (mix64(self.key ^ r) & mask)) & mask;
            x ^= x >> half;
            x = x.wrapping_mul(0x2545_F491 | 1) & mask;
        }
        x
    }

    /// The image of `x` (`x < size`).
    pub fn apply(&self, x: u64) -> u64 {
        let mut y = self.round(x);
        while y >= self.size {
            y = self.round(y);
        }
        y
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutation_is_a_bijection() {
        let p = Permutation::new(1000, 10, 42);
        let mut seen = vec![false; 1000];
        for x in 0..1000 {
            let y = p.apply(x) as usize;
            assert!(!seen[y], "{x} maps to an already used {y}");
            seen[y] = true;
        }
    }

    #[test]
    fn streams_are_reproducible_and_distinct() {
        let a: Vec<u64> = (0..4).map(|_| Rng::for_row(1, 2, 3).next_u64()).collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        assert_ne!(
            Rng::for_row(1, 2, 3).next_u64(),
            Rng::for_row(1, 2, 4).next_u64()
        );
        assert_ne!(
            Rng::for_row(1, 2, 3).next_u64(),
            Rng::for_row(2, 2, 3).next_u64()
        );
        let mut r = Rng::for_row(7, 7, 7);
        assert!((0..1000).all(|_| r.below(10) < 10));
    }
}
