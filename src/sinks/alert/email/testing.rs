//! What the email sink's tests share: a config, an alert, a failed-task event
//! and a scripted SMTP server on 127.0.0.1.

use super::EmailConfig;
use crate::event::Event;
use crate::sinks::alert::Rendered;

pub fn config(extra: &str) -> EmailConfig {
    toml::from_str(&format!(
        "host = \"smtp.corp.local\"\nfrom = \"Herald <herald@corp.local>\"\nto = [\"ops@corp.local\"]\n{extra}"
    ))
    .unwrap()
}

pub fn rendered(title: &str, text: &str) -> Rendered {
    Rendered {
        title: title.into(),
        text: text.into(),
        links: vec![
            ("QMC".into(), "https://sense.lab/qmc/tasks".into()),
            (
                "App".into(),
                "https://sense.lab/sense/app/a?b=1&c=\"2\"".into(),
            ),
        ],
    }
}

/// A scripted SMTP server on 127.0.0.1 (no STARTTLS, no AUTH): answers MAIL
/// for senders containing "nologin" with 530 and "blocked" with 550, RCPT
/// for addresses containing "unknown" with 550 and "busy" with 451, and
/// records the recipients of accepted messages.
pub mod fake {
    use std::sync::{Arc, Mutex};

    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio::net::TcpListener;

    pub struct Fake {
        pub port: u16,
        pub accepted: Arc<Mutex<Vec<String>>>,
    }

    pub async fn start() -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let record = accepted.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let record = record.clone();
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let mut lines = BufReader::new(read).lines();
                    let _ = write.write_all(b"220 fake ESMTP\r\n").await;
                    let mut rcpt = Vec::new();
                    let mut data = false;
                    while let Ok(Some(line)) = lines.next_line().await {
                        if data {
                            if line == "." {
                                data = false;
                                record.lock().unwrap().append(&mut rcpt);
                                let _ = write.write_all(b"250 ok\r\n").await;
                            }
                            continue;
                        }
                        let upper = line.to_ascii_uppercase();
                        let answer: &[u8] = if upper.starts_with("EHLO") {
                            b"250-fake\r\n250 8BITMIME\r\n"
                        } else if upper.starts_with("MAIL") && line.contains("nologin") {
                            b"530 5.7.0 Authentication required\r\n"
                        } else if upper.starts_with("MAIL") && line.contains("blocked") {
                            b"550 5.7.1 Sender address rejected\r\n"
                        } else if upper.starts_with("RCPT") && line.contains("unknown") {
                            b"550 5.1.1 unknown mailbox\r\n"
                        } else if upper.starts_with("RCPT") && line.contains("busy") {
                            b"451 4.3.0 try later\r\n"
                        } else if upper.starts_with("RCPT") {
                            rcpt.push(line[8..].trim().to_string());
                            b"250 ok\r\n"
                        } else if upper.starts_with("DATA") {
                            data = true;
                            b"354 go\r\n"
                        } else if upper.starts_with("QUIT") {
                            let _ = write.write_all(b"221 bye\r\n").await;
                            return;
                        } else {
                            b"250 ok\r\n"
                        };
                        if write.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Fake { port, accepted }
    }
}

pub fn failed_task(execution: &str) -> Event {
    use crate::parse::{ParseConfig, Parser};
    Parser::new(&ParseConfig::default())
        .unwrap()
        .parse(
            format!("/scheduler-reload-failed/;pro2-win1;Reload of Sales;Sales;LAB\\goran;dec2a02a-1680-44ef-8dc2-e2bfb180af87;e7af59a0-c243-480d-9571-08727551a66f;2021-02-16 09:24:59,099;INFO;{execution};Max retries reached").as_bytes(),
            "10.0.0.5:1".parse().unwrap(),
            jiff::Timestamp::now(),
        )
        .unwrap()
}

pub fn local(port: u16, to: &[&str]) -> EmailConfig {
    let to: Vec<String> = to.iter().map(|t| format!("{t:?}")).collect();
    toml::from_str(&format!(
        "host = \"127.0.0.1\"\nport = {port}\nsecurity = \"none\"\nfrom = \"herald@corp.local\"\nto = [{}]\ntimeout_ms = 5000",
        to.join(", ")
    ))
    .unwrap()
}
