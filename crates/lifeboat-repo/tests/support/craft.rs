//! Crafting snapshots by hand, the way a hostile or buggy writer could: trees are stored exactly
//! as given (unsorted, duplicated or unsafe names), sealed and packed like the archiver does.
//! Shared by lifeboat-repo's and lifeboat's integration tests (included with `#[path]`).

#![allow(dead_code)]

use lifeboat_repo::crypto::compress_framed;
use lifeboat_repo::format::pack::{BlobType, blob_aad};
use lifeboat_repo::format::snapshot::{Snapshot, Summary};
use lifeboat_repo::format::tree::{Node, NodeKind, Tree};
use lifeboat_repo::packer::Packer;
use lifeboat_repo::{Id, Repository};

/// Collects blobs, then writes them as one pack with its index segment and a snapshot.
pub struct Crafter<'r> {
    /// The open repository.
    pub repo: &'r Repository,
    blobs: Vec<(BlobType, Id, u32, Vec<u8>)>,
}

impl<'r> Crafter<'r> {
    /// Starts crafting into `repo`.
    pub fn new(repo: &'r Repository) -> Self {
        Crafter {
            repo,
            blobs: Vec::new(),
        }
    }

    /// Seals a blob as the archiver's sealer does (compress_framed + seal_into with blob_aad).
    pub fn blob(&mut self, t: BlobType, data: &[u8]) -> Id {
        let keys = self.repo.keys();
        let id = keys.blob_id(data);
        let mut plain = Vec::new();
        compress_framed(data, self.repo.config().compression_level, &mut plain);
        let mut sealed = Vec::new();
        keys.seal_into(&blob_aad(t, &id), &plain, &mut sealed);
        self.blobs.push((t, id, data.len() as u32, sealed));
        id
    }

    /// Stores a tree exactly as given (no sorting, no validation).
    pub fn tree(&mut self, nodes: Vec<Node>) -> Id {
        let t = Tree { version: 1, nodes };
        let data = t.encode();
        self.blob(BlobType::Tree, &data)
    }

    /// Packs every blob, writes the index segment and a snapshot of `root`; returns its id.
    pub fn commit(self, root: Id) -> Id {
        let mut p = Packer::new(self.repo);
        for (t, id, raw, sealed) in &self.blobs {
            p.add(*t, *id, *raw, sealed).expect("pack add");
        }
        let recs = p.flush().expect("pack flush");
        drop(p);
        self.repo.write_index_segment(&recs).expect("index segment");
        let s = Snapshot {
            version: 1,
            time: jiff::Timestamp::now(),
            host: "crafted".into(),
            user: "mallory".into(),
            paths: vec!["/crafted".into()],
            tags: Vec::new(),
            parent: None,
            tree: root,
            source_kind: "files".into(),
            unreadable: Vec::new(),
            summary: Summary::default(),
            program_version: "crafted".into(),
            source: None,
        };
        self.repo.write_snapshot(&s).expect("snapshot")
    }
}

/// A regular file node with the given content blobs.
pub fn file(name: &str, content: Vec<Id>, size: u64) -> Node {
    Node {
        name: name.into(),
        kind: Some(NodeKind::File),
        mode: 0o100644,
        size,
        mtime_ns: 1_700_000_000_000_000_000,
        nlink: 1,
        content,
        ..Default::default()
    }
}

/// A directory node.
pub fn dir(name: &str, subtree: Id) -> Node {
    Node {
        name: name.into(),
        kind: Some(NodeKind::Dir),
        mode: 0o40755,
        mtime_ns: 1_700_000_000_000_000_000,
        nlink: 2,
        subtree: Some(subtree),
        ..Default::default()
    }
}

/// A symlink node.
pub fn symlink(name: &str, target: &str) -> Node {
    Node {
        name: name.into(),
        kind: Some(NodeKind::Symlink),
        mode: 0o120777,
        mtime_ns: 1_700_000_000_000_000_000,
        nlink: 1,
        target: Some(target.into()),
        ..Default::default()
    }
}

/// A node whose exact name is given as raw bytes (`name_bytes`), with a harmless-looking `name`.
pub fn with_raw_name(mut n: Node, display: &str, raw: &[u8]) -> Node {
    n.name = display.into();
    n.name_bytes = Some(raw.iter().map(|b| format!("{b:02x}")).collect());
    n
}
