//! A stable hash for ids: 64-bit FNV-1a over the UTF-8 bytes.
//!
//! Unlike `std`'s `DefaultHasher` (SipHash with keys that may change between Rust
//! releases, and random per process in `HashMap`), FNV-1a is a fixed, published function:
//! the same id gives the same number on every platform, in every version of effistream.
//! Sharding (`--shard I/N`) and Home Assistant object ids depend on that. The constants
//! are FNV's 64-bit offset basis `0xcbf29ce484222325` and prime `0x100000001b3`.

/// FNV-1a 64 of `bytes`.
///
/// ```
/// // Published test vectors of FNV-1a 64.
/// assert_eq!(effistream::hash::fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
/// assert_eq!(effistream::hash::fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
/// assert_eq!(effistream::hash::fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
/// ```
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
