//! The 32-bit Mersenne Twister (MT19937) exactly as PyTorch's CPU generator runs it.
//!
//! PyTorch's `at::mt19937` (ATen/core/MT19937RNGEngine.h) is the textbook generator of
//! Matsumoto and Nishimura: the same initialisation recurrence and the same outputs as C++
//! `std::mt19937`. It stores the seed as `u64` but only ever uses its low 32 bits, so seeds
//! that agree mod 2^32 give the same stream.

/// Words of state.
const N: usize = 624;
/// Offset of the word mixed into each twisted word.
const M: usize = 397;
/// Coefficients of the twist matrix, applied when the shifted word's low bit is set.
const MATRIX_A: u32 = 0x9908_b0df;
const UPPER_BIT: u32 = 0x8000_0000;
const LOWER_BITS: u32 = 0x7fff_ffff;

/// An MT19937 stream of `u32` words.
///
/// Invariant: `next <= N`; `next == N` means the state is used up and is twisted before the
/// next word (a fresh engine starts that way, like PyTorch's `left_ = 1, next_ = 0`).
#[derive(Clone)]
pub(crate) struct Mt19937 {
    state: [u32; N],
    next: usize,
}

impl Mt19937 {
    /// A stream seeded as `at::mt19937(seed)` and `torch.Generator().manual_seed(seed)` do:
    /// only `seed mod 2^32` matters.
    pub(crate) fn new(seed: u64) -> Self {
        let mut state = [0u32; N];
        // Truncation is the point: PyTorch keeps `seed & 0xffffffff`.
        state[0] = seed as u32;
        for i in 1..N {
            let prev = state[i - 1];
            state[i] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(i as u32);
        }
        Self { state, next: N }
    }

    /// The next 32-bit output (tempered).
    pub(crate) fn next_u32(&mut self) -> u32 {
        if self.next >= N {
            self.twist();
        }
        let mut y = self.state[self.next];
        self.next += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^= y >> 18;
        y
    }

    /// Two outputs joined as PyTorch's `CPUGeneratorImpl::random64` joins them: the first is
    /// the high word.
    pub(crate) fn next_u64(&mut self) -> u64 {
        let hi = u64::from(self.next_u32());
        let lo = u64::from(self.next_u32());
        (hi << 32) | lo
    }

    /// Regenerates all `N` words in place; word `i` mixes words `i`, `i + 1` and `i + M`
    /// (indices mod `N`), the later ones already regenerated where they wrap.
    fn twist(&mut self) {
        for i in 0..N {
            let joined = (self.state[i] & UPPER_BIT) | (self.state[(i + 1) % N] & LOWER_BITS);
            let mut word = self.state[(i + M) % N] ^ (joined >> 1);
            if joined & 1 != 0 {
                word ^= MATRIX_A;
            }
            self.state[i] = word;
        }
        self.next = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The C++ standard ([rand.predef]) requires the 10000th consecutive
    /// output of a default-constructed `std::mt19937` (seed 5489) to be 4123659995.
    #[test]
    fn ten_thousandth_output_of_default_seed_matches_the_cxx_standard() {
        let mut mt = Mt19937::new(5489);
        let mut last = 0;
        for _ in 0..10_000 {
            last = mt.next_u32();
        }
        assert_eq!(last, 4_123_659_995);
    }

    #[test]
    fn seeds_equal_mod_2_pow_32_give_the_same_stream() {
        let mut a = Mt19937::new(5);
        let mut b = Mt19937::new((1u64 << 32) + 5);
        for _ in 0..2 * N {
            assert_eq!(a.next_u32(), b.next_u32());
        }
    }
}
