//! Kafka over TLS and SASL: a private real broker behind a TLS-terminating proxy
//! (Debian's `stunnel4`, with a CA and a server certificate this test makes with
//! `openssl`), advertising the TLS port, so that every client connection is encrypted.
//! The topics are created, a stream is published and the processor applies it, all
//! through TLS (`security.protocol=SSL`, `ssl.ca.location`), and once more with SCRAM
//! authentication on top (`SASL_SSL`, `SCRAM-SHA-512`, tansu's `--authentication`).

mod support;

use graphcdc_core::kafka::client_config;
use rdkafka::consumer::{BaseConsumer, Consumer};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::{churn, free_port, start_tansu, start_tansu_with, Harness};

/// Run `openssl` with `args` in `dir`.
fn openssl(dir: &Path, args: &[&str]) {
    let status = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl on PATH");
    assert!(status.success(), "openssl {args:?}");
}

/// A CA, and a server certificate for 127.0.0.1 signed by it.
fn make_certificates(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=graphcdc test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    );
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            "-out",
            "server.crt",
        ],
    );
}

/// `stunnel4` terminating TLS on `accept` and forwarding in plain text to `connect`.
fn start_stunnel(dir: &Path, accept: u16, connect: u16) -> Child {
    let config = dir.join("stunnel.conf");
    std::fs::write(
        &config,
        format!(
            "foreground = yes\npid =\n[kafka]\naccept = 127.0.0.1:{accept}\nconnect = 127.0.0.1:{connect}\ncert = {}\nkey = {}\n",
            dir.join("server.crt").display(),
            dir.join("server.key").display()
        ),
    )
    .unwrap();
    let child = Command::new("stunnel4")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("stunnel4 on PATH (tests/run.sh installs it)");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", accept)).is_err() {
        assert!(Instant::now() < deadline, "stunnel did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

/// Whether a client with `properties` gets metadata from `bootstrap` within 3 s.
fn metadata_with(bootstrap: &str, properties: &[(&str, &str)]) -> bool {
    let kafka = graphcdc_core::kafka::KafkaConfig {
        bootstrap_servers: bootstrap.to_owned(),
        ..Default::default()
    };
    let mut config = client_config(&kafka);
    for (k, v) in properties {
        config.set(*k, *v);
    }
    let probe: BaseConsumer = config.create().unwrap();
    tokio::task::block_in_place(|| probe.fetch_metadata(None, Duration::from_secs(3))).is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_processor_authenticates_with_scram_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    make_certificates(dir.path());
    let (plain, tls) = (free_port(), free_port());
    // The user is created while the broker still lets anyone in, then the broker is
    // restarted on the same storage with authentication required.
    let mut open = start_tansu(dir.path(), plain, plain);
    let created = Command::new("tansu")
        .args(["user", "create", "--broker"])
        .arg(format!("tcp://127.0.0.1:{plain}"))
        .args(["--mechanism", "scram512", "graphcdc", "s3cret"])
        .status()
        .unwrap();
    assert!(created.success(), "tansu user create");
    open.kill().unwrap();
    open.wait().unwrap();
    let mut broker = start_tansu_with(dir.path(), plain, tls, &["--authentication"]);
    let mut stunnel = start_stunnel(dir.path(), tls, plain);
    let ca = dir.path().join("ca.crt").display().to_string();
    let bootstrap = format!("127.0.0.1:{tls}");
    let sasl = |password: &'static str| {
        [
            ("security.protocol", "SASL_SSL"),
            ("ssl.ca.location", ca.as_str()),
            ("sasl.mechanisms", "SCRAM-SHA-512"),
            ("sasl.username", "graphcdc"),
            ("sasl.password", password),
        ]
    };
    assert!(
        !metadata_with(&bootstrap, &sasl("wrong")),
        "a wrong password was accepted"
    );
    assert!(metadata_with(&bootstrap, &sasl("s3cret")));

    let h = Harness::on_broker_with("scram", &bootstrap, &sasl("s3cret"), "").await;
    h.apply_exactly(&churn(100, 1_000, 37)).await;

    stunnel.kill().unwrap();
    stunnel.wait().unwrap();
    broker.kill().unwrap();
    broker.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_processor_runs_a_stream_through_kafka_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    make_certificates(dir.path());
    let (plain, tls) = (free_port(), free_port());
    // The broker advertises the TLS port: every connection after bootstrap is TLS too.
    let mut broker = start_tansu(dir.path(), plain, tls);
    let mut stunnel = start_stunnel(dir.path(), tls, plain);
    let ca = dir.path().join("ca.crt");
    let bootstrap = format!("127.0.0.1:{tls}");

    // Without TLS the port answers nothing a Kafka client understands.
    let plaintext = graphcdc_core::kafka::KafkaConfig {
        bootstrap_servers: bootstrap.clone(),
        ..Default::default()
    };
    let probe: BaseConsumer = client_config(&plaintext).create().unwrap();
    let refused =
        tokio::task::block_in_place(|| probe.fetch_metadata(None, Duration::from_secs(3)));
    assert!(
        refused.is_err(),
        "a plaintext client got metadata from the TLS port"
    );

    let h = Harness::on_broker_with(
        "tls",
        &bootstrap,
        &[
            ("security.protocol", "SSL"),
            ("ssl.ca.location", &ca.display().to_string()),
        ],
        "",
    )
    .await;
    h.apply_exactly(&churn(100, 1_000, 31)).await;

    stunnel.kill().unwrap();
    stunnel.wait().unwrap();
    broker.kill().unwrap();
    broker.wait().unwrap();
}
