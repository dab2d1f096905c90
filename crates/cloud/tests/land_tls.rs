//! TLS to a real PostgreSQL (rustls on our side, OpenSSL on the server's),
//! with a CA and a server certificate made by the test with `openssl`.

mod common;

use std::path::Path;
use std::process::Command;

use common::pg::Pg;
use fixgate_cloud::land::{self, PgOptions};

/// Runs `openssl` with `args` in `dir`, failing the test on an error.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is installed");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA named `name` (`<name>.pem`, `<name>.key`) in `dir`.
fn ca(dir: &Path, name: &str) {
    let (pem, key, subject) = (
        format!("{name}.pem"),
        format!("{name}.key"),
        format!("/CN={name}"),
    );
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &pem,
            "-days",
            "2",
            "-subj",
            &subject,
        ],
    );
}

/// A server certificate for 127.0.0.1 signed by the CA `ca`: (cert, key).
fn server_cert(dir: &Path, ca: &str) -> (String, String) {
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    );
    (
        std::fs::read_to_string(dir.join("server.crt")).unwrap(),
        std::fs::read_to_string(dir.join("server.key")).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_the_servers_ca_connects_encrypted_and_with_another_ca_is_refused() {
    let certs = tempfile::tempdir().unwrap();
    ca(certs.path(), "ca");
    ca(certs.path(), "other-ca");
    let (cert, key) = server_cert(certs.path(), "ca");
    let mut pg = Pg::start();
    let port = pg.enable_tls(&cert, &key);
    let conninfo = format!("host=127.0.0.1 port={port} user=postgres dbname=fixgate");

    // A CA given: TLS, required (no sslmode in the string).
    let pool = land::pool(&PgOptions {
        conninfo: conninfo.clone(),
        ca_file: Some(certs.path().join("ca.pem")),
        pool_size: 1,
    })
    .unwrap();
    let mut client = pool.get().await.expect("a TLS connection");
    let encrypted: bool = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(encrypted, "the server says the connection is not encrypted");
    let applied = land::migrate(&mut client).await.expect("migrate over TLS");
    assert!(!applied.is_empty(), "the schema was applied over TLS");

    // A certificate the given CA did not sign: no connection at all (and
    // no fall back to plain text).
    let untrusted = land::pool(&PgOptions {
        conninfo,
        ca_file: Some(certs.path().join("other-ca.pem")),
        pool_size: 1,
    })
    .unwrap();
    let refused = untrusted.get().await;
    assert!(refused.is_err(), "connected with a CA that signed nothing");
}
