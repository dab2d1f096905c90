//! Command-line value parsers both binaries use (clap `value_parser`s):
//! an error is the message clap prints beside the option.

use std::path::PathBuf;

/// `host:port` or `[v6]:port`, as `(host, port)`.
pub fn parse_host_port(s: &str) -> Result<(String, u16), String> {
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("{s:?} is not HOST:PORT"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("{s:?} has no host"));
    }
    let port = port
        .parse()
        .map_err(|_| format!("{port:?} is not a port number"))?;
    Ok((host.to_owned(), port))
}

/// A path to a file that can be opened now.
pub fn readable_file(s: &str) -> Result<PathBuf, String> {
    std::fs::File::open(s)
        .map(|_| PathBuf::from(s))
        .map_err(|e| format!("cannot read {s}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_takes_names_and_bracketed_v6_and_names_what_is_wrong() {
        assert_eq!(parse_host_port("broker:1883"), Ok(("broker".into(), 1883)));
        assert_eq!(parse_host_port("[::1]:8883"), Ok(("::1".into(), 8883)));
        assert!(parse_host_port("broker").unwrap_err().contains("HOST:PORT"));
        assert!(parse_host_port(":1883").unwrap_err().contains("no host"));
        assert!(parse_host_port("b:x").unwrap_err().contains("port number"));
    }
}
