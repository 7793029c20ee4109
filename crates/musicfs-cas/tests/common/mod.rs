//! What the read path's test files share.

use musicfs_cas::{FileRef, Reader};
use std::sync::Arc;

/// Reads the whole track through `reader`, `step` bytes a call, as a player would; panics on a failed read.
pub async fn read_all(reader: &Arc<Reader>, file: &FileRef, step: u32) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let got = reader.read(file, out.len() as u64, step).await.unwrap();
        if got.is_empty() {
            return out;
        }
        out.extend_from_slice(&got);
    }
}
