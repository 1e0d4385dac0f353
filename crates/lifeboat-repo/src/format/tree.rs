//! Tree blobs: one directory, its entries sorted by name (JSON inside a sealed blob).

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use crate::error::{RepoError, Result};
use crate::id::Id;

/// What a node is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Symbolic link.
    Symlink,
    /// Named pipe.
    Fifo,
    /// Unix socket (recorded, not restored).
    Socket,
    /// Character device.
    Chardev,
    /// Block device.
    Blockdev,
}

/// One directory entry with the metadata needed to restore it faithfully and to decide, on the
/// next backup, whether it changed.
#[derive(Clone, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Node {
    /// Entry name (lossy for non-UTF-8 names; then `name_bytes` holds the exact bytes).
    pub name: String,
    /// Hex of the exact name bytes when the name is not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_bytes: Option<String>,
    /// Kind of entry.
    pub kind: Option<NodeKind>,
    /// Permission and type bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes (files).
    #[serde(default)]
    pub size: u64,
    /// Modification time, ns since the epoch.
    pub mtime_ns: i64,
    /// Status change time, ns since the epoch (unchanged-file detection only).
    #[serde(default)]
    pub ctime_ns: i64,
    /// Inode number (unchanged-file detection and hard links).
    #[serde(default)]
    pub inode: u64,
    /// Device number (hard links).
    #[serde(default)]
    pub dev: u64,
    /// Link count (hard links).
    #[serde(default)]
    pub nlink: u64,
    /// Data blob ids, in order (files).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub content: Vec<Id>,
    /// Tree id (directories).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtree: Option<Id>,
    /// Link target (symlinks), lossy; `target_bytes` when not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Hex of the exact link target when not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_bytes: Option<String>,
    /// Extended attributes, name → hex value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub xattrs: BTreeMap<String, String>,
    /// Device id (character and block devices).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rdev: Option<u64>,
}

impl Node {
    /// Sets the name from raw OS bytes.
    pub fn set_name(&mut self, name: &OsStr) {
        match name.to_str() {
            Some(s) => {
                self.name = s.to_string();
                self.name_bytes = None;
            }
            None => {
                self.name = name.to_string_lossy().into_owned();
                self.name_bytes = Some(hex::encode(name.as_bytes()));
            }
        }
    }

    /// The exact name as the OS sees it.
    pub fn os_name(&self) -> OsString {
        match self.name_bytes.as_deref().and_then(|h| hex::decode(h).ok()) {
            Some(b) => OsString::from_vec(b),
            None => OsString::from(&self.name),
        }
    }

    /// The exact name bytes, borrowed when the name is UTF-8 (the common case): for comparing
    /// and sorting without allocating.
    pub fn name_bytes(&self) -> std::borrow::Cow<'_, [u8]> {
        match self.name_bytes.as_deref().and_then(|h| hex::decode(h).ok()) {
            Some(b) => std::borrow::Cow::Owned(b),
            None => std::borrow::Cow::Borrowed(self.name.as_bytes()),
        }
    }

    /// Sets a symlink target from raw OS bytes.
    pub fn set_target(&mut self, t: &OsStr) {
        self.target = Some(t.to_string_lossy().into_owned());
        self.target_bytes = t.to_str().is_none().then(|| hex::encode(t.as_bytes()));
    }

    /// The exact symlink target.
    pub fn os_target(&self) -> Option<OsString> {
        match self.target_bytes.as_deref().and_then(|h| hex::decode(h).ok()) {
            Some(b) => Some(OsString::from_vec(b)),
            None => self.target.as_ref().map(OsString::from),
        }
    }

    /// True for directories.
    pub fn is_dir(&self) -> bool {
        self.kind == Some(NodeKind::Dir)
    }

    /// True for regular files.
    pub fn is_file(&self) -> bool {
        self.kind == Some(NodeKind::File)
    }
}

/// A directory listing.
#[derive(Clone, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Tree {
    /// Format version, 1.
    pub version: u32,
    /// Entries sorted by name bytes.
    pub nodes: Vec<Node>,
}

impl Tree {
    /// An empty tree.
    pub fn new() -> Tree {
        Tree {
            version: 1,
            nodes: Vec::new(),
        }
    }

    /// Sorts nodes by their exact name bytes (the canonical order).
    pub fn sort(&mut self) {
        self.nodes.sort_by(|a, b| a.name_bytes().cmp(&b.name_bytes()));
    }

    /// Finds a node by exact name (nodes are sorted, so this is a binary search).
    pub fn find(&self, name: &OsStr) -> Option<&Node> {
        let want = name.as_bytes();
        self.nodes
            .binary_search_by(|n| n.name_bytes().as_ref().cmp(want))
            .ok()
            .map(|i| &self.nodes[i])
    }

    /// Serializes to the stored form.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("tree serialization cannot fail")
    }

    /// Parses and validates a tree. Refuses names that could escape a restore target.
    pub fn decode(data: &[u8], name: &str) -> Result<Tree> {
        let t: Tree =
            serde_json::from_slice(data).map_err(|e| RepoError::damaged(name, format!("malformed tree: {e}")))?;
        if t.version != 1 {
            return Err(RepoError::UnsupportedVersion {
                name: name.into(),
                found: t.version,
                supported: 1,
            });
        }
        let mut prev: Option<OsString> = None;
        for n in &t.nodes {
            let os = n.os_name();
            if prev.as_ref().is_some_and(|p| *p >= os) {
                return Err(RepoError::UnsafeName {
                    tree: name.into(),
                    entry: format!("{} (out of order or duplicated)", n.name),
                });
            }
            prev = Some(os.clone());
            let b = os.as_bytes();
            if b.is_empty() || b == b"." || b == b".." || b.contains(&b'/') || b.contains(&0) {
                return Err(RepoError::UnsafeName {
                    tree: name.into(),
                    entry: n.name.clone(),
                });
            }
            if n.kind.is_none() {
                return Err(RepoError::damaged(name, format!("entry {:?} has no kind", n.name)));
            }
        }
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_escaping_names() {
        for bad in ["..", ".", "a/b", ""] {
            let mut t = Tree::new();
            t.nodes.push(Node {
                name: bad.into(),
                kind: Some(NodeKind::File),
                ..Default::default()
            });
            assert!(Tree::decode(&t.encode(), "t").is_err(), "{bad}");
        }
    }

    #[test]
    fn non_utf8_names_round_trip() {
        let mut n = Node {
            kind: Some(NodeKind::File),
            ..Default::default()
        };
        let raw = OsStr::from_bytes(b"caf\xe9");
        n.set_name(raw);
        let mut t = Tree::new();
        t.nodes.push(n);
        let back = Tree::decode(&t.encode(), "t").unwrap();
        assert_eq!(back.nodes[0].os_name(), raw);
    }
}
