//! `config/gateway.toml` documents every key the loader accepts (issue 19 item 6).
//!
//! How the accepted keys are found, with no list kept by hand: every table refuses
//! unknown keys (`deny_unknown_fields`), and serde's refusal names the keys it expected
//! ("unknown field `__probe__`, expected one of `a`, `b`"). So the test takes the
//! reference file, puts a `__probe__` key into one table at a time and asks the real
//! [`Config`] deserializer: the refusal lists that table's keys. Each key is then probed
//! as a table, as an array of tables (`[[routes]]`) and as a map of named tables
//! (`[upstreams.NAME]`); whichever the deserializer takes for a struct is walked in
//! turn, also when the reference file does not have it yet (the probe builds it).
//! A key added to any config struct, or a new sub-table, is therefore found with no
//! edit to this test.
//!
//! Why not a tracing crate (`serde-reflection`): it cannot trace the untagged and
//! hand-written deserializers this configuration uses (durations, jurisdictions), and
//! it would be a new dependency for one test. The probe uses the loader's own code path.
//!
//! Documented means: the key is in the file, or a commented-out `# key = value` line
//! under the table's header (a commented-out header `# [[listeners]]` counts as a header
//! for the lines below it).

use super::Config;
use std::collections::BTreeSet;
use toml::{Table, Value};

/// The reference configuration, as shipped.
const REFERENCE: &str = include_str!("../../../config/gateway.toml");

/// The key no table accepts.
const PROBE: &str = "__probe__";

/// One step into the configuration.
#[derive(Clone, Debug)]
enum Step {
    /// A key of a table.
    Key(String),
    /// The first table of an array of tables.
    Element,
    /// One entry of a map of named tables (`[upstreams.NAME]`).
    Named,
}

/// What probing one place found.
enum Probe {
    /// A table with `deny_unknown_fields`: its keys.
    Keys(Vec<String>),
    /// A table that takes any key silently: a safeguard could be misspelt there.
    Permissive(String),
    /// Not a table of keys (a value, a map of values, an enum).
    Leaf,
}

/// The keys the loader accepts, as dotted patterns (`*` for a name of a map entry;
/// arrays of tables have no index), and the tables that accept unknown keys.
#[derive(Default)]
struct Accepted {
    keys: BTreeSet<String>,
    /// Keys that are not tables: whatever is written below them is a value.
    leaves: BTreeSet<String>,
    permissive: Vec<String>,
}

fn reference() -> Value {
    Value::Table(REFERENCE.parse::<Table>().expect("config/gateway.toml is valid TOML"))
}

fn pattern(path: &[Step]) -> String {
    let parts: Vec<&str> = path
        .iter()
        .filter_map(|s| match s {
            Step::Key(k) => Some(k.as_str()),
            Step::Element => None,
            Step::Named => Some("*"),
        })
        .collect();
    parts.join(".")
}

/// The value at `path`, created (as an empty table, array or entry) where the
/// reference has nothing; existing arrays and maps lend their first element.
fn slot<'v>(root: &'v mut Value, path: &[Step]) -> &'v mut Value {
    let mut here = root;
    for step in path {
        here = match step {
            Step::Key(k) => {
                if !here.is_table() {
                    *here = Value::Table(Table::new());
                }
                let table = here.as_table_mut().expect("a table");
                table.entry(k.clone()).or_insert_with(|| Value::Table(Table::new()))
            }
            Step::Element => {
                if here.as_array().is_none_or(|a| a.is_empty()) {
                    *here = Value::Array(vec![Value::Table(Table::new())]);
                }
                &mut here.as_array_mut().expect("an array")[0]
            }
            Step::Named => {
                if !here.is_table() {
                    *here = Value::Table(Table::new());
                }
                let table = here.as_table_mut().expect("a table");
                let name = table.keys().next().cloned().unwrap_or_else(|| "__name__".to_string());
                table.entry(name).or_insert_with(|| Value::Table(Table::new()))
            }
        };
    }
    here
}

/// Replaces the value at `path` with a table holding only [`PROBE`] and reads what the
/// deserializer says about it.
fn probe(path: &[Step]) -> Probe {
    let mut root = reference();
    let mut probe = Table::new();
    probe.insert(PROBE.to_string(), Value::Boolean(true));
    *slot(&mut root, path) = Value::Table(probe);
    let message = match root.try_into::<Config>() {
        Ok(_) => return Probe::Leaf,
        Err(e) => e.to_string(),
    };
    let unknown = format!("unknown field `{PROBE}`");
    match message.find(&unknown) {
        Some(at) => Probe::Keys(
            // The list ends the line; the error may go on to name the table.
            message[at + unknown.len()..]
                .lines()
                .next()
                .unwrap_or("")
                .split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_string)
                .collect(),
        ),
        None if message.contains("missing field") => Probe::Permissive(message),
        None => Probe::Leaf,
    }
}

/// Walks the table at `path`, whose keys are `keys`.
fn walk(path: &[Step], keys: Vec<String>, out: &mut Accepted) {
    for key in keys {
        let mut at = path.to_vec();
        at.push(Step::Key(key));
        out.keys.insert(pattern(&at));
        let mut table = false;
        for shape in [None, Some(Step::Element), Some(Step::Named)] {
            let mut inner = at.clone();
            inner.extend(shape);
            match probe(&inner) {
                Probe::Keys(keys) => {
                    walk(&inner, keys, out);
                    table = true;
                    break;
                }
                Probe::Permissive(why) => {
                    out.permissive.push(format!("{}: {why}", pattern(&inner)));
                    table = true;
                    break;
                }
                Probe::Leaf => {}
            }
        }
        if !table {
            out.leaves.insert(pattern(&at));
        }
    }
}

fn accepted() -> Accepted {
    let mut out = Accepted::default();
    match probe(&[]) {
        Probe::Keys(keys) => walk(&[], keys, &mut out),
        _ => panic!("the top level of the configuration did not name its keys"),
    }
    out
}

/// Every key written in the reference file, as dotted paths with the names used there.
fn written(v: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    let join = |k: &str| {
        if prefix.is_empty() {
            k.to_string()
        } else {
            format!("{prefix}.{k}")
        }
    };
    match v {
        Value::Table(t) => {
            for (k, v) in t {
                out.insert(join(k));
                written(v, &join(k), out);
            }
        }
        Value::Array(items) => {
            for item in items.iter().filter(|i| i.is_table()) {
                written(item, prefix, out);
            }
        }
        _ => {}
    }
}

/// The `# key = value` lines, as dotted paths under the header above them.
fn commented() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut table = String::new();
    for line in REFERENCE.lines() {
        let line = line.trim();
        let uncommented = line.trim_start_matches('#').trim();
        if let Some(header) = uncommented.strip_prefix('[') {
            let header = header.trim_start_matches('[');
            if let Some(end) = header.find(']') {
                table = header[..end]
                    .split('.')
                    .map(|s| s.trim().trim_matches('"'))
                    .collect::<Vec<_>>()
                    .join(".");
                continue;
            }
        }
        if !line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = uncommented.split_once('=') else {
            continue;
        };
        let key = key.trim();
        let is_key = !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if is_key && !value.trim().is_empty() && !value.starts_with('=') {
            out.insert(if table.is_empty() {
                key.to_string()
            } else {
                format!("{table}.{key}")
            });
        }
    }
    out
}

fn matches(pattern: &str, path: &str) -> bool {
    let (p, k): (Vec<&str>, Vec<&str>) = (pattern.split('.').collect(), path.split('.').collect());
    p.len() == k.len() && p.iter().zip(&k).all(|(p, k)| *p == "*" || p == k)
}

#[test]
fn the_reference_file_loads() {
    if let Err(e) = reference().try_into::<Config>() {
        panic!("config/gateway.toml does not parse: {e}");
    }
}

#[test]
fn every_key_the_loader_accepts_is_in_the_reference_file() {
    let accepted = accepted();
    let mut documented = commented();
    written(&reference(), "", &mut documented);
    let missing: Vec<&String> = accepted
        .keys
        .iter()
        .filter(|k| !documented.iter().any(|d| matches(k, d)))
        .collect();
    assert!(
        missing.is_empty(),
        "config/gateway.toml does not document these keys the loader accepts \
         (`*` is any name): {missing:#?}\nAdd each under its table, with its default \
         (commented out if it has none, `# key = example`) and one line on why."
    );
    assert!(
        accepted.permissive.is_empty(),
        "these tables accept unknown keys (add #[serde(deny_unknown_fields)]): {:#?}",
        accepted.permissive
    );
}

/// The other way round: a commented-out `# key = ...` line is a key the loader takes
/// (or sits inside a value that is a free-form table, such as `costs` or `map`).
#[test]
fn every_commented_out_key_in_the_reference_file_is_accepted() {
    let accepted = accepted();
    let stale: Vec<String> = commented()
        .into_iter()
        .filter(|d| {
            let under_leaf = accepted.leaves.iter().any(|l| {
                let depth = l.split('.').count();
                let head: Vec<&str> = d.split('.').take(depth).collect();
                d.split('.').count() > depth && matches(l, &head.join("."))
            });
            !under_leaf && !accepted.keys.iter().any(|k| matches(k, d))
        })
        .collect();
    assert!(
        stale.is_empty(),
        "config/gateway.toml shows these commented-out keys, which the loader refuses: {stale:#?}"
    );
}

/// The probe itself: a struct's keys come back, a map and a value are not tables.
#[test]
fn the_probe_tells_tables_from_values() {
    let keys = |p: &[Step]| match probe(p) {
        Probe::Keys(k) => k,
        _ => Vec::new(),
    };
    assert!(keys(&[Step::Key("gateway".into())]).contains(&"trusted_proxies".to_string()));
    assert!(
        keys(&[Step::Key("routes".into()), Step::Element, Step::Key("auth".into())])
            .contains(&"two_factor".to_string())
    );
    assert!(keys(&[Step::Key("upstreams".into())]).is_empty(), "a map of upstreams");
    assert!(keys(&[Step::Key("upstreams".into()), Step::Named]).contains(&"endpoints".to_string()));
    assert!(keys(&[Step::Key("limits".into()), Step::Key("idle_timeout".into())]).is_empty());
    assert!(matches("upstreams.*.endpoints", "upstreams.fhir.endpoints"));
    assert!(!matches("upstreams.*.endpoints", "upstreams.fhir"));
}
