//! From `--raft-*` flags to an elector on a raft group.

#[cfg(feature = "raft")]
use std::collections::BTreeMap;
#[cfg(feature = "raft")]
use std::net::SocketAddr;
use std::time::Duration;

use elect::{CandidateId, Elector};

#[cfg(feature = "raft")]
use crate::store::{candidate, election};
use crate::{Failure, Where};

/// How `elect run`'s raft nodes lead: the leader lease is raft's minimum election timeout
/// (elect-raft's default, which the CLI keeps).
pub(crate) const RAFT_LEASE: Duration = Duration::from_millis(300);

/// The elector for `--raft-*` flags: this node's id, listen address, peers and key.
#[cfg(feature = "raft")]
pub(crate) async fn raft(where_: &Where) -> Result<(Elector, CandidateId), Failure> {
    let id = candidate(where_.raft_id.as_deref())?;
    let listen: SocketAddr = where_
        .raft_listen
        .as_deref()
        .ok_or_else(|| Failure::config("--raft-listen is needed with --raft-id"))?
        .parse()
        .map_err(|_| Failure::config("--raft-listen takes HOST:PORT (an IP address and a port)"))?;
    let mut peers = BTreeMap::new();
    for peer in &where_.raft_peers {
        let (pid, addr) = peer
            .split_once('=')
            .ok_or_else(|| Failure::config(format!("--raft-peer {peer:?} is not ID=HOST:PORT")))?;
        let addr: SocketAddr = addr.parse().map_err(|_| {
            Failure::config(format!("--raft-peer {peer:?}: {addr:?} is not HOST:PORT"))
        })?;
        peers.insert(candidate(Some(pid))?, addr);
    }
    if !peers.contains_key(&id) {
        return Err(Failure::config(format!(
            "--raft-id {id} is not among the --raft-peer ids"
        )));
    }
    let key = match &where_.raft_key_file {
        Some(path) => {
            let bytes = std::fs::read(path)
                .map_err(|e| Failure::config(format!("--raft-key-file {}: {e}", path.display())))?;
            let trimmed = bytes.trim_ascii().to_vec();
            Some(elect::raft::ClusterKey::new(trimmed).ok_or_else(|| {
                Failure::config(format!(
                    "--raft-key-file {}: the key needs at least 16 bytes",
                    path.display()
                ))
            })?)
        }
        None => None,
    };
    let mut config = elect::raft::RaftConfig::new(id.clone(), peers.keys().cloned())
        .election(election(&where_.election)?);
    if let Some(dir) = &where_.raft_state {
        config = config.state_dir(dir);
    }
    let (elector, _transport) = elect::raft::start_tcp(config, listen, peers, key)
        .await
        .map_err(|e| Failure::from_error("raft", &e))?;
    Ok((elector, id))
}

#[cfg(not(feature = "raft"))]
pub(crate) async fn raft(_: &Where) -> Result<(Elector, CandidateId), Failure> {
    Err(Failure::config("elect was built without the raft feature"))
}
