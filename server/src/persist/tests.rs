//! Save/load orchestration tests on a real directory and a store with a manual clock.

use super::savefile::SavefileWriter;
use super::*;
use crate::datadir::DataDirError;
use crate::store::ItemRecord;
use crate::store::{ManualClock, SetMode, StoreConfig};
use crate::testing::TempDir;
use std::fs;

const WALL: u64 = 1_700_000_000;

fn store() -> (Store, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(WALL));
    let config = StoreConfig {
        memory: 8 << 20,
        page_size: 64 << 10,
        buckets: 64,
        max_value: 64 << 10,
        ..StoreConfig::default()
    };
    (Store::with_clock(config, clock.clone()).unwrap(), clock)
}

fn config(dir: &Path) -> PersistConfig {
    PersistConfig {
        data_dir: Some(dir.to_path_buf()),
        ..PersistConfig::default()
    }
}

fn value_of(store: &Store, key: &[u8]) -> Option<(Vec<u8>, u32, u64)> {
    store.get(key, |i| (i.value_vec(), i.flags(), i.hash()))
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn save_then_open_loads_everything_and_sets_the_file_aside() {
    let dir = TempDir::new("roundtrip");
    let (a, clock_a) = store();
    let p = Persistence::open(&config(&dir.0), &a, clock_a.clone()).unwrap();
    for i in 0..500u32 {
        let key = format!("k{i}");
        let value = vec![i as u8; (i as usize * 37) % 5000];
        let ttl = match i % 3 {
            0 => 0,
            1 => 5,
            _ => 500,
        };
        a.set(SetMode::Set, key.as_bytes(), &value, i, ttl).unwrap();
    }
    a.delete(b"k7", None).unwrap();
    let summary = p.save(&a, None, None, false).unwrap();
    assert_eq!(summary.items, 499);
    assert!(dir.0.join(SAVEFILE).exists());

    // The node is "down" 10 s: the 5 s keys expire, the 500 s keys keep 490 s.
    let clock_b = Arc::new(ManualClock::new(WALL + 10));
    let b = Store::with_clock(a.config().clone(), clock_b.clone()).unwrap();
    let first_id = p.node_id();
    drop(p); // releases the data directory's lock, as the first process ending would
    let p2 = Persistence::open(&config(&dir.0), &b, clock_b.clone()).unwrap();
    assert_eq!(
        p2.node_id(),
        first_id,
        "the node id is kept in the directory"
    );
    for i in 0..500u32 {
        let key = format!("k{i}");
        let got = value_of(&b, key.as_bytes());
        if i == 7 || i % 3 == 1 {
            assert_eq!(got, None, "{key} must not come back");
        } else {
            assert_eq!(got, value_of(&a, key.as_bytes()), "{key}");
        }
    }
    // Remaining TTL of a 500 s key: 490 s, as a new save shows.
    let saved = b
        .snapshot_bucket(b.bucket_of(b"k2"))
        .find(|i| i.key == b"k2");
    assert_eq!(saved.map(|i| i.expires_at), Some(WALL + 500));
    // Bucket sequence numbers and hashes are the ones written.
    let seq_a = a
        .snapshot_bucket(a.bucket_of(b"k3"))
        .find(|i| i.key == b"k3");
    let seq_b = b
        .snapshot_bucket(b.bucket_of(b"k3"))
        .find(|i| i.key == b"k3");
    assert_eq!(seq_a, seq_b);
    // The savefile was set aside and is not loaded again.
    let files = names(&dir.0);
    assert!(!files.contains(&SAVEFILE.to_string()), "{files:?}");
    assert!(
        files.iter().any(|f| f.starts_with("savefile.loaded-")),
        "{files:?}"
    );
}

#[test]
fn at_most_two_loaded_savefiles_are_kept() {
    let dir = TempDir::new("keep");
    for round in 0..4u64 {
        let (s, _) = store();
        let clock = Arc::new(ManualClock::new(WALL + round));
        let p = Persistence::open(&config(&dir.0), &s, clock).unwrap();
        s.set(SetMode::Set, b"k", b"v", 0, 0).unwrap();
        p.save(&s, None, None, true).unwrap();
    }
    let (s, clock) = store();
    Persistence::open(&config(&dir.0), &s, clock).unwrap();
    let loaded = names(&dir.0)
        .into_iter()
        .filter(|f| f.starts_with("savefile.loaded-"))
        .count();
    assert_eq!(loaded, KEEP_ASIDE);
}

#[test]
fn an_interrupted_save_is_removed_at_start_and_never_loaded() {
    let dir = TempDir::new("tmp");
    fs::write(dir.0.join(SAVEFILE_TMP), b"SHOALSAV half a file").unwrap();
    let (s, clock) = store();
    Persistence::open(&config(&dir.0), &s, clock).unwrap();
    assert_eq!(s.stats().items, 0);
    assert!(!dir.0.join(SAVEFILE_TMP).exists());
}

#[test]
fn a_cancelled_save_writes_nothing_and_keeps_the_previous_savefile() {
    let dir = TempDir::new("cancel");
    let (s, clock) = store();
    let p = Persistence::open(&config(&dir.0), &s, clock).unwrap();
    s.set(SetMode::Set, b"old", b"1", 0, 0).unwrap();
    p.save(&s, None, None, true).unwrap();
    let before = fs::read(dir.0.join(SAVEFILE)).unwrap();
    s.set(SetMode::Set, b"new", b"2", 0, 0).unwrap();
    let past = Instant::now();
    assert!(matches!(
        p.save(&s, None, Some(past), true),
        Err(PersistError::Cancelled)
    ));
    assert_eq!(fs::read(dir.0.join(SAVEFILE)).unwrap(), before);
    assert!(!dir.0.join(SAVEFILE_TMP).exists());
}

#[test]
fn a_second_open_of_the_same_directory_is_refused_while_the_first_lives() {
    let dir = TempDir::new("lock");
    let (s, clock) = store();
    let p = Persistence::open(&config(&dir.0), &s, clock.clone()).unwrap();
    let err = Persistence::open(&config(&dir.0), &s, clock.clone()).unwrap_err();
    assert!(
        matches!(err, PersistError::DataDir(DataDirError::InUse { .. })),
        "{err}"
    );
    drop(p);
    Persistence::open(&config(&dir.0), &s, clock).unwrap();
}

#[test]
fn a_damaged_savefile_is_refused_or_discarded_when_asked() {
    let dir = TempDir::new("damaged");
    let (s, clock) = store();
    let p = Persistence::open(&config(&dir.0), &s, clock).unwrap();
    for i in 0..100u32 {
        s.set(SetMode::Set, format!("k{i}").as_bytes(), b"value", 0, 0)
            .unwrap();
    }
    p.save(&s, None, None, true).unwrap();
    drop(p);
    let path = dir.0.join(SAVEFILE);
    let mut bytes = fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    fs::write(&path, &bytes).unwrap();

    let (t, clock) = store();
    let err = Persistence::open(&config(&dir.0), &t, clock.clone()).unwrap_err();
    assert!(err.is_damaged_savefile(), "{err}");
    assert!(err.to_string().contains("--discard-bad-savefile"), "{err}");
    assert_eq!(t.stats().items, 0, "nothing of a damaged file is kept");
    assert!(path.exists(), "a refused savefile stays where it is");

    let discard = PersistConfig {
        discard_bad_savefile: true,
        ..config(&dir.0)
    };
    Persistence::open(&discard, &t, clock).unwrap();
    assert_eq!(t.stats().items, 0);
    assert!(!path.exists());
    assert!(names(&dir.0).iter().any(|f| f.starts_with("savefile.bad-")));
}

#[test]
fn zero_length_savefile_is_refused_with_a_clear_message() {
    let dir = TempDir::new("zero");
    fs::write(dir.0.join(SAVEFILE), b"").unwrap();
    let (s, clock) = store();
    let err = Persistence::open(&config(&dir.0), &s, clock).unwrap_err();
    assert!(err.to_string().contains("empty (0 bytes)"), "{err}");
}

#[test]
fn duplicate_keys_in_a_file_last_record_wins() {
    let dir = TempDir::new("dup");
    let (s, clock) = store();
    let bucket = s.bucket_of(b"dup");
    let header = Header::new([1; 16], WALL, s.buckets());
    let mut w = SavefileWriter::new(Vec::new(), &header).unwrap();
    w.begin_bucket(bucket, 2).unwrap();
    for (value, seq) in [(&b"first"[..], 1), (&b"second"[..], 2)] {
        w.push(&ItemRecord {
            key: b"dup",
            value,
            flags: 0,
            expires_at: 0,
            hash: shoal_proto::hash::value_hash(value),
            seq,
        })
        .unwrap();
    }
    let (bytes, _) = w.finish().unwrap();
    fs::write(dir.0.join(SAVEFILE), bytes).unwrap();
    Persistence::open(&config(&dir.0), &s, clock).unwrap();
    assert_eq!(value_of(&s, b"dup").map(|v| v.0), Some(b"second".to_vec()));
}

#[test]
fn without_a_data_dir_nothing_is_saved() {
    let (s, clock) = store();
    let p = Persistence::open(&PersistConfig::default(), &s, clock).unwrap();
    assert!(!p.saves_on_stop(false));
    assert!(matches!(
        p.save(&s, None, None, true),
        Err(PersistError::Disabled)
    ));
    assert!(matches!(
        p.set_mode(PersistMode::Always),
        Err(PersistError::Disabled)
    ));
    assert_eq!(p.stats(), vec![("persist", "off".to_string())]);
}

#[test]
fn a_bad_node_id_file_is_refused() {
    let dir = TempDir::new("nodeid");
    fs::write(dir.0.join(NODE_ID_FILE), b"not an id\n").unwrap();
    let (s, clock) = store();
    let err = Persistence::open(&config(&dir.0), &s, clock).unwrap_err();
    assert!(
        matches!(err, PersistError::DataDir(DataDirError::BadNodeId { .. })),
        "{err}"
    );
}

#[test]
fn without_a_data_dir_each_node_gets_a_random_id() {
    let (s, clock) = store();
    let a = Persistence::open(&PersistConfig::default(), &s, clock.clone()).unwrap();
    let b = Persistence::open(&PersistConfig::default(), &s, clock).unwrap();
    let c = Persistence::disabled();
    for p in [&a, &b, &c] {
        assert_ne!(p.node_id(), NodeId::default(), "never all zeros");
    }
    assert_ne!(a.node_id(), b.node_id());
    assert_ne!(a.node_id(), c.node_id());
}

#[test]
fn bucket_seqs_survive_a_restart_even_when_every_item_was_deleted() {
    let dir = TempDir::new("seqs");
    let (a, clock_a) = store();
    let p = Persistence::open(&config(&dir.0), &a, clock_a).unwrap();
    let emptied = a.bucket_of(b"gone");
    let kept = a.bucket_of(b"kept");
    for i in 0..5u32 {
        a.set(SetMode::Set, b"gone", &i.to_be_bytes(), 0, 0)
            .unwrap();
        a.set(SetMode::Set, b"kept", &i.to_be_bytes(), 0, 0)
            .unwrap();
    }
    a.delete(b"gone", None).unwrap();
    let seq_emptied = a.bucket_stats(emptied).seq;
    let seq_kept = a.bucket_stats(kept).seq;
    assert_eq!(a.bucket_stats(emptied).items, 0);
    p.save(&a, None, None, false).unwrap();
    drop(p);

    let (b, clock_b) = store();
    let _p2 = Persistence::open(&config(&dir.0), &b, clock_b).unwrap();
    assert_eq!(b.bucket_stats(emptied).seq, seq_emptied);
    assert_eq!(b.bucket_stats(kept).seq, seq_kept);
    let next = b.set(SetMode::Set, b"gone", b"new", 0, 0).unwrap();
    assert_eq!(next.seq, seq_emptied + 1, "no seq is given twice");
}

#[test]
fn hidden_buckets_are_not_saved() {
    let dir = TempDir::new("hidden");
    let (a, clock_a) = store();
    let p = Persistence::open(&config(&dir.0), &a, clock_a).unwrap();
    a.set(SetMode::Set, b"served", b"1", 0, 0).unwrap();
    a.set(SetMode::Set, b"copying", b"2", 0, 0).unwrap();
    let hidden = a.bucket_of(b"copying");
    assert_ne!(hidden, a.bucket_of(b"served"));
    a.hide_bucket(hidden);
    let summary = p.save(&a, None, None, false).unwrap();
    assert_eq!(summary.items, 1);
    drop(p);

    let (b, clock_b) = store();
    let _p2 = Persistence::open(&config(&dir.0), &b, clock_b).unwrap();
    assert_eq!(value_of(&b, b"served").map(|v| v.0), Some(b"1".to_vec()));
    assert_eq!(value_of(&b, b"copying"), None);
    assert_eq!(
        b.bucket_stats(hidden).seq,
        0,
        "a copy's seq is its source's, not saved"
    );
}

#[test]
fn a_cluster_node_saves_the_buckets_it_serves_with_their_epochs() {
    let dir = TempDir::new("owned");
    let (a, clock_a) = store();
    let p = Persistence::open(&config(&dir.0), &a, clock_a).unwrap();
    assert_eq!(p.take_loaded(), Loaded::Nothing, "no savefile at first");
    a.set(SetMode::Set, b"mine", b"1", 0, 0).unwrap();
    a.set(SetMode::Set, b"left over", b"2", 0, 0).unwrap();
    let (mine, other) = (a.bucket_of(b"mine"), a.bucket_of(b"left over"));
    assert_ne!(mine, other);
    let empty = (0..a.buckets()).find(|&b| b != mine && b != other).unwrap();
    let mut buckets = vec![(mine, 7), (empty, 9)];
    buckets.sort_unstable();
    let owned = Owned {
        cluster: [3; 16],
        buckets,
    };
    let summary = p.save(&a, Some(&owned), None, false).unwrap();
    assert_eq!(summary.items, 1, "only the buckets served are saved");
    drop(p);

    let (b, clock_b) = store();
    let p2 = Persistence::open(&config(&dir.0), &b, clock_b).unwrap();
    assert_eq!(value_of(&b, b"mine").map(|v| v.0), Some(b"1".to_vec()));
    assert_eq!(value_of(&b, b"left over"), None);
    assert_eq!(p2.take_loaded(), Loaded::Owned(owned));
    assert_eq!(p2.take_loaded(), Loaded::Nothing, "taken once");
    p2.save(&b, None, None, false).unwrap();
    drop(p2);
    let (c, clock_c) = store();
    let p3 = Persistence::open(&config(&dir.0), &c, clock_c).unwrap();
    assert_eq!(p3.take_loaded(), Loaded::Unscoped);
}

#[test]
fn a_savefile_of_many_write_buffers_and_an_unaligned_length_round_trips() {
    // About 20 MiB: five of the save's 4 MiB buffers, written by two threads at their
    // offsets, the last one partial (padded for direct I/O, then cut back), and read back
    // through the loader's read-ahead thread.
    let dir = TempDir::new("multibuffer");
    let clock = Arc::new(ManualClock::new(WALL));
    let config_a = StoreConfig {
        memory: 64 << 20,
        buckets: 64,
        ..StoreConfig::default()
    };
    let a = Store::with_clock(config_a.clone(), clock.clone()).unwrap();
    let p = Persistence::open(&config(&dir.0), &a, clock.clone()).unwrap();
    let mut total = 0;
    for i in 0..5_000u32 {
        let len = 1_000 + (i as usize * 7_919) % 7_000;
        total += len;
        let value: Vec<u8> = (0..len).map(|j| (i as usize + j) as u8).collect();
        a.set(SetMode::Set, format!("key{i}").as_bytes(), &value, i, 0)
            .unwrap();
    }
    assert!(total > 16 << 20, "{total}");
    let summary = p.save(&a, None, None, false).unwrap();
    assert_eq!(summary.items, 5_000);
    let len = fs::metadata(dir.0.join(SAVEFILE)).unwrap().len();
    assert_eq!(
        len, summary.bytes,
        "the file is cut back to what was written"
    );
    assert!(
        !len.is_multiple_of(4096),
        "the test wants a length off the alignment"
    );
    drop(p);
    let b = Store::with_clock(config_a, clock.clone()).unwrap();
    let p2 = Persistence::open(&config(&dir.0), &b, clock).unwrap();
    assert_eq!(b.stats().items, 5_000);
    for i in 0..5_000u32 {
        let key = format!("key{i}");
        assert_eq!(
            value_of(&b, key.as_bytes()),
            value_of(&a, key.as_bytes()),
            "{key}"
        );
    }
    drop(p2);
}

#[test]
fn a_save_writes_the_same_bytes_as_pushing_each_snapshot_item() {
    // The save encodes items straight from the store's memory, a second thread writing the
    // blocks; the file must be exactly what the record-by-record writer makes of the same
    // snapshots: chained values (over the 16 KiB chunk), buckets of several blocks, expiry.
    let dir = TempDir::new("samebytes");
    let clock = Arc::new(ManualClock::new(WALL));
    let config_a = StoreConfig {
        memory: 64 << 20,
        buckets: 8,
        ..StoreConfig::default()
    };
    let a = Store::with_clock(config_a, clock.clone()).unwrap();
    let p = Persistence::open(&config(&dir.0), &a, clock.clone()).unwrap();
    for i in 0..3_000u32 {
        let len = if i % 50 == 0 {
            100_000 + i as usize
        } else {
            (i as usize * 131) % 9_000
        };
        let value: Vec<u8> = (0..len).map(|j| (i as usize ^ j) as u8).collect();
        let ttl = if i % 4 == 0 { 300 } else { 0 };
        a.set(SetMode::Set, format!("key{i}").as_bytes(), &value, i, ttl)
            .unwrap();
    }
    clock.advance(7);
    let summary = p.save(&a, None, None, false).unwrap();
    assert_eq!(summary.items, 3_000);
    let saved = fs::read(dir.0.join(SAVEFILE)).unwrap();
    let header = *savefile::SavefileReader::new(&saved[..]).unwrap().header();
    let mut w = SavefileWriter::new(Vec::new(), &header).unwrap();
    for bucket in 0..a.buckets() {
        let snapshot = a.snapshot_bucket(bucket);
        w.begin_bucket(bucket, snapshot.start_seq()).unwrap();
        for item in snapshot {
            w.push(&item.as_record()).unwrap();
        }
    }
    let seqs = (0..a.buckets()).map(|b| (b, a.bucket_stats(b).seq));
    w.bucket_seqs(seqs.filter(|&(_, s)| s != 0)).unwrap();
    let (pushed, totals) = w.finish().unwrap();
    assert!(totals.item_blocks > 2 * a.buckets(), "{totals:?}");
    assert_eq!(saved.len(), pushed.len());
    assert!(
        saved == pushed,
        "the saved file differs from the pushed one"
    );
    drop(p);
}
