//! A small deterministic PRNG (SplitMix64) for seeded test inputs: the same seed gives
//! the same sequence on every machine, so a failing case replays from its seed.

pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits. (An inherent method, not `Iterator`: the sequence never ends
    /// and the callers want a `u64`, not an `Option`.)
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }

    pub fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// A chunk length: usually small, sometimes up to `max`.
    pub fn chunk(&mut self, max: usize) -> usize {
        if max == 0 {
            return 0;
        }
        let cap = if self.chance(80) { max.min(16) } else { max };
        1 + self.below(cap)
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}
