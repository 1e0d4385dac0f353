//! `tcp`, `dns`, `disk` (a tmpfs made full), `memory`, `command`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use lifeboat_health::{Level, Status};

use crate::support::{closed_port, http_server, result, run};

#[test]
fn tcp_and_dns() {
    let port = http_server();
    let closed = closed_port();
    let r = run(&format!(
        "[[checks]]\nname = \"open\"\nkind = \"tcp\"\naddress = \"127.0.0.1:{port}\"\n\
         [[checks]]\nname = \"closed\"\nkind = \"tcp\"\naddress = \"127.0.0.1:{closed}\"\n\
         [[checks]]\nname = \"resolves\"\nkind = \"dns\"\nname_to_resolve = \"localhost\"\nexpect = [\"127.0.0.1\"]\n\
         [[checks]]\nname = \"wrong\"\nkind = \"dns\"\nname_to_resolve = \"localhost\"\nexpect = [\"192.0.2.7\"]\n\
         [[checks]]\nname = \"nxdomain\"\nkind = \"dns\"\nname_to_resolve = \"no-such-host.invalid\"\ntimeout = \"3s\"\n"
    ));
    assert_eq!(result(&r, "open").status, Status::Ok);
    let c = result(&r, "closed");
    assert_eq!((c.status, c.level), (Status::Fail, Some(Level::Critical)));
    assert!(c.detail.contains("refused"), "{c:?}");
    assert_eq!(
        result(&r, "resolves").status,
        Status::Ok,
        "{:?}",
        result(&r, "resolves")
    );
    let w = result(&r, "wrong");
    assert!(w.detail.contains("not to 192.0.2.7"), "{w:?}");
    assert_eq!(result(&r, "nxdomain").status, Status::Fail);
}

/// Unmounts on drop.
struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn disk_check(path: &Path, extra: &str) -> String {
    format!(
        "[[checks]]\nname = \"disk\"\nkind = \"disk\"\npath = \"{}\"\n{extra}\n",
        path.display()
    )
}

#[test]
fn disk_made_full() {
    let dir = tempfile::tempdir().unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "lifeboat-test"])
        .arg(dir.path())
        .output()
        .is_ok_and(|o| o.status.success());
    if mounted {
        let _m = Mount(dir.path().to_path_buf());
        eprintln!("disk_made_full: using a 1 MiB tmpfs at {}", dir.path().display());
        let r = run(&disk_check(dir.path(), ""));
        assert_eq!(result(&r, "disk").status, Status::Ok, "{:?}", result(&r, "disk"));
        // Fill it until the filesystem refuses.
        let mut f = std::fs::File::create(dir.path().join("fill")).unwrap();
        let block = vec![7u8; 64 * 1024];
        while std::io::Write::write_all(&mut f, &block).is_ok() {}
        drop(f);
        let r = run(&disk_check(dir.path(), ""));
        let d = result(&r, "disk");
        assert_eq!(
            (d.status, d.level, d.class.as_deref()),
            (Status::Fail, Some(Level::Urgent), Some("low_space")),
            "{d:?}"
        );
        assert!(
            d.detail.contains("0.0% free") && d.detail.contains("below 5.0%"),
            "{d:?}"
        );
        assert_eq!(r.verdict, "URGENT: 1 of 1 check failing (disk urgent)");
    } else {
        // Not allowed to mount: the same check against the temp dir's real filesystem, with a
        // threshold it cannot meet.
        eprintln!(
            "disk_made_full: mount refused; fallback threshold test on {}",
            dir.path().display()
        );
        assert_eq!(
            result(&run(&disk_check(dir.path(), "min_free = \"0%\"")), "disk").status,
            Status::Ok
        );
        let d = run(&disk_check(dir.path(), "min_free = \"100%\""));
        assert_eq!(result(&d, "disk").level, Some(Level::Urgent));
    }
    let missing = run(&disk_check(Path::new("/no/such/path"), ""));
    let m = result(&missing, "disk");
    assert_eq!((m.status, m.class.as_deref()), (Status::Fail, Some("down")), "{m:?}");
}

#[test]
fn memory_thresholds() {
    let r = run("[[checks]]\nname = \"mem\"\nkind = \"memory\"\nmax_used = \"100%\"\n\
         [[checks]]\nname = \"tight\"\nkind = \"memory\"\nmax_used = \"0%\"\n");
    let m = result(&r, "mem");
    assert_eq!(m.status, Status::Ok, "{m:?}");
    assert!(m.detail.contains("used"), "{m:?}");
    let t = result(&r, "tight");
    assert_eq!(
        (t.status, t.level, t.class.as_deref()),
        (Status::Fail, Some(Level::Urgent), Some("high_usage"))
    );
}

fn proc_state(pid: u32) -> Option<char> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s.rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next())
}

#[test]
fn command_status_and_kill_on_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("child.pid");
    let t0 = Instant::now();
    let r = run(&format!(
        "[[checks]]\nname = \"true\"\nkind = \"command\"\ncommand = [\"/bin/true\"]\n\
         [[checks]]\nname = \"broken\"\nkind = \"command\"\ncommand = \"echo queue stuck >&2; exit 3\"\n\
         [[checks]]\nname = \"missing\"\nkind = \"command\"\ncommand = [\"/no/such/program\"]\n\
         [[checks]]\nname = \"hangs\"\nkind = \"command\"\ntimeout = \"400ms\"\ncommand = \"sleep 30 & echo $! > {}; wait\"\n",
        pidfile.display()
    ));
    let took = t0.elapsed();
    assert_eq!(result(&r, "true").status, Status::Ok);
    let b = result(&r, "broken");
    assert_eq!((b.status, b.level), (Status::Fail, Some(Level::Critical)));
    assert!(
        b.detail.contains("exit status: 3") && b.detail.contains("queue stuck"),
        "{b:?}"
    );
    assert!(result(&r, "missing").detail.contains("cannot run /no/such/program"));
    let h = result(&r, "hangs");
    assert!(h.detail.contains("timed out after 400ms"), "{h:?}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    // The script's child was killed with its process group.
    let pid: u32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while matches!(proc_state(pid), Some(s) if s != 'Z') {
        assert!(Instant::now() < deadline, "sleep {pid} survived the timeout");
        std::thread::sleep(Duration::from_millis(50));
    }
}
