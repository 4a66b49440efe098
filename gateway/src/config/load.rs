//! Reading the file: `${ENV_VAR}` expansion, then strict TOML parsing.

use super::Config;
use std::path::{Path, PathBuf};

/// Why a configuration file could not be turned into a [`Config`].
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read (missing, unreadable, not UTF-8).
    #[error("{file}: cannot read the file: {source}. Fix: check the path given to --config.")]
    Read {
        /// The configuration file.
        file: PathBuf,
        /// The I/O error from reading it.
        #[source]
        source: std::io::Error,
    },
    /// A `${VAR}` reference names an unset variable; the gateway never starts with a
    /// secret silently empty.
    #[error(
        "{file}:{line}: the environment variable {var} is not set. Fix: export {var} before \
         starting the gateway (secrets belong in the environment, not in the file)."
    )]
    MissingEnv {
        /// The configuration file.
        file: PathBuf,
        /// 1-based line of the reference.
        line: usize,
        /// The unset variable's name.
        var: String,
    },
    /// A `${` without its closing brace.
    #[error("{file}:{line}: unterminated \"${{\" reference. Fix: write ${{NAME}} with a closing brace.")]
    BadReference {
        /// The configuration file.
        file: PathBuf,
        /// 1-based line of the reference.
        line: usize,
    },
    /// The expanded text is not TOML, or has an unknown key or a value of the wrong type.
    #[error("{file}: {message}")]
    Toml {
        /// The configuration file.
        file: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// The file parsed but breaks one or more rules of [`validate`](super::validate);
    /// every problem is listed, not only the first.
    #[error("{file}: the configuration is not valid:\n{}", .issues.iter().map(|i| format!("  - {i}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        /// The configuration file.
        file: PathBuf,
        /// Every problem found, each with its key and fix.
        issues: Vec<super::ConfigIssue>,
    },
}

/// Reads, expands, parses and validates `path`. A config that fails any step is never
/// returned, so a half-valid file cannot start a half-working gateway.
pub fn load(path: &Path) -> Result<Config, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        file: path.to_path_buf(),
        source,
    })?;
    load_str(&text, path)
}

/// As [`load`], for text already read; `path` names the file in errors and anchors
/// relative paths inside the file.
pub fn load_str(text: &str, path: &Path) -> Result<Config, LoadError> {
    let expanded = expand_env(text, path)?;
    let mut config: Config = toml::from_str(&expanded).map_err(|e| LoadError::Toml {
        file: path.to_path_buf(),
        message: e.to_string().trim_end().to_string(),
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    config.resolve_paths(base);
    let issues = super::validate(&config);
    if issues.is_empty() {
        Ok(config)
    } else {
        Err(LoadError::Invalid {
            file: path.to_path_buf(),
            issues,
        })
    }
}

/// Replaces `${NAME}` with the variable's value, escaped for a TOML basic string (the
/// reference is meant to stand inside double quotes). `$${` is a literal `${`.
/// Comment lines are not expanded.
fn expand_env(text: &str, path: &Path) -> Result<String, LoadError> {
    let mut out = String::with_capacity(text.len());
    for (index, line) in text.split_inclusive('\n').enumerate() {
        // Comments are left alone, so commenting out a line never demands its variable.
        if line.trim_start().starts_with('#') {
            out.push_str(line);
            continue;
        }
        let mut rest = line;
        while let Some(pos) = rest.find("${") {
            if rest[..pos].ends_with('$') {
                out.push_str(&rest[..pos - 1]);
                out.push_str("${");
                rest = &rest[pos + 2..];
                continue;
            }
            out.push_str(&rest[..pos]);
            let after = &rest[pos + 2..];
            let end = after.find('}').ok_or_else(|| LoadError::BadReference {
                file: path.to_path_buf(),
                line: index + 1,
            })?;
            let var = &after[..end];
            let value = std::env::var(var).map_err(|_| LoadError::MissingEnv {
                file: path.to_path_buf(),
                line: index + 1,
                var: var.to_string(),
            })?;
            for c in value.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    c => out.push(c),
                }
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
    }
    Ok(out)
}

impl Config {
    /// Relative file paths in the config are relative to the config file, not to the
    /// working directory, so the same file works from a systemd unit and a shell.
    fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        for l in &mut self.listeners {
            l.client_ca_file.as_mut().map(fix);
            l.crl_files.iter_mut().for_each(fix);
            for c in &mut l.certificates {
                fix(&mut c.cert_file);
                fix(&mut c.key_file);
            }
        }
        self.residency.allowed_networks_files.iter_mut().for_each(fix);
        self.gateway.handover_socket.as_mut().map(fix);
        fix(&mut self.audit.kek_file);
        fix(&mut self.audit.signing_key_file);
        fix(&mut self.audit.spool_file);
        if self.store.url.is_none() {
            self.store.url = Some(format!("sqlite://{}?mode=rwc", base.join("phr-gateway.db").display()));
        }
        for i in &mut self.auth.issuers {
            i.jwks_file.as_mut().map(fix);
            i.ca_file.as_mut().map(fix);
        }
        self.residency.hosts_file.as_mut().map(fix);
        for u in self.upstreams.values_mut() {
            u.ca_file.as_mut().map(fix);
            u.client_cert_file.as_mut().map(fix);
            u.client_key_file.as_mut().map(fix);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_and_escapes_env() {
        std::env::set_var("PHR_TEST_SECRET", "a\"b");
        let out = expand_env("k = \"${PHR_TEST_SECRET}\"\nx = \"$${LIT}\"\n", Path::new("f")).unwrap();
        assert_eq!(out, "k = \"a\\\"b\"\nx = \"${LIT}\"\n");
    }

    #[test]
    fn missing_env_names_line_and_var() {
        let err = expand_env("a = 1\nk = \"${PHR_TEST_NOT_SET_X}\"\n", Path::new("g.toml")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("g.toml:2"), "{msg}");
        assert!(msg.contains("PHR_TEST_NOT_SET_X"), "{msg}");
    }
}
