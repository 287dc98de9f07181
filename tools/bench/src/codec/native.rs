//! Shoal's native protocol, through `shoal-proto`: HELLO first, then GET, SET and STATS frames
//! with request ids. Replies must echo the id and opcode of the request they answer.

use super::{Decoded, Kind, Op, Outcome, ProtocolError};
use shoal_proto::{
    decode_reply, Command, Limits, Opcode, ReplyBody, Request, Status, StoreMode, PROTOCOL_VERSION,
};

/// Name the generator gives in HELLO.
const CLIENT_NAME: &[u8] = b"shoal-bench";

/// Appends the HELLO frame (request id 0).
pub fn encode_hello(out: &mut Vec<u8>) {
    Request {
        id: 0,
        command: Command::Hello {
            min_version: PROTOCOL_VERSION,
            max_version: PROTOCOL_VERSION,
            client_name: CLIENT_NAME,
            auth: b"",
        },
    }
    .encode(out);
}

/// Appends the request for `op` with request id `id`.
pub fn encode(op: &Op<'_>, id: u32, out: &mut Vec<u8>) {
    let command = match *op {
        Op::Get { key } => Command::Get { key },
        Op::Set { key, value } => Command::Store {
            mode: StoreMode::Set,
            key,
            value,
            flags: 0,
            ttl: 0,
        },
        Op::Items => Command::Stats { group: b"" },
    };
    Request { id, command }.encode(out);
}

/// The request id of the reply at the start of `input` (header bytes 8..12).
pub fn reply_id(input: &[u8]) -> super::ReplyId {
    match input.get(8..12) {
        Some(id) => super::ReplyId::Id(u32::from_be_bytes([id[0], id[1], id[2], id[3]])),
        None => super::ReplyId::Incomplete,
    }
}

/// Decodes the reply to the request of kind `kind` and id `id` (0 for HELLO).
///
/// # Errors
/// A frame that does not decode, or that answers another request.
pub fn decode(input: &[u8], kind: Kind, id: u32) -> Result<Decoded, ProtocolError> {
    let limits = Limits::default();
    let Some((reply, used)) =
        decode_reply(input, &limits).map_err(|e| ProtocolError(format!("native: {e}")))?
    else {
        return Ok(None);
    };
    let expected = match kind {
        Kind::Hello => Opcode::Hello,
        Kind::Get => Opcode::Get,
        Kind::Set => Opcode::Set,
        Kind::Items => Opcode::Stats,
    };
    if reply.opcode == Opcode::Notice {
        return Err(ProtocolError(format!(
            "native: server notice {:?}: {:?}",
            reply.status, reply.body
        )));
    }
    if reply.id != id || reply.opcode != expected {
        return Err(ProtocolError(format!(
            "native: reply {:?} #{} while awaiting {expected:?} #{id}",
            reply.opcode, reply.id
        )));
    }
    let outcome = match (reply.status, reply.body) {
        (Status::Ok, ReplyBody::Hello { .. }) => Outcome::Ready,
        (Status::Ok, ReplyBody::Value { .. }) => Outcome::Hit,
        (Status::NotFound, _) if kind == Kind::Get => Outcome::Miss,
        (Status::Ok, ReplyBody::Stored { .. }) => Outcome::Stored,
        (Status::Ok, ReplyBody::Stats(list)) => {
            let items = list
                .iter()
                .find(|(name, _)| *name == b"curr_items")
                .and_then(|(_, value)| super::parse_u64(value))
                .ok_or_else(|| ProtocolError("native: STATS without curr_items".into()))?;
            Outcome::Items(items)
        }
        (Status::Ok, body) => {
            return Err(ProtocolError(format!(
                "native: unexpected body {body:?} for {kind:?}"
            )))
        }
        (_, _) if kind == Kind::Hello => {
            return Err(ProtocolError(format!(
                "native: HELLO refused: {:?}",
                reply.status
            )))
        }
        _ => Outcome::Error,
    };
    Ok(Some((outcome, used)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::{FrameWriter, Reply, StatsWriter};

    fn reply(opcode: Opcode, status: Status, id: u32, body: ReplyBody<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        Reply {
            id,
            opcode,
            status,
            body,
        }
        .encode(&mut out);
        out
    }

    #[test]
    fn requests_round_trip_through_the_server_decoder() {
        let mut out = Vec::new();
        encode_hello(&mut out);
        encode(&Op::Get { key: b"k" }, 1, &mut out);
        encode(
            &Op::Set {
                key: b"k",
                value: b"v",
            },
            2,
            &mut out,
        );
        let limits = Limits::default();
        let (hello, a) = shoal_proto::decode_request(&out, &limits).unwrap().unwrap();
        assert!(matches!(hello.command, Command::Hello { .. }));
        let (get, b) = shoal_proto::decode_request(&out[a..], &limits)
            .unwrap()
            .unwrap();
        assert_eq!((get.id, get.command), (1, Command::Get { key: b"k" }));
        let (set, c) = shoal_proto::decode_request(&out[a + b..], &limits)
            .unwrap()
            .unwrap();
        assert_eq!(set.id, 2);
        assert_eq!(set.command.opcode(), Opcode::Set);
        assert_eq!(a + b + c, out.len());
    }

    #[test]
    fn decodes_replies_and_checks_ids() {
        let hit = reply(
            Opcode::Get,
            Status::Ok,
            5,
            ReplyBody::Value {
                flags: 0,
                value: b"abc",
            },
        );
        assert_eq!(
            decode(&hit, Kind::Get, 5).unwrap(),
            Some((Outcome::Hit, hit.len()))
        );
        assert!(decode(&hit, Kind::Get, 6).is_err());
        assert!(decode(&hit, Kind::Set, 5).is_err());
        let miss = reply(Opcode::Get, Status::NotFound, 1, ReplyBody::Message(b""));
        assert_eq!(
            decode(&miss, Kind::Get, 1).unwrap().unwrap().0,
            Outcome::Miss
        );
        let stored = reply(Opcode::Set, Status::Ok, 2, ReplyBody::Stored { hash: 1 });
        assert_eq!(
            decode(&stored, Kind::Set, 2).unwrap().unwrap().0,
            Outcome::Stored
        );
        let oom = reply(Opcode::Set, Status::OutOfMemory, 3, ReplyBody::Message(b""));
        assert_eq!(
            decode(&oom, Kind::Set, 3).unwrap().unwrap().0,
            Outcome::Error
        );
        let hello = reply(
            Opcode::Hello,
            Status::Ok,
            0,
            ReplyBody::Hello {
                version: 1,
                server: b"shoald",
                buckets: Some(1024),
            },
        );
        assert_eq!(
            decode(&hello, Kind::Hello, 0).unwrap().unwrap().0,
            Outcome::Ready
        );
        let mut notice = Vec::new();
        FrameWriter::reply(&mut notice, Opcode::Notice, Status::ShuttingDown, 0).short(b"bye");
        assert!(decode(&notice, Kind::Get, 0).is_err());
    }

    #[test]
    fn stats_reply_gives_curr_items() {
        let mut out = Vec::new();
        {
            let mut w = StatsWriter::new(&mut out, 9);
            w.stat("pid", 1);
            w.stat("curr_items", 459_648);
        }
        assert_eq!(
            decode(&out, Kind::Items, 9).unwrap(),
            Some((Outcome::Items(459_648), out.len()))
        );
    }

    #[test]
    fn every_prefix_needs_more() {
        let hit = reply(
            Opcode::Get,
            Status::Ok,
            1,
            ReplyBody::Value {
                flags: 0,
                value: b"abc",
            },
        );
        for cut in 0..hit.len() {
            assert_eq!(decode(&hit[..cut], Kind::Get, 1).unwrap(), None);
        }
    }
}
