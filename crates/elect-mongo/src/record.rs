//! The lease document, validated: what the store and the change feed read.

use std::time::Duration;

use elect_core::backend;
use elect_core::{CandidateId, Claim, Error, LeaderInfo, LeaderValue, Lease, Result, Term};
use mongodb::bson::{Bson, Document};

use crate::error::STORE;

/// A validated lease document.
pub(crate) struct Record {
    holder: CandidateId,
    /// 0 when the document has none (written by elect 0.1.0): nobody's claim.
    nonce: i64,
    pub(crate) term: Term,
    value: Option<LeaderValue>,
    /// When the lease ends, in the server's milliseconds since the epoch.
    pub(crate) expires_ms: i64,
}

impl Record {
    /// Validates a lease document; `key` names it in errors.
    pub(crate) fn parse(key: String, d: &Document) -> Result<Record> {
        let corrupt = |why: String| Error::corrupt(STORE, key.clone(), why);
        let holder = backend::holder(
            STORE,
            &key,
            d.get_str("holder").ok(),
            &shown(d.get("holder")),
        )?;
        let number = match d.get("term") {
            Some(Bson::Int64(t)) => Some(*t as i128),
            Some(Bson::Int32(t)) => Some(*t as i128),
            _ => None,
        };
        let term = backend::term(STORE, &key, number, &shown(d.get("term")))?;
        let expires_ms = match d.get("expires") {
            Some(Bson::DateTime(at)) => at.timestamp_millis(),
            other => return Err(corrupt(format!("expires is {}, not a date", shown(other)))),
        };
        let nonce = match d.get("nonce") {
            Some(Bson::Int64(n)) => *n,
            Some(Bson::Int32(n)) => *n as i64,
            _ => 0,
        };
        let value = match d.get("value") {
            None | Some(Bson::Null) => None,
            Some(Bson::String(v)) => backend::value(STORE, &key, Some(v.as_bytes()))?,
            Some(other) => {
                return Err(corrupt(format!(
                    "value is {}, not a string",
                    shown(Some(other))
                )))
            }
        };
        Ok(Record {
            holder,
            nonce,
            term,
            value,
            expires_ms,
        })
    }

    /// The leader this record names, with `remaining_ms` left on its lease.
    pub(crate) fn held(self, remaining_ms: i64) -> LeaderInfo {
        LeaderInfo {
            holder: self.holder,
            term: self.term,
            remaining: Duration::from_millis(remaining_ms.max(0) as u64),
            value: self.value,
        }
    }

    pub(crate) fn granted_to(&self, claim: &Claim) -> bool {
        self.holder == claim.candidate && self.nonce == claim.nonce.get() as i64
    }

    /// Whether this record is `lease` (its holder, nonce and term), live or not.
    pub(crate) fn holds(&self, lease: &Lease) -> bool {
        self.holder == lease.holder
            && self.nonce == lease.nonce.get() as i64
            && self.term == lease.term
    }
}

/// A field's value as an error message shows it: short, and never a dump of raw bytes.
pub(crate) fn shown(value: Option<&Bson>) -> String {
    const LONGEST: usize = 40;
    match value {
        None => "missing".into(),
        Some(Bson::String(s)) if s.chars().count() > LONGEST => {
            format!(
                "the string {:?}…",
                s.chars().take(LONGEST).collect::<String>()
            )
        }
        Some(Bson::String(s)) => format!("the string {s:?}"),
        Some(Bson::Int32(n)) => format!("the integer {n}"),
        Some(Bson::Int64(n)) => format!("the integer {n}"),
        Some(Bson::Double(n)) => format!("the number {n}"),
        Some(Bson::Boolean(b)) => format!("{b}"),
        Some(Bson::Null) => "null".into(),
        Some(other) => format!("a BSON {:?}", other.element_type()),
    }
}
