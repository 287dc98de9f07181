//! The control plane with real `shoald` processes on loopback: forming a cluster, joining
//! through seeds, leader failure and restarts, wiped and foreign nodes, redirects by the
//! applied table, damaged Raft logs, heartbeats under a saturated data path, and the
//! whole-cluster stop and start (saved buckets held until the table confirms them).

mod cluster_common;

use cluster_common::{
    dead_addr, key_owned_by, mc, run_to_exit, stat, workspace_binary, Cluster, Member, Text,
    BUCKETS, SETTLE,
};
use shoal_proto::cluster::RaftRole;
use shoal_proto::{Command, ReplyBody, Request, Status};
use shoal_tests::{wait_for, RawConn};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Buckets owned per node id, by a table.
fn owned(table: &shoal_proto::TableView) -> BTreeMap<[u8; 16], usize> {
    let mut counts = BTreeMap::new();
    for b in 0..BUCKETS {
        if let Some(p) = table.primary_of(b) {
            *counts.entry(p.id).or_insert(0) += 1;
        }
    }
    counts
}

#[test]
fn three_nodes_started_with_initial_nodes_form_one_cluster_and_agree_from_every_node() {
    let c = Cluster::start(3, &[]);
    let table = c.members[0].table().expect("table");
    assert_eq!(table.nodes.len(), 3);
    let counts = owned(&table);
    assert_eq!(counts.len(), 3, "{counts:?}");
    assert!(counts.values().all(|&n| n == 341 || n == 342), "{counts:?}");
    let statuses: Vec<_> = c
        .statuses()
        .into_iter()
        .map(|s| s.expect("status"))
        .collect();
    let roles: Vec<RaftRole> = statuses.iter().map(|s| s.role).collect();
    assert_eq!(
        roles.iter().filter(|r| **r == RaftRole::Leader).count(),
        1,
        "{roles:?}"
    );
    assert_eq!(
        roles.iter().filter(|r| **r == RaftRole::Follower).count(),
        2,
        "{roles:?}"
    );
    let cluster_ids: Vec<_> = statuses.iter().map(|s| s.cluster_id).collect();
    assert!(cluster_ids[0].is_some() && cluster_ids.iter().all(|c| *c == cluster_ids[0]));

    // shoal-ctl says the same from every node (apart from what it measures).
    let ctl = workspace_binary("shoal-ctl");
    let mut views = Vec::new();
    for m in &c.members {
        let out = std::process::Command::new(&ctl)
            .args(["--server", &m.native().to_string(), "status", "--json"])
            .output()
            .expect("run shoal-ctl");
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        let mut json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        json.as_object_mut().expect("object").remove("measured");
        // The lease left changes from one call to the next.
        for member in json["members"].as_array_mut().expect("members") {
            if let Some(status) = member["status"].as_object_mut() {
                status.remove("lease_left_ms");
            }
        }
        views.push(json);
    }
    assert!(views.iter().all(|v| *v == views[0]), "{views:#?}");
}

#[test]
fn five_nodes_join_one_by_one_through_different_seeds_some_of_them_down() {
    let first = Member::start("n0", &[]);
    let mut members = vec![first];
    for i in 1..5 {
        let seeds = format!("{},{}", dead_addr(), members[i - 1].peer());
        members.push(Member::start(&format!("n{i}"), &["--join", &seeds]));
    }
    let c = Cluster { members };
    assert!(c.wait_settled(5, SETTLE), "{:?}", c.statuses());
    // Five members: five voters (one leader, four followers).
    assert!(
        wait_for(SETTLE, || {
            let roles: Vec<_> = c.statuses().into_iter().flatten().map(|s| s.role).collect();
            roles.len() == 5 && roles.iter().filter(|r| **r == RaftRole::Follower).count() == 4
        }),
        "{:?}",
        c.statuses()
    );
    // Nodes that join later get their share: buckets move until the counts differ by at
    // most one.
    assert!(
        wait_for(SETTLE, || c.members[4].table().is_some_and(|t| {
            let counts = t.owned_counts();
            counts.len() == 5 && counts.iter().all(|&n| n == 204 || n == 205)
        })),
        "{:?}",
        c.members[4].table().map(|t| t.owned_counts())
    );
}

#[test]
fn a_seed_list_where_nothing_answers_exits_with_the_join_code_within_the_timeout() {
    let seeds = format!("{},{}", dead_addr(), dead_addr());
    let (code, stderr, took) = run_to_exit(&["--join", &seeds, "--join-timeout", "2s"]);
    assert_eq!(code, 6, "{stderr}");
    assert!(stderr.contains("cannot join the cluster"), "{stderr}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
}

#[test]
fn killing_the_leader_elects_another_and_the_old_one_rejoins_as_the_same_member() {
    let mut c = Cluster::start(3, &[]);
    let old = c.leader().expect("a leader");
    let old_id = c.members[old].status().expect("status").node_id;
    c.members[old].proc.kill();
    let killed = Instant::now();
    let others: Vec<usize> = (0..3).filter(|i| *i != old).collect();
    let new_leader = || {
        others.iter().any(|i| {
            c.members[*i]
                .status()
                .is_some_and(|s| s.role == RaftRole::Leader)
        })
    };
    assert!(
        wait_for(Duration::from_secs(5), new_leader),
        "no new leader within 5 s of the kill"
    );
    eprintln!("new leader after {:?}", killed.elapsed());

    c.members[old].proc.restart();
    assert!(c.wait_settled(3, SETTLE), "{:?}", c.statuses());
    let back = c.members[old].status().expect("status");
    assert_eq!(back.node_id, old_id, "the same member came back");
    assert_eq!(c.members[0].table().expect("table").nodes.len(), 3);
}

/// The `loaded_items` statistic of `member` (native STATS).
fn loaded_items(member: &Member) -> u64 {
    let stats = cluster_common::client(member.native())
        .expect("client")
        .stats("")
        .expect("stats");
    stats
        .iter()
        .find(|(name, _)| name == "loaded_items")
        .and_then(|(_, v)| v.parse().ok())
        .expect("loaded_items")
}

/// `shoal-ctl stop-cluster` through member `via`, then waits until every member exited 0.
fn stop_cluster(c: &mut Cluster, via: usize) {
    let out = std::process::Command::new(workspace_binary("shoal-ctl"))
        .args([
            "--server",
            &c.members[via].native().to_string(),
            "stop-cluster",
        ])
        .output()
        .expect("shoal-ctl");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    every_member_exits_zero(c, Duration::from_secs(30));
}

/// Waits until every member of `c` exited, each with code 0, within `limit`.
fn every_member_exits_zero(c: &mut Cluster, limit: Duration) {
    for m in &mut c.members {
        let status = m.proc.wait_exit(limit).expect("the node stopped");
        assert_eq!(status.code(), Some(0));
    }
}

#[test]
fn stop_cluster_saves_every_node_and_the_restart_brings_back_table_epochs_and_data() {
    let mut c = Cluster::start(3, &["--join-timeout", "3s", "--forward-timeout", "1s"]);
    let before = c.members[0].table().expect("table");
    let cluster = c.members[0].status().expect("status").cluster_id;
    let writer = cluster_common::client(c.members[0].native()).expect("client");
    for i in 0..2000 {
        writer
            .set(format!("s{i}").as_bytes(), format!("v{i}").as_bytes(), 0, 0)
            .expect("set");
    }
    let own = key_owned_by(&before, &c.members[0], "own");
    writer.set(own.as_bytes(), b"saved", 0, 0).expect("set");
    stop_cluster(&mut c, 1);

    // One node alone holds its saved buckets until the others are back: never a miss for
    // data on disk.
    c.members[0].proc.restart();
    let mut text = Text::connect(mc(&c.members[0]));
    let alone = text.get(&own);
    assert!(
        alone.as_ref().is_err_and(|e| e.starts_with("SERVER_ERROR")),
        "a lone node of a stopped cluster answered {alone:?}"
    );
    assert!(
        stat(mc(&c.members[0]), "curr_items") > 0,
        "it loaded its savefile"
    );
    for m in &mut c.members[1..] {
        m.proc.restart();
    }
    assert!(c.wait_settled(3, SETTLE), "{:?}", c.statuses());
    let after = c.members[0].table().expect("table");
    assert_eq!(
        after.nodes, before.nodes,
        "the same members, all active again"
    );
    assert_eq!(after.buckets, before.buckets, "owners and epochs come back");
    assert_eq!(c.members[1].status().expect("status").cluster_id, cluster);
    assert!(
        wait_for(SETTLE, || text.get(&own) == Ok(Some("saved".to_string()))),
        "the held bucket is served once every member is back"
    );
    let reader = cluster_common::client(c.members[2].native()).expect("client");
    for i in 0..2000 {
        let got = reader.get(format!("s{i}").as_bytes()).expect("get");
        assert_eq!(
            got.map(|v| v.value.to_vec()),
            Some(format!("v{i}").into_bytes())
        );
    }
}

#[test]
fn the_last_node_stopped_while_others_hand_off_to_it_loses_no_key() {
    // Two nodes stop and hand their buckets to the third; it is stopped while copies to it
    // are under way. It marks itself draining before it saves, so no switchover makes it the
    // owner of a bucket its savefile misses, and the others keep (and save) what they
    // could not hand off.
    let mut c = Cluster::start(3, &["--join-timeout", "3s"]);
    let writer = cluster_common::client(c.members[0].native()).expect("client");
    let value = |i: usize| format!("{i:01000}");
    for i in 0..3000 {
        writer
            .set(format!("t{i}").as_bytes(), value(i).as_bytes(), 0, 0)
            .expect("set");
    }
    c.members[0].proc.signal("TERM");
    c.members[1].proc.signal("TERM");
    let copying = || {
        c.members[..2]
            .iter()
            .any(|m| m.status().is_some_and(|s| !s.moves.is_empty()))
    };
    assert!(wait_for(SETTLE, copying), "no hand-off began");
    c.members[2].proc.signal("TERM");
    every_member_exits_zero(&mut c, Duration::from_secs(60));
    // Whoever left the cluster rejoins through the others; whoever stayed comes back.
    for m in &mut c.members {
        m.proc.restart();
    }
    let reader = cluster_common::client(c.members[2].native()).expect("client");
    let all_back = || {
        (0..3000).all(|i| {
            reader
                .get(format!("t{i}").as_bytes())
                .is_ok_and(|v| v.is_some_and(|v| v.value == value(i).as_bytes()))
        })
    };
    assert!(wait_for(SETTLE, all_back), "every key comes back");
}

#[test]
fn a_saved_bucket_the_table_has_moved_past_is_dropped_at_start_not_served() {
    let mut c = Cluster::start(2, &["--join-timeout", "3s"]);
    let table = c.members[0].table().expect("table");
    let key = key_owned_by(&table, &c.members[0], "old");
    let bucket = shoal_proto::hash::bucket_of(key.as_bytes(), BUCKETS);
    let client = cluster_common::client(c.members[0].native()).expect("client");
    client.set(key.as_bytes(), b"v1", 0, 0).expect("set");
    stop_cluster(&mut c, 0);
    let file = c.members[0].dir.0.join("savefile");
    let old = std::fs::read(&file).expect("member 0 saved");
    for m in &mut c.members {
        m.proc.restart();
    }
    assert!(c.wait_settled(2, SETTLE), "{:?}", c.statuses());

    // The bucket moves to member 1 and changes there; member 0's old file still names it.
    let target = c.members[1].status().expect("status").node_id;
    let to: String = target.iter().map(|b| format!("{b:02x}")).collect();
    let out = std::process::Command::new(workspace_binary("shoal-ctl"))
        .args(["--server", &c.members[0].native().to_string()])
        .args(["move", &bucket.to_string(), "--to", &to])
        .output()
        .expect("shoal-ctl");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let moved = || {
        c.members[0]
            .table()
            .is_some_and(|t| t.primary_of(bucket).is_some_and(|p| p.id == target))
    };
    assert!(wait_for(SETTLE, moved), "the bucket moved");
    let client = cluster_common::client(c.members[1].native()).expect("client");
    client.set(key.as_bytes(), b"v2", 0, 0).expect("set");
    stop_cluster(&mut c, 1);
    std::fs::write(&file, &old).expect("put the old savefile back");

    for m in &mut c.members {
        m.proc.restart();
    }
    assert!(c.wait_settled(2, SETTLE), "{:?}", c.statuses());
    assert_eq!(loaded_items(&c.members[0]), 1, "the old file was loaded");
    assert!(
        wait_for(SETTLE, || stat(mc(&c.members[0]), "curr_items") == 0),
        "member 0 dropped the bucket the table moved past"
    );
    for m in &c.members {
        assert_eq!(
            Text::connect(mc(m)).get(&key),
            Ok(Some("v2".to_string())),
            "every node serves the moved bucket's last write"
        );
    }
}

#[test]
fn a_wiped_data_directory_joins_as_a_new_member_and_the_old_id_is_removed() {
    let mut c = Cluster::start(3, &[]);
    let old_id = c.members[2].status().expect("status").node_id;
    c.members[2].proc.kill();
    c.members[2].wipe();
    c.members[2].proc.restart();
    let new_id = c.members[2].status().expect("status").node_id;
    assert_ne!(new_id, old_id);
    assert!(c.wait_settled(3, SETTLE), "{:?}", c.statuses());
    let table = c.members[0].table().expect("table");
    let ids: Vec<[u8; 16]> = table.nodes.iter().map(|n| n.id).collect();
    assert!(ids.contains(&new_id) && !ids.contains(&old_id), "{ids:?}");
}

#[test]
fn a_node_of_another_cluster_is_refused() {
    let a = Member::start("a", &[]);
    let mut b = Member::start("b", &[]);
    let b_dir = b.dir.arg();
    b.proc.kill();
    let (code, stderr, _) = run_to_exit(&[
        "--data-dir",
        &b_dir,
        "--join",
        &a.peer(),
        "--join-timeout",
        "5s",
    ]);
    assert_eq!(code, 6, "{stderr}");
    assert!(stderr.contains("cluster"), "{stderr}");
    assert_eq!(a.table().expect("table").nodes.len(), 1);
}

#[test]
fn native_requests_to_the_wrong_node_get_not_my_bucket_with_the_owner_and_epoch() {
    let c = Cluster::start(3, &[]);
    let table = c.members[0].table().expect("table");
    let statuses: Vec<_> = c
        .statuses()
        .into_iter()
        .map(|s| s.expect("status"))
        .collect();
    for n in 0..30 {
        let key = format!("key-{n}");
        let bucket = shoal_proto::hash::bucket_of(key.as_bytes(), BUCKETS);
        let owner = table.primary_of(bucket).expect("owner");
        let epoch = table.buckets[bucket as usize].epoch;
        let wrong = statuses
            .iter()
            .position(|s| s.node_id != owner.id)
            .expect("another node");
        let mut conn = RawConn::hello(c.members[wrong].native());
        conn.send(&Request {
            id: 7,
            command: Command::Store {
                mode: shoal_proto::StoreMode::Set,
                key: key.as_bytes(),
                value: b"v",
                flags: 0,
                ttl: 0,
            },
        });
        let (status, redirect) = conn.recv(|r| {
            let redirect = match &r.body {
                ReplyBody::Redirect(nmb) => Some((
                    nmb.bucket,
                    nmb.epoch,
                    nmb.owner,
                    String::from_utf8_lossy(nmb.addr).into_owned(),
                )),
                _ => None,
            };
            (r.status, redirect)
        });
        assert_eq!(status, Status::NotMyBucket);
        assert_eq!(
            redirect,
            Some((bucket, epoch, owner.id, owner.native.clone())),
            "{key}"
        );
    }
}

/// Kills member `i` of a settled cluster and returns its Raft log's path.
fn killed_log(c: &mut Cluster, i: usize) -> std::path::PathBuf {
    c.members[i].proc.kill();
    c.members[i].dir.0.join("raft").join("log")
}

#[test]
fn a_torn_raft_log_tail_is_cut_and_the_node_rejoins() {
    let mut c = Cluster::start(3, &[]);
    let id = c.members[1].status().expect("status").node_id;
    let log = killed_log(&mut c, 1);
    // Half a record: a length that promises more bytes than follow.
    let mut bytes = std::fs::read(&log).expect("log");
    bytes.extend_from_slice(&[0, 0, 1, 0, 0xde, 0xad, 0xbe, 0xef, b'{', b'"']);
    std::fs::write(&log, bytes).expect("write log");
    c.members[1].proc.restart();
    assert!(c.wait_settled(3, SETTLE), "{:?}", c.statuses());
    assert_eq!(c.members[1].status().expect("status").node_id, id);
}

#[test]
fn a_damaged_record_in_the_middle_of_the_raft_log_refuses_the_start_with_exit_code_4() {
    let mut c = Cluster::start(3, &[]);
    let dir = c.members[1].dir.arg();
    let log = killed_log(&mut c, 1);
    let mut bytes = std::fs::read(&log).expect("log");
    assert!(bytes.len() > 200, "a log with several records");
    // Inside the first record's payload, with valid records after it.
    bytes[12] ^= 0x55;
    std::fs::write(&log, bytes).expect("write log");
    let (code, stderr, _) = run_to_exit(&["--data-dir", &dir]);
    assert_eq!(code, 4, "{stderr}");
    assert!(stderr.contains("damaged"), "{stderr}");
}

/// The leader's data path saturated by `shoal-bench` (16 connections, pipeline 16) for
/// `SHOAL_SATURATE_SECS` (default 20; 60 for the acceptance run by hand): no election.
#[test]
fn heartbeats_survive_a_data_path_at_full_cpu() {
    let secs: u64 = std::env::var("SHOAL_SATURATE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let c = Cluster::start(3, &[]);
    let leader = c.leader().expect("leader");
    let before: Vec<_> = c
        .statuses()
        .into_iter()
        .map(|s| s.expect("status"))
        .collect();
    let bench = std::process::Command::new(workspace_binary("shoal-bench"))
        .args([
            "run",
            "--protocol",
            "native",
            "--addr",
            &c.members[leader].native().to_string(),
            "--connections",
            "16",
            "--pipeline",
            "16",
            "--keys",
            "10000",
            "--duration",
            &secs.to_string(),
        ])
        .output()
        .expect("run shoal-bench");
    assert!(bench.status.success(), "{bench:?}");
    let after: Vec<_> = c
        .statuses()
        .into_iter()
        .map(|s| s.expect("status"))
        .collect();
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(
            (a.term, a.leader),
            (b.term, b.leader),
            "no election while the data path was saturated"
        );
    }
}

#[test]
fn a_voter_that_stops_gracefully_gives_its_vote_to_another_member_first() {
    let mut c = Cluster::start(3, &[]);
    let seed = c.members[0].peer();
    c.members
        .push(Member::start("node3", &["--join", seed.as_str()]));
    assert!(c.wait_settled(4, SETTLE), "{:?}", c.statuses());
    let roles = |c: &Cluster| -> Vec<Option<RaftRole>> {
        c.statuses()
            .into_iter()
            .map(|s| s.map(|s| s.role))
            .collect()
    };
    assert!(
        wait_for(SETTLE, || roles(&c).contains(&Some(RaftRole::Learner))),
        "three voters and a learner: {:?}",
        roles(&c)
    );
    let learner = roles(&c)
        .iter()
        .position(|r| *r == Some(RaftRole::Learner))
        .expect("learner");
    let leader = c.leader().expect("leader");
    let stopping = (0..4)
        .find(|i| *i != learner && *i != leader)
        .expect("a follower");
    let gone = c.members[stopping].status().expect("status").node_id;
    let status = c.members[stopping].proc.terminate(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0));
    // The former learner votes now: the three running members are a leader and two
    // followers, and the stopped member handed its buckets off and left.
    let running: Vec<usize> = (0..4).filter(|i| *i != stopping).collect();
    let voting = || {
        running.iter().all(|i| {
            c.members[*i]
                .status()
                .is_some_and(|s| matches!(s.role, RaftRole::Leader | RaftRole::Follower))
        })
    };
    assert!(wait_for(SETTLE, voting), "{:?}", roles(&c));
    let table = c.members[leader].table().expect("table");
    let ids: Vec<[u8; 16]> = table.nodes.iter().map(|n| n.id).collect();
    assert!(ids.len() == 3 && !ids.contains(&gone), "{ids:?}");
    // Back again: a new member, active, and a learner (three voters are enough).
    c.members[stopping].proc.restart();
    assert!(
        wait_for(SETTLE, || c.members[leader].table().is_some_and(|t| t
            .nodes
            .iter()
            .all(|n| n.state == shoal_proto::cluster::NodeState::Active))),
        "{:?}",
        c.members[leader].table()
    );
    assert!(c.wait_settled(4, SETTLE), "{:?}", c.statuses());
}
