//! Validated names: [`ElectionName`] and [`CandidateId`].

use std::borrow::Borrow;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use crate::error::{Error, Result};

/// Longest accepted name, in bytes.
pub const MAX_NAME_LEN: usize = 128;

fn validate(what: &'static str, value: &str) -> Result<()> {
    let reason = if value.is_empty() {
        Some("must not be empty")
    } else if value.len() > MAX_NAME_LEN {
        Some("must be at most 128 bytes")
    } else if !value.bytes().all(is_name_byte) {
        Some("may contain only ASCII letters, digits and . _ : / -")
    } else {
        None
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(Error::InvalidName {
            what,
            value: truncate_for_display(value),
            reason,
        }),
    }
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'/' | b'-')
}

fn truncate_for_display(value: &str) -> String {
    let mut end = value.len().min(160);
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    value[..end].to_owned()
}

macro_rules! validated_name {
    ($(#[$meta:meta])* $name:ident, $what:literal) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(Arc<str>);

        impl $name {
            #[doc = concat!("Validates `value` as ", $what, ": 1 to 128 bytes of `[A-Za-z0-9._:/-]`.")]
            pub fn new(value: impl AsRef<str>) -> Result<Self> {
                let value = value.as_ref();
                validate($what, value)?;
                Ok(Self(Arc::from(value)))
            }

            /// The validated text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }

        impl FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self> {
                Self::new(s)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = Error;
            fn try_from(s: &str) -> Result<Self> {
                Self::new(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = Error;
            fn try_from(s: String) -> Result<Self> {
                Self::new(s)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }
    };
}

validated_name!(
    /// The name of one election: what the candidates compete for ("migrations",
    /// "billing/nightly-mail"). Many elections can share one coordinator.
    ///
    /// ```
    /// use elect_core::ElectionName;
    /// let name = ElectionName::new("billing/nightly-mail")?;
    /// assert_eq!(name.as_str(), "billing/nightly-mail");
    /// assert!(ElectionName::new("no spaces").is_err());
    /// # Ok::<(), elect_core::Error>(())
    /// ```
    ElectionName,
    "election name"
);

validated_name!(
    /// The identity of one candidate. It must be unique among live processes: a store treats
    /// an acquire by the current holder's id as a renewal.
    ///
    /// [`CandidateId::generate`] builds `hostname-pid-random`, unique per process start.
    CandidateId,
    "candidate id"
);

impl CandidateId {
    /// A fresh id, `hostname-pid-random`: readable in logs and unique per process start.
    /// Characters of the host name outside the allowed alphabet become `_`.
    pub fn generate() -> Self {
        let host = hostname();
        let mut host: String = host
            .chars()
            .map(|c| {
                if c.is_ascii() && is_name_byte(c as u8) {
                    c
                } else {
                    '_'
                }
            })
            .take(80)
            .collect();
        if host.is_empty() {
            host.push_str("host");
        }
        let id = format!(
            "{host}-{}-{:08x}",
            std::process::id(),
            crate::rand::Rng::from_entropy().next_u64() as u32
        );
        Self::new(id).expect("generated ids use only the allowed alphabet and fit in 128 bytes")
    }
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_alphabet_and_bounds() {
        for ok in ["a", "A-z_0.9:/x", &"x".repeat(128)] {
            assert_eq!(ElectionName::new(ok).unwrap().as_str(), ok);
            assert_eq!(CandidateId::new(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn rejects_bad_names_with_a_typed_error() {
        let long = "x".repeat(129);
        for (bad, reason) in [
            ("", "must not be empty"),
            (long.as_str(), "must be at most 128 bytes"),
            ("has space", "may contain"),
            ("ünïcode", "may contain"),
            ("nul\0", "may contain"),
            ("{tag}", "may contain"),
        ] {
            match ElectionName::new(bad) {
                Err(Error::InvalidName {
                    what, reason: r, ..
                }) => {
                    assert_eq!(what, "election name");
                    assert!(r.starts_with(reason), "{bad:?}: {r}");
                }
                other => panic!("{bad:?} gave {other:?}"),
            }
            assert!(matches!(
                CandidateId::new(bad),
                Err(Error::InvalidName {
                    what: "candidate id",
                    ..
                })
            ));
        }
    }

    #[test]
    fn display_of_a_huge_bad_name_is_truncated_on_a_char_boundary() {
        let bad = "é".repeat(200);
        let err = ElectionName::new(&bad).unwrap_err();
        assert!(err.to_string().len() < 300);
    }

    #[test]
    fn generated_ids_are_valid_and_distinct() {
        let a = CandidateId::generate();
        let b = CandidateId::generate();
        assert_ne!(a, b);
        assert!(a.as_str().contains(&format!("-{}-", std::process::id())));
    }
}
