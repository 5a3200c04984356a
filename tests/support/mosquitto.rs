//! A private mosquitto broker for tests: `mosquitto` from Debian's `mosquitto`
//! package, started in the foreground on free loopback ports with a temporary
//! directory holding its config, a password file (`mosquitto_passwd`) and a CA,
//! server and client certificate generated with the `openssl` CLI. Stopped on
//! drop. Also a subscriber (rumqttc) that collects what the broker delivers.
//!
//! Listeners, all on 127.0.0.1:
//!
//! - [`Mosquitto::tls_port`]: TLS, username and password required;
//! - [`Mosquitto::cert_port`]: TLS, a client certificate signed by the CA
//!   required (its CN is the user name);
//! - [`Mosquitto::plain_port`]: plain TCP, username and password required.
//!
//! Without mosquitto, `mosquitto_passwd` or `openssl`, [`Mosquitto::start`] says
//! so and returns `None`, except under CI (`CI` set), where it fails.

#![allow(dead_code)] // each user needs a different part

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// The user the password file holds.
pub const USERNAME: &str = "herald";
/// Its password.
pub const PASSWORD: &str = "s3cret-Pa55";
/// The CN (and so the user name) of the client certificate.
pub const CLIENT_CN: &str = "herald-client";

use crate::harness::{find_program, wait_until_listening};
use crate::ports::server_port as free_port;

/// Runs a program in `dir`; fails the test with its output when it fails.
fn run(dir: &Path, program: &Path, args: &[&str]) {
    let output = Command::new(program)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|err| panic!("cannot run {}: {err}", program.display()));
    assert!(
        output.status.success(),
        "{} {args:?} failed: {}\n{}",
        program.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn openssl(dir: &Path, args: &[&str]) {
    let program = find_program("openssl").expect("openssl is installed");
    run(dir, &program, args);
}

/// A CA: its certificate and key.
#[derive(Debug, Clone)]
pub struct Ca {
    /// The CA certificate (PEM): what clients trust.
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
}

static SERIAL: AtomicU32 = AtomicU32::new(1);

/// A new CA in `dir` (files `<name>.crt` and `<name>.key`), named `CN=<name>`.
pub fn generate_ca(dir: &Path, name: &str) -> Ca {
    let key = format!("{name}.key");
    let cert = format!("{name}.crt");
    let cnf = format!("{name}.cnf");
    std::fs::write(
        dir.join(&cnf),
        format!(
            "[req]\ndistinguished_name = dn\nx509_extensions = v3_ca\nprompt = no\n\
             [dn]\nCN = {name}\n\
             [v3_ca]\nbasicConstraints = critical,CA:TRUE\nkeyUsage = critical,keyCertSign,cRLSign\n\
             subjectKeyIdentifier = hash\n"
        ),
    )
    .expect("write CA openssl config");
    openssl(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            &key,
        ],
    );
    openssl(
        dir,
        &[
            "req", "-x509", "-new", "-key", &key, "-config", &cnf, "-days", "3", "-out", &cert,
        ],
    );
    Ca {
        cert: dir.join(cert),
        key: dir.join(key),
    }
}

/// A key and a certificate signed by `ca` for `CN=<cn>` with the given
/// extensions (`openssl x509 -extfile` lines); returns (cert, key).
pub fn issue(dir: &Path, ca: &Ca, name: &str, cn: &str, extensions: &str) -> (PathBuf, PathBuf) {
    let key = format!("{name}.key");
    let csr = format!("{name}.csr");
    let cert = format!("{name}.crt");
    let ext = format!("{name}.ext");
    std::fs::write(dir.join(&ext), extensions).expect("write extensions");
    openssl(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            &key,
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-key",
            &key,
            "-subj",
            &format!("/CN={cn}"),
            "-out",
            &csr,
        ],
    );
    let serial = format!(
        "0x{:x}{:04x}",
        std::process::id(),
        SERIAL.fetch_add(1, Ordering::Relaxed)
    );
    let ca_cert = ca.cert.display().to_string();
    let ca_key = ca.key.display().to_string();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca_cert,
            "-CAkey",
            &ca_key,
            "-set_serial",
            &serial,
            "-days",
            "3",
            "-extfile",
            &ext,
            "-out",
            &cert,
        ],
    );
    (dir.join(cert), dir.join(key))
}

/// A private mosquitto, stopped on drop.
pub struct Mosquitto {
    dir: TempDir,
    child: Option<Child>,
    program: PathBuf,
    /// TLS with username and password.
    pub tls_port: u16,
    /// TLS with a client certificate.
    pub cert_port: u16,
    /// Plain TCP with username and password.
    pub plain_port: u16,
    /// The CA that signed the server and client certificates.
    pub ca: Ca,
    /// The client certificate (CN [`CLIENT_CN`]).
    pub client_cert: PathBuf,
    /// Its key.
    pub client_key: PathBuf,
}

impl Mosquitto {
    /// Starts mosquitto, or returns `None` when it is not installed (outside CI).
    pub fn start() -> Option<Mosquitto> {
        let programs = (
            find_program("mosquitto"),
            find_program("mosquitto_passwd"),
            find_program("openssl"),
        );
        let (Some(program), Some(passwd), Some(_)) = programs else {
            assert!(
                std::env::var_os("CI").is_none(),
                "mosquitto, mosquitto_passwd or openssl is not installed; .ci/run must install Debian's mosquitto and openssl packages"
            );
            eprintln!(
                "skipped: mosquitto, mosquitto_passwd or openssl is not installed (apt-get install mosquitto openssl)"
            );
            return None;
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path();
        let ca = generate_ca(root, "herald-test-ca");
        let (server_cert, server_key) = issue(
            root,
            &ca,
            "server",
            "localhost",
            "subjectAltName = IP:127.0.0.1, DNS:localhost\nbasicConstraints = CA:FALSE\n\
             keyUsage = critical,digitalSignature\nextendedKeyUsage = serverAuth\n",
        );
        let (client_cert, client_key) = issue(
            root,
            &ca,
            "client",
            CLIENT_CN,
            "basicConstraints = CA:FALSE\nkeyUsage = critical,digitalSignature\n\
             extendedKeyUsage = clientAuth\n",
        );
        run(root, &passwd, &["-b", "-c", "passwd", USERNAME, PASSWORD]);
        let mut ports = Vec::new();
        while ports.len() < 3 {
            let port = free_port();
            if !ports.contains(&port) {
                ports.push(port);
            }
        }
        let (tls_port, cert_port, plain_port) = (ports[0], ports[1], ports[2]);
        let tls = format!(
            "cafile {}\ncertfile {}\nkeyfile {}\n",
            ca.cert.display(),
            server_cert.display(),
            server_key.display()
        );
        // As root, mosquitto switches to the `mosquitto` user unless told not to,
        // and that user cannot read this private temp dir.
        // SAFETY: geteuid has no preconditions.
        let user = if unsafe { libc::geteuid() } == 0 {
            "user root\n"
        } else {
            ""
        };
        let config = format!(
            "{user}per_listener_settings false\nallow_anonymous false\npassword_file {passwd}\n\
             persistence false\nlog_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\n\
             log_type information\nconnection_messages true\n\n\
             listener {plain_port} 127.0.0.1\n\n\
             listener {tls_port} 127.0.0.1\n{tls}\n\
             listener {cert_port} 127.0.0.1\n{tls}require_certificate true\nuse_identity_as_username true\n",
            passwd = root.join("passwd").display(),
        );
        std::fs::write(root.join("mosquitto.conf"), config).expect("write mosquitto.conf");
        let mut mosquitto = Mosquitto {
            dir,
            child: None,
            program,
            tls_port,
            cert_port,
            plain_port,
            ca,
            client_cert,
            client_key,
        };
        mosquitto.run();
        Some(mosquitto)
    }

    /// Starts (again) with the same config and ports.
    pub fn run(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("mosquitto.log"))
            .expect("log file");
        let child = Command::new(&self.program)
            .arg("-c")
            .arg(self.dir.path().join("mosquitto.conf"))
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("start mosquitto");
        let up = wait_until_listening(
            self.child.insert(child),
            &[self.tls_port, self.cert_port, self.plain_port],
        );
        assert!(up, "mosquitto did not start:\n{}", self.log());
    }

    /// Stops the broker (SIGKILL: an outage, not a clean shutdown).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The broker's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }

    /// The temp dir (certificates, config, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!("---- mosquitto log ----\n{}", self.log());
        }
    }
}

/// A message the broker delivered.
#[derive(Debug, Clone)]
pub struct Message {
    /// Its topic.
    pub topic: String,
    /// Its payload.
    pub payload: Vec<u8>,
    /// Whether it came with the retain flag (a retained message).
    pub retain: bool,
}

impl Message {
    /// The payload as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }
}

/// A subscriber over TLS with username and password (rumqttc's blocking client).
pub struct Subscriber {
    client: rumqttc::Client,
    connection: rumqttc::Connection,
}

impl Subscriber {
    /// Connects to the broker's TLS port and subscribes to `filter` (QoS 1),
    /// waiting until the broker confirms the subscription.
    pub fn connect(broker: &Mosquitto, filter: &str) -> Subscriber {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut options = rumqttc::MqttOptions::new(
            format!("test-sub-{}", SERIAL.fetch_add(1, Ordering::Relaxed)),
            "127.0.0.1",
            broker.tls_port,
        );
        options
            .set_credentials(USERNAME, PASSWORD)
            .set_keep_alive(Duration::from_secs(30))
            .set_max_packet_size(4 * 1024 * 1024, 64 * 1024)
            .set_transport(rumqttc::Transport::tls_with_config(
                rumqttc::TlsConfiguration::Simple {
                    ca: std::fs::read(&broker.ca.cert).expect("read CA"),
                    alpn: None,
                    client_auth: None,
                },
            ));
        let (client, connection) = rumqttc::Client::new(options, 100);
        client
            .subscribe(filter, rumqttc::QoS::AtLeastOnce)
            .expect("queue the subscription");
        let mut subscriber = Subscriber { client, connection };
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match subscriber.connection.recv_timeout(left) {
                Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_)))) => break,
                Ok(Ok(_)) => {}
                Ok(Err(err)) => panic!("subscriber cannot connect: {err}\n{}", broker.log()),
                Err(_) => panic!("no SUBACK within 10 s\n{}", broker.log()),
            }
        }
        subscriber
    }

    /// The next `n` messages, waiting up to `deadline` in all; fails the test
    /// with what did arrive when fewer came.
    pub fn messages(&mut self, n: usize, deadline: Duration) -> Vec<Message> {
        let end = Instant::now() + deadline;
        let mut out = Vec::new();
        while out.len() < n {
            let left = end.saturating_duration_since(Instant::now());
            match self.connection.recv_timeout(left) {
                Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(publish)))) => {
                    out.push(Message {
                        topic: publish.topic.clone(),
                        payload: publish.payload.to_vec(),
                        retain: publish.retain,
                    });
                }
                Ok(Ok(_)) => {}
                Ok(Err(err)) => panic!("subscriber lost the connection: {err}"),
                Err(_) => {
                    let topics: Vec<&str> = out.iter().map(|m| m.topic.as_str()).collect();
                    panic!(
                        "{} of {n} messages within {deadline:?}; got {topics:?}",
                        out.len()
                    );
                }
            }
        }
        out
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.client.try_disconnect();
    }
}
