//! Walking snapshot trees: listing (`ls`) and comparing (`diff`).

use std::path::{Path, PathBuf};

use crate::error::{RepoError, Result};
use crate::format::tree::{Node, NodeKind, Tree};
use crate::id::Id;
use crate::index::Index;
use crate::repository::Repository;

/// Calls `f` for every node under `root`, depth first, with its absolute snapshot path.
pub fn walk(repo: &Repository, index: &Index, root: &Id, f: &mut dyn FnMut(&Path, &Node) -> Result<()>) -> Result<()> {
    fn go(
        repo: &Repository,
        index: &Index,
        id: &Id,
        at: &Path,
        f: &mut dyn FnMut(&Path, &Node) -> Result<()>,
    ) -> Result<()> {
        let t = repo.read_tree(index, id)?;
        for n in &t.nodes {
            let p = at.join(n.os_name());
            f(&p, n)?;
            if let (Some(NodeKind::Dir), Some(st)) = (n.kind, &n.subtree) {
                go(repo, index, st, &p, f)?;
            }
        }
        Ok(())
    }
    go(repo, index, root, Path::new("/"), f)
}

/// Finds the tree id of the directory at `path` inside a snapshot (for `ls snapshot /etc`).
pub fn find_dir(repo: &Repository, index: &Index, root: &Id, path: &Path) -> Result<Id> {
    let mut cur = *root;
    for c in path.components() {
        let std::path::Component::Normal(name) = c else {
            continue;
        };
        let t = repo.read_tree(index, &cur)?;
        let n = t
            .nodes
            .iter()
            .find(|n| n.os_name() == name)
            .ok_or_else(|| RepoError::Invalid(format!("{} is not in the snapshot", path.display())))?;
        cur = n
            .subtree
            .filter(|_| n.is_dir())
            .ok_or_else(|| RepoError::Invalid(format!("{} is not a directory in the snapshot", path.display())))?;
    }
    Ok(cur)
}

/// How an entry differs between two snapshots.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Change {
    /// Only in the second snapshot.
    #[serde(rename = "+")]
    Added,
    /// Only in the first snapshot.
    #[serde(rename = "-")]
    Removed,
    /// Content changed.
    #[serde(rename = "M")]
    Modified,
    /// Kind changed (file became a directory…).
    #[serde(rename = "T")]
    TypeChanged,
    /// Only metadata (mode, owner, mtime) changed.
    #[serde(rename = "U")]
    MetadataChanged,
}

impl Change {
    /// One-letter code, as restic prints it.
    pub fn code(&self) -> &'static str {
        match self {
            Change::Added => "+",
            Change::Removed => "-",
            Change::Modified => "M",
            Change::TypeChanged => "T",
            Change::MetadataChanged => "U",
        }
    }
}

/// One line of a diff.
#[derive(Clone, Debug, serde::Serialize)]
pub struct DiffEntry {
    /// Change kind.
    pub change: Change,
    /// Snapshot path.
    pub path: PathBuf,
    /// True for directories.
    pub dir: bool,
}

/// Compares two trees; identical subtrees (same id) are skipped without reading them.
pub fn diff(repo: &Repository, index: &Index, a: &Id, b: &Id) -> Result<Vec<DiffEntry>> {
    let mut out = Vec::new();
    diff_trees(repo, index, Some(a), Some(b), Path::new("/"), &mut out)?;
    Ok(out)
}

fn diff_trees(
    repo: &Repository,
    index: &Index,
    a: Option<&Id>,
    b: Option<&Id>,
    at: &Path,
    out: &mut Vec<DiffEntry>,
) -> Result<()> {
    if a.is_some() && a == b {
        return Ok(());
    }
    let ta = a
        .map(|id| repo.read_tree(index, id))
        .transpose()?
        .unwrap_or_else(Tree::new);
    let tb = b
        .map(|id| repo.read_tree(index, id))
        .transpose()?
        .unwrap_or_else(Tree::new);
    let (mut i, mut j) = (0, 0);
    while i < ta.nodes.len() || j < tb.nodes.len() {
        let na = ta.nodes.get(i);
        let nb = tb.nodes.get(j);
        let ord = match (na, nb) {
            (Some(x), Some(y)) => x.os_name().cmp(&y.os_name()),
            (Some(_), None) => std::cmp::Ordering::Less,
            _ => std::cmp::Ordering::Greater,
        };
        match ord {
            std::cmp::Ordering::Less => {
                let x = na.expect("a");
                report_all(repo, index, x, at, Change::Removed, out)?;
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                let y = nb.expect("b");
                report_all(repo, index, y, at, Change::Added, out)?;
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                let (x, y) = (na.expect("a"), nb.expect("b"));
                let p = at.join(x.os_name());
                if x.kind != y.kind {
                    out.push(DiffEntry {
                        change: Change::TypeChanged,
                        path: p.clone(),
                        dir: y.is_dir(),
                    });
                } else if x.is_dir() {
                    if x.mode != y.mode || x.uid != y.uid || x.gid != y.gid {
                        out.push(DiffEntry {
                            change: Change::MetadataChanged,
                            path: p.clone(),
                            dir: true,
                        });
                    }
                    diff_trees(repo, index, x.subtree.as_ref(), y.subtree.as_ref(), &p, out)?;
                } else if x.content != y.content || x.target != y.target || x.size != y.size {
                    out.push(DiffEntry {
                        change: Change::Modified,
                        path: p,
                        dir: false,
                    });
                } else if x.mode != y.mode || x.uid != y.uid || x.gid != y.gid || x.mtime_ns != y.mtime_ns {
                    out.push(DiffEntry {
                        change: Change::MetadataChanged,
                        path: p,
                        dir: false,
                    });
                }
                i += 1;
                j += 1;
            }
        }
    }
    Ok(())
}

fn report_all(
    repo: &Repository,
    index: &Index,
    n: &Node,
    at: &Path,
    change: Change,
    out: &mut Vec<DiffEntry>,
) -> Result<()> {
    let p = at.join(n.os_name());
    out.push(DiffEntry {
        change,
        path: p.clone(),
        dir: n.is_dir(),
    });
    if let (true, Some(st)) = (n.is_dir(), &n.subtree) {
        let t = repo.read_tree(index, st)?;
        for c in &t.nodes {
            report_all(repo, index, c, &p, change, out)?;
        }
    }
    Ok(())
}
