//! A test host of the test's own: a network namespace joined to this one by
//! a veth pair, so that a client in it reaches the daemon from an address
//! that is not loopback, as a screen or a phone on the depot LAN would. The
//! pair's addresses come from 198.18.0.0/15 (RFC 2544's range for test
//! networks, routed nowhere); the traffic never leaves this machine.
//! Creating namespaces needs root; without it [`TestHost::create`] says so
//! and the caller skips.

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// A namespace with one address, and ours on the other end of its link.
pub struct TestHost {
    ns: String,
    /// Our end's address: the daemon listens here.
    pub gateway: Ipv4Addr,
    /// The test host's address: requests from it come from here.
    pub addr: Ipv4Addr,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl TestHost {
    /// A new test host; `None` (after saying why) when this process may not
    /// make namespaces. Panics when it may but making one fails.
    pub fn create() -> Option<TestHost> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!(
                "SKIPPED: a test host needs root (ip netns); run the tests as root, as CI does"
            );
            return None;
        }
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed) & 0xf;
        let pid = std::process::id();
        // One /30 per host, unique across the test processes running at once.
        let index = ((pid & 0x7ff) << 4) | n;
        let base = u32::from(Ipv4Addr::new(198, 18, 0, 0)) + index * 4;
        let gateway = Ipv4Addr::from(base + 1);
        let addr = Ipv4Addr::from(base + 2);
        let tag = format!("{}x{n}", pid % 100_000);
        let ns = format!("fixgate-test-{tag}");
        let (ours, theirs) = (format!("fgh{tag}"), format!("fgn{tag}"));
        // Left over by an earlier run of this process id that failed half way.
        let _ = ip(&["link", "del", &ours]);
        let _ = ip(&["netns", "del", &ns]);
        let host = TestHost { ns, gateway, addr };
        let ours_name = ours.clone();
        let steps: Vec<Vec<String>> = vec![
            vec!["netns".into(), "add".into(), host.ns.clone()],
            vec![
                "link".into(),
                "add".into(),
                ours.clone(),
                "type".into(),
                "veth".into(),
                "peer".into(),
                "name".into(),
                theirs.clone(),
            ],
            vec![
                "link".into(),
                "set".into(),
                theirs.clone(),
                "netns".into(),
                host.ns.clone(),
            ],
            vec![
                "addr".into(),
                "add".into(),
                format!("{gateway}/30"),
                "dev".into(),
                ours.clone(),
            ],
            vec!["link".into(), "set".into(), ours, "up".into()],
            host.in_ns(&["addr", "add", &format!("{addr}/30"), "dev", &theirs]),
            host.in_ns(&["link", "set", &theirs, "up"]),
            host.in_ns(&["link", "set", "lo", "up"]),
        ];
        for step in steps {
            let args: Vec<&str> = step.iter().map(String::as_str).collect();
            if let Err(err) = ip(&args) {
                // Dropping the host removes the namespace; our end of the
                // pair may still be here if it never moved.
                let _ = ip(&["link", "del", &ours_name]);
                panic!("cannot make a test host: {err}");
            }
        }
        Some(host)
    }

    fn in_ns(&self, args: &[&str]) -> Vec<String> {
        let mut all = vec![
            "netns".to_owned(),
            "exec".into(),
            self.ns.clone(),
            "ip".into(),
        ];
        all.extend(args.iter().map(|a| (*a).to_owned()));
        all
    }

    /// `curl` run on the test host: the status and the body.
    pub fn curl(&self, url: &str, extra: &[&str]) -> (u16, String) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns, "curl", "-sS", "--max-time", "10"])
            .args(["-w", "\n%{http_code}"])
            .args(extra)
            .arg(url)
            .output()
            .expect("curl (apt install curl)");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        let code = code.trim().parse().unwrap_or_else(|_| {
            panic!(
                "curl from the test host: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (code, body.to_owned())
    }
}

impl Drop for TestHost {
    /// The namespace goes, and its end of the pair with it (and so ours).
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.ns]);
    }
}
