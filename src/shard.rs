//! Scale-out: `--shard I/N` (or `shard = "I/N"`) makes a daemon run only the cameras whose
//! id hashes to `I` modulo `N`, so that `N` daemons given the same camera list cover it
//! together, each camera exactly once.
//!
//! The hash is FNV-1a 64 over the id's UTF-8 bytes ([`crate::hash::fnv1a64`]): fixed and
//! published, so the split is the same on every machine and in every version. Adding or
//! removing a camera moves no other camera; changing `N` reshuffles about `1 - 1/N` of them.
//!
//! A sharded daemon keeps its MQTT identity apart from its siblings': its client id gets
//! the suffix `-shard-I` (two clients with one id make the broker drop one of them), and
//! its status (the retained `online` and the Last Will `offline`) goes to
//! `{prefix}/status/I` instead of `{prefix}/status`, so one shard going away does not mark
//! the others offline. Camera topics are unchanged.

use std::fmt;
use std::str::FromStr;

use crate::hash::fnv1a64;

/// Shard `index` of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Shard {
    /// Whether this shard runs the camera `id`.
    ///
    /// ```
    /// use effistream::shard::Shard;
    ///
    /// let shards: Vec<Shard> = (0..3).map(|index| Shard { index, count: 3 }).collect();
    /// for id in ["door", "yard", "garage", "street"] {
    ///     assert_eq!(shards.iter().filter(|s| s.takes(id)).count(), 1);
    /// }
    /// ```
    pub fn takes(&self, id: &str) -> bool {
        fnv1a64(id.as_bytes()) % u64::from(self.count) == u64::from(self.index)
    }

    /// The level appended to `{prefix}/status` for this shard.
    pub fn status_level(&self) -> String {
        self.index.to_string()
    }
}

impl FromStr for Shard {
    type Err = String;

    /// `I/N` with `N` ≥ 1 and `0 ≤ I < N`; the error is the reason.
    fn from_str(s: &str) -> Result<Self, String> {
        const FORM: &str =
            "expected I/N: this daemon's index I from 0 and the number of shards N, like 0/3";
        let (index, count) = s.split_once('/').ok_or_else(|| FORM.to_owned())?;
        let number = |part: &str, what: &str| {
            let digits = !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
            part.parse::<u32>().ok().filter(|_| digits).ok_or_else(|| {
                // Escaped: a value may hold a line break (a TOML multi-line string).
                format!(
                    "{what} `{}` is not a whole number; {FORM}",
                    part.escape_debug()
                )
            })
        };
        let (index, count) = (number(index, "the index")?, number(count, "the count")?);
        if count == 0 {
            return Err("the number of shards must be at least 1".to_owned());
        }
        if index >= count {
            return Err(format!(
                "the index must be less than the number of shards (0 to {})",
                count - 1
            ));
        }
        Ok(Self { index, count })
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsing_accepts_i_of_n_and_explains_the_rest() {
        assert_eq!("0/1".parse(), Ok(Shard { index: 0, count: 1 }));
        assert_eq!("2/3".parse(), Ok(Shard { index: 2, count: 3 }));
        for (text, reason) in [
            ("3", "expected I/N"),
            ("a/2", "the index `a` is not a whole number"),
            ("1/+2", "the count `+2` is not a whole number"),
            ("-1/2", "the index `-1`"),
            ("0/0", "at least 1"),
            ("2/2", "less than the number of shards (0 to 1)"),
            ("0/2/3", "the count `2/3`"),
        ] {
            let err = text.parse::<Shard>().unwrap_err();
            assert!(err.contains(reason), "{text}: {err}");
        }
    }

    #[test]
    fn the_split_is_fixed_and_covers_every_id_once() {
        // Fixed values: a change of hash would move cameras between running daemons.
        let two = |index| Shard { index, count: 2 };
        let ids: Vec<String> = (0..1000).map(|i| format!("camera-{i}")).collect();
        let zero = ids.iter().filter(|id| two(0).takes(id)).count();
        assert!((400..600).contains(&zero), "{zero} of 1000 on shard 0");
        // FNV-1a 64 of "door" is odd (computed independently).
        assert!(two(1).takes("door") && !two(0).takes("door"));
        assert!(two(0).takes("a") && two(1).takes("b"));
        for count in 1..6 {
            for id in &ids {
                let owners = (0..count).filter(|&index| Shard { index, count }.takes(id));
                assert_eq!(owners.count(), 1);
            }
        }
    }
}
