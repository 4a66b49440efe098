//! Property/fuzz tests of the configuration loader (issue 17 item 6): the file
//! is operator input, but a typo, a pasted secret or a value from an
//! environment variable must end in a precise error (file, key, fix), never a
//! panic. Properties: arbitrary text, and the shipped `config/gateway.toml`
//! with lines deleted, repeated or given extreme values, load without panicking,
//! and a configuration that loads also passes its derived checks.
//!
//! Cases per property: `PHR_FUZZ_CASES` (see `crate::fuzz_budget`).

use std::path::Path;

use proptest::prelude::*;

use super::load_str;

const SHIPPED: &str = include_str!("../../../config/gateway.toml");

/// The shipped file with its `${SECRET}` references written out, so edits are
/// parsed and validated rather than stopped at the first unset variable (tests
/// run in parallel: setting variables would race).
fn shipped() -> String {
    let expand = |line: &str| match (line.trim_start().starts_with('#'), line.find("${")) {
        (false, Some(at)) => match line[at..].find('}') {
            Some(end) => format!("{}fuzz-secret{}", &line[..at], &line[at + end + 1..]),
            None => line.to_owned(),
        },
        _ => line.to_owned(),
    };
    SHIPPED.lines().map(expand).collect::<Vec<_>>().join("\n")
}

fn load(text: &str) {
    // Anchored at the shipped file's folder, so relative paths resolve as they
    // do for the real file.
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/gateway.toml");
    if let Ok(config) = load_str(text, &path) {
        let _ = config.protection().validate();
    }
}

/// Values that overflow, underflow or mean nothing for the key they replace.
fn extreme_value() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::sample::select(
            &[
                "0",
                "-1",
                "18446744073709551615",
                "18446744073709551616",
                "9223372036854775807",
                "-9223372036854775808",
                "1e308",
                "nan",
                "inf",
                "0.0",
                "\"0s\"",
                "\"0\"",
                "\"18446744073709551615s\"",
                "\"584542046091y\"",
                "\"1ns\"",
                "\"-1s\"",
                "\"\"",
                "\"\\u0000\"",
                "[]",
                "[\"\"]",
                "{}",
                "true",
                "\"${PHR_FUZZ_UNSET}\"",
                "\"$${X}\"",
                "\"${\"",
                "\"0.0.0.0:0\"",
                "\"[::]:65535\"",
                "\"*\"",
                "\"/\"",
                "\"..\"",
                "\"https://[::1]:0\"",
                "\"http://127.0.0.1:99999\"",
                "\"a\\\\b\"",
                "'''\n'''",
            ][..]
        )
        .prop_map(str::to_owned),
        any::<i64>().prop_map(|n| n.to_string()),
        "\"[0-9]{1,20}(ns|us|ms|s|m|h|d|w|y|days|years)\"",
        "\"[ -~]{0,16}\"".prop_map(|s| s.replace('\\', "\\\\")),
    ]
}

#[derive(Clone, Debug)]
enum Edit {
    Delete(prop::sample::Index),
    Repeat(prop::sample::Index),
    Value(prop::sample::Index, String),
    Insert(prop::sample::Index, String),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        1 => any::<prop::sample::Index>().prop_map(Edit::Delete),
        1 => any::<prop::sample::Index>().prop_map(Edit::Repeat),
        4 => (any::<prop::sample::Index>(), extreme_value()).prop_map(|(i, v)| Edit::Value(i, v)),
        1 => (any::<prop::sample::Index>(), "[ -~]{0,30}").prop_map(|(i, s)| Edit::Insert(i, s)),
    ]
}

fn apply(edits: &[Edit]) -> String {
    let mut lines: Vec<String> = shipped().lines().map(str::to_owned).collect();
    for e in edits {
        if lines.is_empty() {
            break;
        }
        match e {
            Edit::Delete(i) => {
                lines.remove(i.index(lines.len()));
            }
            Edit::Repeat(i) => {
                let l = lines[i.index(lines.len())].clone();
                lines.push(l);
            }
            Edit::Value(i, v) => {
                // Only assignments change; the pick wraps over them.
                let assignments: Vec<usize> = (0..lines.len())
                    .filter(|n| !lines[*n].trim_start().starts_with('#') && lines[*n].contains(" = "))
                    .collect();
                if let Some(&n) = assignments.get(i.index(assignments.len().max(1))) {
                    let key = lines[n].split(" = ").next().unwrap_or("").to_owned();
                    lines[n] = format!("{key} = {v}");
                }
            }
            Edit::Insert(i, s) => lines.insert(i.index(lines.len()), s.clone()),
        }
    }
    lines.join("\n")
}

proptest! {
    #![proptest_config(crate::fuzz_budget::config())]

    #[test]
    fn arbitrary_text_never_panics(text in prop_oneof![
        any::<String>(),
        "([a-z_]{1,10} = [^\\n]{0,20}\n|\\[[a-z_.]{1,12}\\]\n|\\[\\[[a-z_]{1,10}\\]\\]\n|\\$\\{[A-Z]{0,4}\\}?\n){0,12}",
    ]) {
        load(&text);
    }

    #[test]
    fn edited_shipped_config_never_panics(edits in proptest::collection::vec(edit(), 1..6)) {
        load(&apply(&edits));
    }
}

#[test]
fn the_shipped_config_reaches_validation() {
    // The property above is only as good as its starting point: the shipped
    // file must parse (it may fail validation here, where its certificates
    // and keys do not exist).
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/gateway.toml");
    match load_str(&shipped(), &path) {
        Ok(_) | Err(super::LoadError::Invalid { .. }) => {}
        Err(e) => panic!("the shipped config does not parse: {e}"),
    }
}
