//! Tests of the APNIC importer against the hand-written sample and against
//! small broken inputs.

use super::*;
use ipnet::IpNet;

// Resolved from the crate root so the path survives the move into the
// gateway crate: copy testdata/ next to the gateway's Cargo.toml.
const SAMPLE: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/testdata/delegated-apnic-extended-sample.txt"
));

fn nets(list: &[&str]) -> Vec<IpNet> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

const HEADER: &str = "2|apnic|20240101|1|19830613|20231231|+1000\n";

fn err_of(input: &str) -> ApnicError {
    parse_apnic(input.as_bytes(), "JP").unwrap_err()
}

fn line_problem(input: &str) -> (usize, LineProblem) {
    match err_of(input) {
        ApnicError::Line { line, problem, .. } => (line, problem),
        other => panic!("expected a line error, got {other:?}"),
    }
}

#[test]
fn sample_yields_exactly_the_jp_ranges() {
    let got = import_apnic(SAMPLE.as_bytes(), "JP").unwrap();
    assert_eq!(
        got,
        nets(&[
            "1.0.16.0/20",
            "1.0.32.0/19",
            "27.96.0.0/21",
            "27.96.8.0/22",
            "202.0.65.0/24",
            "210.128.1.0/24",
            "210.128.2.0/23",
            "2001:200::/34",
            "2400:4000::/22",
        ])
    );
}

#[test]
fn sample_header_and_record_count() {
    let import = parse_apnic(SAMPLE.as_bytes(), "JP").unwrap();
    assert_eq!(import.header.registry, "apnic");
    assert_eq!(import.header.serial, "20240101");
    assert_eq!(import.header.records, 22);
    assert_eq!(import.header.end_date, "20231231");
    // 6 JP ipv4 + 3 JP ipv6 allocated/assigned; the reserved JP one is skipped.
    assert_eq!(import.records_taken, 9);
}

#[test]
fn other_countries_come_from_the_same_file() {
    let cn = import_apnic(SAMPLE.as_bytes(), "CN").unwrap();
    assert_eq!(cn, nets(&["1.0.1.0/24", "1.0.8.0/21", "2001:250::/31"]));
    let kr = import_apnic(SAMPLE.as_bytes(), "KR").unwrap();
    assert_eq!(kr, nets(&["1.0.64.0/18", "1.11.0.0/16", "2001:220::/32"]));
}

#[test]
fn lower_case_country_is_refused() {
    let err = import_apnic(SAMPLE.as_bytes(), "jp").unwrap_err();
    assert!(matches!(err, ApnicError::Country(_)), "{err:?}");
    assert!(err.to_string().contains("write \"JP\""), "{err}");
}

#[test]
fn country_without_records_is_an_error() {
    let err = import_apnic(SAMPLE.as_bytes(), "NZ").unwrap_err();
    assert!(matches!(err, ApnicError::NoRecords { .. }), "{err:?}");
}

#[test]
fn truncated_download_is_detected() {
    // Drop the last record: counts no longer match the summary line.
    let cut = SAMPLE.trim_end().rsplit_once('\n').unwrap().0;
    let err = import_apnic(cut.as_bytes(), "JP").unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            ApnicError::CountMismatch {
                announced: 7,
                found: 6,
                ..
            }
        ),
        "{msg}"
    );
    assert!(msg.contains("summary line 7 (ipv6)") && msg.contains(".md5"), "{msg}");
}

#[test]
fn version_line_count_is_checked_without_summaries() {
    let input = "2|apnic|20240101|3|0|0|+1000\n\
                 apnic|JP|ipv4|1.0.16.0|256|0|allocated|X\n\
                 apnic|JP|ipv4|1.0.17.0|256|0|allocated|X\n";
    let err = import_apnic(input.as_bytes(), "JP").unwrap_err();
    assert!(
        matches!(err, ApnicError::CountMismatch { ref what, announced: 3, found: 2 } if what == "the version line"),
        "{err:?}"
    );
}

#[test]
fn counts_may_cover_only_delegated_records() {
    // Some files count only allocated/assigned records; accept that too.
    let input = "2|apnic|20240101|1|0|0|+1000\n\
                 apnic|*|ipv4|*|1|summary\n\
                 apnic|JP|ipv4|1.0.16.0|256|0|allocated|X\n\
                 apnic||ipv4|1.0.17.0|256||available|\n";
    assert_eq!(import_apnic(input.as_bytes(), "JP").unwrap(), nets(&["1.0.16.0/24"]));
}

#[test]
fn header_is_required_first() {
    let (line, problem) = line_problem("# c\napnic|JP|ipv4|1.0.16.0|256|0|allocated\n");
    assert_eq!((line, problem), (2, LineProblem::ExpectedHeader));
    assert!(matches!(err_of("# only a comment\n\n"), ApnicError::NoHeader));
    let (line, problem) = line_problem("2|apnic|x|many|0|0|+1000\n");
    assert_eq!((line, problem), (1, LineProblem::BadHeaderCount));
    let twice = format!("{HEADER}{HEADER}");
    assert_eq!(line_problem(&twice), (2, LineProblem::SecondHeader));
}

#[test]
fn bad_records_name_line_and_problem() {
    let cases = [
        ("apnic|JP|ipv4|1.0.16.0|0|0|allocated", LineProblem::BadIpv4Count),
        ("apnic|JP|ipv4|1.0.16.0|abc|0|allocated", LineProblem::BadIpv4Count),
        ("apnic|JP|ipv4|1.0.16|256|0|allocated", LineProblem::BadIpv4Start),
        ("apnic|JP|ipv4|255.255.255.0|512|0|allocated", LineProblem::Ipv4Overflow),
        ("apnic|JP|ipv6|2001:200::1|32|0|allocated", LineProblem::Ipv6HostBits),
        ("apnic|JP|ipv6|2001:200::|129|0|allocated", LineProblem::BadIpv6Prefix),
        ("apnic|JP|ipv6|1.0.16.0|32|0|allocated", LineProblem::BadIpv6Start),
        ("apnic|JP|ipv4|1.0.16.0|256|0|transferred", LineProblem::UnknownStatus),
        ("apnic|JP|ipv5|1.0.16.0|256|0|allocated", LineProblem::UnknownType),
        ("apnic|JP|ipv4|1.0.16.0|256", LineProblem::TooFewFields { found: 5 }),
        ("ripencc|JP|ipv4|1.0.16.0|256|0|allocated", LineProblem::WrongRegistry),
        ("apnic|*|ipv4|*|many|summary", LineProblem::BadSummary),
        // Corruption outside the requested country is still an error.
        ("apnic|CN|ipv4|1.0.1.0|-5|0|allocated", LineProblem::BadIpv4Count),
    ];
    for (record, expected) in cases {
        let input = format!("{HEADER}# comment\n\n{record}\n");
        let err = err_of(&input);
        let msg = err.to_string();
        match err {
            ApnicError::Line { line, problem, .. } => {
                assert_eq!((line, problem), (4, expected), "{record}");
            }
            other => panic!("{record}: unexpected {other:?}"),
        }
        assert!(msg.starts_with("line 4: "), "{msg}");
        assert!(msg.contains(record), "{msg}");
    }
}

#[test]
fn invalid_utf8_is_a_read_error_with_line() {
    let mut bytes = HEADER.as_bytes().to_vec();
    bytes.extend_from_slice(b"apnic|JP|ipv4|1.0.16.0|256|0|allocated|\xff\n");
    match parse_apnic(&bytes[..], "JP").unwrap_err() {
        ApnicError::Read { line, .. } => assert_eq!(line, 2),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn written_file_round_trips_through_the_allow_list() {
    let import = parse_apnic(SAMPLE.as_bytes(), "JP").unwrap();
    let note = SourceNote::from_header("delegated-apnic-extended-latest", &import.header, "JP");
    let mut out = Vec::new();
    write_allow_list(&import.nets, &mut out, &note).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains("# Source file: delegated-apnic-extended-latest\n"),
        "{text}"
    );
    assert!(text.contains("# File date: 20240101\n"), "{text}");
    assert!(text.contains("# Country: JP\n"), "{text}");
    assert!(text.contains("# Networks: 9 (IPv4: 7, IPv6: 2)\n"), "{text}");
    assert!(text.ends_with("2400:4000::/22\n"), "{text}");

    let mut builder = AllowListBuilder::new();
    assert_eq!(builder.add_text(&text, "jp-networks.txt").unwrap(), 9);
    assert_eq!(builder.build().to_nets(), import.nets);
}
