//! A private NATS server with JetStream for tests: `nats-server` from Debian's
//! `nats-server` package, started in the foreground on a free loopback port
//! with its store in a temporary directory and the login a test asks for.
//! Stopped on drop; [`NatsServer::stop`] and [`NatsServer::run`] make an
//! outage on the same port and store. Also a reader (async-nats) that fetches
//! what a stream holds.
//!
//! Without nats-server, [`NatsServer::start`] says so and returns `None`,
//! except under CI (`CI` set), where it fails.

#![allow(dead_code)] // each user needs a different part

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use tempfile::TempDir;

use crate::harness::{find_program, wait_until_listening};
use crate::ports::server_port as free_port;

/// A running (or stopped) nats-server.
#[derive(Debug)]
pub struct NatsServer {
    dir: TempDir,
    program: PathBuf,
    child: Option<Child>,
    /// The client port on 127.0.0.1.
    pub port: u16,
}

/// A message as the stream stored it.
#[derive(Debug, Clone)]
pub struct Stored {
    /// The subject it was published to.
    pub subject: String,
    /// Its payload (the event JSON).
    pub payload: Vec<u8>,
    /// Its `Nats-Msg-Id` header.
    pub msg_id: Option<String>,
}

impl NatsServer {
    /// Starts nats-server with JetStream and the config lines `extra` (a login,
    /// say), or returns `None` when it is not installed (outside CI).
    pub fn start(extra: &str) -> Option<NatsServer> {
        let Some(program) = find_program("nats-server") else {
            assert!(
                std::env::var_os("CI").is_none(),
                "nats-server is not installed; .ci/run must install Debian's nats-server package"
            );
            eprintln!("skipped: nats-server is not installed (apt-get install nats-server)");
            return None;
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let config = format!(
            "listen: \"127.0.0.1:{port}\"\nhttp: 0\njetstream {{\n  store_dir: \"{}\"\n}}\n{extra}\n",
            dir.path().join("store").display()
        );
        std::fs::write(dir.path().join("nats.conf"), config).expect("write nats.conf");
        let mut server = NatsServer {
            dir,
            program,
            child: None,
            port,
        };
        server.run();
        Some(server)
    }

    /// The URL herald connects to.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The server's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The temporary directory (config, store, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Starts (again) with the same config, port and store.
    pub fn run(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("nats.log"))
            .expect("log file");
        let child = Command::new(&self.program)
            .arg("-c")
            .arg(self.dir.path().join("nats.conf"))
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("start nats-server");
        let up = wait_until_listening(self.child.insert(child), &[self.port]);
        assert!(up, "nats-server did not start:\n{}", self.log());
    }

    /// Stops the server (SIGKILL: an outage, not a clean shutdown).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("nats.log")).unwrap_or_default()
    }

    /// Every message the stream `stream` holds, in order (connecting with
    /// `options`, which must carry the login the server asks for).
    pub fn messages_with(&self, stream: &str, options: async_nats::ConnectOptions) -> Vec<Stored> {
        runtime().block_on(async {
            let client = options
                .connect(self.url())
                .await
                .unwrap_or_else(|err| panic!("the test cannot connect to nats-server: {err}"));
            let jetstream = async_nats::jetstream::new(client);
            let Ok(mut handle) = jetstream.get_stream(stream).await else {
                return Vec::new();
            };
            let info = handle.info().await.expect("stream info").clone();
            let mut out = Vec::new();
            for sequence in info.state.first_sequence..=info.state.last_sequence {
                if info.state.messages == 0 {
                    break;
                }
                let Ok(message) = handle.get_raw_message(sequence).await else {
                    continue;
                };
                out.push(Stored {
                    subject: message.subject.to_string(),
                    payload: message.payload.to_vec(),
                    msg_id: message
                        .headers
                        .get("Nats-Msg-Id")
                        .map(|value| value.as_str().to_string()),
                });
            }
            out
        })
    }

    /// Every message the stream `stream` holds (no login).
    pub fn messages(&self, stream: &str) -> Vec<Stored> {
        self.messages_with(stream, async_nats::ConnectOptions::new())
    }

    /// How many messages the stream holds (0 when it does not exist).
    pub fn count_with(&self, stream: &str, options: async_nats::ConnectOptions) -> u64 {
        runtime().block_on(async {
            let Ok(client) = options.connect(self.url()).await else {
                return 0;
            };
            let jetstream = async_nats::jetstream::new(client);
            match jetstream.get_stream(stream).await {
                Ok(mut handle) => handle.info().await.map_or(0, |info| info.state.messages),
                Err(_) => 0,
            }
        })
    }

    /// Creates the stream `name` taking `subjects` (no login), in memory or on
    /// disk.
    pub fn create_stream(&self, name: &str, subjects: &[&str], memory: bool) {
        runtime().block_on(async {
            let client = async_nats::ConnectOptions::new()
                .connect(self.url())
                .await
                .expect("the test connects to nats-server");
            let jetstream = async_nats::jetstream::new(client);
            jetstream
                .create_stream(async_nats::jetstream::stream::Config {
                    name: name.to_string(),
                    subjects: subjects.iter().map(|s| (*s).to_string()).collect(),
                    storage: if memory {
                        async_nats::jetstream::stream::StorageType::Memory
                    } else {
                        async_nats::jetstream::stream::StorageType::File
                    },
                    ..Default::default()
                })
                .await
                .expect("create the stream");
        });
    }

    /// How many messages the stream holds (no login).
    pub fn count(&self, stream: &str) -> u64 {
        self.count_with(stream, async_nats::ConnectOptions::new())
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}
