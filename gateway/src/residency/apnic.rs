//! Importer for the APNIC delegated statistics ("RIR statistics exchange
//! format", `delegated-apnic-extended-latest`), the source of the domestic
//! allow-list (DATA-JP-1, DATA-JP-2, DATA-JP-3).
//!
//! Japanese address space is registered through APNIC (via JPNIC), so the
//! records with country `JP` and status `allocated`/`assigned` are the
//! best public approximation of "addresses of networks in Japan". It is an
//! approximation: the registry records where the holder registered, not
//! where a server stands (see `docs/residency.md`).
//!
//! The parser is strict on purpose. A truncated or corrupted download must
//! not become a silently smaller (or larger) allow-list, so unknown record
//! types and statuses are errors, and the record counts announced by the
//! version and summary lines are checked against what was read.

use std::io::{self, BufRead, Write};
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv6Net};

use super::allow_list::AllowListBuilder;
use super::jurisdiction::{Jurisdiction, JurisdictionError};

/// The version line (`2|apnic|20240101|22|19830613|20231231|+1000`).
///
/// Kept so the generated allow-list can say which snapshot it came from:
/// an auditor must be able to tell how old the list in force is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApnicHeader {
    /// Format version, e.g. `2` or `2.3`.
    pub version: String,
    /// Registry, e.g. `apnic`.
    pub registry: String,
    /// Serial; for APNIC the file date `yyyymmdd`.
    pub serial: String,
    /// Number of records announced.
    pub records: u64,
    /// Earliest record date.
    pub start_date: String,
    /// Latest record date.
    pub end_date: String,
    /// Offset from UTC of the registry's dates, e.g. `+1000`.
    pub utc_offset: String,
}

/// The result of an import: the aggregated networks plus provenance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApnicImport {
    /// The file's version line.
    pub header: ApnicHeader,
    /// Aggregated networks of the country, IPv4 first, sorted.
    pub nets: Vec<IpNet>,
    /// How many `ipv4`/`ipv6` records of the country were taken.
    pub records_taken: usize,
}

/// Imports the networks of `country` (e.g. `"JP"`) as aggregated CIDRs.
///
/// Use [`parse_apnic`] when the header is needed for [`write_allow_list`].
pub fn import_apnic<R: BufRead>(reader: R, country: &str) -> Result<Vec<IpNet>, ApnicError> {
    parse_apnic(reader, country).map(|import| import.nets)
}

/// Record types, indexing the count arrays.
const TYPES: [&str; 3] = ["asn", "ipv4", "ipv6"];

/// Parses a delegated statistics file and keeps the `country` networks.
pub fn parse_apnic<R: BufRead>(reader: R, country: &str) -> Result<ApnicImport, ApnicError> {
    let country = Jurisdiction::parse(country)?;
    let mut header: Option<ApnicHeader> = None;
    let mut summary: [Option<(usize, u64)>; 3] = [None; 3];
    // Records per type: all of them, and only allocated/assigned ones (the
    // two readings of the counts that registries use).
    let mut all = [0u64; 3];
    let mut active = [0u64; 3];
    let mut builder = AllowListBuilder::new();
    let mut taken = 0usize;

    for (idx, line) in reader.lines().enumerate() {
        let line_no = idx + 1;
        let raw = line.map_err(|source| ApnicError::Read { line: line_no, source })?;
        let text = raw.trim();
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        let bad = |problem: LineProblem| ApnicError::Line {
            line: line_no,
            text: text.chars().take(120).collect(),
            problem,
        };
        let fields: Vec<&str> = text.split('|').collect();
        let Some(head) = &header else {
            header = Some(parse_header(&fields).map_err(bad)?);
            continue;
        };
        if fields
            .first()
            .is_some_and(|f| f.starts_with(|c: char| c.is_ascii_digit()))
        {
            return Err(bad(LineProblem::SecondHeader));
        }
        if fields.len() == 6 && fields[5] == "summary" {
            let t = type_index(fields[2]).ok_or_else(|| bad(LineProblem::UnknownType))?;
            let count = fields[4].parse::<u64>().map_err(|_| bad(LineProblem::BadSummary))?;
            if fields[1] != "*" || fields[3] != "*" {
                return Err(bad(LineProblem::BadSummary));
            }
            summary[t] = Some((line_no, count));
            continue;
        }
        if fields.len() < 7 {
            return Err(bad(LineProblem::TooFewFields { found: fields.len() }));
        }
        if fields[0] != head.registry {
            return Err(bad(LineProblem::WrongRegistry));
        }
        let (cc, kind, start, value, status) = (fields[1], fields[2], fields[3], fields[4], fields[6]);
        let t = type_index(kind).ok_or_else(|| bad(LineProblem::UnknownType))?;
        all[t] += 1;
        match status {
            "allocated" | "assigned" => active[t] += 1,
            // Not delegated to anyone: not a network in any country.
            "available" | "reserved" => continue,
            _ => return Err(bad(LineProblem::UnknownStatus)),
        }
        // Validate every delegated IP record, not only the country's, so a
        // corrupted file is noticed whatever line the corruption hits.
        match kind {
            "ipv4" => {
                let (first, last) = ipv4_range(start, value).map_err(bad)?;
                if cc == country.as_str() {
                    builder.add_v4_range(first, last);
                    taken += 1;
                }
            }
            "ipv6" => {
                let net = ipv6_net(start, value).map_err(bad)?;
                if cc == country.as_str() {
                    builder.add_net(IpNet::V6(net));
                    taken += 1;
                }
            }
            _ => {} // asn: no addresses.
        }
    }

    let header = header.ok_or(ApnicError::NoHeader)?;
    for (t, name) in TYPES.iter().enumerate() {
        if let Some((line, announced)) = summary[t] {
            if announced != all[t] && announced != active[t] {
                return Err(ApnicError::CountMismatch {
                    what: format!("summary line {line} ({name})"),
                    announced,
                    found: all[t],
                });
            }
        }
    }
    let (total_all, total_active) = (all.iter().sum::<u64>(), active.iter().sum::<u64>());
    if header.records != total_all && header.records != total_active {
        return Err(ApnicError::CountMismatch {
            what: "the version line".to_owned(),
            announced: header.records,
            found: total_all,
        });
    }
    if taken == 0 {
        return Err(ApnicError::NoRecords { country });
    }
    Ok(ApnicImport {
        header,
        nets: builder.build().to_nets(),
        records_taken: taken,
    })
}

fn type_index(kind: &str) -> Option<usize> {
    TYPES.iter().position(|t| *t == kind)
}

fn parse_header(fields: &[&str]) -> Result<ApnicHeader, LineProblem> {
    let version_ok = fields
        .first()
        .is_some_and(|v| !v.is_empty() && v.chars().all(|c| c.is_ascii_digit() || c == '.'));
    if !version_ok || fields.len() != 7 {
        return Err(LineProblem::ExpectedHeader);
    }
    let records = fields[3].parse::<u64>().map_err(|_| LineProblem::BadHeaderCount)?;
    Ok(ApnicHeader {
        version: fields[0].to_owned(),
        registry: fields[1].to_owned(),
        serial: fields[2].to_owned(),
        records,
        start_date: fields[4].to_owned(),
        end_date: fields[5].to_owned(),
        utc_offset: fields[6].to_owned(),
    })
}

/// IPv4 records give a start and a *number of addresses*, which need not be
/// a power of two; the range is split into CIDRs when the list is built.
fn ipv4_range(start: &str, count: &str) -> Result<(u32, u32), LineProblem> {
    let first = u32::from(start.parse::<Ipv4Addr>().map_err(|_| LineProblem::BadIpv4Start)?);
    let count = count.parse::<u64>().map_err(|_| LineProblem::BadIpv4Count)?;
    if count == 0 {
        return Err(LineProblem::BadIpv4Count);
    }
    let last = u64::from(first) + count - 1;
    let last = u32::try_from(last).map_err(|_| LineProblem::Ipv4Overflow)?;
    Ok((first, last))
}

/// IPv6 records give a start and a *prefix length*.
fn ipv6_net(start: &str, prefix: &str) -> Result<Ipv6Net, LineProblem> {
    let addr = start.parse::<Ipv6Addr>().map_err(|_| LineProblem::BadIpv6Start)?;
    let len = prefix.parse::<u8>().map_err(|_| LineProblem::BadIpv6Prefix)?;
    let net = Ipv6Net::new(addr, len).map_err(|_| LineProblem::BadIpv6Prefix)?;
    if net.trunc() != net {
        return Err(LineProblem::Ipv6HostBits);
    }
    Ok(net)
}

/// What is wrong with one line of a delegated statistics file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LineProblem {
    /// The first data line must be the version line.
    #[error("expected the version line (e.g. 2|apnic|20240101|...) before any record; is this a delegated-apnic-extended file?")]
    ExpectedHeader,
    /// The version line's record count is not a number.
    #[error("the record count (4th field) of the version line is not a number")]
    BadHeaderCount,
    /// A second version line: two files concatenated?
    #[error("a second version line; the file looks like several files joined together")]
    SecondHeader,
    /// Malformed `registry|*|type|*|count|summary` line.
    #[error("malformed summary line; expected registry|*|ipv4|*|<count>|summary")]
    BadSummary,
    /// A record with fewer than 7 `|`-separated fields (truncated line?).
    #[error("a record needs at least 7 |-separated fields, found {found}; the line is probably truncated")]
    TooFewFields {
        /// Number of fields found.
        found: usize,
    },
    /// A record of another registry than the version line's.
    #[error("the record's registry differs from the version line's")]
    WrongRegistry,
    /// A type other than asn/ipv4/ipv6.
    #[error(
        "unknown record type (expected asn, ipv4 or ipv6); the format may have changed, check the registry's README"
    )]
    UnknownType,
    /// A status other than allocated/assigned/available/reserved.
    #[error("unknown status (expected allocated, assigned, available or reserved); the format may have changed, check the registry's README")]
    UnknownStatus,
    /// Unparsable IPv4 start address.
    #[error("the start (4th field) is not an IPv4 address")]
    BadIpv4Start,
    /// The IPv4 count is not a positive number.
    #[error("the value (5th field) of an ipv4 record must be the number of addresses, a positive integer")]
    BadIpv4Count,
    /// start + count runs past 255.255.255.255.
    #[error("start + number of addresses runs past 255.255.255.255")]
    Ipv4Overflow,
    /// Unparsable IPv6 start address.
    #[error("the start (4th field) is not an IPv6 address")]
    BadIpv6Start,
    /// The IPv6 value is not a prefix length 0..=128.
    #[error("the value (5th field) of an ipv6 record must be a prefix length between 0 and 128")]
    BadIpv6Prefix,
    /// The IPv6 start has bits set beyond the prefix.
    #[error("the ipv6 start address has bits set beyond the prefix length")]
    Ipv6HostBits,
}

/// Why an import failed. The previous allow-list file should be kept.
#[derive(Debug, thiserror::Error)]
pub enum ApnicError {
    /// The country argument is not a valid code.
    #[error("country: {0}")]
    Country(#[from] JurisdictionError),
    /// Reading failed (I/O error or invalid UTF-8).
    #[error("line {line}: cannot read the file: {source}")]
    Read {
        /// 1-based line number.
        line: usize,
        /// The underlying error.
        source: io::Error,
    },
    /// A malformed line.
    #[error("line {line}: {problem} (line: {text:?})")]
    Line {
        /// 1-based line number.
        line: usize,
        /// The line (first 120 characters).
        text: String,
        /// What is wrong.
        problem: LineProblem,
    },
    /// Empty input or only comments.
    #[error("no version line found; the file is empty or not in the RIR statistics exchange format")]
    NoHeader,
    /// Fewer (or more) records than announced: truncated download.
    #[error("{what} announces {announced} records but the file has {found}; the download is probably truncated. Fetch it again and verify it against the .md5 file")]
    CountMismatch {
        /// Which line announced the count.
        what: String,
        /// The announced count.
        announced: u64,
        /// The records found.
        found: u64,
    },
    /// No delegated networks for the country: wrong file or wrong code.
    #[error("no allocated or assigned ipv4/ipv6 records for {country}; is this the right registry's file (JP is in delegated-apnic-*), and the right country code?")]
    NoRecords {
        /// The country asked for.
        country: Jurisdiction,
    },
}

/// Provenance written at the top of a generated allow-list file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceNote {
    /// The statistics file's name, e.g. `delegated-apnic-extended-latest`.
    pub file_name: String,
    /// The file's date (serial of the version line).
    pub file_date: String,
    /// The country imported, e.g. `JP`.
    pub country: String,
}

impl SourceNote {
    /// Builds the note from an import's version line.
    pub fn from_header(file_name: &str, header: &ApnicHeader, country: &str) -> Self {
        SourceNote {
            file_name: file_name.to_owned(),
            file_date: header.serial.clone(),
            country: country.to_owned(),
        }
    }
}

/// Writes `nets` in the allow-list file format, with a header comment
/// recording where the list came from, so an auditor reading the file in
/// force can tell its source and age without asking anyone.
pub fn write_allow_list<W: Write>(nets: &[IpNet], mut writer: W, note: &SourceNote) -> io::Result<()> {
    let v4 = nets.iter().filter(|n| matches!(n, IpNet::V4(_))).count();
    writeln!(
        writer,
        "# phr-gateway domestic-egress allow-list (DATA-JP-1, DATA-JP-2, DATA-JP-3)\n\
         # Generated by `phr-gateway residency import-apnic`; do not edit by hand,\n\
         # add extra networks to the inline allow-list in the gateway configuration.\n\
         # Source file: {}\n\
         # File date: {}\n\
         # Country: {}\n\
         # Networks: {} (IPv4: {}, IPv6: {})\n\
         # Registry country is where the address holder registered, not where a\n\
         # server stands: the declared jurisdiction and the hosting contract are\n\
         # the primary control (see docs/residency.md).",
        note.file_name,
        note.file_date,
        note.country,
        nets.len(),
        v4,
        nets.len() - v4
    )?;
    for net in nets {
        writeln!(writer, "{net}")?;
    }
    writer.flush()
}

// Tests live in apnic/tests.rs to keep this file short.
#[cfg(test)]
mod tests;
