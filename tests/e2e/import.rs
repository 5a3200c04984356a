//! `herald import` turns Butler SOS and Butler configs (written from their
//! documentation, and the shape of their production templates with the
//! placeholders left in) into configs that `herald check` accepts.

use std::path::Path;

use crate::harness::{herald_command, repo_root};

/// Imports `fixture` with `flag`, then checks the result with every variable
/// the import asked for set; the config text and the check's output.
fn import_and_check(flag: &str, fixture: &str) -> (String, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("herald.toml");
    let yaml = repo_root().join("fixtures/import").join(fixture);
    let output = herald_command(&["import", flag, path(&yaml), "--out", path(&out)])
        .output()
        .expect("run herald import");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{fixture}: {stderr}");
    assert!(stderr.contains("herald check --config"), "{stderr}");
    // `  NAME  (from key)` lines name the variables to set.
    let variables: Vec<String> = stderr
        .lines()
        .filter(|line| line.starts_with("  ") && line.contains("(from "))
        .filter_map(|line| line.split_whitespace().next().map(str::to_string))
        .collect();
    let mut check = herald_command(&["check", "--config", path(&out)]);
    for name in &variables {
        let value = if name.ends_with("_URL") {
            "https://hooks.example.com/services/abc"
        } else {
            "placeholder-secret-value"
        };
        check.env(name, value);
    }
    let checked = check.output().expect("run herald check");
    let config = std::fs::read_to_string(&out).expect("the imported config");
    let said = String::from_utf8_lossy(&checked.stderr).into_owned();
    assert!(
        checked.status.success(),
        "{fixture}: herald check refused the import:\n{said}\n{config}"
    );
    (config, said)
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn butler_sos_configs_import_into_configs_herald_check_accepts() {
    let (config, said) = import_and_check("--butler-sos", "butler-sos.yaml");
    assert!(config.contains("preset = \"butler-sos\""), "{config}");
    assert!(
        said.contains("3 sink(s)") || said.contains("2 sink(s)"),
        "{said}"
    );
    let (config, _) = import_and_check("--butler-sos", "butler-sos-template.yaml");
    assert!(config.contains("allow = [\"127.0.0.1\"]"), "{config}");
}

#[test]
fn butler_configs_import_into_configs_herald_check_accepts() {
    let (config, said) = import_and_check("--butler", "butler.yaml");
    assert!(config.contains("[sinks.slack-failed]"), "{config}");
    assert!(said.contains("8 sink(s)"), "{said}");
    let (config, _) = import_and_check("--butler", "butler-template.yaml");
    assert!(config.contains("[sinks.events]"), "{config}");
}

#[test]
fn import_prints_without_out_and_never_overwrites_without_force() {
    let yaml = repo_root().join("fixtures/import/butler.yaml");
    let output = herald_command(&["import", "--butler", path(&yaml)])
        .output()
        .expect("run herald import");
    assert!(output.status.success());
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(
        printed.starts_with("# herald config imported from the Butler config"),
        "{printed}"
    );

    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("herald.toml");
    std::fs::write(&out, "# mine\n").expect("write");
    let output = herald_command(&["import", "--butler", path(&yaml), "--out", path(&out)])
        .output()
        .expect("run herald import");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--force"));
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "# mine\n");

    let output = herald_command(&["import"])
        .output()
        .expect("run herald import");
    assert!(!output.status.success());
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(
        err.contains("--butler-sos") && err.contains("--butler"),
        "{err}"
    );
}
