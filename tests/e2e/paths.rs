//! Where herald finds its config (`--config`, `$HERALD_CONFIG`,
//! `./config/herald.toml`, `/etc/herald/herald.toml`) and where the relative
//! paths in it point (the config file's directory, whatever the current
//! directory).

use std::fs;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use crate::harness::{
    ConfigBuilder, MINIMAL_CONFIG, fixture, herald_command, poll_until, read_json_lines, repo_root,
    send, without_service_manager,
};

/// `herald check` (with `args`) in `dir`, with `HERALD_CONFIG` set to `env`.
fn check_in(dir: &Path, env: Option<&Path>, args: &[&str]) -> (Output, String, String) {
    let mut all = vec!["check"];
    all.extend_from_slice(args);
    let mut command = herald_command(&all);
    command.current_dir(dir);
    if let Some(path) = env {
        command.env("HERALD_CONFIG", path);
    }
    let out = command.output().expect("run herald check");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, stdout, stderr)
}

/// Writes `MINIMAL_CONFIG` to `dir/name` with its file sink writing to `events`.
fn write_config(dir: &Path, name: &str, events: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(
        &path,
        MINIMAL_CONFIG.replace("\"events.jsonl\"", &format!("{events:?}")),
    )
    .unwrap();
    path
}

#[test]
fn with_no_config_anywhere_the_error_lists_the_places_tried_and_the_flag() {
    if Path::new("/etc/herald/herald.toml").exists() {
        eprintln!("skipped: /etc/herald/herald.toml exists on this machine");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (out, _, stderr) = check_in(dir.path(), None, &[]);
    assert!(!out.status.success());
    for place in [
        "--config PATH: not given",
        "$HERALD_CONFIG: not set",
        "./config/herald.toml: does not exist",
        "/etc/herald/herald.toml: does not exist",
        "pass one with --config PATH",
    ] {
        assert!(stderr.contains(place), "{place:?} missing from:\n{stderr}");
    }
    // `herald run` says the same.
    let out = herald_command(&["run"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("./config/herald.toml"));
}

#[test]
fn the_config_is_the_flag_then_the_variable_then_the_checkout_s() {
    let dir = tempfile::tempdir().unwrap();
    let checkout = write_config(dir.path(), "config/herald.toml", "checkout.jsonl");
    let from_env = write_config(dir.path(), "env/herald.toml", "env.jsonl");
    let flag = write_config(dir.path(), "flag/herald.toml", "flag.jsonl");
    let used = |env: Option<&Path>, args: &[&str]| {
        let (out, stdout, stderr) = check_in(dir.path(), env, args);
        assert!(out.status.success(), "{stderr}");
        ["checkout", "env", "flag"]
            .into_iter()
            .find(|name| stdout.contains(&format!("{name}.jsonl")))
            .unwrap_or_else(|| panic!("which config?\n{stdout}"))
    };
    let flag_arg = ["--config", flag.to_str().unwrap()];
    assert_eq!(used(Some(&from_env), &flag_arg), "flag");
    assert_eq!(used(Some(&from_env), &[]), "env");
    assert_eq!(used(None, &[]), "checkout");
    assert!(checkout.is_file());

    // A variable naming a missing file is an error, not a fall back.
    let missing = dir.path().join("missing.toml");
    let (out, _, stderr) = check_in(dir.path(), Some(&missing), &[]);
    assert!(!out.status.success());
    assert!(stderr.contains("HERALD_CONFIG"), "{stderr}");
    assert!(stderr.contains(&missing.display().to_string()), "{stderr}");
}

#[test]
fn relative_paths_resolve_against_the_config_s_directory_not_the_current_one() {
    let site = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let site_dir = site.path().canonicalize().unwrap();
    // A `file:` reference is a path too: token.txt beside the config.
    fs::create_dir_all(site_dir.join("conf")).unwrap();
    fs::write(site_dir.join("conf/token.txt"), "0123456789abcdef0123\n").unwrap();
    let ports = ConfigBuilder::new();
    let config = format!(
        "data_dir = \"../state\"\n\n\
         [ingest]\nlisten = [\"{}\"]\nallow = [\"127.0.0.1/32\"]\n\n\
         [http]\nlisten = \"127.0.0.1:{}\"\ntoken = \"file:token.txt\"\n\n\
         [dead_letter]\npath = \"../state/dead.jsonl\"\n\n\
         [sinks.events]\ntype = \"file\"\npath = \"./out/events.jsonl\"\nflush_interval_ms = 50\n",
        ports.listen, ports.http_port
    );
    let path = site_dir.join("conf").join("herald.toml");
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, &config).unwrap();

    // `herald check` shows where each path points.
    let (out, stdout, stderr) = check_in(
        elsewhere.path(),
        None,
        &["--config", path.to_str().unwrap()],
    );
    assert!(out.status.success(), "{stderr}\n{config}");
    for line in [
        format!(
            "data_dir = {:?}",
            site_dir.join("state").display().to_string()
        ),
        format!(
            "path = {:?}",
            site_dir.join("state/dead.jsonl").display().to_string()
        ),
        format!(
            "path = {:?}",
            site_dir.join("conf/out/events.jsonl").display().to_string()
        ),
    ] {
        assert!(stdout.contains(&line), "{line} missing from:\n{stdout}");
    }

    // `herald run` from another directory writes there too.
    let mut command = herald_command(&["run", "--config", path.to_str().unwrap()]);
    command
        .current_dir(elsewhere.path())
        .stdout(Stdio::null())
        .stderr(fs::File::create(elsewhere.path().join("stderr.txt")).unwrap());
    without_service_manager(&mut command);
    let mut child = command.spawn().expect("start herald");
    let udp = ports.listen;
    let events = site_dir.join("conf/out/events.jsonl");
    let mut delivered = false;
    let arrived = poll_until(Duration::from_secs(30), || {
        if child.try_wait().ok().flatten().is_some() {
            return true;
        }
        send(
            "127.0.0.1",
            udp,
            &[fixture("engine_error").datagram.as_slice()],
        );
        delivered = !read_json_lines(&events).is_empty();
        delivered
    });
    let _ = child.kill();
    let _ = child.wait();
    let log = fs::read_to_string(elsewhere.path().join("stderr.txt")).unwrap_or_default();
    assert!(
        arrived && delivered,
        "no event in {}\n{log}",
        events.display()
    );
    let stray: Vec<_> = fs::read_dir(elsewhere.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|name| name != "stderr.txt")
        .collect();
    assert!(
        stray.is_empty(),
        "written to the current directory: {stray:?}"
    );
}

#[test]
fn the_quick_start_config_writes_to_data_at_the_top_of_the_checkout() {
    let root = repo_root().canonicalize().unwrap();
    let expected = format!(
        "path = {:?}",
        root.join("data").join("events.jsonl").display().to_string()
    );
    // From the checkout, without --config (as `cargo run` does) ...
    let (out, stdout, stderr) = check_in(&root, None, &[]);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("config/herald.toml is valid"), "{stderr}");
    assert!(
        stdout.contains(&expected),
        "{expected} missing from:\n{stdout}"
    );
    // ... and from anywhere else, with it.
    let elsewhere = tempfile::tempdir().unwrap();
    let config = root.join("config").join("herald.toml");
    let (out, stdout, stderr) = check_in(
        elsewhere.path(),
        None,
        &["--config", config.to_str().unwrap()],
    );
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains(&expected),
        "{expected} missing from:\n{stdout}"
    );
}
