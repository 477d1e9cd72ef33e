//! The frame format between peers: length-prefixed, versioned, and authenticated with
//! HMAC-SHA256 when a cluster key is configured. Decoding never panics: a frame that is short,
//! oversized, of an unknown version or kind, from an invalid id, or with a bad tag is an error.
//!
//! ```text
//! len     u32 BE   bytes after this field (at most MAX_FRAME)
//! version u8       1
//! kind    u8       which Message
//! term    u64 BE
//! extra   u64 BE   heartbeat seq, or 1/0 for granted / transfer
//! id_len  u8       sender id length (1..=128)
//! id      [id_len] sender id
//! tag     [32]     HMAC-SHA256(key, version..id); zeros without a key
//! ```

use hmac::{KeyInit, Mac};
use sha2::Sha256;

use elect_core::{CandidateId, Term};

use crate::engine::{Message, NodeId};

/// The format version this code writes and reads.
pub const VERSION: u8 = 1;
/// The largest frame accepted, after the length field.
pub const MAX_FRAME: usize = 1 + 1 + 8 + 8 + 1 + 128 + TAG;
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
            FrameError::Tag => "authentication failed",
        })
    }
}

impl std::error::Error for FrameError {}

fn parts(message: &Message) -> (u8, Term, u64) {
    match *message {
        Message::PreVote { term } => (1, term, 0),
        Message::PreVoteReply { term, granted } => (2, term, granted as u64),
        Message::RequestVote { term, transfer } => (3, term, transfer as u64),
        Message::Vote { term, granted } => (4, term, granted as u64),
        Message::Heartbeat { term, seq } => (5, term, seq),
        Message::HeartbeatAck { term, seq } => (6, term, seq),
        Message::TimeoutNow { term } => (7, term, 0),
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
    let mut frame = Vec::with_capacity(4 + HEADER + id.len() + TAG);
    frame.extend_from_slice(&((HEADER + id.len() + TAG) as u32).to_be_bytes());
    frame.push(VERSION);
    frame.push(kind);
    frame.extend_from_slice(&term.get().to_be_bytes());
    frame.extend_from_slice(&extra.to_be_bytes());
    frame.push(id.len() as u8);
    frame.extend_from_slice(id);
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
    if signed[0] != VERSION {
        return Err(FrameError::Version);
    }
    let kind = signed[1];
    let term = Term(u64::from_be_bytes(
        signed[2..10].try_into().expect("8 bytes"),
    ));
    let extra = u64::from_be_bytes(signed[10..18].try_into().expect("8 bytes"));
    let id_len = signed[18] as usize;
    if signed.len() != HEADER + id_len {
        return Err(FrameError::Truncated);
    }
    let from = std::str::from_utf8(&signed[HEADER..])
        .ok()
        .and_then(|s| CandidateId::new(s).ok())
        .ok_or(FrameError::Sender)?;
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
        5 => Message::Heartbeat { term, seq: extra },
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
            },
            5 => Message::HeartbeatAck {
                term,
                seq: rng.next_u64(),
            },
            _ => Message::TimeoutNow { term },
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
