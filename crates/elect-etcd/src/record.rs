//! The value stored at an election's key, and its parser.
//!
//! ```text
//! elect-lease v1
//! holder web-1
//! nonce 8263549172634
//! ttl_ms 3000
//! value 10.0.0.7:8080        (only with a leader value; the rest of the record is the value)
//! ```
//!
//! Readable with `etcdctl get`. The term is not stored: it is the key's create revision.

use std::time::Duration;

use elect_core::{
    backend, CandidateId, Claim, Error, LeaderInfo, LeaderValue, Lease, Result, Term, Ttl,
};

use crate::error::STORE;

const MAGIC: &str = "elect-lease v1";

/// A lease record at `key`, validated, with what etcd knows of the key.
#[derive(Debug, Clone)]
pub(crate) struct Record {
    pub(crate) holder: CandidateId,
    pub(crate) nonce: u64,
    pub(crate) value: Option<LeaderValue>,
    /// The key's create revision: the lease's term.
    pub(crate) term: Term,
    /// The etcd lease the key is attached to.
    pub(crate) lease: i64,
    /// The TTL the holder claimed: how long it may believe it leads after a renewal.
    pub(crate) ttl: Duration,
}

impl Record {
    /// The leader this record names, with `remaining` on its lease.
    pub(crate) fn leader(self, remaining: Duration) -> LeaderInfo {
        LeaderInfo {
            holder: self.holder,
            term: self.term,
            remaining,
            value: self.value,
        }
    }

    /// The leader this record names, its lease just granted: its whole TTL left.
    pub(crate) fn just_granted(self) -> LeaderInfo {
        let ttl = self.ttl;
        self.leader(ttl)
    }

    /// Whether this record's lease was granted to `claim`.
    pub(crate) fn granted_to(&self, claim: &Claim) -> bool {
        self.holder == claim.candidate && self.nonce == claim.nonce.get()
    }
}

/// The bytes stored for `claim`.
pub(crate) fn encode(claim: &Claim) -> Vec<u8> {
    encode_parts(
        &claim.candidate,
        claim.nonce.get(),
        claim.ttl,
        claim.value.as_ref(),
    )
}

/// The value the grant of `lease` wrote: what a release compares before deleting the key.
pub(crate) fn encode_lease(lease: &Lease) -> Vec<u8> {
    encode_parts(
        &lease.holder,
        lease.nonce.get(),
        lease.ttl,
        lease.value.as_ref(),
    )
}

fn encode_parts(
    holder: &CandidateId,
    nonce: u64,
    ttl: Ttl,
    value: Option<&LeaderValue>,
) -> Vec<u8> {
    let mut text = format!(
        "{MAGIC}\nholder {holder}\nnonce {nonce}\nttl_ms {}\n",
        ttl.as_millis()
    );
    if let Some(value) = value {
        text.push_str("value ");
        text.push_str(value.as_str());
    }
    text.into_bytes()
}

/// Parses the key-value etcd returned for `key`.
pub(crate) fn decode(key: &str, bytes: &[u8], create_revision: i64, lease: i64) -> Result<Record> {
    let corrupt = |message: String| Error::corrupt(STORE, key, message);
    let text = std::str::from_utf8(bytes)
        .map_err(|_| corrupt("the value is not UTF-8 text: not written by elect".into()))?;
    let mut rest = text;
    let mut line = || -> Option<&str> {
        let (line, tail) = rest.split_once('\n')?;
        rest = tail;
        Some(line)
    };
    if line() != Some(MAGIC) {
        let start: String = text.chars().take(40).collect();
        return Err(corrupt(format!(
            "the value starts {start:?}, not {MAGIC:?}: not written by elect"
        )));
    }
    let mut field = |name: &str| -> Result<&str> {
        line()
            .and_then(|l| l.strip_prefix(name))
            .and_then(|l| l.strip_prefix(' '))
            .ok_or_else(|| corrupt(format!("no `{name}` line where elect writes one")))
    };
    let holder_text = field("holder")?;
    let holder = backend::holder(STORE, key, Some(holder_text), &format!("{holder_text:?}"))?;
    let nonce_text = field("nonce")?;
    let nonce = nonce_text
        .parse::<u64>()
        .ok()
        .filter(|n| (1..=i64::MAX as u64).contains(n))
        .ok_or_else(|| corrupt(format!("nonce is {nonce_text:?}, not a positive integer")))?;
    let ttl_text = field("ttl_ms")?;
    let ttl_ms = ttl_text
        .parse::<u64>()
        .ok()
        .filter(|t| *t > 0)
        .ok_or_else(|| corrupt(format!("ttl_ms is {ttl_text:?}, not a positive integer")))?;
    let value = match rest {
        "" => None,
        tail => {
            let value = tail
                .strip_prefix("value ")
                .ok_or_else(|| corrupt("unexpected text after the ttl_ms line".into()))?;
            backend::value(STORE, key, Some(value.as_bytes()))?
        }
    };
    let term = backend::term(STORE, key, Some(create_revision as i128), &create_revision)?;
    if lease == 0 {
        return Err(corrupt(
            "the key has no etcd lease attached: it never expires, so elect did not write it"
                .into(),
        ));
    }
    Ok(Record {
        holder,
        nonce,
        value,
        term,
        lease,
        ttl: Duration::from_millis(ttl_ms),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use elect_core::{ElectionName, Ttl};

    fn claim(value: Option<&str>) -> Claim {
        Claim::new(
            ElectionName::new("jobs").unwrap(),
            CandidateId::new("web-1").unwrap(),
            Ttl::from_millis(3000).unwrap(),
        )
        .with_value(value.map(|v| LeaderValue::new(v).unwrap()))
    }

    #[test]
    fn records_round_trip_with_and_without_a_value() {
        for value in [None, Some("10.0.0.7:8080"), Some("two\nlines ")] {
            let claim = claim(value);
            let record = decode("k", &encode(&claim), 42, 7).unwrap();
            assert!(record.granted_to(&claim));
            assert_eq!(record.term, Term(42));
            assert_eq!(record.lease, 7);
            assert_eq!(record.ttl, Duration::from_millis(3000));
            assert_eq!(record.value.as_ref().map(LeaderValue::as_str), value);
        }
    }

    #[test]
    fn foreign_values_are_corrupt_records() {
        let good = encode(&claim(None));
        let cases: Vec<(Vec<u8>, i64, i64)> = vec![
            (b"hello".to_vec(), 5, 7),
            (vec![0xff, 0xfe], 5, 7),
            (Vec::new(), 5, 7),
            (
                b"elect-lease v1\nholder \nnonce 1\nttl_ms 1\n".to_vec(),
                5,
                7,
            ),
            (
                b"elect-lease v1\nholder a\nnonce 0\nttl_ms 1\n".to_vec(),
                5,
                7,
            ),
            (
                b"elect-lease v1\nholder a\nnonce -1\nttl_ms 1\n".to_vec(),
                5,
                7,
            ),
            (
                b"elect-lease v1\nholder a\nnonce 1\nttl_ms x\n".to_vec(),
                5,
                7,
            ),
            (
                b"elect-lease v1\nholder a\nnonce 1\nttl_ms 1\njunk".to_vec(),
                5,
                7,
            ),
            (b"elect-lease v1\nholder a\nnonce 1\n".to_vec(), 5, 7),
            (good.clone(), 0, 7),
            (good, 5, 0),
        ];
        for (bytes, revision, lease) in cases {
            let err = decode("elect/jobs", &bytes, revision, lease).unwrap_err();
            assert!(
                matches!(err, Error::CorruptRecord { .. }),
                "{:?}: {err}",
                String::from_utf8_lossy(&bytes)
            );
        }
        let long = format!(
            "elect-lease v1\nholder a\nnonce 1\nttl_ms 1\nvalue {}",
            "x".repeat(LeaderValue::MAX_LEN + 1)
        );
        assert!(decode("k", long.as_bytes(), 5, 7).is_err());
    }
}
