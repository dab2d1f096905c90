//! Reads `chrony_socket`, the `refclock SOCK` a `[[serial]]` receiver's time
//! goes to (see `crate::sources::chrony`).

use std::path::PathBuf;

use super::{Reader, Section};

/// Longest Unix socket path: `sun_path` holds 108 bytes on Linux, one of
/// them the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;

impl Reader<'_> {
    /// The optional `chrony_socket` of a `[[serial]]` table. That the
    /// directory exists (chronyd makes the socket when it starts) is a
    /// matter for run time, which counts and logs it.
    pub(super) fn chrony_socket(&mut self, s: &Section<'_, '_>) -> Option<PathBuf> {
        let (path, span) = self.path(s, "chrony_socket")?;
        let key = s.key("chrony_socket");
        if !path.is_absolute() {
            self.report(
                &span,
                format!(
                    "{key} must be an absolute path, like chrony.conf's `refclock SOCK` path (the service's working directory is /)"
                ),
            );
            return None;
        }
        let len = path.as_os_str().len();
        if len > MAX_SOCKET_PATH {
            self.report(
                &span,
                format!(
                    "{key} is {len} bytes long; a Unix socket path holds at most {MAX_SOCKET_PATH}"
                ),
            );
            return None;
        }
        self.chrony_sockets.push((path.clone(), span));
        Some(path)
    }

    /// One chrony refclock per receiver: two receivers on one socket would
    /// feed chrony two clocks' samples as one.
    pub(super) fn check_unique_chrony_sockets(&mut self) {
        let paths = std::mem::take(&mut self.chrony_sockets);
        self.report_reused(paths, "chrony socket");
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::parse;

    fn serial(device: &str, port: &str, socket: &str) -> String {
        format!(
            "[[serial]]\ndevice = \"{device}\"\npath = \"{port}\"\nchrony_socket = \"{socket}\"\n"
        )
    }

    fn problems(source: &str) -> Vec<String> {
        match parse(source, "t.toml") {
            Ok(config) => panic!("expected problems, got {config:?}"),
            Err(err) => err.problems().iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn a_receiver_sends_its_time_to_chrony_only_when_asked() {
        let source = serial("a", "/dev/x", "/run/chrony/fixgate-a.sock")
            + "[[serial]]\ndevice = \"b\"\npath = \"/dev/y\"\n";
        let config = parse(&source, "t.toml").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            config.serial[0].chrony_socket.as_deref(),
            Some(Path::new("/run/chrony/fixgate-a.sock"))
        );
        assert_eq!(config.serial[1].chrony_socket, None);
    }

    #[test]
    fn the_chrony_socket_is_absolute_fits_a_socket_address_and_is_one_receivers() {
        let long = format!("/run/{}.sock", "x".repeat(100));
        let source = serial("a", "/dev/x", "fixgate.sock")
            + &serial("b", "/dev/y", &long)
            + &serial("c", "/dev/z", "/run/c.sock")
            + &serial("d", "/dev/w", "/run/c.sock")
            + "[[serial]]\ndevice = \"e\"\npath = \"/dev/v\"\nchrony_socket = \"\"\n";
        let found = problems(&source);
        assert_eq!(found.len(), 4, "{found:#?}");
        assert!(
            found[0].starts_with("t.toml:4:17: `serial.chrony_socket` must be an absolute path"),
            "{found:#?}"
        );
        assert!(
            found[1].starts_with(
                "t.toml:8:17: `serial.chrony_socket` is 110 bytes long; a Unix socket path holds at most 107"
            ),
            "{found:#?}"
        );
        assert!(
            found[2].starts_with(
                "t.toml:16:17: chrony socket /run/c.sock is already used at line 12, column 17"
            ),
            "{found:#?}"
        );
        assert!(
            found[3].starts_with("t.toml:20:17: `serial.chrony_socket` must not be empty"),
            "{found:#?}"
        );
    }
}
