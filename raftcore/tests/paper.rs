//! Tests named after the rules of the Raft paper ("In Search of an
//! Understandable Consensus Algorithm", extended version) and the thesis
//! sections they cite. Each drives real `RawNode`s through `common::Net`.

mod common;

use common::Net;
use corekv_raftcore::{
    ConfChange, ConfState, Config, EntryKind, Message, MessageKind, RaftError, RawNode, Restored,
    Role,
};

fn cfg() -> Config {
    Config {
        pre_vote: false,
        check_quorum: false,
        snapshot_catch_up_entries: 0,
        ..Config::new(1)
    }
}

fn three() -> Net {
    Net::new(&[1, 2, 3], &[], cfg())
}

fn role(net: &Net, id: u64) -> Role {
    net.nodes[&id].raw.status().role
}

fn term(net: &Net, id: u64) -> u64 {
    net.nodes[&id].raw.status().term
}

// ---- 5.2 Leader election ----

#[test]
fn sec_5_2_follower_starts_election_after_randomized_timeout() {
    let mut net = three();
    let mut elapsed = 0;
    while net.leaders().is_empty() {
        net.tick(1, 1);
        elapsed += 1;
        net.stabilize();
        assert!(elapsed < 2 * 10, "timeout must be below 2 * election_tick");
    }
    assert!(
        elapsed >= 10,
        "timeout must be at least election_tick, was {elapsed}"
    );
    assert_eq!(net.leaders(), vec![1]);
    assert_eq!(term(&net, 1), 1);
}

#[test]
fn sec_5_2_election_timeouts_are_randomized_by_seed() {
    let mut timeouts = std::collections::BTreeSet::new();
    for seed in 0..20 {
        let c = Config { seed, ..cfg() };
        let mut n = RawNode::new(
            c,
            ConfState {
                voters: vec![1, 2, 3],
                learners: vec![],
            },
            Restored::default(),
        )
        .expect("node");
        let mut t = 0;
        while n.status().role == Role::Follower {
            n.tick();
            t += 1;
        }
        timeouts.insert(t);
    }
    assert!(timeouts.len() > 3, "timeouts barely vary: {timeouts:?}");
}

#[test]
fn sec_5_2_candidate_wins_with_a_majority_and_sends_noop() {
    let mut net = three();
    net.cut.insert((1, 3));
    net.cut.insert((3, 1));
    net.campaign(1);
    assert_eq!(
        role(&net, 1),
        Role::Leader,
        "votes of 1 and 2 are a majority"
    );
    let s = net.nodes[&1].raw.status();
    assert_eq!(s.commit, 1, "the no-op of the new term commits");
    assert_eq!(net.nodes[&2].applied.len(), 1);
    assert_eq!(net.nodes[&2].applied[0].kind, EntryKind::Normal);
    assert!(net.nodes[&2].applied[0].data.is_empty());
}

#[test]
fn sec_5_2_candidate_without_majority_stays_candidate() {
    let mut net = three();
    net.isolate(1);
    net.campaign(1);
    assert_eq!(role(&net, 1), Role::Candidate);
    assert_eq!(term(&net, 1), 1);
}

#[test]
fn sec_5_2_one_vote_per_term_first_come_first_served() {
    let mut net = three();
    net.isolate(1);
    net.campaign(1); // 1 is candidate in term 1, voted for itself
    let mut m = Message::new(MessageKind::Vote, 1);
    m.from = 2;
    m.term = 1;
    m.index = 10;
    m.log_term = 5;
    net.node(1).step(m).expect("step");
    let rd = net.node(1).ready();
    let resp = rd
        .persisted_messages
        .iter()
        .find(|m| m.kind == MessageKind::VoteResp)
        .expect("answer");
    assert!(resp.reject, "already voted for itself in term 1");
}

#[test]
fn sec_5_2_candidate_steps_down_on_append_from_leader_of_same_term() {
    let mut net = three();
    net.isolate(3);
    net.campaign(1);
    // 3 campaigns alone into term 1 too? It needs term 1 first: bump it.
    net.node(3).campaign().expect("campaign");
    net.flush();
    assert_eq!(role(&net, 3), Role::Candidate);
    assert_eq!(term(&net, 3), 1);
    net.heal();
    net.queue.clear();
    net.tick(1, 1);
    net.stabilize();
    assert_eq!(role(&net, 3), Role::Follower);
    assert_eq!(net.nodes[&3].raw.status().leader, Some(1));
}

#[test]
fn sec_5_2_higher_term_turns_leader_into_follower() {
    let mut net = three();
    net.campaign(1);
    net.isolate(1);
    net.campaign(2);
    assert_eq!(role(&net, 2), Role::Leader);
    assert_eq!(term(&net, 2), 2);
    net.heal();
    net.tick(2, 1);
    net.stabilize();
    assert_eq!(role(&net, 1), Role::Follower);
    assert_eq!(term(&net, 1), 2);
}

// ---- 5.3 Log replication ----

#[test]
fn sec_5_3_leader_replicates_and_commits_on_majority() {
    let mut net = three();
    net.campaign(1);
    net.isolate(3);
    let i = net.propose(1, b"a");
    assert_eq!(i, 2);
    assert_eq!(net.nodes[&1].raw.status().commit, 2);
    assert_eq!(net.applied_data(1), vec![b"a".to_vec()]);
    assert_eq!(net.applied_data(2), vec![b"a".to_vec()]);
    assert!(net.applied_data(3).is_empty());
    net.heal();
    net.tick(1, 1);
    net.stabilize();
    assert_eq!(net.applied_data(3), vec![b"a".to_vec()]);
}

#[test]
fn sec_5_3_follower_rejects_append_with_mismatched_prev_entry() {
    let mut net = three();
    net.campaign(1);
    let mut m = Message::new(MessageKind::App, 2);
    m.from = 1;
    m.term = 1;
    m.index = 5;
    m.log_term = 1;
    net.node(2).step(m).expect("step");
    let rd = net.node(2).ready();
    let r = &rd.persisted_messages[0];
    assert_eq!(
        (r.kind, r.reject, r.index, r.reject_hint),
        (MessageKind::AppResp, true, 5, 1)
    );
}

#[test]
fn sec_5_3_conflicting_follower_entries_are_overwritten() {
    let mut net = three();
    net.campaign(1);
    // 1 appends entries nobody else gets, then loses leadership.
    net.isolate(1);
    for d in [b"x1", b"x2", b"x3"] {
        net.node(1).propose(d.to_vec()).expect("propose");
    }
    net.stabilize();
    net.campaign(2);
    net.propose(2, b"y");
    net.heal();
    net.tick(2, 1);
    net.stabilize();
    for id in [1, 2, 3] {
        assert_eq!(net.applied_data(id), vec![b"y".to_vec()], "node {id}");
        assert_eq!(net.nodes[&id].wal.len(), 3, "node {id}: noop, noop, y");
    }
}

#[test]
fn sec_5_3_leader_backs_up_quickly_over_a_long_divergent_tail() {
    let mut net = three();
    net.campaign(1);
    net.isolate(1);
    for _ in 0..50 {
        net.node(1).propose(b"stale".to_vec()).expect("propose");
    }
    net.stabilize();
    net.campaign(2);
    net.heal();
    net.queue.clear();
    net.tick(2, 1);
    let delivered = net.stabilize();
    let rejections = delivered
        .iter()
        .filter(|m| m.kind == MessageKind::AppResp && m.reject)
        .count();
    assert!(
        rejections <= 2,
        "term-skipping hint, got {rejections} rejections"
    );
    assert_eq!(net.nodes[&1].wal.len(), 2);
}

// ---- 5.4 Safety ----

#[test]
fn sec_5_4_1_vote_denied_to_candidate_with_stale_log() {
    let mut net = three();
    net.campaign(1);
    net.isolate(3);
    net.propose(1, b"a");
    net.heal();
    net.node(3).campaign().expect("campaign");
    net.stabilize();
    assert_ne!(
        role(&net, 3),
        Role::Leader,
        "3 lacks the committed entry 'a'"
    );
    for _ in 0..100 {
        if !net.leaders().is_empty() {
            break;
        }
        net.tick_all(1);
        net.stabilize();
    }
    let leaders = net.leaders();
    assert!(leaders == vec![1] || leaders == vec![2], "{leaders:?}");
}

#[test]
fn sec_5_4_2_leader_commits_older_term_entries_only_with_a_current_term_entry() {
    // Figure 8: an entry from an older term stored on a majority is not
    // committed by counting; it commits together with a current-term entry.
    let c = Config {
        max_size_per_msg_bytes: 1, // one entry per append
        ..cfg()
    };
    let mut net = Net::new(&[1, 2, 3, 4, 5], &[], c);
    net.campaign(1);
    for id in [3, 4, 5] {
        net.isolate(id);
    }
    net.node(1).propose(b"a".to_vec()).expect("propose");
    net.stabilize(); // (2, term 1) only on 1 and 2
    net.heal();
    // 5 leads term 2 with votes of 3 and 4; its no-op reaches nobody.
    net.isolate(1);
    net.drop_kinds.insert(MessageKind::App);
    net.campaign(5);
    assert_eq!((role(&net, 5), term(&net, 5)), (Role::Leader, 2));
    // 1 crashes and returns; term 2 fails (3 and 4 voted for 5), term 3 wins.
    net.restart(1);
    net.heal();
    net.isolate(5);
    net.drop_kinds.insert(MessageKind::App);
    net.campaign(1);
    net.campaign(1);
    assert_eq!((role(&net, 1), term(&net, 1)), (Role::Leader, 3));
    net.drop_kinds.clear();
    net.isolate(4);
    net.tick(1, 1);
    let mut saw_old_entry_on_majority = false;
    for _ in 0..1000 {
        net.flush();
        let Some(m) = net.queue.pop_front() else {
            break;
        };
        net.deliver(m);
        let matched_2 = [2, 3]
            .iter()
            .filter(|id| net.nodes[id].wal.len() >= 2 && net.nodes[id].wal[1].term == 1)
            .count();
        let s = net.nodes[&1].raw.status();
        if matched_2 == 2 && s.progress[&3].match_index == 2 {
            saw_old_entry_on_majority = true;
        }
        assert_ne!(s.commit, 2, "(2, term 1) must not commit by counting");
    }
    assert!(saw_old_entry_on_majority);
    let s = net.nodes[&1].raw.status();
    assert_eq!(
        (s.commit, s.last_index),
        (3, 3),
        "the term-3 no-op commits 'a' with it"
    );
    assert_eq!(net.applied_data(1), vec![b"a".to_vec()]);
}

#[test]
fn sec_5_4_3_restarted_node_keeps_term_vote_and_log() {
    let mut net = three();
    net.campaign(1);
    net.propose(1, b"a");
    net.restart(2);
    let s = net.nodes[&2].raw.status();
    assert_eq!((s.term, s.vote, s.last_index, s.applied), (1, 1, 2, 2));
    net.tick(1, 1);
    net.propose(1, b"b");
    assert_eq!(net.applied_data(2), vec![b"a".to_vec(), b"b".to_vec()]);
}

// ---- 6 Cluster membership changes ----

#[test]
fn sec_6_add_learner_then_promote() {
    let mut net = three();
    net.campaign(1);
    net.add_node(4);
    let cc = ConfChange::AddLearner {
        id: 4,
        context: vec![],
    };
    net.node(1).propose_conf_change(cc).expect("propose");
    net.stabilize();
    net.tick(1, 1);
    net.stabilize();
    assert_eq!(net.nodes[&1].raw.status().conf_state.learners, vec![4]);
    assert_eq!(net.nodes[&4].applied.len(), 2, "learner got the log");
    assert_eq!(
        net.node(4).campaign(),
        Err(RaftError::CampaignRefused {
            reason: "not a voter, or installing a snapshot"
        })
    );
    net.node(1)
        .propose_conf_change(ConfChange::Promote { id: 4 })
        .expect("promote");
    net.stabilize();
    assert_eq!(
        net.nodes[&1].raw.status().conf_state.voters,
        vec![1, 2, 3, 4]
    );
    assert_eq!(
        net.nodes[&4].raw.status().conf_state.voters,
        vec![1, 2, 3, 4]
    );
}

#[test]
fn sec_6_one_membership_change_at_a_time() {
    let mut net = three();
    net.campaign(1);
    net.isolate(2);
    net.isolate(3);
    net.node(1)
        .propose_conf_change(ConfChange::AddLearner {
            id: 4,
            context: vec![],
        })
        .expect("first");
    let second = net
        .node(1)
        .propose_conf_change(ConfChange::Remove { id: 3 });
    assert!(
        matches!(second, Err(RaftError::ProposalDropped { .. })),
        "{second:?}"
    );
    net.heal();
    net.tick(1, 1);
    net.stabilize();
    net.node(1)
        .propose_conf_change(ConfChange::Remove { id: 3 })
        .expect("allowed once the first is applied");
    net.stabilize();
    assert_eq!(net.nodes[&1].raw.status().conf_state.voters, vec![1, 2]);
}

#[test]
fn sec_6_new_leader_accepts_no_conf_change_before_its_noop_applies() {
    let mut net = three();
    net.isolate(2);
    net.isolate(3);
    // Win with a prepared vote: drive 1 to leader, then check before commit.
    net.heal();
    net.node(1).campaign().expect("campaign");
    net.flush();
    let votes: Vec<Message> = net.queue.drain(..).collect();
    for m in votes {
        net.deliver(m);
    }
    net.flush();
    let resps: Vec<Message> = net.queue.drain(..).collect();
    for m in resps {
        net.deliver(m);
    }
    assert_eq!(role(&net, 1), Role::Leader);
    let r = net
        .node(1)
        .propose_conf_change(ConfChange::Remove { id: 3 });
    assert!(matches!(r, Err(RaftError::ProposalDropped { .. })), "{r:?}");
    net.stabilize();
    assert!(
        net.node(1)
            .propose_conf_change(ConfChange::Remove { id: 3 })
            .is_ok()
    );
}

#[test]
fn sec_6_removed_leader_steps_down_and_the_rest_elect() {
    let mut net = three();
    net.campaign(1);
    net.node(1)
        .propose_conf_change(ConfChange::Remove { id: 1 })
        .expect("propose");
    net.stabilize();
    assert_eq!(role(&net, 1), Role::Follower);
    net.isolate(1);
    for _ in 0..40 {
        net.tick_all(1);
        net.stabilize();
    }
    let leaders = net.leaders();
    assert_eq!(leaders.len(), 1);
    assert!(leaders[0] == 2 || leaders[0] == 3);
    assert_eq!(
        net.nodes[&leaders[0]].raw.status().conf_state.voters,
        vec![2, 3]
    );
}

// ---- 8 Client interaction: no-op on election, linearizable reads ----

#[test]
fn sec_8_read_index_needs_a_heartbeat_quorum() {
    let mut net = three();
    net.campaign(1);
    net.propose(1, b"a");
    net.isolate(1);
    net.node(1).read_index(7).expect("read");
    net.stabilize();
    assert!(
        net.nodes[&1].read_states.is_empty(),
        "no quorum confirmed leadership"
    );
    net.heal();
    net.tick(1, 1);
    net.stabilize();
    assert_eq!(
        net.nodes[&1].read_states,
        vec![corekv_raftcore::ReadState { ctx: 7, index: 2 }]
    );
}

#[test]
fn sec_8_read_index_waits_for_the_leaders_first_commit() {
    let mut net = three();
    net.node(1).campaign().expect("campaign");
    net.flush();
    let votes: Vec<Message> = net.queue.drain(..).collect();
    for m in votes {
        net.deliver(m);
    }
    net.flush();
    let resps: Vec<Message> = net.queue.drain(..).collect();
    for m in resps {
        net.deliver(m);
    }
    assert_eq!(role(&net, 1), Role::Leader);
    net.node(1).read_index(1).expect("read");
    net.flush();
    assert!(net.nodes[&1].read_states.is_empty());
    net.stabilize();
    assert_eq!(
        net.nodes[&1].read_states,
        vec![corekv_raftcore::ReadState { ctx: 1, index: 1 }]
    );
}

#[test]
fn sec_8_reads_batch_into_one_round_and_followers_forward() {
    let mut net = three();
    net.campaign(1);
    for ctx in 1..=5 {
        net.node(1).read_index(ctx).expect("read");
    }
    net.node(2).read_index(100).expect("follower read");
    let delivered = net.stabilize();
    let heartbeats = delivered
        .iter()
        .filter(|m| m.kind == MessageKind::Heartbeat)
        .count();
    assert!(
        heartbeats <= 4,
        "two rounds at most, got {heartbeats} heartbeats"
    );
    assert_eq!(net.nodes[&1].read_states.len(), 5);
    assert_eq!(
        net.nodes[&2].read_states,
        vec![corekv_raftcore::ReadState { ctx: 100, index: 1 }]
    );
}

#[test]
fn sec_8_proposal_on_follower_names_the_leader() {
    let mut net = three();
    net.campaign(1);
    assert_eq!(
        net.node(2).propose(b"x".to_vec()),
        Err(RaftError::NotLeader { leader: Some(1) })
    );
}

// ---- 7 Log compaction ----

fn compact(net: &mut Net, id: u64) {
    let n = net.nodes.get_mut(&id).expect("node");
    let applied = n.applied.len() as u64;
    let meta = corekv_raftcore::SnapshotMeta {
        index: applied,
        term: n.applied[applied as usize - 1].term,
        conf_state: n.conf.clone(),
    };
    let base = n.snap.as_ref().map_or(0, |s| s.index);
    n.wal.drain(..(applied - base) as usize);
    n.snap = Some(meta.clone());
    n.raw.on_snapshot_taken(meta);
}

#[test]
fn sec_7_lagging_follower_catches_up_from_a_snapshot() {
    let mut net = three();
    net.campaign(1);
    net.isolate(3);
    for i in 0..10 {
        net.propose(1, format!("e{i}").as_bytes());
    }
    compact(&mut net, 1);
    assert_eq!(net.nodes[&1].raw.status().first_index, 12);
    net.heal();
    net.tick(1, 1);
    let delivered = net.stabilize();
    assert!(delivered.iter().any(|m| m.kind == MessageKind::Snapshot));
    assert_eq!(net.applied_data(3), net.applied_data(1));
    assert_eq!(net.nodes[&3].raw.status().first_index, 12);
    net.propose(1, b"after");
    assert_eq!(
        net.applied_data(3).last().map(|d| d.as_slice()),
        Some(&b"after"[..])
    );
}

#[test]
fn sec_7_snapshot_message_may_carry_a_newer_image_than_the_compaction_point() {
    // Crate docs, Ready rule 10: the server may stream its current image and
    // rewrite the message's metadata to match it.
    let mut net = three();
    net.campaign(1);
    net.isolate(3);
    net.propose(1, b"a");
    net.propose(1, b"b");
    compact(&mut net, 1); // compacted at 3
    net.propose(1, b"c");
    net.propose(1, b"d"); // applied 5
    net.heal();
    net.queue.clear();
    net.tick(1, 1);
    let mut rewritten = false;
    for _ in 0..100 {
        net.flush();
        let Some(mut m) = net.queue.pop_front() else {
            break;
        };
        if m.kind == MessageKind::Snapshot {
            let meta = m.snapshot.as_mut().expect("meta");
            assert_eq!(meta.index, 3);
            meta.index = 5;
            meta.term = net.nodes[&1].raw.term(5).expect("term");
            rewritten = true;
        }
        net.deliver(m);
    }
    assert!(rewritten);
    net.stabilize();
    assert_eq!(net.nodes[&3].raw.status().first_index, 6);
    assert_eq!(net.applied_data(3), net.applied_data(1));
    net.propose(1, b"e");
    assert_eq!(net.applied_data(3).len(), 5);
}
