//! The configuration reference (docs/configuration.md) cannot drift from the code: every flag a
//! binary prints in `--help` is documented in that binary's section, every flag a section
//! documents exists, and every key of both charts' values.yaml is documented.

use std::collections::BTreeSet;

use e2e::workspace_binary;
use serde_json::Value;
use test_support::project_root;

fn doc() -> String {
    std::fs::read_to_string(project_root().join("docs/configuration.md"))
        .expect("docs/configuration.md")
}

/// The text of the section whose heading contains `title`, up to the next heading of any level
/// at most as deep.
fn section<'a>(doc: &'a str, title: &str) -> &'a str {
    let start = doc
        .find(title)
        .unwrap_or_else(|| panic!("no section {title:?} in docs/configuration.md"));
    let rest = &doc[start..];
    let body_start = rest.find('\n').map_or(rest.len(), |i| i + 1);
    let end = rest[body_start..]
        .find("\n## ")
        .map_or(rest.len(), |i| body_start + i);
    &rest[..end]
}

/// Long flags (`--name`) appearing in a text.
fn long_flags(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(pos) = text[i..].find("--") {
        let start = i + pos + 2;
        let end = text[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
            .map_or(text.len(), |e| start + e);
        let preceded_ok = start < 3 || !bytes[start - 3].is_ascii_alphanumeric();
        if end > start && preceded_ok && bytes[start].is_ascii_alphabetic() {
            out.insert(text[start..end].to_owned());
        }
        i = end.max(start);
    }
    out
}

fn help_flags(binary: &str) -> BTreeSet<String> {
    let out = std::process::Command::new(workspace_binary(binary))
        .arg("--help")
        .output()
        .expect("run --help");
    assert!(out.status.success(), "{binary} --help failed");
    let text = String::from_utf8_lossy(&out.stdout);
    // Only option names, i.e. flags that start a help line.
    let mut flags: BTreeSet<String> = text
        .lines()
        .map(str::trim_start)
        .filter(|l| l.starts_with('-'))
        .flat_map(|l| long_flags(l.split("  ").next().unwrap_or(l)))
        .collect();
    flags.remove("help");
    flags
}

fn check_binary(binary: &str) {
    let doc = doc();
    let documented = long_flags(section(&doc, &format!("`{binary}` flags")));
    let actual = help_flags(binary);
    let undocumented: Vec<_> = actual.difference(&documented).collect();
    let stale: Vec<_> = documented.difference(&actual).collect();
    assert!(
        undocumented.is_empty(),
        "{binary}: flags missing from docs/configuration.md: {undocumented:?}"
    );
    assert!(
        stale.is_empty(),
        "{binary}: docs/configuration.md documents flags the binary lacks: {stale:?}"
    );
}

#[test]
fn driver_flags_are_documented() {
    check_binary("secrets-store-csi-driver");
}

#[test]
fn provider_flags_are_documented() {
    check_binary("secrets-store-provider-azure");
}

#[test]
fn sync_controller_flags_are_documented() {
    check_binary("secrets-store-sync-controller");
}

/// Dotted paths of every leaf (and every list) in a values.yaml.
fn value_paths(prefix: &str, v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) if !map.is_empty() => {
            for (k, child) in map {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                value_paths(&path, child, out);
            }
        }
        _ => out.push(prefix.to_owned()),
    }
}

fn check_chart(chart: &str) {
    let doc = doc();
    let text = section(&doc, &format!("### `{chart}`"));
    let values: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(
            project_root()
                .join("charts")
                .join(chart)
                .join("values.yaml"),
        )
        .expect("values.yaml"),
    )
    .expect("values.yaml is YAML");
    let mut paths = Vec::new();
    value_paths("", &values, &mut paths);
    let missing: Vec<_> = paths
        .iter()
        // A documented parent (e.g. `linux.driver.resources`) covers its children.
        .filter(|p| {
            let mut candidate = p.as_str();
            loop {
                if text.contains(&format!("`{candidate}`"))
                    || text.contains(&format!("`{candidate},"))
                {
                    return false;
                }
                match candidate.rfind('.') {
                    Some(i) => candidate = &candidate[..i],
                    None => return true,
                }
            }
        })
        .collect();
    assert!(
        missing.is_empty(),
        "{chart} values missing from docs/configuration.md: {missing:?}"
    );
}

#[test]
fn driver_chart_values_are_documented() {
    check_chart("secrets-store-csi-driver");
}

#[test]
fn provider_chart_values_are_documented() {
    check_chart("csi-secrets-store-provider-azure");
}

#[test]
fn flag_extraction_finds_flags_and_ignores_prose() {
    let flags = long_flags("| `--endpoint` | x | --a-b and -v, foo--bar `--x=1`");
    assert_eq!(
        flags.into_iter().collect::<Vec<_>>(),
        ["a-b", "endpoint", "x"]
    );
}
