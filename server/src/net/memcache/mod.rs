//! PLACEHOLDER written by the server author so the crate compiles; the memcached text
//! protocol engineer replaces this whole file.
use super::{Session, Shared, Step};
/// Placeholder.
pub struct TextSession;
impl TextSession {
    /// Placeholder.
    pub fn new(_shared: Shared) -> Self {
        TextSession
    }
}
impl Session for TextSession {
    fn on_input(&mut self, input: &[u8], _out: &mut Vec<u8>) -> Step {
        Step {
            consumed: input.len(),
            close: true,
        }
    }
    fn on_shutdown(&mut self, _out: &mut Vec<u8>) {}
}
