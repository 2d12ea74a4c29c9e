//! Test fixture: an audit witness over real HTTPS (a self-signed
//! certificate made by `openssl` for 127.0.0.1, served with rustls). It
//! takes `POST /checkpoints` with a checkpoint as JSON, refuses one whose
//! tree is smaller than the last it kept (HTTP 409), keeps the bodies and
//! answers `{"accepted": true, "tree_size": N, "seen": K}`. Not part of the product.

#![allow(dead_code, clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

pub struct WitnessServer {
    pub url: String,
    pub fingerprint: String,
    received: Arc<Mutex<Vec<Value>>>,
    stop: Arc<AtomicBool>,
    _dir: tempfile::TempDir,
}

impl Drop for WitnessServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

impl WitnessServer {
    pub fn start() -> WitnessServer {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let dir = tempfile::tempdir().unwrap();
        let (key, cert) = (dir.path().join("key.pem"), dir.path().join("cert.pem"));
        let st = std::process::Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
            .args([
                "-subj",
                "/CN=witness",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "openssl req failed");
        let der = CertificateDer::from_pem_file(&cert).unwrap();
        let fingerprint = hex::encode(Sha256::digest(der.as_ref()));
        let config = Arc::new(
            rustls::ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![der], PrivateKeyDer::from_pem_file(&key).unwrap())
            .unwrap(),
        );
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let received: Arc<Mutex<Vec<Value>>> = Arc::default();
        let (stop2, received2) = (stop.clone(), received.clone());
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(300);
            while !stop2.load(Ordering::SeqCst) && Instant::now() < deadline {
                let Ok((tcp, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                tcp.set_nonblocking(false).unwrap();
                tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let conn = rustls::ServerConnection::new(config.clone()).unwrap();
                serve(&received2, rustls::StreamOwned::new(conn, tcp));
            }
        });
        WitnessServer {
            url: format!("https://{addr}/checkpoints"),
            fingerprint,
            received,
            stop,
            _dir: dir,
        }
    }

    /// The checkpoints it accepted, in order.
    pub fn received(&self) -> Vec<Value> {
        self.received.lock().unwrap().clone()
    }
}

fn serve(received: &Mutex<Vec<Value>>, mut stream: impl Read + Write) {
    let mut reader = BufReader::new(&mut stream);
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() || line.is_empty() {
        return;
    }
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.trim().eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0u8; len];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let (status, answer) = match (
        line.starts_with("POST /checkpoints "),
        serde_json::from_slice::<Value>(&body),
    ) {
        (true, Ok(cp)) => {
            let mut kept = received.lock().unwrap();
            let last = kept
                .last()
                .and_then(|c| c["tree_size"].as_u64())
                .unwrap_or(0);
            let size = cp["tree_size"].as_u64().unwrap_or(0);
            if size < last {
                (
                    409,
                    json!({"accepted": false, "error": format!("tree {size} is smaller than {last} seen before")}),
                )
            } else {
                kept.push(cp);
                (
                    200,
                    json!({"accepted": true, "tree_size": size, "seen": kept.len()}),
                )
            }
        }
        _ => (
            400,
            json!({"accepted": false, "error": "expected POST /checkpoints with JSON"}),
        ),
    };
    let text = answer.to_string();
    let _ = write!(
        stream,
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    );
    let _ = stream.flush();
}
