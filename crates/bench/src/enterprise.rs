//! Enterprise authentication (issue 14): CONNECT rates for client certificates (full TLS
//! handshakes and resumed ones) against Mosquitto's `require_certificate` and against the
//! `tkn_` path over the same TLS listener, the auth webhook with a warm cache against `tkn_`
//! over TCP, the latency a cold webhook call adds, and what clients see while the endpoint
//! is down. Certificates are made with the openssl CLI; the webhook is a minimal HTTP server
//! in this process that answers "allow".

use crate::auth::token;
use crate::{free_port, wait_listening, Broker};
use anyhow::{bail, Context, Result};
use cloudsignal_core::mqtt::{self, Connect, Packet, Properties, Protocol, ReasonCode};
use hdrhistogram::Histogram;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

/// A CA with a server certificate for 127.0.0.1 and one client certificate (CN=bench).
pub(crate) struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

fn openssl(dir: &Path, args: &[&str]) -> Result<()> {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .context("running openssl")?;
    if !out.status.success() {
        bail!("openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// Makes the certificates in a fresh directory.
pub(crate) fn pki() -> Result<Pki> {
    let dir = std::env::temp_dir().join(format!("cs-bench-pki-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        &dir,
        &[
            &["req", "-x509"],
            &ec[..],
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=bench CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        ]
        .concat(),
    )?;
    for (name, subject, ext) in [
        (
            "server",
            "/CN=127.0.0.1",
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        ),
        (
            "client",
            "/CN=bench/OU=sensors",
            "extendedKeyUsage=clientAuth\n",
        ),
    ] {
        std::fs::write(dir.join(format!("{name}.ext")), ext)?;
        openssl(
            &dir,
            &[
                &["req"],
                &ec[..],
                &[
                    "-keyout",
                    &format!("{name}.key"),
                    "-out",
                    &format!("{name}.csr"),
                    "-subj",
                    subject,
                ],
            ]
            .concat(),
        )?;
        openssl(
            &dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-out",
                &format!("{name}.pem"),
                "-extfile",
                &format!("{name}.ext"),
            ],
        )?;
    }
    // Mosquitto started as root reads its files as the `mosquitto` user: these throwaway
    // bench keys are made readable to it
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
        for name in ["server.key", "server.pem", "ca.pem"] {
            std::fs::set_permissions(dir.join(name), std::fs::Permissions::from_mode(0o644))?;
        }
    }
    Ok(Pki { dir })
}

/// Mosquitto requiring client certificates, the certificate's CN as the username.
pub(crate) fn start_mosquitto_mtls(p: &Pki) -> Result<Broker> {
    let port = free_port();
    let conf = p.path("mosquitto-mtls.conf");
    std::fs::write(
        &conf,
        format!(
            // TCP_NODELAY as CloudSignal (without it Mosquitto's TLS CONNACKs wait on delayed
            // ACKs, ~40 ms each: that would measure Nagle, not Mosquitto)
            "listener {port} 127.0.0.1\nallow_anonymous false\nset_tcp_nodelay true\ncafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\nuse_identity_as_username true\n",
            p.path("ca.pem").display(),
            p.path("server.pem").display(),
            p.path("server.key").display()
        ),
    )?;
    crate::spawn_mosquitto(&conf, port)
}

/// CloudSignal with client certificates on its TLS listener and the webhook at `webhook`;
/// returns the broker (its plain TCP address) and the TLS address.
pub(crate) fn start_cloudsignal(p: &Pki, webhook: &str) -> Result<(Broker, SocketAddr)> {
    let (port, tls) = (free_port(), free_port());
    let exe = std::env::current_exe()?.with_file_name("cloudsignal");
    let secret = p.path("webhook.secret");
    std::fs::write(&secret, "bench-webhook-secret-0123456789")?;
    let jwks = p.path("jwks.json");
    let mut set = cloudsignal_core::keys::KeySet::default();
    set.push(crate::auth::key().verifying_entry());
    std::fs::write(&jwks, set.to_jwks_json())?;
    let child = Command::new(&exe)
        .args(["serve", "--ws-addr", "off", "--control-addr", "off"])
        .args(["--issuer", crate::auth::ISSUER, "--issuer-jwks"])
        .arg(&jwks)
        .args(["--mqtt-addr", &format!("127.0.0.1:{port}")])
        .args(["--tls-addr", &format!("127.0.0.1:{tls}")])
        .args(["--wss-addr", &format!("127.0.0.1:{}", free_port())])
        .arg("--tls-cert")
        .arg(p.path("server.pem"))
        .arg("--tls-key")
        .arg(p.path("server.key"))
        .arg("--tls-client-ca")
        .arg(p.path("ca.pem"))
        .args(["--mtls-org", crate::auth::ORG])
        .args(["--webhook-url", webhook, "--webhook-org", crate::auth::ORG])
        .arg("--webhook-secret-file")
        .arg(&secret)
        .args(["--connect-rate", "1000000", "--auth-failure-delay-ms", "0"])
        // measure the methods, not the brute-force defence's refusal delays
        .args([
            "--max-auth-failures",
            "100000000",
            "--max-refusal-delay-ms",
            "0",
        ])
        .env("CLOUDSIGNAL_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", exe.display()))?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_listening(addr)?;
    let tls = SocketAddr::from(([127, 0, 0, 1], tls));
    wait_listening(tls)?;
    Ok((
        Broker {
            name: "cloudsignal",
            child,
            addr,
        },
        tls,
    ))
}

/// A TLS client configuration trusting the bench CA, with the client certificate or not, and
/// with session resumption or not.
pub(crate) fn tls_client(p: &Pki, with_cert: bool, resume: bool) -> Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(p.path("ca.pem"))? {
        roots.add(c?)?;
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let mut config = if with_cert {
        let certs =
            CertificateDer::pem_file_iter(p.path("client.pem"))?.collect::<Result<Vec<_>, _>>()?;
        let key = PrivateKeyDer::from_pem_file(p.path("client.key"))?;
        builder.with_client_auth_cert(certs, key)?
    } else {
        builder.with_no_client_auth()
    };
    if !resume {
        config.resumption = tokio_rustls::rustls::client::Resumption::disabled();
    }
    Ok(Arc::new(config))
}

/// One CONNECT/CONNACK/DISCONNECT on `stream`; the CONNACK's reason.
async fn cycle<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    protocol: Protocol,
    client_id: &str,
    creds: Option<(&str, &str)>,
) -> Result<ReasonCode> {
    let mut out = Vec::new();
    Packet::Connect(Connect {
        protocol,
        clean_start: true,
        keep_alive: 0,
        properties: Properties::default(),
        client_id,
        will: None,
        username: creds.map(|c| c.0),
        password: creds.map(|c| c.1.as_bytes()),
    })
    .encode(protocol, &mut out);
    stream.write_all(&out).await?;
    let mut buf = Vec::new();
    let reason = loop {
        if let Some((Packet::Connack(c), _)) = mqtt::decode(&buf, protocol, 1 << 16)? {
            break c.reason;
        }
        let mut chunk = [0u8; 512];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("closed before CONNACK");
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    if reason == ReasonCode::SUCCESS {
        stream.write_all(&[0xe0, 0]).await?;
    }
    let _ = stream.shutdown().await;
    Ok(reason)
}

/// How a bench client reaches the broker.
#[derive(Clone)]
pub(crate) enum Dial {
    /// Plain TCP.
    Tcp,
    /// TLS with this client configuration.
    Tls(Arc<ClientConfig>),
}

/// One cycle over `dial`; the CONNACK reason.
pub(crate) async fn dial_cycle(
    addr: SocketAddr,
    dial: &Dial,
    client_id: &str,
    creds: Option<(&str, &str)>,
) -> Result<ReasonCode> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    // MQTT 5, so a refusal's reason code is the broker's own (0x88, not v3's 3)
    let v5 = Protocol::V5;
    match dial {
        Dial::Tcp => cycle(tcp, v5, client_id, creds).await,
        Dial::Tls(config) => {
            let tls = TlsConnector::from(config.clone())
                .connect(ServerName::try_from("127.0.0.1")?, tcp)
                .await?;
            cycle(tls, v5, client_id, creds).await
        }
    }
}

/// CONNECTs per second: `workers` tasks each doing `per` cycles, all expected to succeed;
/// `creds(i)` gives the credentials of cycle `i` (None: the certificate alone).
pub(crate) async fn rate(
    addr: SocketAddr,
    dial: Dial,
    creds: Arc<dyn Fn(usize) -> Option<(String, String)> + Send + Sync>,
    workers: usize,
    per: usize,
) -> Result<f64> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (dial, creds) = (dial.clone(), creds.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..per {
                let c = creds(w * per + i);
                let r = dial_cycle(
                    addr,
                    &dial,
                    &format!("ent-{w}-{i}"),
                    c.as_ref().map(|(u, p)| (u.as_str(), p.as_str())),
                )
                .await?;
                if r != ReasonCode::SUCCESS {
                    bail!("CONNACK {r:?}");
                }
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok((workers * per) as f64 / started.elapsed().as_secs_f64())
}

/// mTLS CONNECT rates (the certificate alone): full handshakes each, then resumed sessions.
pub(crate) async fn mtls_rates(
    addr: SocketAddr,
    p: &Pki,
    workers: usize,
    per: usize,
) -> Result<[f64; 2]> {
    let mut out = [0.0; 2];
    for (i, resume) in [false, true].into_iter().enumerate() {
        let dial = Dial::Tls(tls_client(p, true, resume)?);
        out[i] = rate(addr, dial, Arc::new(|_| None), workers, per).await?;
    }
    Ok(out)
}

/// CONNECT → CONNACK times, one at a time, in microseconds, and the reasons seen.
pub(crate) async fn latencies(
    addr: SocketAddr,
    creds: impl Fn(usize) -> (String, String),
    count: usize,
) -> Result<(Histogram<u64>, Vec<ReasonCode>)> {
    let mut h = Histogram::<u64>::new(3)?;
    let mut reasons = Vec::new();
    for i in 0..count {
        let (u, p) = creds(i);
        let t = Instant::now();
        let r = dial_cycle(addr, &Dial::Tcp, &format!("lat-{i}"), Some((&u, &p))).await?;
        h.record(u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX))?;
        reasons.push(r);
    }
    Ok((h, reasons))
}

/// A webhook endpoint answering "allow" to every POST; counts calls. Returns its URL.
pub(crate) async fn webhook() -> Result<(String, Arc<AtomicU64>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/auth", listener.local_addr()?);
    let calls = Arc::new(AtomicU64::new(0));
    let counted = calls.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let counted = counted.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 2048];
                loop {
                    let Ok(n) = s.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf);
                    if let Some(end) = text.find("\r\n\r\n") {
                        let len = text[..end]
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + len {
                            break;
                        }
                    }
                }
                counted.fetch_add(1, Ordering::Relaxed);
                let body = r#"{"result":"allow","ttl":3600}"#;
                let resp = format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
                let _ = s.write_all(resp.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    Ok((url, calls))
}

/// The `tkn_` credentials of bench user `n`.
pub(crate) fn token_creds(n: usize) -> (String, String) {
    (
        format!("bench@{}", crate::auth::ORG),
        token("bench", n as u64),
    )
}
