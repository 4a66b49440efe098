//! Tests of allow-list parsing, merging and lookup.

use super::*;

fn list(entries: &[&str]) -> AllowList {
    let mut b = AllowListBuilder::new();
    b.add_inline(entries).unwrap();
    b.build()
}
fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn merges_overlapping_and_adjacent_ranges() {
    let l = list(&[
        "1.0.16.0/21",
        "1.0.24.0/21", // adjacent: merges into 1.0.16.0/20
        "1.0.20.0/22", // inside
        "10.0.0.0/8",
        "2001:200::/24",
        "2001:300::/24", // adjacent
    ]);
    assert_eq!(l.range_counts(), (2, 1));
    let nets: Vec<String> = l.to_nets().iter().map(ToString::to_string).collect();
    assert_eq!(nets, ["1.0.16.0/20", "10.0.0.0/8", "2001:200::/23"]);
}

#[test]
fn merges_up_to_the_top_of_the_space() {
    let l = list(&["255.255.255.0/24", "255.255.255.255", "255.0.0.0/8"]);
    assert_eq!(l.range_counts(), (1, 0));
    assert!(l.contains(ip("255.255.255.255")));
}

#[test]
fn v4_lookup_edges() {
    let l = list(&["1.0.16.0/20", "133.0.0.0/8", "203.0.113.7"]);
    for yes in ["1.0.16.0", "1.0.31.255", "133.200.1.1", "203.0.113.7"] {
        assert!(l.contains(ip(yes)), "{yes} should be in");
    }
    for no in ["1.0.15.255", "1.0.32.0", "0.0.0.0", "203.0.113.8", "8.8.8.8"] {
        assert!(!l.contains(ip(no)), "{no} should be out");
    }
}

#[test]
fn v6_and_mapped_lookup() {
    let l = list(&["2001:200::/23", "1.0.16.0/20"]);
    assert!(l.contains(ip("2001:200::1")));
    assert!(l.contains(ip("2001:3ff:ffff::1")));
    assert!(!l.contains(ip("2001:400::")));
    // ::ffff:1.0.16.5 is the IPv4 address seen through a dual-stack socket.
    assert!(l.contains(ip("::ffff:1.0.16.5")));
    assert!(!l.contains(ip("::ffff:8.8.8.8")));
    // A mapped network in the list is stored as IPv4.
    let mapped = list(&["::ffff:192.0.2.0/120"]);
    assert!(mapped.contains(ip("192.0.2.9")));
    assert_eq!(mapped.range_counts(), (1, 0));
}

#[test]
fn empty_list_allows_nothing() {
    let l = AllowList::default();
    assert!(l.is_empty());
    assert!(!l.contains(ip("1.1.1.1")));
    assert!(!l.contains(ip("::1")));
}

#[test]
fn file_text_with_comments_and_blanks() {
    let text = "# header\n\n1.0.16.0/20   # NTT\n  2001:200::/23\n127.0.0.1/32\n";
    let mut b = AllowListBuilder::new();
    assert_eq!(b.add_text(text, "jp.txt").unwrap(), 3);
    let l = b.build();
    assert!(l.contains(ip("127.0.0.1")) && !l.contains(ip("127.0.0.2")));
}

#[test]
fn file_errors_name_file_line_and_text() {
    let cases = [
        ("1.0.16.0/20\n\n1.0.16.0/33\n", 3, "not an IP network"),
        ("# c\n1.2.3.4/24\n", 2, "write the network 1.2.3.0/24"),
        ("0.0.0.0/0\n", 1, "allows every address"),
        ("1.0.0.0/24 2.0.0.0/24\n", 1, "one CIDR per line"),
        ("jp.example.com\n", 1, "not an IP network"),
    ];
    for (text, line, needle) in cases {
        let err = AllowListBuilder::new().add_text(text, "config/jp.txt").unwrap_err();
        match &err {
            AllowListError::InvalidLine { line: l, .. } => assert_eq!(*l, line, "{text}"),
            other => panic!("unexpected {other:?}"),
        }
        let msg = err.to_string();
        assert!(msg.starts_with(&format!("config/jp.txt, line {line}: ")), "{msg}");
        assert!(msg.contains(needle), "{msg}");
    }
}

#[test]
fn inline_errors_name_the_index() {
    let err = AllowListBuilder::new().add_inline(&["1.0.0.0/24", "::/0"]).unwrap_err();
    assert!(matches!(err, AllowListError::InvalidInline { index: 1, .. }), "{err:?}");
}

#[test]
fn load_reads_files_and_refuses_empty_ones() {
    let dir = std::env::temp_dir().join(format!("residency-al-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.txt");
    let empty = dir.join("empty.txt");
    std::fs::write(&good, "1.0.16.0/20\n").unwrap();
    std::fs::write(&empty, "# nothing here\n\n").unwrap();
    let l = AllowList::load(&["2001:200::/23"], &[&good]).unwrap();
    assert!(l.contains(ip("1.0.16.1")) && l.contains(ip("2001:200::1")));
    let err = AllowList::load::<&str, _>(&[], &[&empty]).unwrap_err();
    assert!(matches!(err, AllowListError::EmptyFile { .. }), "{err:?}");
    let missing = dir.join("missing.txt");
    let err = AllowList::load::<&str, _>(&[], &[&missing]).unwrap_err();
    assert!(err.to_string().contains("missing.txt"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
