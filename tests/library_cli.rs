//! `baton library`: one row per bundle of the direction library, with the best block steering
//! would pick, whether a classifier sits beside it, and unreadable files named, not fatal.

mod steer_common;

use std::process::Command;

use baton::probe::DirectionBundle;
use baton::steer::Direction;

fn baton(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(args)
        .env_remove("BATON_DIRECTIONS")
        .output()
        .expect("run baton");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn the_library_lists_each_bundle_with_its_best_block() {
    let lib = steer_common::library(8, 4);
    let dir = lib.path().to_str().expect("utf-8");
    // a classifier beside chords:maj, and a file that is no bundle
    std::fs::write(lib.path().join("chords/maj.classifier.safetensors"), b"x").expect("write");
    std::fs::write(lib.path().join("notes/broken.safetensors"), b"junk").expect("write");
    // and notes:C trained before residual norms were recorded
    let old = lib.path().join("notes/C.safetensors");
    let mut bundle = DirectionBundle::read(&old).expect("bundle");
    bundle.residual_norms.clear();
    bundle.write(&old).expect("write");
    // and chords:min found by the difference-of-means baseline
    let md = lib.path().join("chords/min.safetensors");
    let mut bundle = DirectionBundle::read(&md).expect("bundle");
    bundle.method = "mean-diff".into();
    bundle.write(&md).expect("write");

    let (ok, table, err) = baton(&["library", "--directions", dir]);
    assert!(ok, "{err}");
    let rows: Vec<&str> = table.lines().skip(1).collect();
    assert_eq!(rows.len(), steer_common::NAMES.len() + 1, "{table}");
    for name in steer_common::NAMES {
        let row = rows
            .iter()
            .find(|r| r.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("{name} missing from {table}"));
        let (concept, target) = name.split_once(':').expect("name");
        let path = lib
            .path()
            .join(concept)
            .join(format!("{target}.safetensors"));
        let bundle = DirectionBundle::read(&path).expect("bundle");
        let (block, score) = Direction::from_bundle(*name, bundle.clone())
            .best_block()
            .expect("best");
        let best = format!("{block} ({} {score:.3})", bundle.metric);
        assert!(row.contains(&best), "{row} lacks {best}");
        assert!(row.contains("4/4"), "{row}");
        let columns: Vec<&str> = row.split_whitespace().collect();
        let (norms, classifier) = (columns[columns.len() - 2], columns[columns.len() - 1]);
        assert_eq!(classifier == "yes", *name == "chords:maj", "{row}");
        assert_eq!(norms == "yes", *name != "notes:C", "{row}");
        let method = if *name == "chords:min" {
            "mean-diff"
        } else {
            "rfm"
        };
        assert!(columns.contains(&method), "{row}");
    }
    assert!(
        rows.iter()
            .any(|r| r.starts_with("notes:broken") && r.contains("unreadable")),
        "{table}"
    );

    // a filter, and JSON
    let (ok, json, err) = baton(&["library", "--directions", dir, "chords", "--json"]);
    assert!(ok, "{err}");
    let items: serde_json::Value = serde_json::from_str(&json).expect("json");
    let names: Vec<&str> = items
        .as_array()
        .expect("array")
        .iter()
        .map(|i| i["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["chords:maj", "chords:min"]);
    assert_eq!(items[0]["classifier"], true);
    assert_eq!(items[0]["blocks"], serde_json::json!([0, 1, 2, 3]));
    assert_eq!(items[0]["residual_norms"]["3"], 11.0);
    assert_eq!(items[1]["method"], "mean-diff");

    let (ok, _, err) = baton(&["library", "--directions", "/nonexistent/lib"]);
    assert!(
        !ok && err.contains("no direction library at /nonexistent/lib"),
        "{err}"
    );
}
