//! [`TextSession`]: the per-connection state machine of the memcached text protocol.
//!
//! Owns the input loop: parse a command, run it, repeat while complete commands remain and
//! the output is under `flush_at`; discard the data blocks of rejected storage commands as
//! they arrive; turn parse errors into replies, counters and (when fatal) a close. It does no
//! I/O (the connection driver in `net/conn.rs` does).

use super::exec::{Counts, Exec, Outcome};
use super::forward::{self, Batch, Chains};
use super::parse::{parse, request_len, ParseError, ParseErrorKind, TextCommand};
use crate::cluster::lease::LEASE_RAN_OUT;
use crate::net::{Output, Session, Shared, Step};

/// One memcached text protocol connection: turns input bytes into reply bytes.
///
/// Created by the connection driver for each connection on the memcached port. Handles
/// every complete command in the input (pipelining), and returns early once the output
/// reaches [`Shared::flush_at`]; a multi-get that fills the output is resumed on the next
/// call after the keys already answered.
pub struct TextSession {
    shared: Shared,
    /// Bytes of a rejected storage command's data block still to discard.
    swallow: usize,
    /// Keys of the multi-get at the start of the input already answered.
    resume: usize,
    /// Counters of the current batch, added to the server's once per `on_input`.
    counts: Counts,
    /// Forwarded commands in flight, by bucket (their order is kept per bucket).
    chains: Chains,
    /// Single-key commands of the current input to forward, sent together at its end.
    batch: Batch,
}

impl TextSession {
    /// A session for one connection.
    pub fn new(shared: Shared) -> TextSession {
        TextSession {
            shared,
            swallow: 0,
            resume: 0,
            counts: Counts::default(),
            chains: Chains::default(),
            batch: Batch::default(),
        }
    }

    /// Counts a rejected command and writes its reply.
    fn reject(&mut self, err: &ParseError, out: &mut Output) {
        let c = &mut self.counts;
        c.bad_input += 1;
        match err.kind {
            ParseErrorKind::UnknownCommand | ParseErrorKind::Http => c.unknown_command += 1,
            ParseErrorKind::BadKey => c.bad_key += 1,
            ParseErrorKind::BadDataChunk => c.bad_data_chunk += 1,
            ParseErrorKind::LineTooLong => c.line_too_long += 1,
            ParseErrorKind::LengthTooLarge => c.frame_too_large += 1,
            _ => c.bad_line += 1,
        }
        // Fatal errors are always explained (the connection closes); others obey noreply.
        if err.kind.is_fatal() || !err.noreply {
            out.extend_from_slice(err.kind.reply());
        }
    }
}

impl Session for TextSession {
    fn on_input(&mut self, input: &[u8], out: &mut Output) -> Step {
        let mut pos = 0;
        let mut close = false;
        let mut more = false;
        loop {
            if self.swallow > 0 {
                let n = self.swallow.min(input.len() - pos);
                pos += n;
                self.swallow -= n;
                if self.swallow > 0 {
                    break;
                }
            }
            match parse(&input[pos..], &self.shared.limits) {
                Ok(None) => break,
                Ok(Some((cmd, used))) => {
                    if let TextCommand::TooLarge { swallow, .. } = cmd {
                        self.swallow = swallow;
                    }
                    // A multi-get half answered here is finished here.
                    let elsewhere = if self.resume == 0 {
                        forward::route(&self.shared, &cmd)
                    } else {
                        None
                    };
                    if let Some(route) = elsewhere {
                        let bytes = &input[pos..pos + used];
                        forward::defer(
                            &self.shared,
                            &mut self.chains,
                            &mut self.batch,
                            route,
                            bytes,
                            out,
                        );
                        self.counts.commands += 1;
                        self.counts.forwarded_out += 1;
                        pos += used;
                        if out.is_full() {
                            break;
                        }
                        continue;
                    }
                    let mut exec = Exec {
                        shared: &self.shared,
                        counts: &mut self.counts,
                        resume: &mut self.resume,
                        forwarded: false,
                        not_mine: None,
                    };
                    let keyspace = &self.shared.keyspace;
                    let gated = keyspace.gated(|| cmd.keys());
                    let mark = out.mark();
                    match exec.run(cmd, out) {
                        Outcome::Done => {
                            self.counts.commands += 1;
                            pos += used;
                            let hold = gated.and_then(|g| keyspace.copies_hold(g));
                            if let Some(hold) = hold {
                                out.hold_back(mark, hold, || {
                                    format!("SERVER_ERROR {LEASE_RAN_OUT}\r\n").into_bytes()
                                });
                            }
                        }
                        Outcome::Paused => {
                            more = true;
                            break;
                        }
                        Outcome::Close => {
                            self.counts.commands += 1;
                            pos = input.len();
                            close = true;
                            break;
                        }
                    }
                }
                Err(err) => {
                    self.counts.commands += 1;
                    self.reject(&err, out);
                    if err.kind.is_fatal() {
                        pos = input.len();
                        close = true;
                        break;
                    }
                    let rest = input.len() - pos;
                    pos += err.skip.min(rest);
                    self.swallow = err.skip.saturating_sub(rest);
                }
            }
            if out.is_full() {
                break;
            }
        }
        forward::flush(&self.shared, &mut self.chains, &mut self.batch);
        self.counts.flush_into(self.shared.keyspace.stats());
        Step {
            parked: false,
            consumed: pos,
            close,
            more,
        }
    }

    fn request_len(&self, input: &[u8]) -> Option<usize> {
        if self.swallow > 0 {
            // Discarded as it arrives: needs no more than a read's worth of room.
            return None;
        }
        request_len(input, &self.shared.limits)
    }

    fn on_shutdown(&mut self, _out: &mut Output) {
        // The memcached text protocol has no shutdown notice; the connection just closes.
    }

    fn ordered_replies(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests;
