//! Keys, sealing and key files.
//!
//! One random master key per repository; everything else is derived from it, so changing a
//! passphrase only rewrites a small key file. Sealing uses XChaCha20-Poly1305, whose 192-bit
//! random nonces stay safe for any number of objects a repository can hold (AES-GCM's 96-bit
//! nonces would not over years of deduplicated backups).

use std::cell::RefCell;

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Key, Tag, XChaCha20Poly1305, XNonce};
use zeroize::{Zeroize, Zeroizing};

use crate::error::{RepoError, Result};
use crate::id::Id;

/// Nonce length of XChaCha20-Poly1305.
pub const NONCE_LEN: usize = 24;
/// Authentication tag length.
pub const TAG_LEN: usize = 16;
/// Bytes a sealed blob adds to its plaintext.
pub const SEAL_OVERHEAD: usize = NONCE_LEN + TAG_LEN;

/// Fills a buffer from the OS random source. Failure of the OS RNG is unrecoverable.
pub fn fill_random(buf: &mut [u8]) {
    getrandom::fill(buf).expect("the operating system's random number generator failed");
}

/// The repository master key and its derived sub-keys. Zeroed on drop.
#[derive(Clone)]
pub struct Keys {
    master: Zeroizing<[u8; 32]>,
    cipher: XChaCha20Poly1305,
    id_key: Zeroizing<[u8; 32]>,
    chunker_seed: u64,
}

impl Keys {
    /// Generates a new random master key (for `init`).
    pub fn generate() -> Keys {
        let mut m = Zeroizing::new([0u8; 32]);
        fill_random(m.as_mut());
        Keys::from_master(m)
    }

    /// Derives the sub-keys from a master key.
    pub fn from_master(master: Zeroizing<[u8; 32]>) -> Keys {
        let enc = Zeroizing::new(blake3::derive_key(
            "lifeboat 2026-11 object encryption v1",
            master.as_ref(),
        ));
        let id_key = Zeroizing::new(blake3::derive_key("lifeboat 2026-11 blob id v1", master.as_ref()));
        let seed_bytes = blake3::derive_key("lifeboat 2026-11 chunker seed v1", master.as_ref());
        let mut s = [0u8; 8];
        s.copy_from_slice(&seed_bytes[..8]);
        Keys {
            cipher: XChaCha20Poly1305::new(Key::from_slice(enc.as_ref())),
            master,
            id_key,
            chunker_seed: u64::from_le_bytes(s),
        }
    }

    /// The keyed hash that names a blob: storage cannot confirm a guess about content.
    pub fn blob_id(&self, data: &[u8]) -> Id {
        Id(*blake3::keyed_hash(&self.id_key, data).as_bytes())
    }

    /// Seed for the chunker's gear table, so cut points don't fingerprint content.
    pub fn chunker_seed(&self) -> u64 {
        self.chunker_seed
    }

    /// Encrypts `buf` in place and frames it as `nonce | ciphertext | tag` into `out`.
    pub fn seal_into(&self, aad: &[u8], plaintext: &[u8], out: &mut Vec<u8>) {
        let mut nonce = [0u8; NONCE_LEN];
        fill_random(&mut nonce);
        let start = out.len();
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let tag = self
            .cipher
            .encrypt_in_place_detached(XNonce::from_slice(&nonce), aad, &mut out[start + NONCE_LEN..])
            .expect("XChaCha20-Poly1305 encryption cannot fail for in-memory buffers");
        out.extend_from_slice(&tag);
    }

    /// Verifies and decrypts `nonce | ciphertext | tag`. `what` names the object for errors.
    pub fn open(&self, aad: &[u8], sealed: &[u8], what: &str) -> Result<Vec<u8>> {
        if sealed.len() < SEAL_OVERHEAD {
            return Err(RepoError::damaged(what, "too short to be encrypted data"));
        }
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        let (ct, tag) = rest.split_at(rest.len() - TAG_LEN);
        let mut buf = ct.to_vec();
        self.cipher
            .decrypt_in_place_detached(XNonce::from_slice(nonce), aad, &mut buf, Tag::from_slice(tag))
            .map_err(|_| RepoError::damaged(what, "authentication failed (modified, truncated or wrong key)"))?;
        Ok(buf)
    }

    /// Verifies and decrypts `nonce | ciphertext | tag` in place; returns where the plaintext is.
    pub fn open_in_place(&self, aad: &[u8], sealed: &mut [u8], what: &str) -> Result<std::ops::Range<usize>> {
        if sealed.len() < SEAL_OVERHEAD {
            return Err(RepoError::damaged(what, "too short to be encrypted data"));
        }
        let end = sealed.len() - TAG_LEN;
        let (head, tag) = sealed.split_at_mut(end);
        let (nonce, ct) = head.split_at_mut(NONCE_LEN);
        self.cipher
            .decrypt_in_place_detached(XNonce::from_slice(nonce), aad, ct, Tag::from_slice(tag))
            .map_err(|_| RepoError::damaged(what, "authentication failed (modified, truncated or wrong key)"))?;
        Ok(NONCE_LEN..end)
    }

    /// Compresses (zstd at `level`, raw when it saves under 3 %) and seals a blob in one buffer:
    /// `nonce | encrypted(marker | bytes) | tag`. One allocation, no intermediate copies, which
    /// matters for the memory ceiling of a backup.
    pub fn seal_blob(&self, aad: &[u8], data: &[u8], level: i32) -> Vec<u8> {
        let mut out = Vec::new();
        self.seal_blob_into(aad, data, level, &mut out);
        out
    }

    /// [`Keys::seal_blob`] into a caller's buffer (replacing its contents), for buffer reuse.
    pub fn seal_blob_into(&self, aad: &[u8], data: &[u8], level: i32, out: &mut Vec<u8>) {
        self.seal_blob_with(aad, data, Codec::Zstd(level), out);
    }

    /// [`Keys::seal_blob_into`] with a choice of codec (WAL under a backlog uses LZ4).
    pub fn seal_blob_with(&self, aad: &[u8], data: &[u8], codec: Codec, out: &mut Vec<u8>) {
        let bound = match codec {
            Codec::Zstd(_) => zstd::zstd_safe::compress_bound(data.len()),
            Codec::Lz4 => lz4::block::compress_bound(data.len()).unwrap_or(usize::MAX),
        };
        out.clear();
        out.reserve(NONCE_LEN + 1 + bound.max(data.len()) + TAG_LEN);
        let mut nonce = [0u8; NONCE_LEN];
        fill_random(&mut nonce);
        out.extend_from_slice(&nonce);
        let start = NONCE_LEN + 1;
        let n = match codec {
            Codec::Zstd(level) => {
                out.push(Compression::Zstd as u8);
                COMPRESSOR.with(|c| {
                    let mut c = c.borrow_mut();
                    if c.as_ref().is_none_or(|(l, _)| *l != level) {
                        *c = zstd::bulk::Compressor::new(level).ok().map(|z| (level, z));
                    }
                    let z = &mut c.as_mut()?.1;
                    let mut cur = std::io::Cursor::new(&mut *out);
                    cur.set_position(start as u64);
                    z.compress_to_buffer(data, &mut cur).ok()
                })
            }
            Codec::Lz4 => {
                out.push(Compression::Lz4 as u8);
                // The block encoder writes into initialised memory: a per-thread scratch
                // buffer, zeroed once, then only the compressed bytes (a sixth of a WAL chunk)
                // are copied, instead of zeroing a chunk-sized region of `out` per blob.
                LZ4_SCRATCH.with(|b| {
                    let mut b = b.borrow_mut();
                    if b.len() < bound {
                        b.resize(bound, 0);
                    }
                    let n = lz4::block::compress_to_buffer(data, None, false, &mut b[..]).ok()?;
                    out.extend_from_slice(&b[..n]);
                    Some(n)
                })
            }
        };
        match n {
            Some(n) if n < data.len() - data.len() / 33 => out.truncate(start + n),
            _ => {
                out.truncate(NONCE_LEN);
                out.push(Compression::None as u8);
                out.extend_from_slice(data);
            }
        }
        let tag = self
            .cipher
            .encrypt_in_place_detached(XNonce::from_slice(&nonce), aad, &mut out[NONCE_LEN..])
            .expect("XChaCha20-Poly1305 encryption cannot fail for in-memory buffers");
        out.extend_from_slice(&tag);
    }

    fn master_bytes(&self) -> &[u8; 32] {
        &self.master
    }
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(<redacted>)")
    }
}

/// Compression marker stored as the first plaintext byte of every blob and sealed object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Compression {
    /// Stored as is (did not shrink by at least 3 %).
    None = 0,
    /// One zstd frame.
    Zstd = 1,
    /// One LZ4 block (no frame: the blob's raw length comes from the index). Only blobs, and
    /// only WAL written under a backlog; sealed objects never use it.
    Lz4 = 2,
}

/// How a blob is compressed when it is sealed ([`Keys::seal_blob_with`]). Readers need no
/// setting: the marker byte says which decoder to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    /// zstd at this level (the default everywhere).
    Zstd(i32),
    /// LZ4 block format: on pgbench WAL about 1.5x zstd level 1's speed for half its ratio
    /// (6.5 against 11.9), decoding 1.5-3x faster.
    Lz4,
}

thread_local! {
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
    static LZ4_SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Compresses `data` with zstd at `level` using a per-thread context, writing
/// `marker | bytes` to `out`. Falls back to raw when compression saves less than 3 %.
pub fn compress_framed(data: &[u8], level: i32, out: &mut Vec<u8>) {
    let compressed = COMPRESSOR.with(|c| {
        let mut c = c.borrow_mut();
        if c.as_ref().is_none_or(|(l, _)| *l != level) {
            *c = zstd::bulk::Compressor::new(level).ok().map(|z| (level, z));
        }
        c.as_mut().and_then(|(_, z)| z.compress(data).ok())
    });
    match compressed {
        Some(z) if z.len() < data.len() - data.len() / 33 => {
            out.push(Compression::Zstd as u8);
            out.extend_from_slice(&z);
        }
        _ => {
            out.push(Compression::None as u8);
            out.extend_from_slice(data);
        }
    }
}

/// Reverses [`compress_framed`]. `expected_len` bounds the output (a hostile frame cannot make
/// us allocate more); `None` means unknown (sealed files), bounded at 1 GiB.
pub fn decompress_framed(framed: &[u8], expected_len: Option<usize>, what: &str) -> Result<Vec<u8>> {
    let Some((&marker, body)) = framed.split_first() else {
        return Err(RepoError::damaged(what, "empty plaintext"));
    };
    match marker {
        0 => Ok(body.to_vec()),
        1 => {
            let cap = expected_len.unwrap_or(1 << 30);
            // One decompression context per thread: creating one costs more than decompressing
            // a small tree blob.
            let out = DECOMPRESSOR
                .with(|d| {
                    let mut d = d.borrow_mut();
                    if d.is_none() {
                        *d = Some(zstd::bulk::Decompressor::new()?);
                    }
                    d.as_mut().expect("set above").decompress(body, cap.max(1))
                })
                .map_err(|e| RepoError::damaged(what, format!("decompression failed: {e}")))?;
            if let Some(n) = expected_len
                && out.len() != n
            {
                return Err(RepoError::damaged(
                    what,
                    format!("decompressed to {} bytes, expected {n}", out.len()),
                ));
            }
            Ok(out)
        }
        2 => {
            let n = expected_len.ok_or_else(|| RepoError::damaged(what, "LZ4 without a known length"))?;
            let mut out = Vec::new();
            lz4_decompress_into(body, n, &mut out, what)?;
            Ok(out)
        }
        m => Err(RepoError::damaged(what, format!("unknown compression marker {m}"))),
    }
}

/// Decompresses one LZ4 block into `out` (replacing its contents); the block must decode to
/// exactly `expected_len` bytes (a hostile block cannot make it write more).
pub fn lz4_decompress_into(body: &[u8], expected_len: usize, out: &mut Vec<u8>, what: &str) -> Result<()> {
    // Old contents are overwritten: only growth is zeroed (recycled buffers are not).
    if out.len() > expected_len {
        out.truncate(expected_len);
    } else {
        out.resize(expected_len, 0);
    }
    let size = i32::try_from(expected_len)
        .map_err(|_| RepoError::damaged(what, format!("LZ4 block of {expected_len} bytes is too large")))?;
    let n = lz4::block::decompress_to_buffer(body, Some(size), out)
        .map_err(|e| RepoError::damaged(what, format!("decompression failed: {e}")))?;
    if n != expected_len {
        out.truncate(n);
        return Err(RepoError::damaged(
            what,
            format!("decompressed to {n} bytes, expected {expected_len}"),
        ));
    }
    Ok(())
}

/// Decompresses one zstd frame into `out` (replacing its contents) with the per-thread context,
/// refusing output longer than `expected_len`.
pub fn decompress_into(body: &[u8], expected_len: usize, out: &mut Vec<u8>, what: &str) -> Result<()> {
    out.clear();
    out.reserve(expected_len.max(1));
    DECOMPRESSOR
        .with(|d| {
            let mut d = d.borrow_mut();
            if d.is_none() {
                *d = Some(zstd::bulk::Decompressor::new()?);
            }
            d.as_mut().expect("set above").decompress_to_buffer(body, out)
        })
        .map_err(|e| RepoError::damaged(what, format!("decompression failed: {e}")))?;
    if out.len() != expected_len {
        return Err(RepoError::damaged(
            what,
            format!("decompressed to {} bytes, expected {expected_len}", out.len()),
        ));
    }
    Ok(())
}

/// Argon2id cost parameters, stored in each key file so they can grow over time.
#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_cost_kib: u32,
    /// Iterations.
    pub t_cost: u32,
    /// Lanes.
    pub p_cost: u32,
}

impl KdfParams {
    /// OWASP's recommended Argon2id setting of 12 MiB and 3 passes: equivalent strength to its
    /// 19 MiB / 2 passes baseline, while keeping the peak memory of every command small (the key
    /// is derived on each run, and backups run beside the service they protect).
    pub const DEFAULT: KdfParams = KdfParams {
        m_cost_kib: 12 * 1024,
        t_cost: 3,
        p_cost: 1,
    };
    /// Cheap parameters for tests (`LIFEBOAT_INSECURE_FAST_KDF=1`): never for real data.
    pub const TESTING: KdfParams = KdfParams {
        m_cost_kib: 64,
        t_cost: 1,
        p_cost: 1,
    };
}

/// A key file as stored under `keys/` (JSON, see docs/format.md).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct KeyFile {
    /// Format version, 1.
    pub version: u32,
    /// Always "argon2id".
    pub kdf: String,
    /// KDF costs.
    #[serde(flatten)]
    pub params: KdfParams,
    /// Hex salt, 32 bytes.
    pub salt: String,
    /// Hex nonce, 24 bytes.
    pub nonce: String,
    /// Hex of the wrapped master key with its tag (48 bytes).
    pub wrapped: String,
    /// When the key was added.
    pub created: String,
    /// Host that added it (informational).
    pub host: String,
    /// User that added it (informational).
    pub user: String,
}

const KEY_AAD: &[u8] = b"lifeboat-key-v1";

fn kdf(pass: &[u8], salt: &[u8], p: KdfParams) -> Result<Zeroizing<[u8; 32]>> {
    let params = argon2::Params::new(p.m_cost_kib, p.t_cost, p.p_cost, Some(32))
        .map_err(|e| RepoError::Invalid(format!("invalid key derivation parameters: {e}")))?;
    let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = Zeroizing::new([0u8; 32]);
    a.hash_password_into(pass, salt, out.as_mut())
        .map_err(|e| RepoError::Invalid(format!("key derivation failed: {e}")))?;
    Ok(out)
}

impl KeyFile {
    /// Wraps the master key of `keys` with a passphrase.
    pub fn wrap(keys: &Keys, passphrase: &[u8], params: KdfParams, host: &str, user: &str) -> Result<KeyFile> {
        let mut salt = [0u8; 32];
        fill_random(&mut salt);
        let mut nonce = [0u8; NONCE_LEN];
        fill_random(&mut nonce);
        let kek = kdf(passphrase, &salt, params)?;
        let cipher = XChaCha20Poly1305::new(Key::from_slice(kek.as_ref()));
        let mut buf = keys.master_bytes().to_vec();
        let tag = cipher
            .encrypt_in_place_detached(XNonce::from_slice(&nonce), KEY_AAD, &mut buf)
            .expect("in-memory encryption cannot fail");
        buf.extend_from_slice(&tag);
        let wrapped = hex::encode(&buf);
        buf.zeroize();
        Ok(KeyFile {
            version: 1,
            kdf: "argon2id".into(),
            params,
            salt: hex::encode(salt),
            nonce: hex::encode(nonce),
            wrapped,
            created: jiff::Timestamp::now().to_string(),
            host: host.into(),
            user: user.into(),
        })
    }

    /// Unwraps the master key; `Ok(None)` when the passphrase does not fit this key file.
    pub fn unwrap_keys(&self, passphrase: &[u8], name: &str) -> Result<Option<Keys>> {
        if self.version != 1 {
            return Err(RepoError::UnsupportedVersion {
                name: name.into(),
                found: self.version,
                supported: 1,
            });
        }
        if self.kdf != "argon2id" {
            return Err(RepoError::damaged(name, format!("unknown kdf {:?}", self.kdf)));
        }
        let bad = |what: &str| RepoError::damaged(name, format!("invalid {what}"));
        let salt = hex::decode(&self.salt).map_err(|_| bad("salt"))?;
        let nonce = hex::decode(&self.nonce).map_err(|_| bad("nonce"))?;
        let wrapped = hex::decode(&self.wrapped).map_err(|_| bad("wrapped key"))?;
        if nonce.len() != NONCE_LEN || wrapped.len() != 32 + TAG_LEN || salt.len() < 16 {
            return Err(bad("key material lengths"));
        }
        if self.params.m_cost_kib > 4 * 1024 * 1024 || self.params.t_cost > 100 || self.params.p_cost > 64 {
            return Err(bad("(absurd) key derivation costs"));
        }
        let kek = kdf(passphrase, &salt, self.params)?;
        let cipher = XChaCha20Poly1305::new(Key::from_slice(kek.as_ref()));
        let (ct, tag) = wrapped.split_at(32);
        let mut buf = Zeroizing::new(ct.to_vec());
        if cipher
            .decrypt_in_place_detached(XNonce::from_slice(&nonce), KEY_AAD, &mut buf, Tag::from_slice(tag))
            .is_err()
        {
            return Ok(None);
        }
        let mut m = Zeroizing::new([0u8; 32]);
        m.copy_from_slice(&buf);
        Ok(Some(Keys::from_master(m)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_tamper() {
        let k = Keys::generate();
        let mut out = Vec::new();
        k.seal_into(b"aad", b"hello", &mut out);
        assert_eq!(k.open(b"aad", &out, "x").unwrap(), b"hello");
        assert!(k.open(b"other", &out, "x").is_err());
        let mut bad = out.clone();
        bad[30] ^= 1;
        assert!(k.open(b"aad", &bad, "x").is_err());
        assert!(k.open(b"aad", &out[..out.len() - 1], "x").is_err());
    }

    #[test]
    fn key_file_wraps_and_rejects_wrong_passphrase() {
        let k = Keys::generate();
        let kf = KeyFile::wrap(&k, b"secret", KdfParams::TESTING, "h", "u").unwrap();
        let k2 = kf.unwrap_keys(b"secret", "k").unwrap().unwrap();
        assert_eq!(k.blob_id(b"x"), k2.blob_id(b"x"));
        assert!(kf.unwrap_keys(b"wrong", "k").unwrap().is_none());
    }

    #[test]
    fn sealed_blobs_open_to_the_same_bytes() {
        let k = Keys::generate();
        let mut random = vec![0u8; 5000];
        fill_random(&mut random);
        for data in [vec![], vec![7u8; 100_000], random] {
            let sealed = k.seal_blob(b"id", &data, 3);
            let framed = k.open(b"id", &sealed, "x").unwrap();
            assert_eq!(decompress_framed(&framed, Some(data.len()), "x").unwrap(), data);
        }
    }

    /// Every codec opens through the same path, including blobs written before LZ4 existed
    /// (markers 0 and 1, sealed by the zstd-only code that `seal_blob_into` still is).
    #[test]
    fn every_codec_round_trips_and_old_markers_still_decode() {
        let k = Keys::generate();
        let mut random = vec![0u8; 5000];
        fill_random(&mut random);
        let text: Vec<u8> = (0..300_000u32).flat_map(|i| (i % 1000).to_le_bytes()).collect();
        for (data, codec, marker) in [
            (text.clone(), Codec::Lz4, 2),
            (random.clone(), Codec::Lz4, 0),
            (vec![], Codec::Lz4, 0),
            (text.clone(), Codec::Zstd(1), 1),
            (random.clone(), Codec::Zstd(1), 0),
        ] {
            let mut sealed = Vec::new();
            k.seal_blob_with(b"id", &data, codec, &mut sealed);
            let framed = k.open(b"id", &sealed, "x").unwrap();
            assert_eq!(framed[0], marker, "{codec:?}");
            assert_eq!(decompress_framed(&framed, Some(data.len()), "x").unwrap(), data);
        }
        // Marker 1 and 0 exactly as older writers produced them.
        let mut z = vec![Compression::Zstd as u8];
        z.extend(zstd::bulk::compress(&text, 3).unwrap());
        assert_eq!(decompress_framed(&z, Some(text.len()), "x").unwrap(), text);
        let mut raw = vec![0u8];
        raw.extend_from_slice(&random);
        assert_eq!(decompress_framed(&raw, Some(random.len()), "x").unwrap(), random);
    }

    /// A damaged or lying LZ4 block is an error, never a panic or more output than expected.
    #[test]
    fn lz4_refuses_wrong_lengths_and_garbage() {
        let text: Vec<u8> = (0..100_000u32).map(|i| (i % 97) as u8).collect();
        let mut framed = vec![Compression::Lz4 as u8];
        framed.extend(lz4::block::compress(&text, None, false).unwrap());
        assert_eq!(decompress_framed(&framed, Some(text.len()), "x").unwrap(), text);
        assert!(decompress_framed(&framed, Some(text.len() - 1), "x").is_err());
        assert!(decompress_framed(&framed, Some(text.len() + 1), "x").is_err());
        assert!(decompress_framed(&framed, None, "x").is_err());
        let mut out = vec![9u8; 10];
        for cut in [1, framed.len() / 2, framed.len() - 1] {
            assert!(lz4_decompress_into(&framed[1..cut], text.len(), &mut out, "x").is_err());
        }
        assert!(lz4_decompress_into(&[0xff; 64], 1000, &mut out, "x").is_err());
    }

    /// Repositories written before the C library hold blocks from `lz4_flex`: they decode to
    /// the same bytes, and blocks of either encoder are the same standard LZ4 block format.
    #[test]
    fn lz4_blocks_of_the_former_encoder_still_decode() {
        let mut wal = Vec::new();
        for i in 0..300_000u32 {
            wal.extend_from_slice(&(i / 7).to_le_bytes());
        }
        wal.extend(std::iter::repeat_n(0u8, 200_000));
        let old = lz4_flex::block::compress(&wal);
        let mut out = Vec::new();
        lz4_decompress_into(&old, wal.len(), &mut out, "x").unwrap();
        assert_eq!(out, wal);
        let new = lz4::block::compress(&wal, None, false).unwrap();
        assert_eq!(lz4_flex::block::decompress(&new, wal.len()).unwrap(), wal);
    }

    #[test]
    fn compression_falls_back_to_raw() {
        let mut out = Vec::new();
        let mut random = vec![0u8; 4096];
        fill_random(&mut random);
        compress_framed(&random, 3, &mut out);
        assert_eq!(out[0], 0);
        assert_eq!(decompress_framed(&out, Some(4096), "x").unwrap(), random);
        out.clear();
        compress_framed(&[7u8; 10000], 3, &mut out);
        assert_eq!(out[0], 1);
        assert_eq!(decompress_framed(&out, Some(10000), "x").unwrap(), vec![7u8; 10000]);
        assert!(decompress_framed(&out, Some(9999), "x").is_err());
    }
}
