//! The engine's handler tests: one per behaviour, asserting on the commands emitted.

use super::*;

const MS: Duration = Duration::from_millis(1);

fn id(s: &str) -> NodeId {
    NodeId::new(s).unwrap()
}

fn config(me: &str, voters: &[&str]) -> EngineConfig {
    EngineConfig {
        id: id(me),
        voters: voters.iter().map(|v| id(v)).collect(),
        observers: BTreeSet::from([id("o")]),
        heartbeat: 20 * MS,
        election_timeout_min: 150 * MS,
        election_timeout_max: 300 * MS,
        clock_drift: 0.01,
        seed: 1,
        value: None,
    }
}

fn node(me: &str) -> Engine {
    Engine::new(config(me, &["a", "b", "c"]), Time::ZERO, Term::ZERO, None)
}

fn sends(commands: &[Command]) -> Vec<(String, Message)> {
    commands
        .iter()
        .filter_map(|c| match c {
            Command::Send { to, message } => Some((to.to_string(), message.clone())),
            _ => None,
        })
        .collect()
}

/// Drives `a` to leadership with b's votes and acks; returns it at time 10 ms.
fn leader_a() -> Engine {
    let mut a = node("a");
    a.tick(300 * MS);
    a.receive(
        300 * MS,
        &id("b"),
        Message::PreVoteReply {
            term: Term(1),
            granted: true,
        },
    );
    let out = a.receive(
        301 * MS,
        &id("b"),
        Message::Vote {
            term: Term(1),
            granted: true,
        },
    );
    assert_eq!(a.role(), Role::Leader);
    assert!(
        !out.iter()
            .any(|c| matches!(c, Command::BecameLeader { .. })),
        "not before a majority ack"
    );
    let out = a.receive(
        302 * MS,
        &id("b"),
        Message::HeartbeatAck {
            term: Term(1),
            seq: 1,
        },
    );
    assert!(out
        .iter()
        .any(|c| matches!(c, Command::BecameLeader { term: Term(1), .. })));
    a
}

#[test]
fn an_election_timeout_starts_a_pre_vote_that_changes_no_term() {
    let mut a = node("a");
    assert!(
        a.tick(100 * MS).is_empty(),
        "before the minimum election timeout"
    );
    let out = a.tick(300 * MS);
    assert_eq!(a.role(), Role::PreCandidate);
    assert_eq!(a.term(), Term::ZERO);
    assert_eq!(
        sends(&out),
        vec![
            ("b".into(), Message::PreVote { term: Term(1) }),
            ("c".into(), Message::PreVote { term: Term(1) }),
        ]
    );
    assert!(!out.iter().any(|c| matches!(c, Command::Persist { .. })));
}

#[test]
fn pre_votes_are_refused_inside_a_live_leaders_lease() {
    let mut b = node("b");
    b.receive(
        10 * MS,
        &id("a"),
        Message::Heartbeat {
            term: Term(1),
            seq: 1,
            value: None,
        },
    );
    let out = b.receive(100 * MS, &id("c"), Message::PreVote { term: Term(2) });
    assert_eq!(
        sends(&out),
        vec![(
            "c".into(),
            Message::PreVoteReply {
                term: Term(2),
                granted: false
            }
        )]
    );
    let out = b.receive(161 * MS, &id("c"), Message::PreVote { term: Term(2) });
    assert_eq!(
        sends(&out),
        vec![(
            "c".into(),
            Message::PreVoteReply {
                term: Term(2),
                granted: true
            }
        )]
    );
    assert_eq!(b.term(), Term(1), "a pre-vote changes no term");
}

#[test]
fn a_vote_is_persisted_before_it_is_sent_and_given_once_per_term() {
    let mut b = node("b");
    let out = b.receive(
        MS,
        &id("a"),
        Message::RequestVote {
            term: Term(1),
            transfer: false,
        },
    );
    let persist = out
        .iter()
        .rposition(|c| matches!(c, Command::Persist { term: Term(1), voted_for: Some(v) } if v.as_str() == "a"))
        .expect("the vote is persisted");
    let send = out
        .iter()
        .position(|c| {
            matches!(
                c,
                Command::Send {
                    message: Message::Vote { granted: true, .. },
                    ..
                }
            )
        })
        .expect("the vote is sent");
    assert!(persist < send, "persisted before it is sent: {out:?}");
    let out = b.receive(
        2 * MS,
        &id("c"),
        Message::RequestVote {
            term: Term(1),
            transfer: false,
        },
    );
    assert_eq!(
        sends(&out),
        vec![(
            "c".into(),
            Message::Vote {
                term: Term(1),
                granted: false
            }
        )]
    );
    // Asking again (a duplicate) gets the same answer.
    let out = b.receive(
        3 * MS,
        &id("a"),
        Message::RequestVote {
            term: Term(1),
            transfer: false,
        },
    );
    assert_eq!(
        sends(&out),
        vec![(
            "a".into(),
            Message::Vote {
                term: Term(1),
                granted: true
            }
        )]
    );
}

#[test]
fn a_restarted_node_keeps_its_vote() {
    let mut b = Engine::new(
        config("b", &["a", "b", "c"]),
        Time::ZERO,
        Term(4),
        Some(id("a")),
    );
    let out = b.receive(
        MS,
        &id("c"),
        Message::RequestVote {
            term: Term(4),
            transfer: false,
        },
    );
    assert_eq!(
        sends(&out),
        vec![(
            "c".into(),
            Message::Vote {
                term: Term(4),
                granted: false
            }
        )]
    );
}

#[test]
fn the_lease_runs_from_the_majority_acknowledged_send_time() {
    let mut a = leader_a();
    // Heartbeat 1 was sent at 301 ms (on winning) and acknowledged by b.
    let until = 301 * MS + (150 * MS).mul_f64(0.99);
    assert_eq!(a.lease_until(), until);
    assert!(a.is_leading(until - MS));
    assert!(!a.is_leading(until));
    // A late ack of an old heartbeat does not extend it; a new one does.
    let out = a.tick(321 * MS);
    assert_eq!(
        sends(&out).len(),
        3,
        "heartbeats to b, c and the observer o"
    );
    a.receive(
        322 * MS,
        &id("c"),
        Message::HeartbeatAck {
            term: Term(1),
            seq: 1,
        },
    );
    assert_eq!(a.lease_until(), until);
    let out = a.receive(
        323 * MS,
        &id("c"),
        Message::HeartbeatAck {
            term: Term(1),
            seq: 2,
        },
    );
    assert!(matches!(out[..], [Command::LeaseExtended { .. }]));
    assert_eq!(a.lease_until(), 321 * MS + (150 * MS).mul_f64(0.99));
}

#[test]
fn a_leader_without_a_majority_steps_down_when_its_lease_ends() {
    let mut a = leader_a();
    let end = a.lease_until();
    let mut stepped = None;
    while stepped.is_none() && a.role() == Role::Leader {
        let now = a.next_deadline();
        assert!(now <= end, "no deadline past the lease's end");
        let out = a.tick(now);
        if out.iter().any(|c| {
            matches!(
                c,
                Command::SteppedDown {
                    reason: StepDownReason::LeaseExpired,
                    ..
                }
            )
        }) {
            stepped = Some(now);
            break;
        }
    }
    assert_eq!(stepped, Some(end), "steps down exactly at the lease's end");
    assert_eq!(a.role(), Role::Follower);
}

#[test]
fn a_higher_term_in_an_ack_makes_the_leader_step_down() {
    let mut a = leader_a();
    let out = a.receive(
        310 * MS,
        &id("c"),
        Message::HeartbeatAck {
            term: Term(5),
            seq: 1,
        },
    );
    assert!(out.iter().any(|c| matches!(
        c,
        Command::SteppedDown {
            reason: StepDownReason::HigherTerm,
            ..
        }
    )));
    assert!(!a.is_leading(310 * MS));
    assert_eq!(a.term(), Term(5));
}

#[test]
fn resign_stops_believing_then_hands_over_to_the_most_recent_acker() {
    let mut a = leader_a();
    a.tick(321 * MS);
    a.receive(
        322 * MS,
        &id("c"),
        Message::HeartbeatAck {
            term: Term(1),
            seq: 2,
        },
    );
    let out = a.resign(323 * MS);
    assert!(!a.is_leading(323 * MS));
    let stepped = out.iter().position(|c| {
        matches!(
            c,
            Command::SteppedDown {
                reason: StepDownReason::Resigned,
                ..
            }
        )
    });
    let sent = out.iter().position(|c| matches!(c, Command::Send { .. }));
    assert!(stepped < sent, "steps down before sending: {out:?}");
    assert_eq!(
        sends(&out),
        vec![("c".into(), Message::TimeoutNow { term: Term(1) })]
    );

    // c starts an election at once, marked as a transfer; b waives a's lease for it.
    let mut c = node("c");
    c.receive(
        300 * MS,
        &id("a"),
        Message::Heartbeat {
            term: Term(1),
            seq: 1,
            value: None,
        },
    );
    let out = c.receive(324 * MS, &id("a"), Message::TimeoutNow { term: Term(1) });
    assert_eq!(c.role(), Role::Candidate);
    assert!(sends(&out).contains(&(
        "b".into(),
        Message::RequestVote {
            term: Term(2),
            transfer: true
        }
    )));
    let mut b = node("b");
    b.receive(
        322 * MS,
        &id("a"),
        Message::Heartbeat {
            term: Term(1),
            seq: 2,
            value: None,
        },
    );
    let out = b.receive(
        325 * MS,
        &id("c"),
        Message::RequestVote {
            term: Term(2),
            transfer: true,
        },
    );
    assert_eq!(
        sends(&out),
        vec![(
            "c".into(),
            Message::Vote {
                term: Term(2),
                granted: true
            }
        )]
    );
    let out = b.receive(
        325 * MS,
        &id("a"),
        Message::RequestVote {
            term: Term(3),
            transfer: false,
        },
    );
    assert_eq!(
        sends(&out),
        vec![(
            "a".into(),
            Message::Vote {
                term: Term(2),
                granted: false
            }
        )],
        "no lease waiver without a transfer"
    );
}

#[test]
fn observers_never_stand_or_vote_but_follow() {
    let mut o = Engine::new(config("o", &["a", "b", "c"]), Time::ZERO, Term::ZERO, None);
    assert_eq!(o.role(), Role::Observer);
    assert!(o.tick(Duration::from_secs(10)).is_empty());
    let out = o.receive(
        MS,
        &id("a"),
        Message::RequestVote {
            term: Term(1),
            transfer: false,
        },
    );
    assert_eq!(
        sends(&out),
        vec![(
            "a".into(),
            Message::Vote {
                term: Term::ZERO,
                granted: false
            }
        )]
    );
    let out = o.receive(MS, &id("a"), Message::PreVote { term: Term(1) });
    assert_eq!(
        sends(&out),
        vec![(
            "a".into(),
            Message::PreVoteReply {
                term: Term(1),
                granted: false
            }
        )]
    );
    o.receive(
        2 * MS,
        &id("a"),
        Message::Heartbeat {
            term: Term(1),
            seq: 1,
            value: None,
        },
    );
    assert_eq!(o.leader().map(|l| l.as_str()), Some("a"));
    assert_eq!(o.role(), Role::Observer);
}

#[test]
fn messages_from_unknown_nodes_change_nothing() {
    let mut b = node("b");
    let out = b.receive(
        MS,
        &id("intruder"),
        Message::RequestVote {
            term: Term(9),
            transfer: false,
        },
    );
    assert_eq!(
        sends(&out),
        vec![(
            "intruder".into(),
            Message::Vote {
                term: Term::ZERO,
                granted: false
            }
        )]
    );
    assert_eq!(b.term(), Term::ZERO);
    b.receive(MS, &id("intruder"), Message::PreVote { term: Term(9) });
    assert_eq!(b.term(), Term::ZERO);
}

/// A leader carries its value in every heartbeat; a follower reports it with the leader, again
/// when it changes (a new leader with another value), and forgets it when it learns of a
/// higher term.
#[test]
fn the_leader_value_travels_in_heartbeats() {
    let value = |v: &str| Some(LeaderValue::new(v).unwrap());
    let mut config = config("a", &["a"]);
    config.value = value("10.0.0.1:80");
    let mut solo = Engine::new(config, Time::ZERO, Term::ZERO, None);
    let out = solo.tick(300 * MS);
    assert!(out.iter().any(|c| matches!(c,
        Command::LeaderChanged { leader: Some(l), value: v, .. } if *l == id("a") && *v == value("10.0.0.1:80"))));
    assert_eq!(
        sends(&out),
        vec![(
            "o".into(),
            Message::Heartbeat {
                term: Term(1),
                seq: 1,
                value: value("10.0.0.1:80"),
            }
        )]
    );

    let mut b = node("b");
    let heartbeat = |seq, v: &str| Message::Heartbeat {
        term: Term(1),
        seq,
        value: value(v),
    };
    let changes = |out: &[Command]| -> Vec<(Option<NodeId>, Option<LeaderValue>)> {
        out.iter()
            .filter_map(|c| match c {
                Command::LeaderChanged { leader, value, .. } => {
                    Some((leader.clone(), value.clone()))
                }
                _ => None,
            })
            .collect()
    };
    let out = b.receive(10 * MS, &id("a"), heartbeat(1, "x"));
    assert_eq!(changes(&out), vec![(Some(id("a")), value("x"))]);
    assert_eq!(b.leader_value(), value("x").as_ref());
    let out = b.receive(30 * MS, &id("a"), heartbeat(2, "x"));
    assert!(changes(&out).is_empty(), "the same value is no change");
    let out = b.receive(50 * MS, &id("a"), heartbeat(3, "y"));
    assert_eq!(changes(&out), vec![(Some(id("a")), value("y"))]);
    let out = b.receive(
        70 * MS,
        &id("a"),
        Message::Heartbeat {
            term: Term(1),
            seq: 4,
            value: None,
        },
    );
    assert_eq!(changes(&out), vec![(Some(id("a")), None)]);
    b.receive(90 * MS, &id("a"), heartbeat(5, "z"));
    let out = b.receive(
        500 * MS,
        &id("c"),
        Message::RequestVote {
            term: Term(2),
            transfer: false,
        },
    );
    assert_eq!(changes(&out), vec![(None, None)]);
    assert_eq!(b.leader_value(), None);
}

/// A split vote: once refusals leave no majority within reach, the candidate stands again
/// after a heartbeat plus at most a quarter of the timeout range, not a whole new timeout.
/// Refusals repeated by one voter, or while a majority is still possible, change nothing.
#[test]
fn a_candidate_that_cannot_win_stands_again_soon() {
    let mut a = Engine::new(
        config("a", &["a", "b", "c", "d", "e"]),
        Time::ZERO,
        Term::ZERO,
        None,
    );
    a.tick(300 * MS);
    for voter in ["b", "c"] {
        let reply = Message::PreVoteReply {
            term: Term(1),
            granted: true,
        };
        a.receive(300 * MS, &id(voter), reply);
    }
    assert_eq!((a.role(), a.term()), (Role::Candidate, Term(1)));
    let full_timeout = a.next_deadline();
    assert!(full_timeout >= 450 * MS, "{full_timeout:?}");
    let refusal = Message::Vote {
        term: Term(1),
        granted: false,
    };
    for voter in ["c", "c", "d"] {
        a.receive(301 * MS, &id(voter), refusal.clone());
        assert_eq!(a.next_deadline(), full_timeout, "b and e could still vote");
    }
    a.receive(302 * MS, &id("e"), refusal);
    let retry = a.next_deadline();
    assert!(
        (322 * MS..=(322 * MS + 150 * MS / 4)).contains(&retry),
        "{retry:?}"
    );
    assert_eq!(a.role(), Role::Candidate, "no leader believed, none lost");
    let out = a.tick(retry);
    assert_eq!(
        a.role(),
        Role::PreCandidate,
        "the retry asks pre-votes first"
    );
    assert!(sends(&out)
        .iter()
        .all(|(_, m)| *m == Message::PreVote { term: Term(2) }));
}
