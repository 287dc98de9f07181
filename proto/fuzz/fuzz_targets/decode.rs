//! Feeds arbitrary bytes to both decoders, walking the stream as a server or client would.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_proto::{decode_reply, decode_request, Limits, ReplyBody};

fuzz_target!(|data: &[u8]| {
    let limits = Limits::for_value_size(64 * 1024);
    let mut at = 0;
    while at < data.len() {
        match decode_request(&data[at..], &limits) {
            Ok(Some((req, used))) => {
                assert!(used > 0 && at + used <= data.len());
                let _ = req.command.key();
                at += used;
            }
            Ok(None) => break,
            Err(e) => match e.skip {
                Some(n) => at += n,
                None => break,
            },
        }
    }
    if let Ok(Some((reply, used))) = decode_reply(data, &limits) {
        assert!(used <= data.len());
        if let ReplyBody::Values(list) = reply.body {
            assert_eq!(list.iter().count(), list.len());
        }
    }
});
