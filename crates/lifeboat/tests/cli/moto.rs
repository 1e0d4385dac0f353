//! A real S3-compatible server for the tests: moto's `moto_server` on a free loopback port.
//!
//! One shared server per test binary (a bucket per test keeps tests apart), plus dedicated
//! servers for tests that stop one. A watchdog shell stops every server when the test process
//! exits. Without `moto_server` the S3 tests FAIL with instructions, unless
//! `LIFEBOAT_SKIP_S3_TESTS=1` says to skip them on purpose.
//!
//! Also here: a loopback TCP proxy that can cut every connection, to take a location "down"
//! in the middle of a run while the server keeps its data.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// A running moto server, or (opt-in, see [`garage`]) the Garage server of `.ci/garage-tests.sh`.
pub struct Moto {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// moto's pid and its watchdog shell; `None` for Garage, which the job runs.
    proc: Option<(u32, Child)>,
}

/// The Garage server the S3 tests run against instead of moto, when `.ci/garage-tests.sh` says
/// so: `LIFEBOAT_TEST_GARAGE_ENDPOINT` (`http://127.0.0.1:PORT`), `LIFEBOAT_TEST_GARAGE_CONFIG`
/// (its garage.toml, for creating buckets with the `garage` CLI) and `LIFEBOAT_TEST_GARAGE_KEY`
/// (the key name allowed on new buckets; its id and secret are in `AWS_ACCESS_KEY_ID` and
/// `AWS_SECRET_ACCESS_KEY`).
pub struct Garage {
    /// S3 endpoint.
    pub endpoint: String,
    config: String,
    key: String,
}

/// `Some` when the S3 tests run against Garage.
pub fn garage() -> Option<&'static Garage> {
    static G: OnceLock<Option<Garage>> = OnceLock::new();
    G.get_or_init(|| {
        let endpoint = std::env::var("LIFEBOAT_TEST_GARAGE_ENDPOINT").ok()?;
        Some(Garage {
            endpoint,
            config: std::env::var("LIFEBOAT_TEST_GARAGE_CONFIG").expect("LIFEBOAT_TEST_GARAGE_CONFIG"),
            key: std::env::var("LIFEBOAT_TEST_GARAGE_KEY").expect("LIFEBOAT_TEST_GARAGE_KEY"),
        })
    })
    .as_ref()
}

/// True (after printing why) when running against Garage and the test needs something only moto
/// offers; the test then returns early.
pub fn moto_only(reason: &str) -> bool {
    if garage().is_some() {
        eprintln!("skipped on Garage: {reason}");
        return true;
    }
    false
}

/// The region to sign with: Garage accepts only its own (`garage`).
pub fn region(r: &str) -> &str {
    if garage().is_some() { "garage" } else { r }
}

/// A signed client for one bucket (Garage checks signatures, unlike moto).
fn signed(bucket: &str) -> lifeboat_repo::backend::ObjectStoreBackend {
    let g = garage().expect("garage");
    lifeboat_repo::backend::ObjectStoreBackend::s3(
        bucket,
        format!("garage {bucket}"),
        &lifeboat_repo::backend::S3Options {
            region: Some("garage".into()),
            endpoint: Some(g.endpoint.clone()),
            ..Default::default()
        },
    )
    .expect("garage client")
}

/// Free port on loopback (bound, then released for the server).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

fn moto_available() -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("moto_server").is_file()))
        .unwrap_or(false)
}

/// `Some(())` when S3 tests should run; `None` when explicitly skipped. Panics when moto is
/// missing and skipping was not asked for.
pub fn s3_tests_enabled() -> Option<()> {
    if garage().is_some() || moto_available() {
        return Some(());
    }
    if std::env::var("LIFEBOAT_SKIP_S3_TESTS").as_deref() == Ok("1") {
        eprintln!("S3 tests skipped: LIFEBOAT_SKIP_S3_TESTS=1 and no moto_server on PATH");
        return None;
    }
    panic!(
        "moto_server is not on PATH: the S3 tests need it. Install it with \
         `python3 -m pip install \"moto[s3]\" flask flask-cors` (what .ci/run does), \
         or set LIFEBOAT_SKIP_S3_TESTS=1 to skip the S3 tests on purpose"
    );
}

impl Moto {
    /// The server shared by every test of this binary.
    pub fn shared() -> &'static Moto {
        static M: OnceLock<Moto> = OnceLock::new();
        M.get_or_init(|| match garage() {
            Some(g) => Moto {
                port: g
                    .endpoint
                    .rsplit(':')
                    .next()
                    .and_then(|p| p.trim_end_matches('/').parse().ok())
                    .expect("port in LIFEBOAT_TEST_GARAGE_ENDPOINT"),
                proc: None,
            },
            None => Moto::start(),
        })
    }

    /// A dedicated server (stopped on drop). moto only.
    pub fn start() -> Moto {
        assert!(
            garage().is_none(),
            "a dedicated server needs moto (skip this test on Garage)"
        );
        let port = free_port();
        // The shell starts moto, prints its pid, and stops it when this test process exits or
        // when the shell itself is terminated.
        let script = r#"moto_server -H 127.0.0.1 -p "$1" >"$3" 2>&1 &
m=$!
echo "$m"
trap 'kill "$m" 2>/dev/null; exit 0' TERM INT
while kill -0 "$2" 2>/dev/null && kill -0 "$m" 2>/dev/null; do sleep 0.5; done
kill "$m" 2>/dev/null
wait"#;
        let log = std::env::temp_dir().join(format!("lifeboat-moto-{port}.log"));
        let mut watchdog = Command::new("sh")
            .args(["-c", script, "sh", &port.to_string(), &std::process::id().to_string()])
            .arg(&log)
            .stdout(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()
            .expect("start moto_server");
        let mut line = String::new();
        BufReader::new(watchdog.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("moto pid");
        let pid: u32 = line.trim().parse().expect("moto pid");
        let m = Moto {
            port,
            proc: Some((pid, watchdog)),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok((200, _)) = m.request("GET", "/", &[], b"") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "moto_server did not answer on port {port} within 30 s (log: {})",
                log.display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        m
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Creates a bucket with a unique name starting with `stem`; returns the name.
    pub fn bucket(&self, stem: &str) -> String {
        static N: AtomicU64 = AtomicU64::new(0);
        let name = format!("{stem}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        if let Some(g) = garage() {
            for args in [
                vec!["bucket", "create", &name],
                vec![
                    "bucket", "allow", "--read", "--write", "--owner", &name, "--key", &g.key,
                ],
            ] {
                let out = Command::new("garage")
                    .args(["-c", &g.config])
                    .args(&args)
                    .output()
                    .expect("run garage");
                assert!(
                    out.status.success(),
                    "garage {args:?}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            return name;
        }
        let (code, body) = self
            .request("PUT", &format!("/{name}"), &[], b"")
            .expect("create bucket");
        assert_eq!(code, 200, "create bucket {name}: {}", String::from_utf8_lossy(&body));
        name
    }

    /// Creates a bucket with Object Lock enabled (and so versioning) and, when given, a
    /// default retention `(mode, days)`; returns its name.
    pub fn lock_bucket(&self, stem: &str, default: Option<(&str, u32)>) -> String {
        static N: AtomicU64 = AtomicU64::new(0);
        let name = format!("{stem}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        let (code, body) = self
            .request(
                "PUT",
                &format!("/{name}"),
                &[("x-amz-bucket-object-lock-enabled", "true")],
                b"",
            )
            .expect("create bucket");
        assert_eq!(code, 200, "create bucket {name}: {}", String::from_utf8_lossy(&body));
        if let Some((mode, days)) = default {
            let rule = format!(
                "<ObjectLockConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><ObjectLockEnabled>Enabled</ObjectLockEnabled><Rule><DefaultRetention><Mode>{mode}</Mode><Days>{days}</Days></DefaultRetention></Rule></ObjectLockConfiguration>"
            );
            let (code, body) = self
                .request("PUT", &format!("/{name}?object-lock"), &[], rule.as_bytes())
                .expect("lock config");
            assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
        }
        name
    }

    /// An object's Object Lock (mode, retain-until) from its HEAD, if it has one.
    pub fn retention(&self, bucket: &str, key: &str) -> Option<(String, jiff::Timestamp)> {
        let h = self.head_headers(bucket, key);
        let field = |name: &str| {
            h.lines()
                .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
        };
        let mode = field("x-amz-object-lock-mode:")?;
        let until = field("x-amz-object-lock-retain-until-date:")?
            .to_uppercase()
            .parse()
            .ok()?;
        Some((mode, until))
    }

    /// The version ids of `key` (ListObjectVersions).
    pub fn versions(&self, bucket: &str, key: &str) -> Vec<String> {
        let (code, body) = self
            .request("GET", &format!("/{bucket}?versions&prefix={key}"), &[], b"")
            .expect("list versions");
        assert_eq!(code, 200);
        String::from_utf8_lossy(&body)
            .split("<VersionId>")
            .skip(1)
            .filter_map(|s| s.split("</VersionId>").next())
            .map(str::to_string)
            .collect()
    }

    /// Turns on moto's IAM authentication (signatures and policies are checked from now on,
    /// for every request) after creating a user allowed `s3:*`; returns its (key id, secret).
    /// Also creates a user without any policy, whose key id is returned third. Only for a
    /// dedicated server: the shared one must stay open.
    pub fn enable_auth(&self) -> (String, String, String, String) {
        let iam = |form: &str| -> String {
            let (code, body) = self
                .request(
                    "POST",
                    "/",
                    &[
                        ("Content-Type", "application/x-www-form-urlencoded"),
                        (
                            "Authorization",
                            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20260101/us-east-1/iam/aws4_request, SignedHeaders=host, Signature=00",
                        ),
                    ],
                    format!("{form}&Version=2010-05-08").as_bytes(),
                )
                .expect("iam");
            let text = String::from_utf8_lossy(&body).to_string();
            assert_eq!(code, 200, "{form}: {text}");
            text
        };
        let between = |t: &str, tag: &str| -> String {
            t.split(&format!("<{tag}>"))
                .nth(1)
                .and_then(|r| r.split(&format!("</{tag}>")).next())
                .expect(tag)
                .to_string()
        };
        let policy = "%7B%22Version%22%3A%222012-10-17%22%2C%22Statement%22%3A%5B%7B%22Effect%22%3A%22Allow%22%2C%22Action%22%3A%22s3%3A*%22%2C%22Resource%22%3A%22*%22%7D%5D%7D";
        iam("Action=CreateUser&UserName=backup");
        let k = iam("Action=CreateAccessKey&UserName=backup");
        iam(&format!(
            "Action=PutUserPolicy&UserName=backup&PolicyName=all&PolicyDocument={policy}"
        ));
        iam("Action=CreateUser&UserName=nobody");
        let n = iam("Action=CreateAccessKey&UserName=nobody");
        let (code, body) = self
            .request("POST", "/moto-api/reset-auth", &[("Content-Type", "text/plain")], b"0")
            .expect("reset-auth");
        assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
        (
            between(&k, "AccessKeyId"),
            between(&k, "SecretAccessKey"),
            between(&n, "AccessKeyId"),
            between(&n, "SecretAccessKey"),
        )
    }

    /// One unsigned HTTP/1.1 request (moto does not check signatures); returns status and body.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<(u16, Vec<u8>)> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\nContent-Length: {}\r\n",
            self.port,
            body.len()
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes())?;
        s.write_all(body)?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)?;
        let head_end = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| std::io::Error::other("no HTTP header"))?;
        let head = String::from_utf8_lossy(&raw[..head_end]).to_string();
        let code: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| std::io::Error::other("bad status line"))?;
        let mut body = raw[head_end + 4..].to_vec();
        if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
            body = dechunk(&body);
        }
        Ok((code, body))
    }

    /// The response headers of a HEAD request (lower-cased), e.g. to see Object Lock retention.
    pub fn head_headers(&self, bucket: &str, key: &str) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        write!(
            s,
            // moto checks no signature but treats a request without one as anonymous, which an
            // Object Lock bucket refuses: any well-formed Authorization header will do.
            "HEAD /{bucket}/{key} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\nAuthorization: AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00\r\n\r\n",
            self.port
        )
        .expect("write");
        let mut raw = String::new();
        let _ = s.read_to_string(&mut raw);
        raw.to_ascii_lowercase()
    }

    /// Object keys under `prefix` in `bucket` (unsigned ListObjectsV2; small buckets only).
    pub fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        if garage().is_some() {
            use lifeboat_repo::backend::Backend;
            let dir = prefix.rsplit_once('/').map_or("", |(d, _)| d);
            let mut keys: Vec<String> = signed(bucket)
                .list(dir)
                .expect("list")
                .into_iter()
                .map(|o| o.key)
                .filter(|k| k.starts_with(prefix))
                .collect();
            keys.sort();
            return keys;
        }
        let (code, body) = self
            .request("GET", &format!("/{bucket}?list-type=2&prefix={prefix}"), &[], b"")
            .expect("list");
        assert_eq!(code, 200);
        let text = String::from_utf8_lossy(&body);
        text.split("<Key>")
            .skip(1)
            .filter_map(|s| s.split("</Key>").next())
            .map(str::to_string)
            .collect()
    }

    /// Reads an object.
    pub fn get(&self, bucket: &str, key: &str) -> Vec<u8> {
        if garage().is_some() {
            use lifeboat_repo::backend::Backend;
            return signed(bucket).get(key).expect("get");
        }
        let (code, body) = self.request("GET", &format!("/{bucket}/{key}"), &[], b"").expect("get");
        assert_eq!(code, 200, "get {key}");
        body
    }

    /// Replaces an object.
    pub fn put(&self, bucket: &str, key: &str, data: &[u8]) {
        if garage().is_some() {
            use lifeboat_repo::backend::{Backend, PutMode};
            return signed(bucket).put(key, data.to_vec(), PutMode::Overwrite).expect("put");
        }
        let (code, _) = self
            .request("PUT", &format!("/{bucket}/{key}"), &[], data)
            .expect("put");
        assert_eq!(code, 200, "put {key}");
    }

    /// Deletes an object.
    pub fn delete(&self, bucket: &str, key: &str) {
        if garage().is_some() {
            use lifeboat_repo::backend::Backend;
            return signed(bucket).delete(key).expect("delete");
        }
        let (code, _) = self
            .request("DELETE", &format!("/{bucket}/{key}"), &[], b"")
            .expect("delete");
        assert!(code == 204 || code == 200, "delete {key}: {code}");
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(p) = b.windows(2).position(|w| w == b"\r\n") {
        let n = usize::from_str_radix(String::from_utf8_lossy(&b[..p]).trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.extend_from_slice(&b[p + 2..p + 2 + n]);
        b = &b[p + 2 + n + 2..];
    }
    out
}

impl Drop for Moto {
    fn drop(&mut self) {
        if let Some((pid, watchdog)) = &mut self.proc {
            let _ = Command::new("kill").arg(pid.to_string()).status();
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
    }
}

/// A loopback TCP proxy in front of a server that can be cut (every connection dropped, new
/// ones refused) and restored, so a location goes down mid-run while its data survives.
pub struct Proxy {
    /// Port the client uses.
    pub port: u16,
    /// The next this-many connections get `503 Slow Down` (S3's throttling answer) instead of
    /// reaching the server.
    pub throttle_next: Arc<std::sync::atomic::AtomicUsize>,
    /// Requests answered with 503 so far.
    pub throttled: Arc<std::sync::atomic::AtomicUsize>,
    /// Refuse deletes with `403 AccessDenied`, as S3 does for credentials without
    /// `s3:DeleteObject`. Every other request is forwarded (one request per connection).
    pub deny_deletes: Arc<AtomicBool>,
    /// Deletes refused so far.
    pub denied: Arc<std::sync::atomic::AtomicUsize>,
    down: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    /// Bytes forwarded from clients to the server.
    pub upstream_bytes: Arc<AtomicU64>,
}

impl Proxy {
    /// Starts forwarding 127.0.0.1:(new port) to 127.0.0.1:`target`.
    pub fn start(target: u16) -> Proxy {
        let l = TcpListener::bind("127.0.0.1:0").expect("proxy bind");
        let port = l.local_addr().expect("addr").port();
        let down = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let upstream_bytes = Arc::new(AtomicU64::new(0));
        let throttle_next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let throttled = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (d, c, u) = (down.clone(), conns.clone(), upstream_bytes.clone());
        let (tn, td) = (throttle_next.clone(), throttled.clone());
        let deny_deletes = Arc::new(AtomicBool::new(false));
        let denied = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (dd, dn) = (deny_deletes.clone(), denied.clone());
        std::thread::spawn(move || {
            for client in l.incoming() {
                let Ok(client) = client else { continue };
                if d.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                if tn
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok()
                {
                    td.fetch_add(1, Ordering::SeqCst);
                    std::thread::spawn(move || slow_down(client));
                    continue;
                }
                if dd.load(Ordering::SeqCst) {
                    let (dn, u) = (dn.clone(), u.clone());
                    std::thread::spawn(move || deny_delete_or_forward(client, target, &dn, &u));
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                {
                    let mut g = c.lock().unwrap();
                    g.push(client.try_clone().expect("clone"));
                    g.push(server.try_clone().expect("clone"));
                }
                pipe(
                    client.try_clone().expect("clone"),
                    server.try_clone().expect("clone"),
                    Some(u.clone()),
                );
                pipe(server, client, None);
            }
        });
        Proxy {
            port,
            throttle_next,
            throttled,
            deny_deletes,
            denied,
            down,
            conns,
            upstream_bytes,
        }
    }

    /// Drops every connection and refuses new ones.
    pub fn cut(&self) {
        self.down.store(true, Ordering::SeqCst);
        for s in self.conns.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// Accepts connections again.
    pub fn restore(&self) {
        self.down.store(false, Ordering::SeqCst);
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

fn read_head(s: &mut TcpStream) -> Vec<u8> {
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 64 << 10 {
        match s.read(&mut b) {
            Ok(1) => head.push(b[0]),
            _ => break,
        }
    }
    let _ = s.set_read_timeout(None);
    head
}

/// One request: a delete (single or bulk) gets `403 AccessDenied`; anything else is forwarded
/// with `Connection: close`, so the next request comes on a new connection and is inspected too.
fn deny_delete_or_forward(mut client: TcpStream, target: u16, denied: &AtomicUsizeRef, up: &Arc<AtomicU64>) {
    let head = read_head(&mut client);
    let text = String::from_utf8_lossy(&head).to_string();
    let first = text.lines().next().unwrap_or("").to_string();
    if first.starts_with("DELETE ") || (first.starts_with("POST ") && first.contains("?delete")) {
        denied.fetch_add(1, Ordering::SeqCst);
        let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>";
        let _ = write!(
            client,
            "HTTP/1.1 403 Forbidden\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = client.shutdown(Shutdown::Both);
        return;
    }
    let Ok(mut server) = TcpStream::connect(("127.0.0.1", target)) else {
        return;
    };
    let mut out = String::new();
    for l in text.split("\r\n").filter(|l| !l.is_empty()) {
        if !l.to_ascii_lowercase().starts_with("connection:") {
            out.push_str(l);
            out.push_str("\r\n");
        }
    }
    out.push_str("Connection: close\r\n\r\n");
    if server.write_all(out.as_bytes()).is_err() {
        return;
    }
    pipe(
        client.try_clone().expect("clone"),
        server.try_clone().expect("clone"),
        Some(up.clone()),
    );
    pipe(server, client, None);
}

type AtomicUsizeRef = std::sync::atomic::AtomicUsize;

/// Reads the request head and answers like a throttling S3 endpoint.
fn slow_down(mut s: TcpStream) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 64 << 10 {
        match s.read(&mut b) {
            Ok(1) => head.push(b[0]),
            _ => break,
        }
    }
    let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>";
    let _ = write!(
        s,
        "HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = s.shutdown(Shutdown::Both);
}

fn pipe(mut from: TcpStream, mut to: TcpStream, count: Option<Arc<AtomicU64>>) {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if let Some(c) = &count {
                        c.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}
