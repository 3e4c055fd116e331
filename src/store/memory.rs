//! In-process store for short-lived state on the embedded default (one replica only). STUB.

#[derive(Default)]
pub struct MemoryFlowStore {}

impl MemoryFlowStore {
    pub fn new() -> Self {
        Self::default()
    }
}
