//! The man pages and shell completions the package installs, under
//! `packaging/man/` and `packaging/completions/`. They are committed rather
//! than made while packaging, because the ARM packages are built where their
//! binary cannot run; these tests render them again from the clap definition
//! itself (`src/cli.rs`, included below) and fail when the committed ones
//! are stale. The generators are test-only dependencies: the gateway's
//! binary does not carry them.

use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_complete::Shell;
use clap_mangen::Man;
use clap_mangen::roff::{Roff, roman};

/// The command line exactly as the `fixgate` binary defines it.
#[allow(dead_code)] // what the commands do with their arguments is main.rs's
#[path = "../../src/cli.rs"]
mod definition;

/// The command to run after changing the command line.
const REFRESH: &str = "cargo test --test cli write_man_pages_and_completions -- --ignored";

/// Every file the package installs from `packaging/man/` and
/// `packaging/completions/`, by its path in the repository, as the clap
/// definition renders it now.
fn rendered() -> Vec<(String, Vec<u8>)> {
    let mut cmd = definition::Cli::command().disable_help_subcommand(true);
    cmd.build();
    let version = cmd.get_version().unwrap_or_default().to_owned();
    let mut files = Vec::new();
    let subcommands: Vec<clap::Command> = cmd
        .get_subcommands()
        .filter(|c| !c.is_hide_set())
        .cloned()
        .collect();
    let mut see_also: Vec<String> = subcommands
        .iter()
        .map(|c| format!("fixgate-{}(1)", c.get_name()))
        .collect();
    see_also.extend(["systemctl(1)", "journalctl(1)"].map(String::from));
    files.push((
        "packaging/man/fixgate.1".to_owned(),
        man_page(&cmd, &version, FILES, &see_also),
    ));
    for sub in &subcommands {
        files.push((
            format!("packaging/man/fixgate-{}.1", sub.get_name()),
            man_page(sub, &version, &[], &["fixgate(1)".to_owned()]),
        ));
    }
    for (shell, name) in [
        (Shell::Bash, "fixgate.bash"),
        (Shell::Zsh, "_fixgate"),
        (Shell::Fish, "fixgate.fish"),
    ] {
        let mut out = Vec::new();
        clap_complete::generate(shell, &mut cmd.clone(), "fixgate", &mut out);
        files.push((format!("packaging/completions/{name}"), out));
    }
    files
}

/// The files the root page lists, as the package lays them out.
const FILES: &[(&str, &str)] = &[
    (
        "/etc/fixgate/fixgate.toml",
        "The configuration: every key, its default and its meaning.",
    ),
    (
        "/etc/fixgate/tokens/",
        "The access tokens the package made (read.token, write.token).",
    ),
    (
        "/var/lib/fixgate/store",
        "The store (the service's state directory).",
    ),
    (
        "/usr/share/doc/fixgate/",
        "The operator documentation (README.md, docs/).",
    ),
];

/// clap_mangen's page, with the help's examples as an EXAMPLES section (it
/// would fill them into one paragraph under EXTRA), then FILES and SEE ALSO.
fn man_page(
    cmd: &clap::Command,
    version: &str,
    files: &[(&str, &str)],
    see_also: &[String],
) -> Vec<u8> {
    let examples = cmd.get_after_help().map(|h| h.to_string());
    let man = Man::new(cmd.clone().after_help(None::<&str>))
        .source(format!("fixgate {version}"))
        .manual("fixgate");
    let mut page = Vec::new();
    man.render(&mut page).expect("render into memory");

    let mut tail = Roff::new();
    if let Some(examples) = examples {
        tail.control("SH", ["EXAMPLES"]);
        tail.control("nf", []);
        // The lines under "Examples:" up to the first blank one.
        for line in examples
            .lines()
            .skip_while(|l| !l.starts_with("Examples:"))
            .skip(1)
            .take_while(|l| !l.trim().is_empty())
        {
            tail.text([roman(line.strip_prefix("  ").unwrap_or(line))]);
        }
        tail.control("fi", []);
    }
    if !files.is_empty() {
        tail.control("SH", ["FILES"]);
        for (path, what) in files {
            tail.control("TP", []);
            tail.text([roman(*path)]);
            tail.text([roman(*what)]);
        }
    }
    tail.control("SH", ["SEE ALSO"]);
    tail.text([roman(see_also.join(", "))]);
    // Each rendering starts with the same preamble; the page has it already.
    let preamble = Roff::new().render();
    let tail = tail.render();
    page.extend_from_slice(tail.strip_prefix(&preamble).unwrap_or(&tail).as_bytes());
    page
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The files in the two directories the package installs from.
fn committed() -> Vec<String> {
    let mut names = Vec::new();
    for dir in ["packaging/man", "packaging/completions"] {
        let Ok(entries) = std::fs::read_dir(root().join(dir)) else {
            continue;
        };
        for entry in entries {
            let name = entry.expect("a directory entry").file_name();
            names.push(format!("{dir}/{}", name.to_string_lossy()));
        }
    }
    names.sort();
    names
}

#[test]
fn the_packaged_man_pages_and_completions_are_what_the_command_line_renders() {
    let rendered = rendered();
    let mut stale = Vec::new();
    for (path, want) in &rendered {
        match std::fs::read(root().join(path)) {
            Ok(have) if &have == want => {}
            Ok(_) => stale.push(format!("{path} differs")),
            Err(err) => stale.push(format!("{path}: {err}")),
        }
    }
    for path in committed() {
        if !rendered.iter().any(|(p, _)| *p == path) {
            stale.push(format!("{path} is not rendered any more (a command gone?)"));
        }
    }
    assert!(
        stale.is_empty(),
        "the man pages or completions are stale: {}.\nRefresh them with\n    {REFRESH}\nand commit packaging/.",
        stale.join("; ")
    );
}

#[test]
fn the_man_page_shows_every_command_and_the_examples() {
    let rendered = rendered();
    let (_, page) = rendered
        .iter()
        .find(|(p, _)| p == "packaging/man/fixgate.1")
        .expect("the root page");
    let page = String::from_utf8_lossy(page);
    for command in [
        "run",
        "check\\-config",
        "nmea",
        "simulate",
        "encode",
        "decode",
        "token",
    ] {
        assert!(
            page.contains(&format!("fixgate\\-{command}(1)")),
            "{command} in {page}"
        );
    }
    assert!(
        page.contains(".SH EXAMPLES\n.nf\nfixgate run \\-\\-config /etc/fixgate/fixgate.toml\n")
    );
    assert!(!page.contains("EXTRA"), "{page}");
}

/// Writes the files the first test compares; run it after changing the
/// command line (see [`REFRESH`]).
#[test]
#[ignore = "writes packaging/man and packaging/completions"]
fn write_man_pages_and_completions() {
    for path in committed() {
        std::fs::remove_file(root().join(&path)).expect("remove a stale file");
    }
    for (path, content) in rendered() {
        let path = root().join(path);
        std::fs::create_dir_all(path.parent().expect("a directory")).expect("mkdir");
        std::fs::write(&path, content).expect("write");
        println!("wrote {}", Path::new(&path).display());
    }
}
