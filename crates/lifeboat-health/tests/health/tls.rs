//! `tls` against local TLS servers with certificates made here.

use lifeboat_health::{Level, Status};

use crate::support::{Pki, days, result, run, tls_server};

fn tls_check(name: &str, port: u16, ca: &std::path::Path, extra: &str) -> String {
    format!(
        "[[checks]]\nname = \"{name}\"\nkind = \"tls\"\naddress = \"127.0.0.1:{port}\"\nserver_name = \"localhost\"\nca_file = \"{}\"\n{extra}\n",
        ca.display()
    )
}

#[test]
fn expiry_hostname_and_trust() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let ca = pki.ca_file(dir.path());
    let serve = |names: &[&str], until| {
        let (cert, key) = pki.leaf(names, until, None);
        tls_server(vec![cert], key)
    };
    let in30 = serve(&["localhost"], days(30));
    let in3 = serve(&["localhost"], days(3));
    let expired = serve(&["localhost"], days(-1));
    let wrong_name = serve(&["other.example"], days(90));
    // A chain whose intermediate expires first: the earliest certificate counts.
    let (inter, inter_key) = pki.intermediate(days(2));
    let (leaf, leaf_key) = pki.leaf(&["localhost"], days(60), Some((&inter, &inter_key)));
    let chain = tls_server(vec![leaf, inter.der().clone()], leaf_key);

    let other_dir = tempfile::tempdir().unwrap();
    let stranger = Pki::new().ca_file(other_dir.path());
    let text = [
        tls_check("in30", in30, &ca, ""),
        tls_check("in3", in3, &ca, ""),
        tls_check("expired", expired, &ca, ""),
        tls_check("wrong_name", wrong_name, &ca, ""),
        tls_check("chain", chain, &ca, ""),
        tls_check("untrusted", in30, &stranger, ""),
        tls_check("in30_strict", in30, &ca, "warn_expiry = \"45d\""),
        tls_check("in3_relaxed", in3, &ca, "levels = { expiring = \"urgent\" }"),
        tls_check("refused", crate::support::closed_port(), &ca, ""),
    ]
    .concat();
    let r = run(&text);
    let expect = |name: &str, status: Status, level: Option<Level>, class: Option<&str>, needle: &str| {
        let c = result(&r, name);
        assert_eq!(
            (c.status, c.level, c.class.as_deref()),
            (status, level, class),
            "{name}: {c:?}"
        );
        assert!(c.detail.contains(needle), "{name}: {:?} lacks {needle:?}", c.detail);
    };
    expect("in30", Status::Ok, None, None, "valid for ");
    expect("in3", Status::Fail, Some(Level::High), Some("expiring"), "expires in ");
    expect(
        "expired",
        Status::Fail,
        Some(Level::Critical),
        Some("expired"),
        "expired 1d",
    );
    expect(
        "wrong_name",
        Status::Fail,
        Some(Level::Critical),
        Some("invalid"),
        "not valid for localhost",
    );
    expect(
        "chain",
        Status::Fail,
        Some(Level::High),
        Some("expiring"),
        "CN=lifeboat test intermediate (earliest of 2",
    );
    expect(
        "untrusted",
        Status::Fail,
        Some(Level::Critical),
        Some("invalid"),
        "not trusted",
    );
    expect(
        "in30_strict",
        Status::Fail,
        Some(Level::High),
        Some("expiring"),
        "within 45d",
    );
    expect(
        "in3_relaxed",
        Status::Fail,
        Some(Level::Urgent),
        Some("expiring"),
        "expires in ",
    );
    expect(
        "refused",
        Status::Fail,
        Some(Level::Critical),
        Some("down"),
        "cannot connect",
    );
    assert!(result(&r, "in30").latency_ms.is_some());
}

#[test]
fn https_check_verifies_or_not() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let _ = pki.ca_file(dir.path());
    let (cert, key) = pki.leaf(&["localhost"], days(30), None);
    let port = tls_server(vec![cert], key);
    // The server speaks TLS but no HTTP: with verification the certificate (unknown CA) fails
    // first; without, the handshake passes and the missing HTTP answer fails.
    let r = run(&format!(
        "[[checks]]\nname = \"strict\"\nkind = \"http\"\nurl = \"https://localhost:{port}/\"\n\
         [[checks]]\nname = \"lax\"\nkind = \"http\"\nurl = \"https://localhost:{port}/\"\ntls_verify = false\n"
    ));
    let strict = result(&r, "strict");
    assert_eq!(strict.status, Status::Fail);
    assert!(strict.detail.to_lowercase().contains("certificate"), "{strict:?}");
    let lax = result(&r, "lax");
    assert_eq!(lax.status, Status::Fail);
    assert!(!lax.detail.to_lowercase().contains("certificate"), "{lax:?}");
}

#[test]
fn https_with_a_private_ca() {
    // A real HTTPS endpoint: TLS in front of the plain test server's answer.
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let ca = pki.ca_file(dir.path());
    let (cert, key) = pki.leaf(&["localhost"], days(30), None);
    let port = crate::support::https_server(vec![cert], key);
    let check = |name: &str, extra: &str| {
        format!(
            "[[checks]]\nname = \"{name}\"\nkind = \"http\"\nurl = \"https://localhost:{port}/ok\"\nbody_contains = \"ok\"\n{extra}\n"
        )
    };
    let r = run(&[
        check("trusted", &format!("ca_file = \"{}\"", ca.display())),
        check("untrusted", ""),
    ]
    .concat());
    assert_eq!(result(&r, "trusted").status, Status::Ok, "{:?}", result(&r, "trusted"));
    let u = result(&r, "untrusted");
    assert_eq!((u.status, u.level), (Status::Fail, Some(Level::Critical)), "{u:?}");
}
