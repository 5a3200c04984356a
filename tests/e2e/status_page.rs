//! The status page at `/`, in a real browser (headless Chromium): the counts,
//! a sink's state and last error, a Sense host with its losses, recent events
//! (shown as text, never as markup), and a screenshot kept for people to look
//! at. Without a browser: the token guards the page (a browser asks for it as
//! a password), and the page's data is JSON.

use std::time::Duration;

use serde_json::Value;

use crate::harness::browser::Browser;
use crate::harness::{
    ConfigBuilder, Herald, fixture, free_tcp_port, http_request_with, poll_until, repo_root, send,
};

/// The engine sample with its row number, host and message replaced.
fn engine_row(host: &str, row: u32, message: &str) -> Vec<u8> {
    let sample = String::from_utf8(fixture("engine_error").datagram).expect("utf-8 sample");
    let mut fields: Vec<String> = sample.split(';').map(str::to_string).collect();
    fields[1] = row.to_string();
    fields[5] = host.to_string();
    fields[8] = message.to_string();
    fields.join(";").into_bytes()
}

/// A script (a function body) that returns the text of what `selector` finds.
fn text_of(selector: &str) -> String {
    format!("const e = document.querySelector({selector:?}); return e ? e.textContent : null;")
}

#[test]
fn the_status_page_shows_counts_sinks_hosts_and_recent_events_in_a_browser() {
    let Some(browser) = Browser::start(1280, 2200) else {
        return;
    };
    // A second sink that cannot deliver: nothing listens on its port.
    let dead_port = free_tcp_port();
    let config = ConfigBuilder::new()
        .extra(&format!(
            "[sinks.hook]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:{dead_port}/alerts\"\nmatch = {{ types = [\"task\"] }}\n"
        ))
        .build();
    let mut herald = Herald::start(&config);

    // node1: rows 1 to 40 without 7, 8 and 9; and a failed task for the hook.
    let rows: Vec<Vec<u8>> = (1..=40)
        .filter(|row| ![7, 8, 9].contains(row))
        .map(|row| engine_row("node1", row, "Document could not be opened"))
        .collect();
    let mut datagrams: Vec<&[u8]> = rows.iter().map(Vec::as_slice).collect();
    let task = fixture("task_reload_failed").datagram;
    datagrams.push(&task);
    send("127.0.0.1", herald.udp, &datagrams);
    herald.wait_for_events(38);

    let url = format!("http://{}/", herald.http);
    browser.open(&url);
    assert!(
        browser.wait_until(
            Duration::from_secs(20),
            "const e = document.querySelector('#events-total'); return !!e && e.textContent === '38';",
        ),
        "events total: {:?}",
        browser.eval(&text_of("#events-total"))
    );
    assert_eq!(browser.eval(&text_of("#status")), "degraded");
    assert_eq!(
        browser.eval(&text_of("#sinks tr[data-sink='events'] .state")),
        "ok"
    );
    assert_eq!(
        browser.eval(&text_of("#sinks tr[data-sink='events'] .delivered")),
        "38"
    );
    let hook_state = browser.eval(&text_of("#sinks tr[data-sink='hook'] .state"));
    assert!(
        matches!(hook_state.as_str(), Some("retrying" | "failing")),
        "{hook_state}"
    );
    let hook_error = browser.eval(&text_of("#sinks tr[data-sink='hook'] .error"));
    assert!(
        hook_error.as_str().is_some_and(|e| e.contains("connect")),
        "{hook_error}"
    );

    // The host row, with its three lost rows once they have had 5 s to arrive.
    assert!(
        browser.wait_until(
            Duration::from_secs(30),
            "const e = document.querySelector(\"#hosts tr[data-host='node1'] .lost\"); return !!e && e.textContent === '3';",
        ),
        "node1: {:?}",
        browser.eval(&text_of("#hosts tr[data-host='node1']"))
    );
    assert_eq!(
        browser.eval(&text_of("#hosts tr[data-host='node1'] .events")),
        "37"
    );
    assert_eq!(
        browser.eval(&text_of("#hosts tr[data-host='node1'] .loss")),
        "7.5 %"
    );

    // Recent events arrive live, as text: markup in a message stays text.
    let hostile = engine_row("node1", 41, "<img src=x onerror=\"window.pwned=1\"> done");
    assert!(
        poll_until(Duration::from_secs(10), || {
            send("127.0.0.1", herald.udp, &[&hostile]);
            browser.eval("return document.querySelectorAll('#recent li').length > 0;")
                == Value::Bool(true)
        }),
        "no recent events shown"
    );
    let recent = browser.eval(&text_of("#recent li"));
    assert!(
        recent
            .as_str()
            .is_some_and(|r| r.contains("<img src=x onerror=")),
        "{recent}"
    );
    assert_eq!(
        browser.eval("return typeof window.pwned;"),
        "undefined",
        "markup from an event ran"
    );
    assert_eq!(
        browser.eval("return document.querySelectorAll('#recent img').length;"),
        0
    );
    // The effective config is there, without the tokens it does not have.
    let config_text = browser.eval(&text_of("#config"));
    assert!(
        config_text
            .as_str()
            .is_some_and(|c| c.contains("[sinks.hook]")),
        "{config_text}"
    );

    let dir = repo_root().join("target/test-artifacts");
    std::fs::create_dir_all(&dir).expect("artifact dir");
    let png = browser.screenshot();
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    std::fs::write(dir.join("status-page.png"), &png).expect("save the screenshot");
    eprintln!(
        "status page screenshot: {}",
        dir.join("status-page.png").display()
    );
}

#[test]
fn the_token_guards_the_page_and_a_browser_may_send_it_as_a_password() {
    let token = "0123456789abcdef0123";
    let herald = Herald::start_with_token(&ConfigBuilder::new().build(), token, "");
    for path in ["/", "/status.json", "/assets/status.js", "/status/stream"] {
        let (status, _) = http_request_with(herald.http, "GET", path, "").unwrap();
        assert_eq!(status, 401, "{path}");
    }
    // `user:token` in base64, as a browser sends it after asking.
    let basic = format!(
        "Authorization: Basic {}\r\n",
        encode_base64(format!("admin:{token}").as_bytes())
    );
    let (status, body) = http_request_with(herald.http, "GET", "/", &basic).unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("<title>herald status</title>"), "{body}");
    let wrong = format!("Authorization: Basic {}\r\n", encode_base64(b"admin:nope"));
    let (status, _) = http_request_with(herald.http, "GET", "/", &wrong).unwrap();
    assert_eq!(status, 401);
    let (status, body) = http_request_with(herald.http, "GET", "/status.json", &basic).unwrap();
    assert_eq!(status, 200);
    let document: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(document["status"], "ok");
    assert!(document["config"].as_str().unwrap().contains("<redacted>"));
    assert!(
        !body.contains(token),
        "the token leaked into the page's data"
    );
}

fn encode_base64(bytes: &[u8]) -> String {
    let mut out = Vec::new();
    herald::deadletter::base64(&mut out, bytes);
    String::from_utf8(out).expect("base64 is ASCII")
}
