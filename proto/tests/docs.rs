//! `docs/protocol.md` must match the code: the opcode table, the status table and the hex
//! examples. This test fails when they drift.

use shoal_proto::*;

fn doc() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/protocol.md");
    std::fs::read_to_string(path).expect("docs/protocol.md is readable")
}

/// The rows of the markdown table that follows `heading`: first two cells of each row.
fn table_rows(doc: &str, heading: &str) -> Vec<(String, String)> {
    let start = doc
        .find(heading)
        .unwrap_or_else(|| panic!("no heading {heading}"));
    doc[start..]
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2)
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            (cells[1].to_string(), cells[2].to_string())
        })
        .collect()
}

#[test]
fn opcode_table_matches_the_code() {
    let rows = table_rows(&doc(), "## Opcodes");
    let documented: Vec<(u8, String)> = rows
        .iter()
        .map(|(num, name)| {
            let n = u8::from_str_radix(num.trim_start_matches("0x"), 16).expect("hex opcode");
            (n, name.clone())
        })
        .collect();
    let code: Vec<(u8, String)> = OPCODES.iter().map(|(n, s)| (*n, s.to_string())).collect();
    assert_eq!(documented, code);
}

#[test]
fn peer_opcode_table_matches_the_code() {
    let doc = doc();
    // The first table under the heading is the peer opcode table.
    let rows = table_rows(&doc, "## Peer protocol");
    let documented: Vec<(u8, String)> = rows
        .iter()
        .map(|(num, name)| {
            let n = u8::from_str_radix(num.trim_start_matches("0x"), 16).expect("hex opcode");
            (n, name.clone())
        })
        .collect();
    let code: Vec<(u8, String)> = PEER_OPCODES
        .iter()
        .map(|(n, s)| (*n, s.to_string()))
        .collect();
    assert_eq!(documented, code);
}

#[test]
fn status_table_matches_the_code() {
    let rows = table_rows(&doc(), "## Status codes");
    let documented: Vec<(u16, String)> = rows
        .iter()
        .map(|(num, name)| (num.parse().expect("decimal status"), name.clone()))
        .collect();
    let code: Vec<(u16, String)> = STATUSES.iter().map(|(n, s)| (*n, s.to_string())).collect();
    assert_eq!(documented, code);
}

fn hex_blocks(doc: &str) -> Vec<Vec<u8>> {
    let start = doc.find("## Examples (hex)").expect("examples section");
    let section = &doc[start..];
    let mut out = Vec::new();
    let mut in_block = false;
    for line in section.lines() {
        if line.starts_with("```") {
            in_block = !in_block;
            continue;
        }
        if in_block {
            let digits: String = line.chars().filter(|c| c.is_ascii_hexdigit()).collect();
            let bytes = (0..digits.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).expect("hex"))
                .collect();
            out.push(bytes);
        }
    }
    out
}

#[test]
fn hex_examples_are_what_the_code_encodes() {
    let blocks = hex_blocks(&doc());
    let mut want = Vec::new();
    let mut f = Vec::new();
    Request {
        id: 1,
        command: Command::Hello {
            min_version: 1,
            max_version: 1,
            client_name: b"c",
            auth: b"",
        },
    }
    .encode(&mut f);
    want.push(f);
    let mut f = Vec::new();
    Request {
        id: 7,
        command: Command::Get { key: b"k" },
    }
    .encode(&mut f);
    want.push(f);
    let mut f = Vec::new();
    Reply {
        id: 7,
        opcode: Opcode::Get,
        status: Status::Ok,
        body: ReplyBody::Value {
            flags: 0,
            value: b"hi",
        },
    }
    .encode(&mut f);
    want.push(f);
    let mut f = Vec::new();
    Reply {
        id: 7,
        opcode: Opcode::Get,
        status: Status::NotFound,
        body: ReplyBody::Message(b""),
    }
    .encode(&mut f);
    want.push(f);
    let mut f = Vec::new();
    Request {
        id: 2,
        command: Command::Store {
            mode: StoreMode::Set,
            key: b"k",
            value: b"v",
            flags: 0,
            ttl: 60,
        },
    }
    .encode(&mut f);
    want.push(f);
    assert_eq!(blocks.len(), want.len(), "number of hex examples");
    for (i, (got, want)) in blocks.iter().zip(&want).enumerate() {
        assert_eq!(got, want, "example {i}");
    }
}

#[test]
fn hash_vectors_in_the_doc_match() {
    let rows = table_rows(&doc(), "Test vectors");
    assert!(rows.len() >= 5);
    for (input, hash) in rows {
        let input = input.trim_matches('`');
        let input = if input == "(empty)" { "" } else { input };
        let want = u64::from_str_radix(hash.trim_matches('`').trim_start_matches("0x"), 16)
            .expect("hex hash");
        assert_eq!(hash::value_hash(input.as_bytes()), want, "input {input:?}");
    }
}
