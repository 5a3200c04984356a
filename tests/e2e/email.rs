//! The email sink against a real SMTP server: Python's aiosmtpd, started here
//! on a free loopback port (`tests/support/smtp_server.py`), which parses every
//! message with Python's email package and records it. Covers content and
//! encoding, one message per recipient, STARTTLS and implicit TLS with AUTH and
//! a throwaway CA, `herald check --connect`, refused and greylisted recipients,
//! and how the sink's rate limit and the per-recipient limit combine.
//!
//! Without python3 + aiosmtpd (or openssl) these tests say so and pass, except
//! under CI (`CI` set), where `.ci/run` installs them.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use serde_json::Value;

#[path = "../support/smtp.rs"]
mod smtp;
use smtp::{Options, SmtpServer, Tls};

use crate::harness::{
    ConfigBuilder, DEADLINE, Herald, TASK, execution, run_herald, send, task_failure,
};

/// `[sinks.mail]` for a plain-text server on `server`, plus `extra` lines.
fn mail_sink(server: &SmtpServer, to: &[&str], extra: &str) -> String {
    let to: Vec<String> = to.iter().map(|t| format!("{t:?}")).collect();
    format!(
        "[sinks.mail]\ntype = \"email\"\nhost = \"127.0.0.1\"\nport = {}\nsecurity = \"none\"\n\
         from = \"Qlik Alerts <herald@corp.local>\"\nto = [{}]\n\
         match = {{ types = [\"task\"], outcomes = [\"failed\", \"aborted\"] }}\n\
         retry_initial_ms = 100\nretry_max_ms = 500\n{extra}\n",
        server.addr.port(),
        to.join(", ")
    )
}

fn start_herald(sink: &str) -> Herald {
    Herald::start(&ConfigBuilder::new().extra(sink).build())
}

/// A decoded body part with its line breaks (CRLF on the wire) as `\n`.
fn part(message: &Value, name: &str) -> String {
    message[name]
        .as_str()
        .unwrap_or_else(|| panic!("no {name} part: {message:#}"))
        .replace("\r\n", "\n")
}

/// The messages one recipient received.
fn for_recipient<'a>(messages: &'a [Value], address: &str) -> Vec<&'a Value> {
    messages
        .iter()
        .filter(|m| {
            m["rcpt_tos"]
                .as_array()
                .is_some_and(|r| r.len() == 1 && r[0] == address)
        })
        .collect()
}

fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// Runs `herald check --connect` on `config` (written to `dir`).
fn check_connect(dir: &Path, name: &str, config: &str) -> Output {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, config).expect("write config");
    run_herald(&[
        "check",
        "--connect",
        "--config",
        path.to_str().expect("utf-8 path"),
    ])
}

#[test]
fn one_failed_task_makes_one_message_per_recipient_with_text_and_html() {
    let Some(server) = SmtpServer::start(&Options::default()) else {
        return;
    };
    let mut herald = start_herald(&mail_sink(
        &server,
        &["ops@corp.local", "Dev Team <dev@corp.local>"],
        "sense_url = \"https://sense.lab\"",
    ));
    send(
        "127.0.0.1",
        herald.udp,
        &[&task_failure(
            "Reload of Sales",
            TASK,
            &execution(1),
            "Max retries reached",
        )],
    );
    let messages = server.wait_for_messages(2, DEADLINE);
    herald.wait_for("delivered", |h| {
        h.metric("herald_sink_events_delivered_total", &[("sink", "mail")]) == 1.0
    });
    std::thread::sleep(Duration::from_millis(300));
    let messages_after = server.messages();
    assert_eq!(messages_after.len(), 2, "{messages_after:#?}");

    for (address, name) in [("ops@corp.local", ""), ("dev@corp.local", "Dev Team")] {
        let mine = for_recipient(&messages, address);
        assert_eq!(mine.len(), 1, "exactly one message for {address}");
        let m = mine[0];
        assert_eq!(m["mail_from"], "herald@corp.local");
        assert_eq!(
            m["from"],
            serde_json::json!([["Qlik Alerts", "herald@corp.local"]])
        );
        assert_eq!(
            m["to"],
            serde_json::json!([[name, address]]),
            "only its recipient"
        );
        let subject = m["subject"].as_str().unwrap();
        assert_eq!(subject, "🔴 Reload task failed: Reload of Sales");
        assert_eq!(m["content_type"], "multipart/alternative");
        assert_eq!(m["headers"]["Auto-Submitted"], "auto-generated");
        assert_eq!(m["tls"], false);
        let text = part(m, "text");
        let html = part(m, "html");
        for needle in [
            "Reload of Sales",
            "pro2-win1",
            &execution(1),
            "Max retries reached",
        ] {
            assert!(text.contains(needle), "text lacks {needle}:\n{text}");
            assert!(html.contains(needle), "HTML lacks {needle}:\n{html}");
        }
        assert!(text.contains("\nHost: pro2-win1\n"), "{text}");
        assert!(text.contains("QMC: https://sense.lab/qmc/tasks"), "{text}");
        assert!(
            html.contains(
                "<th style=\"text-align:left;padding:2px 12px 2px 0;vertical-align:top\">Host</th>"
            ),
            "{html}"
        );
        assert!(
            html.contains("<a href=\"https://sense.lab/qmc/tasks\">QMC</a>"),
            "{html}"
        );
        assert!(m["ascii"].as_bool().unwrap() && m["max_line"].as_u64().unwrap() <= 998);
    }
}

#[test]
fn adversarial_text_arrives_intact_in_subject_text_and_html() {
    let Some(server) = SmtpServer::start(&Options::default()) else {
        return;
    };
    let mut herald = start_herald(&mail_sink(
        &server,
        &["O'Brien <o'brien@corp.local>"],
        "html = true",
    ));
    let task_name = "Reload \"Sales\" <b>&amp;</b> C:\\ProgramData\\Qlik O'Brien 😀";
    let mut message = String::from(
        "Script error in C:\\ProgramData\\Qlik\\Sense\\Log \"quoted\" O'Brien <tag> & 😀 ünïcödé ",
    );
    while message.chars().count() < 4000 {
        message.push_str("x\\y \"z\" 'q' <&> 🔥 ");
    }
    let mut message: String = message.chars().take(3999).collect();
    message.push('!');
    send(
        "127.0.0.1",
        herald.udp,
        &[&task_failure(task_name, TASK, &execution(2), &message)],
    );
    let messages = server.wait_for_messages(1, DEADLINE);
    let m = &messages[0];
    assert_eq!(m["rcpt_tos"], serde_json::json!(["o'brien@corp.local"]));
    assert_eq!(
        m["to"],
        serde_json::json!([["O'Brien", "o'brien@corp.local"]])
    );
    assert_eq!(
        m["subject"].as_str().unwrap(),
        format!("🔴 Reload task failed: {task_name}")
    );
    let text = part(m, "text");
    assert!(text.contains(&format!("Task: {task_name}\n")), "{text}");
    assert!(
        text.contains(&format!("Message: {message}")),
        "the 4000-character message arrives whole:\n{text}"
    );
    let html = part(m, "html");
    assert!(html.contains(&escape_html(&message)), "{html}");
    assert!(
        html.contains(&format!(
            "<h2>{}</h2>",
            escape_html(&format!("🔴 Reload task failed: {task_name}"))
        )),
        "{html}"
    );
    assert!(
        !html.contains("<b>&amp;</b>"),
        "markup from the event is escaped"
    );
    assert!(
        m["ascii"].as_bool().unwrap(),
        "lettre encodes everything to 7-bit"
    );
    assert!(
        m["max_line"].as_u64().unwrap() <= 998,
        "no line over SMTP's limit: {}",
        m["max_line"]
    );
    herald.wait_for("delivered", |h| {
        h.metric("herald_sink_events_delivered_total", &[("sink", "mail")]) == 1.0
    });
}

#[test]
fn starttls_with_auth_delivers_and_check_connect_names_tls_and_login_problems() {
    let Some(tls) = Tls::generate() else {
        return;
    };
    let Some(server) = SmtpServer::start(&Options {
        tls: Some(&tls),
        auth: Some(("herald", "correct horse")),
        ..Options::default()
    }) else {
        return;
    };
    let sink = |password: &str, ca: bool| {
        let ca = if ca {
            format!("tls_ca_file = {:?}\n", tls.ca().display().to_string())
        } else {
            String::new()
        };
        let login = if password.is_empty() {
            String::new()
        } else {
            format!("username = \"herald\"\npassword = {password:?}\n")
        };
        format!(
            "[sinks.mail]\ntype = \"email\"\nhost = \"127.0.0.1\"\nport = {}\nsecurity = \"starttls\"\n\
             {login}{ca}from = \"herald@corp.local\"\nto = [\"ops@corp.local\"]\n",
            server.addr.port()
        )
    };
    let dir = tempfile::tempdir().expect("temp dir");

    let ok = check_connect(
        dir.path(),
        "ok",
        &ConfigBuilder::new()
            .extra(&sink("correct horse", true))
            .build(),
    );
    let stderr = String::from_utf8_lossy(&ok.stderr);
    assert!(ok.status.success(), "{stderr}");
    assert!(stderr.contains("sinks.mail: ok:"), "{stderr}");
    assert!(stderr.contains("security = \"starttls\""), "{stderr}");
    assert!(stderr.contains("logged in as \"herald\""), "{stderr}");

    let wrong = check_connect(
        dir.path(),
        "wrong",
        &ConfigBuilder::new()
            .extra(&sink("Tr0ub4dor&3", true))
            .build(),
    );
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert!(!wrong.status.success(), "{stderr}");
    assert!(
        stderr.contains("sinks.mail: the SMTP server 127.0.0.1:")
            && stderr.contains("refused the login of \"herald\"")
            && stderr.contains("535"),
        "{stderr}"
    );
    assert!(stderr.contains("check username and password"), "{stderr}");
    let stdout = String::from_utf8_lossy(&wrong.stdout);
    assert!(
        !stderr.contains("Tr0ub4dor") && !stdout.contains("Tr0ub4dor"),
        "the password never shows:\n{stdout}\n{stderr}"
    );

    let untrusted = check_connect(
        dir.path(),
        "untrusted",
        &ConfigBuilder::new()
            .extra(&sink("correct horse", false))
            .build(),
    );
    let stderr = String::from_utf8_lossy(&untrusted.stderr);
    assert!(!untrusted.status.success(), "{stderr}");
    assert!(
        stderr.contains("TLS with the SMTP server 127.0.0.1:") && stderr.contains("tls_ca_file"),
        "{stderr}"
    );

    let no_login = check_connect(
        dir.path(),
        "no_login",
        &ConfigBuilder::new().extra(&sink("", true)).build(),
    );
    let stderr = String::from_utf8_lossy(&no_login.stderr);
    assert!(!no_login.status.success(), "{stderr}");
    assert!(
        stderr.contains("does not accept mail from herald@corp.local")
            && stderr.contains("530")
            && stderr.contains("set username and password"),
        "{stderr}"
    );

    let mut herald = start_herald(&sink("correct horse", true));
    send(
        "127.0.0.1",
        herald.udp,
        &[&task_failure(
            "Reload of Sales",
            TASK,
            &execution(3),
            "Max retries reached",
        )],
    );
    let messages = server.wait_for_messages(1, DEADLINE);
    assert_eq!(messages[0]["tls"], true, "sent after STARTTLS");
    assert_eq!(messages[0]["auth"], "herald");
    assert_eq!(
        messages[0]["rcpt_tos"],
        serde_json::json!(["ops@corp.local"])
    );
    herald.wait_for("delivered", |h| {
        h.metric("herald_sink_events_delivered_total", &[("sink", "mail")]) == 1.0
    });
}

#[test]
fn implicit_tls_works_and_a_plain_server_is_refused_for_starttls() {
    let Some(tls) = Tls::generate() else {
        return;
    };
    let Some(smtps) = SmtpServer::start(&Options {
        tls: Some(&tls),
        implicit_tls: true,
        ..Options::default()
    }) else {
        return;
    };
    let Some(plain) = SmtpServer::start(&Options::default()) else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let sink = |port: u16, security: &str| {
        format!(
            "[sinks.mail]\ntype = \"email\"\nhost = \"127.0.0.1\"\nport = {port}\nsecurity = \"{security}\"\n\
             tls_ca_file = {:?}\nfrom = \"herald@corp.local\"\nto = [\"ops@corp.local\"]\n",
            tls.ca().display().to_string()
        )
    };
    let ok = check_connect(
        dir.path(),
        "smtps",
        &ConfigBuilder::new()
            .extra(&sink(smtps.addr.port(), "tls"))
            .build(),
    );
    let stderr = String::from_utf8_lossy(&ok.stderr);
    assert!(ok.status.success(), "{stderr}");
    assert!(stderr.contains("security = \"tls\""), "{stderr}");

    let no_starttls = check_connect(
        dir.path(),
        "plain",
        &ConfigBuilder::new()
            .extra(&sink(plain.addr.port(), "starttls"))
            .build(),
    );
    let stderr = String::from_utf8_lossy(&no_starttls.stderr);
    assert!(!no_starttls.status.success(), "{stderr}");
    assert!(stderr.contains("does not offer STARTTLS"), "{stderr}");

    let mut herald = start_herald(&sink(smtps.addr.port(), "tls"));
    send(
        "127.0.0.1",
        herald.udp,
        &[&task_failure(
            "Reload of Sales",
            TASK,
            &execution(4),
            "Max retries reached",
        )],
    );
    let messages = smtps.wait_for_messages(1, DEADLINE);
    assert_eq!(messages[0]["tls"], true);
    herald.wait_for("delivered", |h| {
        h.metric("herald_sink_events_delivered_total", &[("sink", "mail")]) == 1.0
    });
}

#[test]
fn check_connect_names_an_unreachable_server() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = crate::harness::free_tcp_port();
    let out = check_connect(
        dir.path(),
        "down",
        &ConfigBuilder::new()
            .extra(&format!(
                "[sinks.mail]\ntype = \"email\"\nhost = \"127.0.0.1\"\nport = {port}\nsecurity = \"none\"\n\
                 from = \"herald@corp.local\"\nto = [\"ops@corp.local\"]\n"
            ))
            .build(),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "sinks.mail: cannot connect to the SMTP server 127.0.0.1:{port}"
        )),
        "{stderr}"
    );
}

/// Default limits: the sink's gate suppresses the second failure of a task
/// within `rate_limit_window_s` before the email sink sees it.
#[test]
fn a_second_failure_of_the_same_task_is_suppressed_by_the_sink_rate_limit() {
    let Some(server) = SmtpServer::start(&Options::default()) else {
        return;
    };
    let mut herald = start_herald(&mail_sink(
        &server,
        &["ops@corp.local", "dev@corp.local"],
        "",
    ));
    send(
        "127.0.0.1",
        herald.udp,
        &[&task_failure(
            "Reload of Sales",
            TASK,
            &execution(5),
            "first",
        )],
    );
    server.wait_for_messages(2, DEADLINE);
    herald.wait_for("delivered", |h| {
        h.metric("herald_sink_events_delivered_total", &[("sink", "mail")]) == 1.0
    });
    send(
        "127.0.0.1",
        herald.udp,
        &[&task_failure(
            "Reload of Sales",
            TASK,
            &execution(6),
            "second",
        )],
    );
    herald.wait_for("the second failure suppressed", |h| {
        h.metric(
            "herald_alerts_suppressed_total",
            &[("sink", "mail"), ("reason", "rate_limited")],
        ) == 1.0
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        server.messages().len(),
        2,
        "one message per recipient in all"
    );
    assert_eq!(
        herald.metric(
            "herald_email_recipients_suppressed_total",
            &[("sink", "mail")]
        ),
        0.0,
        "the gate decided; the email sink never saw the second failure"
    );
}

/// With the gate's limit off, the per-recipient limit holds the second failure
/// of a task back from each recipient (and counts each), while another task's
/// failure still goes out.
#[test]
fn with_the_sink_limit_off_the_per_recipient_limit_suppresses_a_second_failure() {
    let Some(server) = SmtpServer::start(&Options::default()) else {
        return;
    };
    let mut herald = start_herald(&mail_sink(
        &server,
        &["ops@corp.local", "dev@corp.local"],
        "rate_limit_window_s = 0\nper_recipient_rate_limit_s = 300",
    ));
    send(
        "127.0.0.1",
        herald.udp,
        &[&task_failure(
            "Reload of Sales",
            TASK,
            &execution(7),
            "first",
        )],
    );
    server.wait_for_messages(2, DEADLINE);
    send(
        "127.0.0.1",
        herald.udp,
        &[&task_failure(
            "Reload of Sales",
            TASK,
            &execution(8),
            "second",
        )],
    );
    herald.wait_for("both recipients held back", |h| {
        h.metric(
            "herald_email_recipients_suppressed_total",
            &[("sink", "mail")],
        ) == 2.0
    });
    let other_task = "0c8e1f2a-3b4d-4e5f-8a7b-9c0d1e2f3a4b";
    send(
        "127.0.0.1",
        herald.udp,
        &[&task_failure(
            "Reload of Budget",
            other_task,
            &execution(9),
            "third",
        )],
    );
    let messages = server.wait_for_messages(4, DEADLINE);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(server.messages().len(), 4);
    let texts: Vec<&str> = messages.iter().filter_map(|m| m["text"].as_str()).collect();
    assert!(
        !texts.iter().any(|t| t.contains("Message: second")),
        "{texts:?}"
    );
    assert_eq!(
        texts
            .iter()
            .filter(|t| t.contains("Reload of Budget"))
            .count(),
        2
    );
    assert_eq!(
        herald.metric(
            "herald_alerts_suppressed_total",
            &[("sink", "mail"), ("reason", "rate_limited")]
        ),
        0.0
    );
    herald.wait_for("all three handled", |h| {
        h.metric("herald_sink_events_delivered_total", &[("sink", "mail")]) == 3.0
    });
}

/// 451 for one recipient is retried for that recipient only; 550 for another is
/// final; whoever received the alert does not get it again. The event goes to
/// the dead-letter file (one recipient never got it), so the gate takes no slot,
/// and the next failure of the task goes only to the recipient who missed it.
#[test]
fn refused_and_greylisted_recipients_are_handled_one_by_one() {
    let Some(server) = SmtpServer::start(&Options {
        refuse: Some("unknown"),
        flaky: Some(("flaky", 1)),
        ..Options::default()
    }) else {
        return;
    };
    let mut herald = start_herald(&mail_sink(
        &server,
        &["ops@corp.local", "flaky@corp.local", "unknown@corp.local"],
        "",
    ));
    send(
        "127.0.0.1",
        herald.udp,
        &[&task_failure(
            "Reload of Sales",
            TASK,
            &execution(10),
            "first",
        )],
    );
    herald.wait_for("the event given up on", |h| {
        h.metric("herald_sink_events_failed_total", &[("sink", "mail")]) == 1.0
    });
    let messages = server.messages();
    assert_eq!(
        for_recipient(&messages, "ops@corp.local").len(),
        1,
        "{messages:#?}"
    );
    assert_eq!(
        for_recipient(&messages, "flaky@corp.local").len(),
        1,
        "{messages:#?}"
    );
    assert_eq!(for_recipient(&messages, "unknown@corp.local").len(), 0);
    let refusals: Vec<(String, u64)> = server
        .records()
        .iter()
        .filter(|r| r["event"] == "refused")
        .map(|r| {
            (
                r["rcpt"].as_str().unwrap().to_string(),
                r["code"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        refusals,
        [
            ("flaky@corp.local".to_string(), 451),
            ("unknown@corp.local".to_string(), 550)
        ],
        "the 550 is not retried"
    );
    assert!(herald.metric("herald_sink_retries_total", &[("sink", "mail")]) >= 1.0);
    let dead = herald.json_lines("dead.jsonl");
    assert_eq!(dead.len(), 1, "{dead:#?}");
    let error = dead[0]["error"].as_str().unwrap();
    assert!(
        error.contains("unknown@corp.local") && error.contains("550"),
        "{error}"
    );
    assert!(
        error.contains("delivered to ops@corp.local, flaky@corp.local"),
        "{error}"
    );
    assert_eq!(dead[0]["event"]["execution_id"], execution(10));

    // The next failure of the task: only unknown@ lacks a slot (refused again).
    send(
        "127.0.0.1",
        herald.udp,
        &[&task_failure(
            "Reload of Sales",
            TASK,
            &execution(11),
            "second",
        )],
    );
    herald.wait_for("the second event given up on", |h| {
        h.metric("herald_sink_events_failed_total", &[("sink", "mail")]) == 2.0
    });
    assert_eq!(
        herald.metric(
            "herald_email_recipients_suppressed_total",
            &[("sink", "mail")]
        ),
        2.0
    );
    assert_eq!(
        server.messages().len(),
        2,
        "nobody got the second failure twice"
    );
    let refused_again = server
        .records()
        .iter()
        .filter(|r| r["event"] == "refused" && r["rcpt"] == "unknown@corp.local")
        .count();
    assert_eq!(refused_again, 2);
}
