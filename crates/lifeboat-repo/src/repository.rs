//! Opening, creating and reading a repository: keys, config, index, snapshots and blobs.

use std::sync::Arc;

use crate::backend::{Backend, BackendErrorKind, PutMode};
use crate::chunker::ChunkerParams;
use crate::crypto::{KdfParams, KeyFile, Keys};
use crate::error::{RepoError, Result};
use crate::format::index::{self as index_format, PackRecord};
use crate::format::pack::{BlobType, blob_aad};
use crate::format::sealed::{self, Kind};
use crate::format::snapshot::Snapshot;
use crate::format::tree::Tree;
use crate::id::Id;
use crate::index::{Index, Location};

/// Per-thread buffers for reading blobs without an allocation per blob.
#[derive(Default, Debug)]
pub struct BlobScratch {
    /// The sealed bytes (decrypted in place).
    pub sealed: Vec<u8>,
    /// Decompressed plaintext.
    pub plain: Vec<u8>,
}

impl BlobScratch {
    /// Frees buffers grown beyond `keep` bytes by an unusually large blob, so a few big chunks
    /// don't pin memory for the rest of a long restore or check.
    pub fn trim(&mut self, keep: usize) {
        for b in [&mut self.sealed, &mut self.plain] {
            if b.capacity() > keep {
                *b = Vec::new();
            }
        }
    }
}

/// Readable snapshots (oldest first) and the errors of the manifests that could not be read.
pub type SnapshotListing = (Vec<(Id, Snapshot)>, Vec<RepoError>);

/// Repository-wide settings, fixed at `init` (sealed `config` object).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Config {
    /// Format version, 1.
    pub version: u32,
    /// Random repository id (names local caches).
    pub id: Id,
    /// Chunker bounds.
    pub chunker: ChunkerParams,
    /// Target pack size in bytes.
    pub pack_size: u64,
    /// zstd level for blobs.
    pub compression_level: i32,
    /// Creation time.
    pub created: jiff::Timestamp,
}

/// Options for `init`.
#[derive(Clone, Debug)]
pub struct InitOptions {
    /// Key derivation costs for the first key file.
    pub kdf: KdfParams,
    /// Chunker bounds.
    pub chunker: ChunkerParams,
    /// Target pack size.
    pub pack_size: u64,
    /// zstd level. 2 by default: measured on 1.6 GB of /usr, 10 % faster backups than level 3
    /// for a 3 % larger repository (bench/README.md).
    pub compression_level: i32,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            kdf: KdfParams::DEFAULT,
            chunker: ChunkerParams::default(),
            pack_size: 16 << 20,
            compression_level: 2,
        }
    }
}

/// A key file as listed by `key list`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct KeyInfo {
    /// Key file id.
    pub id: String,
    /// True for the key that opened this session.
    pub current: bool,
    /// When it was added.
    pub created: String,
    /// Host that added it.
    pub host: String,
    /// User that added it.
    pub user: String,
}

/// An open repository: the storage, the keys and the config. Cloning is cheap (the storage is
/// shared); background threads of a writer hold their own clone.
#[derive(Clone)]
pub struct Repository {
    backend: Arc<dyn Backend>,
    keys: Keys,
    config: Config,
    key_id: String,
}

/// Object name of a pack.
pub fn pack_key(id: &Id) -> String {
    let h = id.to_hex();
    format!("data/{}/{}", &h[..2], h)
}

/// Host name of this machine (informational metadata only).
pub fn hostname() -> String {
    std::env::var("LIFEBOAT_HOST")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Name of the user running lifeboat (informational metadata only).
pub fn username() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into())
}

impl Repository {
    /// Creates a new repository: a random master key, the first key file, the config.
    pub fn init(backend: Arc<dyn Backend>, passphrase: &[u8], opts: &InitOptions) -> Result<Repository> {
        opts.chunker.validate().map_err(RepoError::Invalid)?;
        if backend.head("config")?.is_some() {
            return Err(RepoError::AlreadyExists {
                location: backend.location().into(),
            });
        }
        let keys = Keys::generate();
        let config = Config {
            version: 1,
            id: Id::random(),
            chunker: opts.chunker,
            pack_size: opts.pack_size,
            compression_level: opts.compression_level,
            created: jiff::Timestamp::now(),
        };
        let key_id = write_key_file(backend.as_ref(), &keys, passphrase, opts.kdf)?;
        let body = serde_json::to_vec(&config).expect("config serializes");
        backend
            .put("config", sealed::seal(&keys, Kind::Config, &body), PutMode::Create)
            .map_err(|e| match e.kind {
                BackendErrorKind::AlreadyExists => RepoError::AlreadyExists {
                    location: backend.location().into(),
                },
                _ => e.into(),
            })?;
        Ok(Repository {
            backend,
            keys,
            config,
            key_id,
        })
    }

    /// Opens a repository with a passphrase, trying every key file.
    pub fn open(backend: Arc<dyn Backend>, passphrase: &[u8]) -> Result<Repository> {
        let cfg = match backend.get("config") {
            Ok(c) => c,
            Err(e) if e.is_not_found() => {
                return Err(RepoError::NotFound {
                    location: backend.location().into(),
                });
            }
            Err(e) => return Err(e.into()),
        };
        let keyfiles = backend.list("keys/")?;
        for k in &keyfiles {
            let raw = backend.get(&k.key)?;
            let kf: KeyFile = serde_json::from_slice(&raw)
                .map_err(|e| RepoError::damaged(&k.key, format!("malformed key file: {e}")))?;
            if let Some(keys) = kf.unwrap_keys(passphrase, &k.key)? {
                let body = sealed::open(&keys, Kind::Config, &cfg, "config")?;
                let config: Config = serde_json::from_slice(&body)
                    .map_err(|e| RepoError::damaged("config", format!("malformed config: {e}")))?;
                if config.version != 1 {
                    return Err(RepoError::UnsupportedVersion {
                        name: "config".into(),
                        found: config.version,
                        supported: 1,
                    });
                }
                config.chunker.validate().map_err(|e| RepoError::damaged("config", e))?;
                let key_id = k.key.trim_start_matches("keys/").to_string();
                return Ok(Repository {
                    backend,
                    keys,
                    config,
                    key_id,
                });
            }
        }
        Err(RepoError::WrongPassphrase {
            location: backend.location().into(),
            keys: keyfiles.len(),
        })
    }

    /// The same repository (keys and config) at another location holding a copy of it, so each
    /// location can be read, checked and repaired on its own without asking for the passphrase
    /// again.
    pub fn at(&self, backend: Arc<dyn Backend>) -> Repository {
        Repository {
            backend,
            keys: self.keys.clone(),
            config: self.config.clone(),
            key_id: self.key_id.clone(),
        }
    }

    /// The storage.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// The keys.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The config.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Lists key files.
    pub fn list_keys(&self) -> Result<Vec<KeyInfo>> {
        let mut out = Vec::new();
        for k in self.backend.list("keys/")? {
            let raw = self.backend.get(&k.key)?;
            let kf: KeyFile = serde_json::from_slice(&raw)
                .map_err(|e| RepoError::damaged(&k.key, format!("malformed key file: {e}")))?;
            let id = k.key.trim_start_matches("keys/").to_string();
            out.push(KeyInfo {
                current: id == self.key_id,
                id,
                created: kf.created,
                host: kf.host,
                user: kf.user,
            });
        }
        Ok(out)
    }

    /// Adds a key file for another passphrase; returns its id.
    pub fn add_key(&self, passphrase: &[u8], kdf: KdfParams) -> Result<String> {
        write_key_file(self.backend.as_ref(), &self.keys, passphrase, kdf)
    }

    /// Removes a key file. Refuses the key in use and the last key.
    pub fn remove_key(&self, id_prefix: &str) -> Result<String> {
        let keys = self.list_keys()?;
        let matches: Vec<_> = keys.iter().filter(|k| k.id.starts_with(id_prefix)).collect();
        let k = match matches.as_slice() {
            [k] => *k,
            [] => return Err(RepoError::Invalid(format!("no key file matches {id_prefix}"))),
            _ => return Err(RepoError::Invalid(format!("key prefix {id_prefix} is ambiguous"))),
        };
        if k.current {
            return Err(RepoError::Invalid(
                "refusing to remove the key file this session opened with (use `key passwd` to change it)".into(),
            ));
        }
        self.backend.delete(&format!("keys/{}", k.id))?;
        Ok(k.id.clone())
    }

    /// Replaces the current key file by one for a new passphrase. Data is never rewritten.
    pub fn change_passphrase(&mut self, new_passphrase: &[u8], kdf: KdfParams) -> Result<String> {
        let new_id = write_key_file(self.backend.as_ref(), &self.keys, new_passphrase, kdf)?;
        self.backend.delete(&format!("keys/{}", self.key_id))?;
        self.key_id = new_id.clone();
        Ok(new_id)
    }

    /// Writes a sealed file under `folder/` named by its hash; returns the id.
    pub fn write_sealed(&self, folder: &str, kind: Kind, body: &[u8]) -> Result<Id> {
        let data = sealed::seal(&self.keys, kind, body);
        let id = Id::hash_of(&data);
        self.backend.put(&format!("{folder}/{id}"), data, PutMode::Overwrite)?;
        Ok(id)
    }

    /// Reads and opens a sealed file, checking its name matches its hash.
    pub fn read_sealed(&self, key: &str, kind: Kind) -> Result<Vec<u8>> {
        let data = self.backend.get(key)?;
        if let Some(name) = key.rsplit('/').next()
            && let Some(id) = Id::from_hex(name)
            && Id::hash_of(&data) != id
        {
            return Err(RepoError::damaged(
                key,
                "content does not match its name (modified or truncated)",
            ));
        }
        sealed::open(&self.keys, kind, &data, key)
    }

    /// Writes an index segment for the given packs.
    pub fn write_index_segment(&self, packs: &[PackRecord]) -> Result<Id> {
        let body = zstd::bulk::compress(&index_format::encode(packs), 3)
            .map_err(|e| RepoError::Invalid(format!("index compression failed: {e}")))?;
        self.write_sealed("index", Kind::Index, &body)
    }

    /// Reads one index segment.
    pub fn read_index_segment(&self, key: &str) -> Result<Vec<PackRecord>> {
        let body = self.read_sealed(key, Kind::Index)?;
        let raw = zstd::stream::decode_all(body.as_slice())
            .map_err(|e| RepoError::damaged(key, format!("index decompression failed: {e}")))?;
        index_format::decode(&raw, key)
    }

    /// Loads the whole index (the union of all segments).
    pub fn load_index(&self) -> Result<Index> {
        let mut idx = Index::default();
        for o in self.backend.list("index/")? {
            for p in self.read_index_segment(&o.key)? {
                idx.add_pack(&p);
            }
            idx.segments.push(o.key);
        }
        Ok(idx)
    }

    /// Reads every marks object (packs awaiting deletion by a later prune).
    pub fn load_marks(&self) -> Result<Vec<(String, Marks)>> {
        let mut out = Vec::new();
        for o in self.backend.list("marks/")? {
            let body = self.read_sealed(&o.key, Kind::Marks)?;
            out.push((o.key.clone(), Marks::decode(&body, &o.key)?));
        }
        Ok(out)
    }

    /// The index for reading: live segments first, then packs awaiting deletion, so a snapshot
    /// that still needs a marked pack can be restored and checked.
    pub fn load_index_for_reading(&self) -> Result<Index> {
        let mut idx = self.load_index()?;
        for (_, m) in self.load_marks()? {
            for p in &m.packs {
                idx.add_pack(p);
            }
        }
        Ok(idx)
    }

    /// Reads the sealed bytes of a blob (for copying into another pack without re-encrypting).
    pub fn read_sealed_blob(&self, pack: &Id, loc: &Location) -> Result<Vec<u8>> {
        Ok(self.backend.get_range(
            &pack_key(pack),
            u64::from(loc.offset)..u64::from(loc.offset) + u64::from(loc.length),
        )?)
    }

    /// Reads, decrypts, decompresses and verifies one blob into reusable buffers.
    pub fn read_blob_into<'s>(&self, index: &Index, id: &Id, scratch: &'s mut BlobScratch) -> Result<&'s [u8]> {
        Ok(match self.read_blob_at(index, id, scratch)? {
            Some(r) => &scratch.sealed[r],
            None => &scratch.plain,
        })
    }

    /// [`Repository::read_blob_into`], saying where the plaintext is (as
    /// [`Repository::open_blob_slice`] does).
    fn read_blob_at(
        &self,
        index: &Index,
        id: &Id,
        scratch: &mut BlobScratch,
    ) -> Result<Option<std::ops::Range<usize>>> {
        let loc = index.get(id).ok_or_else(|| RepoError::MissingBlob {
            id: id.to_hex(),
            needed_by: "read".into(),
        })?;
        let pack = index.pack(loc.pack).id;
        let key = pack_key(&pack);
        let range = u64::from(loc.offset)..u64::from(loc.offset) + u64::from(loc.length);
        let mut result = self
            .backend
            .get_range_into(&key, range.clone(), &mut scratch.sealed)
            .map_err(RepoError::from)
            .and_then(|()| self.open_blob_at(&key, id, loc.blob_type, loc.raw_len, scratch));
        if let Err(first) = &result
            && matches!(first, RepoError::Damaged { .. } | RepoError::Backend(_))
        {
            // Damaged or unreadable here: try the repository's other locations, best first.
            for alt in self.backend.alternates() {
                if alt.get_range_into(&key, range.clone(), &mut scratch.sealed).is_err() {
                    continue;
                }
                if let Ok(at) = self.open_blob_at(&key, id, loc.blob_type, loc.raw_len, scratch) {
                    self.backend
                        .note_fallback(format!("{key}: {first}; read from {}", alt.location()));
                    result = Ok(at);
                    break;
                }
            }
        }
        result
    }

    /// Decrypts the sealed blob held in `scratch.sealed` in place, decompresses it if needed and
    /// checks its id; returns the plaintext (inside one of the scratch buffers).
    pub fn open_blob_into<'s>(
        &self,
        pack_name: &str,
        id: &Id,
        t: BlobType,
        raw_len: u32,
        scratch: &'s mut BlobScratch,
    ) -> Result<&'s [u8]> {
        Ok(match self.open_blob_at(pack_name, id, t, raw_len, scratch)? {
            Some(r) => &scratch.sealed[r],
            None => &scratch.plain,
        })
    }

    /// [`Repository::open_blob_into`], saying where the plaintext is: a range of
    /// `scratch.sealed` (stored uncompressed) or, for `None`, all of `scratch.plain`.
    fn open_blob_at(
        &self,
        pack_name: &str,
        id: &Id,
        t: BlobType,
        raw_len: u32,
        scratch: &mut BlobScratch,
    ) -> Result<Option<std::ops::Range<usize>>> {
        self.open_blob_slice(pack_name, id, t, raw_len, &mut scratch.sealed, &mut scratch.plain)
    }

    /// Decrypts and verifies a sealed blob in place, wherever it lies (check opens the blobs
    /// inside the large read of a pack, without copying each one out first); decompresses into
    /// `plain` when needed. Returns where the plaintext is: a range of `sealed`, or (`None`) all
    /// of `plain`.
    pub fn open_blob_slice(
        &self,
        pack_name: &str,
        id: &Id,
        t: BlobType,
        raw_len: u32,
        sealed: &mut [u8],
        plain: &mut Vec<u8>,
    ) -> Result<Option<std::ops::Range<usize>>> {
        let what = || format!("{pack_name} (blob {})", id.short());
        let range = self
            .keys
            .open_in_place(&blob_aad(t, id), sealed, pack_name)
            .map_err(|_| RepoError::damaged(what(), "authentication failed (modified, truncated or wrong key)"))?;
        let framed = &sealed[range.clone()];
        let Some((&marker, body)) = framed.split_first() else {
            return Err(RepoError::damaged(what(), "empty plaintext"));
        };
        let (plain, at): (&[u8], _) = match marker {
            0 => (body, Some(range.start + 1..range.end)),
            1 => {
                crate::crypto::decompress_into(body, raw_len as usize, plain, &what())?;
                (plain, None)
            }
            2 => {
                crate::crypto::lz4_decompress_into(body, raw_len as usize, plain, &what())?;
                (plain, None)
            }
            m => return Err(RepoError::damaged(what(), format!("unknown compression marker {m}"))),
        };
        if plain.len() != raw_len as usize {
            return Err(RepoError::damaged(what(), "length does not match the index"));
        }
        if self.keys.blob_id(plain) != *id {
            return Err(RepoError::damaged(what(), "content does not match its id"));
        }
        Ok(at)
    }

    /// Reads, decrypts, decompresses and verifies one blob (allocating; hot loops use
    /// [`Repository::read_blob_into`]).
    pub fn read_blob(&self, index: &Index, id: &Id) -> Result<Vec<u8>> {
        Ok(self.read_blob_into(index, id, &mut BlobScratch::default())?.to_vec())
    }

    /// Decrypts a sealed blob and checks its id (allocating form of
    /// [`Repository::open_blob_into`]).
    pub fn open_blob(
        &self,
        pack_name: &str,
        id: &Id,
        t: BlobType,
        raw_len: u32,
        sealed_bytes: &[u8],
    ) -> Result<Vec<u8>> {
        let mut scratch = BlobScratch {
            sealed: sealed_bytes.to_vec(),
            plain: Vec::new(),
        };
        Ok(self.open_blob_into(pack_name, id, t, raw_len, &mut scratch)?.to_vec())
    }

    /// Reads and parses a tree blob.
    pub fn read_tree(&self, index: &Index, id: &Id) -> Result<Tree> {
        thread_local! {
            static SCRATCH: std::cell::RefCell<BlobScratch> = std::cell::RefCell::default();
        }
        SCRATCH.with(|s| {
            let mut s = s.borrow_mut();
            let name = format!("tree {}", id.short());
            let tree = match self.read_blob_at(index, id, &mut s) {
                Ok(Some(r)) => Tree::decode(&s.sealed[r], &name),
                Ok(None) => {
                    // Decompressed: the sealed bytes are no longer needed while decoding.
                    s.sealed = Vec::new();
                    Tree::decode(&s.plain, &name)
                }
                Err(e) => Err(e),
            };
            // A folder of tens of thousands of entries makes a tree of megabytes; its buffers
            // must not stay with the thread for the rest of a restore or backup.
            s.trim(256 << 10);
            tree
        })
    }

    /// Lists all readable snapshots, oldest first. A damaged manifest is skipped so it cannot
    /// make every other snapshot unrestorable; [`Repository::list_snapshots_checked`] reports it.
    pub fn list_snapshots(&self) -> Result<Vec<(Id, Snapshot)>> {
        Ok(self.list_snapshots_checked()?.0)
    }

    /// Lists snapshots and, separately, the manifests that could not be read.
    pub fn list_snapshots_checked(&self) -> Result<SnapshotListing> {
        let mut out = Vec::new();
        let mut bad = Vec::new();
        for o in self.backend.list("snapshots/")? {
            let name = o.key.trim_start_matches("snapshots/");
            let Some(id) = Id::from_hex(name) else { continue };
            match self
                .read_sealed(&o.key, Kind::Snapshot)
                .and_then(|body| Snapshot::decode(&body, &o.key))
            {
                Ok(s) => out.push((id, s)),
                Err(RepoError::Backend(e)) if !e.is_not_found() => return Err(e.into()),
                Err(e) => bad.push(e),
            }
        }
        out.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
        Ok((out, bad))
    }

    /// Resolves `latest`, a full id or a unique prefix of at least 4 hex digits.
    pub fn find_snapshot(&self, reference: &str) -> Result<(Id, Snapshot)> {
        let all = self.list_snapshots()?;
        // Named with the repository: with several configs around, "not found" often means
        // "looked in the wrong place".
        let missing = || RepoError::SnapshotNotFound(format!("{reference} in {}", self.backend().location()));
        if reference == "latest" {
            return all.into_iter().last().ok_or_else(missing);
        }
        if reference.len() < 4 || !reference.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(missing());
        }
        let mut m: Vec<_> = all
            .into_iter()
            .filter(|(id, _)| id.to_hex().starts_with(reference))
            .collect();
        match m.len() {
            0 => Err(missing()),
            1 => Ok(m.pop().expect("one")),
            _ => Err(RepoError::AmbiguousSnapshot(reference.into())),
        }
    }

    /// Writes a snapshot manifest: the commit point of a backup.
    pub fn write_snapshot(&self, s: &Snapshot) -> Result<Id> {
        self.write_sealed("snapshots", Kind::Snapshot, &s.encode())
    }

    /// Deletes a snapshot manifest (forget).
    pub fn delete_snapshot(&self, id: &Id) -> Result<()> {
        Ok(self.backend.delete(&format!("snapshots/{id}"))?)
    }
}

/// Packs a prune set aside for deletion (see docs/format.md, "Marks").
#[derive(Clone, Debug)]
pub struct Marks {
    /// When the prune marked them.
    pub time: jiff::Timestamp,
    /// The packs with their full index entries, so they can be put back.
    pub packs: Vec<PackRecord>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct MarksFile {
    version: u32,
    time: jiff::Timestamp,
    packs: String,
}

impl Marks {
    /// Encodes the stored body.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(&MarksFile {
            version: 1,
            time: self.time,
            packs: hex::encode(index_format::encode(&self.packs)),
        })
        .expect("marks serialize")
    }

    /// Decodes the stored body.
    pub fn decode(body: &[u8], name: &str) -> Result<Marks> {
        let f: MarksFile =
            serde_json::from_slice(body).map_err(|e| RepoError::damaged(name, format!("malformed marks: {e}")))?;
        if f.version != 1 {
            return Err(RepoError::UnsupportedVersion {
                name: name.into(),
                found: f.version,
                supported: 1,
            });
        }
        let raw = hex::decode(&f.packs).map_err(|_| RepoError::damaged(name, "malformed marks"))?;
        Ok(Marks {
            time: f.time,
            packs: index_format::decode(&raw, name)?,
        })
    }
}

fn write_key_file(backend: &dyn Backend, keys: &Keys, passphrase: &[u8], kdf: KdfParams) -> Result<String> {
    let kf = KeyFile::wrap(keys, passphrase, kdf, &hostname(), &username())?;
    let data = serde_json::to_vec_pretty(&kf).expect("key file serializes");
    let id = Id::hash_of(&data).to_hex();
    backend.put(&format!("keys/{id}"), data, PutMode::Create)?;
    Ok(id)
}
