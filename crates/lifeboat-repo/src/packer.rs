//! Streams sealed blobs into pack files of a target size, each ending with its own header.

use crate::backend::Upload;
use crate::crypto::Keys;
use crate::error::Result;
use crate::format::index::PackRecord;
use crate::format::pack::{BlobType, PackEntry, encode_header};
use crate::id::Id;
use crate::repository::{Repository, pack_key};

struct OpenPack {
    id: Id,
    upload: Box<dyn Upload>,
    hasher: blake3::Hasher,
    entries: Vec<PackEntry>,
    written: u64,
}

/// Writes packs. Blobs are uploaded as they arrive (never a whole pack in memory); a pack appears
/// under its name only once complete, header included.
pub struct Packer<'r> {
    repo: &'r Repository,
    target: u64,
    open: Option<OpenPack>,
    done: Vec<PackRecord>,
    /// Sealed bytes written so far.
    pub bytes_written: u64,
}

impl<'r> Packer<'r> {
    /// A packer for `repo` using its configured pack size.
    pub fn new(repo: &'r Repository) -> Self {
        Packer {
            repo,
            target: repo.config().pack_size.max(1 << 20),
            open: None,
            done: Vec::new(),
            bytes_written: 0,
        }
    }

    /// Appends one sealed blob; closes the pack once it reaches the target size.
    pub fn add(&mut self, blob_type: BlobType, id: Id, raw_len: u32, sealed: &[u8]) -> Result<()> {
        if self.open.is_none() {
            let pid = Id::random();
            let upload = self.repo.backend().upload(&pack_key(&pid))?;
            self.open = Some(OpenPack {
                id: pid,
                upload,
                hasher: blake3::Hasher::new(),
                entries: Vec::new(),
                written: 0,
            });
        }
        let p = self.open.as_mut().expect("opened above");
        p.upload.write(sealed)?;
        p.hasher.update(sealed);
        p.entries.push(PackEntry {
            blob_type,
            id,
            offset: p.written as u32,
            length: sealed.len() as u32,
            raw_len,
        });
        p.written += sealed.len() as u64;
        self.bytes_written += sealed.len() as u64;
        if p.written >= self.target || p.written + (16 << 20) > u64::from(u32::MAX) {
            self.close()?;
        }
        Ok(())
    }

    /// Finishes the open pack, if any.
    pub fn close(&mut self) -> Result<()> {
        let Some(mut p) = self.open.take() else { return Ok(()) };
        let header = encode_header(self.repo.keys(), &p.id, &p.entries);
        p.upload.write(&header)?;
        p.hasher.update(&header);
        p.upload.finish()?;
        self.bytes_written += header.len() as u64;
        self.done.push(PackRecord {
            id: p.id,
            size: p.written + header.len() as u64,
            hash: Id(*p.hasher.finalize().as_bytes()),
            entries: p.entries,
        });
        Ok(())
    }

    /// Closes the open pack and hands over every finished pack since the last call.
    pub fn flush(&mut self) -> Result<Vec<PackRecord>> {
        self.close()?;
        Ok(self.take_finished())
    }

    /// Hands over the packs finished since the last call, leaving the open pack open.
    pub fn take_finished(&mut self) -> Vec<PackRecord> {
        std::mem::take(&mut self.done)
    }

    /// Finished packs not handed over yet.
    pub fn finished_count(&self) -> usize {
        self.done.len()
    }

    /// Blobs in the finished packs not handed over yet.
    pub fn finished_blobs(&self) -> usize {
        self.done.iter().map(|p| p.entries.len()).sum()
    }

    /// Keys used for sealing (shortcut for pipeline stages).
    pub fn keys(&self) -> &Keys {
        self.repo.keys()
    }
}

impl Drop for Packer<'_> {
    fn drop(&mut self) {
        if let Some(p) = self.open.take() {
            p.upload.abort();
        }
    }
}
