//! Savefile format tests on byte buffers: round trip, and every kind of damage the reliability
//! notes list (empty, truncated, flipped bytes, wrong magic, newer version, huge lengths,
//! duplicate keys).

use super::*;
use crate::store::OwnedItem;
use shoal_proto::hash::value_hash;

/// A small deterministic generator (splitmix64), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const BUCKETS: u32 = 16;

/// The bucket a savefile keeps `item` in.
fn bucket(item: &OwnedItem) -> u32 {
    bucket_of(&item.key, BUCKETS)
}

fn items(n: usize, rng: &mut Rng) -> Vec<OwnedItem> {
    let mut out: Vec<OwnedItem> = (0..n)
        .map(|i| {
            let key = format!("key:{i}").into_bytes();
            let len = match i % 10 {
                0 => 0,
                1 => 3000,
                _ => rng.below(200) as usize,
            };
            let value: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            OwnedItem {
                hash: value_hash(&value),
                key,
                value,
                flags: i as u32,
                expires_at: if i % 3 == 0 {
                    0
                } else {
                    1_700_000_000 + i as u64
                },
                seq: i as u64 + 1,
            }
        })
        .collect();
    out.sort_by_key(bucket);
    out
}

fn write(items: &[OwnedItem], block_size: usize) -> Vec<u8> {
    let header = Header::new([7; 16], 1_700_000_000, BUCKETS);
    let mut w = SavefileWriter::with_block_size(Vec::new(), &header, block_size).unwrap();
    let mut current = None;
    for o in items {
        if current != Some(bucket(o)) {
            w.begin_bucket(bucket(o), 99).unwrap();
            current = Some(bucket(o));
        }
        w.push(&o.as_record()).unwrap();
    }
    let (bytes, totals) = w.finish().unwrap();
    assert_eq!(totals.file_bytes, bytes.len() as u64);
    bytes
}

fn read(bytes: &[u8]) -> Result<Vec<OwnedItem>, SavefileError> {
    let mut out = Vec::new();
    read_all(bytes, |in_bucket, r| {
        let item = r.to_owned_item();
        assert_eq!(in_bucket, bucket(&item), "record read in the wrong bucket");
        out.push(item);
    })?;
    Ok(out)
}

/// A valid file of 300 items in many small blocks.
fn sample() -> (Vec<OwnedItem>, Vec<u8>) {
    let items = items(300, &mut Rng(1));
    let bytes = write(&items, 2048);
    (items, bytes)
}

/// Recomputes every checksum of a file whose content a test changed on purpose, so the
/// structural checks behind the checksums are what is tested.
fn reseal(bytes: &mut [u8]) {
    let crc = crc32fast::hash(&bytes[..44]);
    bytes[44..48].copy_from_slice(&crc.to_be_bytes());
    let mut at = HEADER_LEN;
    while at + BLOCK_HEADER_LEN <= bytes.len() {
        let len = be_u32(bytes, at + 8) as usize;
        let end = (at + BLOCK_HEADER_LEN + len).min(bytes.len());
        if bytes[at] == TAG_END && end - at == BLOCK_HEADER_LEN + END_LEN {
            let file_crc = crc32fast::hash(&bytes[..at]);
            bytes[at + BLOCK_HEADER_LEN + 20..end].copy_from_slice(&file_crc.to_be_bytes());
        }
        let mut h = Hasher::new();
        h.update(&bytes[at..at + 12]);
        h.update(&bytes[at + BLOCK_HEADER_LEN..end]);
        let crc = h.finalize();
        bytes[at + 12..at + 16].copy_from_slice(&crc.to_be_bytes());
        at = end;
    }
}

#[test]
fn round_trip_keeps_every_field_and_the_header() {
    let (items, bytes) = sample();
    assert_eq!(read(&bytes).unwrap(), items);
    let reader = SavefileReader::new(&bytes[..]).unwrap();
    assert_eq!(reader.header().node_id, [7; 16]);
    assert_eq!(reader.header().created_at, 1_700_000_000);
    assert_eq!(reader.header().buckets, BUCKETS);
    assert_eq!(reader.header().version, FORMAT_VERSION);
}

#[test]
fn empty_store_gives_a_valid_file() {
    let bytes = write(&[], DEFAULT_BLOCK_SIZE);
    assert_eq!(bytes.len(), HEADER_LEN + BLOCK_HEADER_LEN + END_LEN);
    assert_eq!(read(&bytes).unwrap(), vec![]);
}

#[test]
fn a_record_larger_than_the_block_size_gets_its_own_block() {
    let mut items = items(20, &mut Rng(2));
    items[3].value = vec![5; 100_000];
    items[3].hash = value_hash(&items[3].value);
    let bytes = write(&items, 1024);
    assert_eq!(read(&bytes).unwrap(), items);
}

#[test]
fn zero_length_file_is_a_clear_error() {
    let err = read(&[]).unwrap_err();
    assert!(matches!(err, SavefileError::Empty), "{err}");
    assert_eq!(err.to_string(), "the savefile is empty (0 bytes)");
}

#[test]
fn wrong_magic_is_not_a_savefile() {
    let (_, mut bytes) = sample();
    bytes[0..8].copy_from_slice(b"REDIS000");
    let err = read(&bytes).unwrap_err();
    assert!(matches!(err, SavefileError::BadMagic { .. }), "{err}");
    assert!(err.to_string().contains("not a savefile"));
    // A short file that is not a savefile either.
    assert!(matches!(
        read(b"hello").unwrap_err(),
        SavefileError::BadMagic { .. }
    ));
}

#[test]
fn newer_version_is_refused_with_both_versions_named() {
    let (_, mut bytes) = sample();
    bytes[8..10].copy_from_slice(&4u16.to_be_bytes());
    reseal(&mut bytes);
    let err = read(&bytes).unwrap_err();
    assert!(
        matches!(
            err,
            SavefileError::NewerVersion {
                found: 4,
                supported: 3
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("version 4"), "{err}");
}

#[test]
fn huge_block_length_is_refused_before_reading() {
    let (_, mut bytes) = sample();
    bytes[HEADER_LEN + 8..HEADER_LEN + 12].copy_from_slice(&u32::MAX.to_be_bytes());
    let err = read(&bytes).unwrap_err();
    assert!(
        matches!(err, SavefileError::Invalid { offset, .. } if offset == HEADER_LEN as u64 + 8),
        "{err}"
    );
}

#[test]
fn huge_record_lengths_with_valid_checksums_are_refused() {
    let (_, bytes) = sample();
    let rec = HEADER_LEN + BLOCK_HEADER_LEN + ITEMS_HEADER_LEN;
    for (field, value) in [(2usize, u32::MAX), (2, 1 << 20)] {
        let mut b = bytes.clone();
        b[rec + field..rec + field + 4].copy_from_slice(&value.to_be_bytes());
        reseal(&mut b);
        let err = read(&b).unwrap_err();
        assert!(
            err.to_string().contains("runs past the end of its block"),
            "{err}"
        );
    }
    // Key length 0.
    let mut b = bytes.clone();
    b[rec..rec + 2].copy_from_slice(&0u16.to_be_bytes());
    reseal(&mut b);
    assert!(read(&b).unwrap_err().to_string().contains("empty key"));
    // A record count larger than the records present.
    let mut b = bytes.clone();
    let count_at = HEADER_LEN + BLOCK_HEADER_LEN + 12;
    b[count_at..count_at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
    reseal(&mut b);
    assert!(matches!(
        read(&b).unwrap_err(),
        SavefileError::Invalid { .. }
    ));
}

#[test]
fn structural_damage_behind_valid_checksums_is_refused() {
    let (_, bytes) = sample();
    const FIRST: usize = HEADER_LEN;
    type Damage = Box<dyn Fn(&mut Vec<u8>)>;
    let cases: Vec<(&str, Damage)> = vec![
        (
            "bucket out of range",
            Box::new(|b: &mut Vec<u8>| {
                b[FIRST + 16..FIRST + 20].copy_from_slice(&BUCKETS.to_be_bytes())
            }),
        ),
        (
            "wrong bucket for its keys",
            Box::new(|b: &mut Vec<u8>| {
                let bucket = be_u32(b, FIRST + 16);
                b[FIRST + 16..FIRST + 20].copy_from_slice(&((bucket + 1) % BUCKETS).to_be_bytes())
            }),
        ),
        ("block index", Box::new(|b: &mut Vec<u8>| b[FIRST + 7] ^= 1)),
        ("unknown tag", Box::new(|b: &mut Vec<u8>| b[FIRST] = 9)),
        ("reserved", Box::new(|b: &mut Vec<u8>| b[FIRST + 1] = 1)),
        ("header flags", Box::new(|b: &mut Vec<u8>| b[15] = 1)),
        (
            "bucket count",
            Box::new(|b: &mut Vec<u8>| b[40..44].copy_from_slice(&3u32.to_be_bytes())),
        ),
        ("trailing bytes", Box::new(|b: &mut Vec<u8>| b.push(0))),
        (
            "end totals",
            Box::new(|b: &mut Vec<u8>| {
                let n = b.len();
                b[n - 20] ^= 1
            }),
        ),
    ];
    for (name, damage) in cases {
        let mut b = bytes.clone();
        damage(&mut b);
        reseal(&mut b);
        assert!(read(&b).is_err(), "{name} was not detected");
    }
}

#[test]
fn every_one_of_1000_single_byte_flips_is_detected() {
    let (_, bytes) = sample();
    let mut rng = Rng(0x5A7E);
    for trial in 0..1000 {
        let mut b = bytes.clone();
        let at = rng.below(b.len() as u64) as usize;
        let flip = 1 + rng.below(255) as u8;
        b[at] ^= flip;
        let result = std::panic::catch_unwind(|| read(&b));
        match result {
            Ok(Err(_)) => {}
            Ok(Ok(_)) => panic!("trial {trial}: flip {flip:#x} at byte {at} not detected"),
            Err(_) => panic!("trial {trial}: reader panicked on a flip at byte {at}"),
        }
    }
}

#[test]
fn every_one_of_100_truncations_is_detected() {
    let (_, bytes) = sample();
    let mut rng = Rng(0x7C07);
    let mut cuts: Vec<usize> = (0..96)
        .map(|_| rng.below(bytes.len() as u64) as usize)
        .collect();
    // The edges: nothing, inside the header, right after it, one byte short.
    cuts.extend([0, 20, HEADER_LEN, bytes.len() - 1]);
    for cut in cuts {
        let result = std::panic::catch_unwind(|| read(&bytes[..cut]));
        match result {
            Ok(Err(_)) => {}
            Ok(Ok(_)) => panic!("truncation to {cut} bytes not detected"),
            Err(_) => panic!("reader panicked on a truncation to {cut} bytes"),
        }
    }
    // Every cut at a block boundary, too (the cases a checksum alone cannot catch).
    let mut at = HEADER_LEN;
    while at < bytes.len() {
        assert!(read(&bytes[..at]).is_err(), "cut at block boundary {at}");
        at += BLOCK_HEADER_LEN + be_u32(&bytes, at + 8) as usize;
    }
}

#[test]
fn random_garbage_after_a_valid_header_never_panics() {
    let (_, bytes) = sample();
    let mut rng = Rng(9);
    for _ in 0..500 {
        let mut b = bytes[..HEADER_LEN].to_vec();
        let n = rng.below(4096) as usize;
        b.extend((0..n).map(|_| rng.next() as u8));
        assert!(read(&b).is_err());
    }
}

#[test]
fn duplicate_keys_are_all_returned_in_file_order() {
    // The format does not forbid a key twice; the loader inserts in file order, so the last
    // record wins (documented in docs/savefile.md).
    let mut items = items(10, &mut Rng(3));
    let mut dup = items[4].clone();
    dup.value = b"second".to_vec();
    dup.hash = value_hash(&dup.value);
    items.insert(5, dup.clone());
    items.sort_by_key(bucket);
    let got = read(&write(&items, 64)).unwrap();
    let same: Vec<&OwnedItem> = got.iter().filter(|o| o.key == dup.key).collect();
    assert_eq!(same.len(), 2);
    assert_eq!(same[1].value, b"second");
}

#[test]
fn pushing_before_a_bucket_or_an_empty_key_is_refused() {
    let header = Header::new([0; 16], 0, BUCKETS);
    let mut w = SavefileWriter::new(Vec::new(), &header).unwrap();
    let rec = ItemRecord {
        key: b"k",
        value: b"",
        flags: 0,
        expires_at: 0,
        hash: 0,
        seq: 0,
    };
    assert!(w.push(&rec).is_err());
    w.begin_bucket(0, 0).unwrap();
    assert!(w.push(&ItemRecord { key: b"", ..rec }).is_err());
}

/// A file of `items` followed by SEQS blocks for `seqs`, in blocks of `block_size` bytes.
fn write_with_seqs(items: &[OwnedItem], seqs: &[(u32, u64)], block_size: usize) -> Vec<u8> {
    let header = Header::new([7; 16], 1_700_000_000, BUCKETS);
    let mut w = SavefileWriter::with_block_size(Vec::new(), &header, block_size).unwrap();
    for o in items {
        w.begin_bucket(bucket(o), 99).unwrap();
        w.push(&o.as_record()).unwrap();
    }
    w.bucket_seqs(seqs.iter().copied()).unwrap();
    let (bytes, totals) = w.finish().unwrap();
    assert_eq!(totals.file_bytes, bytes.len() as u64);
    bytes
}

fn read_seqs(bytes: &[u8]) -> Result<Vec<(u32, u64)>, SavefileError> {
    let mut reader = SavefileReader::new(bytes)?;
    while reader.next_block()?.is_some() {}
    Ok(reader.bucket_seqs().to_vec())
}

#[test]
fn bucket_seqs_round_trip_in_several_blocks() {
    let items = items(20, &mut Rng(3));
    let seqs: Vec<(u32, u64)> = (0..BUCKETS).map(|b| (b, u64::from(b) * 1000 + 7)).collect();
    // 40-byte blocks hold 3 entries each: 6 SEQS blocks.
    let bytes = write_with_seqs(&items, &seqs, 40);
    assert_eq!(read(&bytes).unwrap(), items);
    assert_eq!(read_seqs(&bytes).unwrap(), seqs);
    let none = write_with_seqs(&[], &[], 40);
    assert_eq!(read_seqs(&none).unwrap(), vec![]);
}

#[test]
fn a_version_1_file_is_still_read() {
    let (items, mut bytes) = sample();
    bytes[8..10].copy_from_slice(&1u16.to_be_bytes());
    reseal(&mut bytes);
    assert_eq!(read(&bytes).unwrap(), items);
    let reader = SavefileReader::new(&bytes[..]).unwrap();
    assert_eq!(reader.header().version, 1);
}

#[test]
fn bad_seqs_blocks_are_refused() {
    let seqs = [(1u32, 10u64), (5, 50)];
    let good = write_with_seqs(&[], &seqs, 1 << 20);
    let seqs_at = HEADER_LEN + BLOCK_HEADER_LEN;
    // Version 1 has no SEQS block.
    let mut v1 = good.clone();
    v1[8..10].copy_from_slice(&1u16.to_be_bytes());
    reseal(&mut v1);
    let err = read_seqs(&v1).unwrap_err();
    assert!(err.to_string().contains("unknown block tag 3"), "{err}");
    // Out of order.
    let mut order = good.clone();
    order[seqs_at + 4 + 12..seqs_at + 4 + 16].copy_from_slice(&1u32.to_be_bytes());
    reseal(&mut order);
    let err = read_seqs(&order).unwrap_err();
    assert!(err.to_string().contains("out of order"), "{err}");
    // Out of range.
    let mut range = good.clone();
    range[seqs_at + 4 + 12..seqs_at + 4 + 16].copy_from_slice(&BUCKETS.to_be_bytes());
    reseal(&mut range);
    let err = read_seqs(&range).unwrap_err();
    assert!(err.to_string().contains("out of range"), "{err}");
    // A count that does not match the length.
    let mut count = good.clone();
    count[seqs_at..seqs_at + 4].copy_from_slice(&3u32.to_be_bytes());
    reseal(&mut count);
    assert!(read_seqs(&count).is_err());
    // Not ascending on the writing side either.
    let header = Header::new([7; 16], 1, BUCKETS);
    let mut w = SavefileWriter::new(Vec::new(), &header).unwrap();
    let err = w.bucket_seqs([(3, 1), (3, 2)]).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
}

#[test]
fn an_items_block_after_a_seqs_block_is_refused() {
    let header = Header::new([7; 16], 1_700_000_000, BUCKETS);
    let mut w = SavefileWriter::new(Vec::new(), &header).unwrap();
    w.bucket_seqs([(0, 1)]).unwrap();
    let key = (0..)
        .map(|i: u32| format!("k{i}").into_bytes())
        .find(|k| bucket_of(k, BUCKETS) == 0)
        .unwrap();
    w.begin_bucket(0, 1).unwrap();
    w.push(&ItemRecord {
        key: &key,
        value: b"v",
        flags: 0,
        expires_at: 0,
        hash: value_hash(b"v"),
        seq: 1,
    })
    .unwrap();
    let (bytes, _) = w.finish().unwrap();
    let err = read(&bytes).unwrap_err();
    assert!(err.to_string().contains("after a seqs block"), "{err}");
}

/// A file of `items` (bucket seq 99), SEQS for their buckets, and an OWNED block.
fn write_with_owned(items: &[OwnedItem], owned: &Owned) -> Vec<u8> {
    let header = Header::new([7; 16], 1_700_000_000, BUCKETS);
    let mut w = SavefileWriter::new(Vec::new(), &header).unwrap();
    for o in items {
        w.begin_bucket(bucket(o), 99).unwrap();
        w.push(&o.as_record()).unwrap();
    }
    w.bucket_seqs([(0, 5)]).unwrap();
    w.owned(owned).unwrap();
    w.finish().unwrap().0
}

fn read_owned(bytes: &[u8]) -> Result<Option<Owned>, SavefileError> {
    let mut reader = SavefileReader::new(bytes)?;
    while reader.next_block()?.is_some() {}
    Ok(reader.owned().cloned())
}

#[test]
fn the_owned_block_round_trips_and_is_optional() {
    let items = items(10, &mut Rng(5));
    let owned = Owned {
        cluster: [9; 16],
        buckets: vec![(0, 1), (3, 7), (BUCKETS - 1, u64::MAX)],
    };
    let bytes = write_with_owned(&items, &owned);
    assert_eq!(read(&bytes).unwrap(), items);
    assert_eq!(read_owned(&bytes).unwrap(), Some(owned));
    // A node that served nothing writes an empty list.
    let none = Owned {
        cluster: [9; 16],
        buckets: vec![],
    };
    assert_eq!(
        read_owned(&write_with_owned(&[], &none)).unwrap(),
        Some(none)
    );
    // Without one (a node with no table, or an older file), nothing is said.
    let (_, plain) = sample();
    assert_eq!(read_owned(&plain).unwrap(), None);
}

#[test]
fn bad_owned_blocks_are_refused() {
    let owned = Owned {
        cluster: [9; 16],
        buckets: vec![(1, 10), (5, 50)],
    };
    let good = write_with_owned(&[], &owned);
    // The OWNED block follows the one SEQS block (4 + 12 bytes).
    let at = HEADER_LEN + BLOCK_HEADER_LEN + 16 + BLOCK_HEADER_LEN;
    let entry = |i: usize| at + OWNED_HEADER_LEN + i * OWNED_ENTRY_LEN;
    // Version 2 has no OWNED block.
    let mut v2 = good.clone();
    v2[8..10].copy_from_slice(&2u16.to_be_bytes());
    reseal(&mut v2);
    let err = read_owned(&v2).unwrap_err();
    assert!(err.to_string().contains("unknown block tag 4"), "{err}");
    // Out of order, out of range.
    for bucket in [1u32, BUCKETS] {
        let mut bad = good.clone();
        bad[entry(1)..entry(1) + 4].copy_from_slice(&bucket.to_be_bytes());
        reseal(&mut bad);
        let err = read_owned(&bad).unwrap_err();
        assert!(err.to_string().contains("out of order"), "{err}");
    }
    // A count that does not match the length, one past it and one short.
    for count in [1u32, 3] {
        let mut bad = good.clone();
        bad[at + 16..at + 20].copy_from_slice(&count.to_be_bytes());
        reseal(&mut bad);
        let err = read_owned(&bad).unwrap_err();
        assert!(
            err.to_string().contains(&format!("for {count} entries")),
            "{err}"
        );
    }
    // Shorter than its header.
    let header = Header::new([7; 16], 1, BUCKETS);
    let mut w = SavefileWriter::new(Vec::new(), &header).unwrap();
    w.write_block(TAG_OWNED, &[0; 19]).unwrap();
    let err = read_owned(&w.finish().unwrap().0).unwrap_err();
    assert!(err.to_string().contains("shorter than its header"), "{err}");
    // Twice, or followed by items or seqs.
    let mut w = SavefileWriter::new(Vec::new(), &header).unwrap();
    w.owned(&owned).unwrap();
    w.owned(&owned).unwrap();
    let err = read_owned(&w.finish().unwrap().0).unwrap_err();
    assert!(err.to_string().contains("a second owned block"), "{err}");
    let mut w = SavefileWriter::new(Vec::new(), &header).unwrap();
    w.owned(&owned).unwrap();
    w.bucket_seqs([(0, 1)]).unwrap();
    let err = read_owned(&w.finish().unwrap().0).unwrap_err();
    assert!(err.to_string().contains("after the owned block"), "{err}");
    // Not ascending on the writing side.
    let mut w = SavefileWriter::new(Vec::new(), &header).unwrap();
    let twice = Owned {
        cluster: [0; 16],
        buckets: vec![(3, 1), (3, 2)],
    };
    assert_eq!(
        w.owned(&twice).unwrap_err().kind(),
        io::ErrorKind::InvalidInput
    );
}
