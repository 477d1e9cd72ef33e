//! The frame format between peers: length-prefixed, versioned, and authenticated with
//! HMAC-SHA256 when a cluster key is configured. Decoding never panics: a frame that is short,
//! oversized, of an unknown version or kind, from an invalid id, or with a bad tag is an error.
//!
//! ```text
//! len       u32 BE      bytes after this field (at most MAX_FRAME)
//! version   u8          1, or 2 for a heartbeat that carries a leader value
//! kind      u8          which Message
//! term      u64 BE
//! extra     u64 BE      heartbeat seq, or 1/0 for granted / transfer
//! id_len    u8          sender id length (1..=128)
//! id        [id_len]    sender id
//! value_len u16 BE      version 2 only: the leader value's length (0..=1024)
//! value     [value_len] version 2 only: the leader value, UTF-8
//! tag       [32]        HMAC-SHA256(key, version..value); zeros without a key
//! ```
//!
//! Version 2 exists only for heartbeats with a [`LeaderValue`]; every other frame, and a
//! heartbeat without a value, is written as version 1, byte for byte what nodes before leader
//! values wrote and read. So a cluster can be upgraded node by node: an older node refuses
//! version-2 frames (as [`FrameError::Version`]), and therefore only a leader that publishes a
//! value is unheard by older followers — set values once every node reads version 2.

use hmac::{KeyInit, Mac};
use sha2::Sha256;

use elect_core::{CandidateId, LeaderValue, Term};

use crate::engine::{Message, NodeId};

/// The format version of every frame but a heartbeat with a leader value.
pub const VERSION: u8 = 1;
/// The format version of a heartbeat with a leader value.
pub const VERSION_WITH_VALUE: u8 = 2;
/// The largest frame accepted, after the length field.
pub const MAX_FRAME: usize = HEADER + 128 + 2 + LeaderValue::MAX_LEN + TAG;
const TAG: usize = 32;
const HEADER: usize = 1 + 1 + 8 + 8 + 1;

/// A shared secret that authenticates every frame (at least 16 bytes).
#[derive(Clone)]
pub struct ClusterKey(Vec<u8>);

impl ClusterKey {
    /// A key from raw bytes; `None` when shorter than 16 bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Option<ClusterKey> {
        let bytes = bytes.into();
        (bytes.len() >= 16).then_some(ClusterKey(bytes))
    }

    fn tag(&self, data: &[u8]) -> [u8; TAG] {
        let mut mac = hmac::Hmac::<Sha256>::new_from_slice(&self.0).expect("any key length");
        mac.update(data);
        mac.finalize().into_bytes().into()
    }
}

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterKey(***)")
    }
}

/// Why a frame was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// Fewer bytes than the header and tag need.
    Truncated,
    /// Longer than [`MAX_FRAME`].
    Oversized,
    /// A version this code does not speak.
    Version,
    /// An unknown message kind or flag value.
    Kind,
    /// The sender id is not a valid node id.
    Sender,
    /// The leader value is not UTF-8 or longer than [`LeaderValue::MAX_LEN`].
    Value,
    /// The tag does not match (wrong key, or tampered).
    Tag,
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FrameError::Truncated => "truncated frame",
            FrameError::Oversized => "oversized frame",
            FrameError::Version => "unknown frame version",
            FrameError::Kind => "unknown message kind",
            FrameError::Sender => "invalid sender id",
            FrameError::Value => "invalid leader value",
            FrameError::Tag => "authentication failed",
        })
    }
}

impl std::error::Error for FrameError {}

fn parts(message: &Message) -> (u8, Term, u64) {
    match message {
        Message::PreVote { term } => (1, *term, 0),
        Message::PreVoteReply { term, granted } => (2, *term, *granted as u64),
        Message::RequestVote { term, transfer } => (3, *term, *transfer as u64),
        Message::Vote { term, granted } => (4, *term, *granted as u64),
        Message::Heartbeat { term, seq, .. } => (5, *term, *seq),
        Message::HeartbeatAck { term, seq } => (6, *term, *seq),
        Message::TimeoutNow { term } => (7, *term, 0),
    }
}

fn flag(extra: u64) -> Result<bool, FrameError> {
    match extra {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(FrameError::Kind),
    }
}

/// Encodes a frame, length prefix included.
pub fn encode(from: &NodeId, message: &Message, key: Option<&ClusterKey>) -> Vec<u8> {
    let (kind, term, extra) = parts(message);
    let id = from.as_str().as_bytes();
    let value = match message {
        Message::Heartbeat {
            value: Some(value), ..
        } => Some(value.as_str().as_bytes()),
        _ => None,
    };
    let body = HEADER + id.len() + value.map_or(0, |v| 2 + v.len()) + TAG;
    let mut frame = Vec::with_capacity(4 + body);
    frame.extend_from_slice(&(body as u32).to_be_bytes());
    frame.push(if value.is_some() {
        VERSION_WITH_VALUE
    } else {
        VERSION
    });
    frame.push(kind);
    frame.extend_from_slice(&term.get().to_be_bytes());
    frame.extend_from_slice(&extra.to_be_bytes());
    frame.push(id.len() as u8);
    frame.extend_from_slice(id);
    if let Some(value) = value {
        // A LeaderValue is at most 1 KiB, so its length fits.
        frame.extend_from_slice(&(value.len() as u16).to_be_bytes());
        frame.extend_from_slice(value);
    }
    let tag = key.map_or([0; TAG], |k| k.tag(&frame[4..]));
    frame.extend_from_slice(&tag);
    frame
}

/// Decodes the body of a frame (the bytes after the length field) and checks its tag.
pub fn decode(body: &[u8], key: Option<&ClusterKey>) -> Result<(NodeId, Message), FrameError> {
    if body.len() > MAX_FRAME {
        return Err(FrameError::Oversized);
    }
    if body.len() < HEADER + 1 + TAG {
        return Err(FrameError::Truncated);
    }
    let (signed, tag) = body.split_at(body.len() - TAG);
    if let Some(key) = key {
        // Constant-time comparison.
        let mut mac = hmac::Hmac::<Sha256>::new_from_slice(&key.0).expect("any key length");
        mac.update(signed);
        mac.verify_slice(tag).map_err(|_| FrameError::Tag)?;
    }
    let version = signed[0];
    if version != VERSION && version != VERSION_WITH_VALUE {
        return Err(FrameError::Version);
    }
    let kind = signed[1];
    let term = Term(u64::from_be_bytes(
        signed[2..10].try_into().expect("8 bytes"),
    ));
    let extra = u64::from_be_bytes(signed[10..18].try_into().expect("8 bytes"));
    let id_len = signed[18] as usize;
    let Some(id) = signed.get(HEADER..HEADER + id_len) else {
        return Err(FrameError::Truncated);
    };
    let from = std::str::from_utf8(id)
        .ok()
        .and_then(|s| CandidateId::new(s).ok())
        .ok_or(FrameError::Sender)?;
    let rest = &signed[HEADER + id_len..];
    let value = match version {
        VERSION if rest.is_empty() => None,
        VERSION => return Err(FrameError::Truncated),
        _ => {
            // Version 2 is a heartbeat with a value, nothing else.
            if kind != 5 {
                return Err(FrameError::Kind);
            }
            let (len, value) = rest.split_at_checked(2).ok_or(FrameError::Truncated)?;
            if value.len() != u16::from_be_bytes([len[0], len[1]]) as usize {
                return Err(FrameError::Truncated);
            }
            let value = std::str::from_utf8(value).map_err(|_| FrameError::Value)?;
            Some(LeaderValue::new(value).map_err(|_| FrameError::Value)?)
        }
    };
    let message = match kind {
        1 if extra == 0 => Message::PreVote { term },
        2 => Message::PreVoteReply {
            term,
            granted: flag(extra)?,
        },
        3 => Message::RequestVote {
            term,
            transfer: flag(extra)?,
        },
        4 => Message::Vote {
            term,
            granted: flag(extra)?,
        },
        5 => Message::Heartbeat {
            term,
            seq: extra,
            value,
        },
        6 => Message::HeartbeatAck { term, seq: extra },
        7 if extra == 0 => Message::TimeoutNow { term },
        _ => return Err(FrameError::Kind),
    };
    Ok((from, message))
}

#[cfg(test)]
mod tests {
    use super::*;
    use elect_core::rand::Rng;

    fn random_message(rng: &mut Rng) -> Message {
        let term = Term(rng.next_u64());
        let flag = rng.next_u64() % 2 == 1;
        match rng.next_u64() % 7 {
            0 => Message::PreVote { term },
            1 => Message::PreVoteReply {
                term,
                granted: flag,
            },
            2 => Message::RequestVote {
                term,
                transfer: flag,
            },
            3 => Message::Vote {
                term,
                granted: flag,
            },
            4 => Message::Heartbeat {
                term,
                seq: rng.next_u64(),
                value: flag.then(|| random_value(rng)),
            },
            5 => Message::HeartbeatAck {
                term,
                seq: rng.next_u64(),
            },
            _ => Message::TimeoutNow { term },
        }
    }

    /// Any UTF-8 up to the longest value, multi-byte characters included.
    fn random_value(rng: &mut Rng) -> LeaderValue {
        const CHARS: [char; 6] = ['a', '0', ' ', 'é', '€', '𝄞'];
        let mut s = String::new();
        let target = (rng.next_u64() % (LeaderValue::MAX_LEN as u64 + 1)) as usize;
        loop {
            let c = CHARS[(rng.next_u64() as usize) % CHARS.len()];
            if s.len() + c.len_utf8() > target {
                break LeaderValue::new(s).unwrap();
            }
            s.push(c);
        }
    }

    fn random_id(rng: &mut Rng) -> NodeId {
        const ALPHABET: &[u8] = b"ABCxyz0189._:/-";
        let len = 1 + (rng.next_u64() % 128) as usize;
        let s: String = (0..len)
            .map(|_| ALPHABET[(rng.next_u64() as usize) % ALPHABET.len()] as char)
            .collect();
        NodeId::new(s).unwrap()
    }

    /// decode(encode(x)) = x, for 100 000 random messages and ids, with and without a key.
    #[test]
    fn decode_inverts_encode() {
        let key = ClusterKey::new(*b"0123456789abcdef0123").unwrap();
        let mut rng = Rng::seeded(3);
        for n in 0..100_000 {
            let (id, message) = (random_id(&mut rng), random_message(&mut rng));
            let k = (n % 2 == 0).then_some(&key);
            let frame = encode(&id, &message, k);
            assert_eq!(
                u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize,
                frame.len() - 4
            );
            assert_eq!(decode(&frame[4..], k), Ok((id, message)));
        }
    }

    #[test]
    fn tampered_truncated_oversized_and_foreign_frames_are_refused() {
        let key = ClusterKey::new(*b"0123456789abcdef").unwrap();
        let other = ClusterKey::new(*b"fedcba9876543210").unwrap();
        let id = NodeId::new("node-1").unwrap();
        let frame = encode(
            &id,
            &Message::Heartbeat {
                term: Term(3),
                seq: 9,
                value: Some(LeaderValue::new("10.0.0.7:8080").unwrap()),
            },
            Some(&key),
        );
        let body = &frame[4..];
        assert_eq!(decode(body, Some(&other)), Err(FrameError::Tag));
        assert_eq!(
            decode(
                &encode(&id, &Message::TimeoutNow { term: Term(1) }, None)[4..],
                Some(&key)
            ),
            Err(FrameError::Tag)
        );
        for i in 0..body.len() {
            let mut bad = body.to_vec();
            bad[i] ^= 0x40;
            assert_eq!(decode(&bad, Some(&key)), Err(FrameError::Tag), "byte {i}");
        }
        for len in 0..body.len() {
            assert!(decode(&body[..len], Some(&key)).is_err(), "{len} bytes");
        }
        assert_eq!(
            decode(&[0; MAX_FRAME + 1], None),
            Err(FrameError::Oversized)
        );
        let mut bad_version = body.to_vec();
        bad_version[0] = 9;
        assert_eq!(decode(&bad_version, None), Err(FrameError::Version));
        let mut bad_kind = body.to_vec();
        bad_kind[1] = 42;
        assert_eq!(decode(&bad_kind, None), Err(FrameError::Kind));
        let mut bad_id = body.to_vec();
        bad_id[HEADER] = b' ';
        assert_eq!(decode(&bad_id, None), Err(FrameError::Sender));
        assert!(ClusterKey::new(*b"short").is_none());
    }

    /// A heartbeat without a value is the version-1 frame, byte for byte as nodes wrote it
    /// before leader values existed; with a value it is version 2.
    #[test]
    fn frames_without_a_value_keep_version_one() {
        let id = NodeId::new("n1").unwrap();
        let heartbeat = |value: Option<&str>| Message::Heartbeat {
            term: Term(3),
            seq: 9,
            value: value.map(|v| LeaderValue::new(v).unwrap()),
        };
        let mut v1 = vec![0, 0, 0, 53, 1, 5];
        v1.extend_from_slice(&3u64.to_be_bytes());
        v1.extend_from_slice(&9u64.to_be_bytes());
        v1.extend_from_slice(&[2, b'n', b'1']);
        v1.extend_from_slice(&[0; TAG]);
        assert_eq!(encode(&id, &heartbeat(None), None), v1);
        let v2 = encode(&id, &heartbeat(Some("ab")), None);
        assert_eq!(v2[4], VERSION_WITH_VALUE);
        assert_eq!(&v2[4 + HEADER + 2..4 + HEADER + 2 + 4], &[0, 2, b'a', b'b']);
        assert_eq!(
            decode(&v2[4..], None),
            Ok((id.clone(), heartbeat(Some("ab"))))
        );
        // An empty value is a value, not none.
        let empty = encode(&id, &heartbeat(Some("")), None);
        assert_eq!(empty[4], VERSION_WITH_VALUE);
        assert_eq!(decode(&empty[4..], None), Ok((id, heartbeat(Some("")))));
    }

    /// Version 2 only for heartbeats; the value's length must match, be UTF-8 and ≤ 1 KiB;
    /// a version-1 frame has nothing after the id.
    #[test]
    fn malformed_values_are_refused() {
        let body = |version: u8, kind: u8, tail: &[u8]| {
            let mut b = vec![version, kind];
            b.extend_from_slice(&[0; 16]);
            b.extend_from_slice(&[2, b'n', b'1']);
            b.extend_from_slice(tail);
            b.extend_from_slice(&[0; TAG]);
            b
        };
        assert!(decode(&body(2, 5, &[0, 1, b'x']), None).is_ok());
        assert_eq!(
            decode(&body(2, 6, &[0, 1, b'x']), None),
            Err(FrameError::Kind)
        );
        assert_eq!(
            decode(&body(2, 5, &[0, 2, b'x']), None),
            Err(FrameError::Truncated)
        );
        assert_eq!(decode(&body(2, 5, &[0]), None), Err(FrameError::Truncated));
        assert_eq!(
            decode(&body(2, 5, &[0, 1, 0xff]), None),
            Err(FrameError::Value)
        );
        let mut long = vec![4, 1];
        long.extend_from_slice(&[b'x'; 1025]);
        assert_eq!(decode(&body(2, 5, &long), None), Err(FrameError::Value));
        assert_eq!(decode(&body(1, 5, &[0]), None), Err(FrameError::Truncated));
    }

    /// Random bytes never panic the decoder.
    #[test]
    fn random_bytes_are_refused_without_panics() {
        let key = ClusterKey::new(*b"0123456789abcdef").unwrap();
        let mut rng = Rng::seeded(5);
        for _ in 0..100_000 {
            let len = (rng.next_u64() % (MAX_FRAME as u64 + 8)) as usize;
            let bytes: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
            let _ = decode(&bytes, None);
            assert!(decode(&bytes, Some(&key)).is_err());
        }
    }
}
