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

/// How `elect run`'s raft nodes lead by default: the leader lease is raft's minimum election
/// timeout (elect-raft's default).
pub(crate) const RAFT_LEASE: Duration = Duration::from_millis(300);

/// The leader lease of the raft group these flags describe: the minimum election timeout.
pub(crate) fn lease(where_: &Where) -> Duration {
    where_
        .raft_election_timeout
        .map_or(RAFT_LEASE, |(min, _)| min)
}

/// `ID=HOST:PORT` flags as ids and addresses.
#[cfg(feature = "raft")]
fn members(flag: &str, list: &[String]) -> Result<BTreeMap<CandidateId, SocketAddr>, Failure> {
    let mut members = BTreeMap::new();
    for member in list {
        let (id, addr) = member
            .split_once('=')
            .ok_or_else(|| Failure::config(format!("{flag} {member:?} is not ID=HOST:PORT")))?;
        let addr: SocketAddr = addr.parse().map_err(|_| {
            Failure::config(format!("{flag} {member:?}: {addr:?} is not HOST:PORT"))
        })?;
        members.insert(candidate(Some(id))?, addr);
    }
    Ok(members)
}

/// The elector for `--raft-*` flags: this node's id, listen address, peers and key, publishing
/// `value` while it leads.
#[cfg(feature = "raft")]
pub(crate) async fn raft(
    where_: &Where,
    value: Option<elect::LeaderValue>,
) -> Result<(Elector, CandidateId), Failure> {
    let id = candidate(where_.raft_id.as_deref())?;
    let listen: SocketAddr = where_
        .raft_listen
        .as_deref()
        .ok_or_else(|| Failure::config("--raft-listen is needed with --raft-id"))?
        .parse()
        .map_err(|_| Failure::config("--raft-listen takes HOST:PORT (an IP address and a port)"))?;
    let voters = members("--raft-peer", &where_.raft_peers)?;
    let observers = members("--raft-observer", &where_.raft_observers)?;
    if !voters.contains_key(&id) && !observers.contains_key(&id) {
        return Err(Failure::config(format!(
            "--raft-id {id} is not among the --raft-peer or --raft-observer ids"
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
    let mut config = elect::raft::RaftConfig::new(id.clone(), voters.keys().cloned())
        .observers(observers.keys().cloned())
        .election(election(&where_.election)?);
    if let Some(dir) = &where_.raft_state {
        config = config.state_dir(dir);
    }
    if let Some(value) = value {
        config = config.value(value);
    }
    if where_.raft_heartbeat.is_some() || where_.raft_election_timeout.is_some() {
        let (min, max) = where_
            .raft_election_timeout
            .unwrap_or((config.election_timeout_min, config.election_timeout_max));
        let heartbeat = where_.raft_heartbeat.unwrap_or(config.heartbeat);
        config = config.timing(heartbeat, min, max);
    }
    let mut peers = voters;
    peers.extend(observers);
    let (elector, _transport) = elect::raft::start_tcp(config, listen, peers, key)
        .await
        .map_err(|e| Failure::from_error("raft", &e))?;
    Ok((elector, id))
}

#[cfg(not(feature = "raft"))]
pub(crate) async fn raft(
    _: &Where,
    _: Option<elect::LeaderValue>,
) -> Result<(Elector, CandidateId), Failure> {
    Err(Failure::config("elect was built without the raft feature"))
}
