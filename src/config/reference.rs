//! `config/fixgate.toml` is the configuration reference: every key the
//! reader accepts is in it, under its section's header (commented out where
//! it should not be set by default), with its default and what it means.
//! These tests keep it so. The keys are not listed here a second time: the
//! reader is asked for them, through the message it gives for an unknown
//! key, which names every key the section accepts (its key-list constant),
//! and every section and table found that way is asked in turn. A key added
//! to the reader and not to the reference fails the test.

use std::collections::BTreeSet;

use super::parse;

const REFERENCE: &str = include_str!("../../config/fixgate.toml");

/// A key no section accepts.
const PROBE: &str = "zz_probe";

/// A table of the configuration: its dotted path and whether it is an
/// array of tables (`[[mqtt.login]]`) or a table (`[mqtt]`).
#[derive(Debug, Clone)]
struct Table {
    path: Vec<String>,
    array: bool,
}

impl Table {
    fn name(&self) -> String {
        self.path.join(".")
    }

    fn header(&self) -> String {
        if self.array {
            format!("[[{}]]", self.name())
        } else {
            format!("[{}]", self.name())
        }
    }
}

/// Every problem the reader reports for `source`.
fn problems(source: &str) -> Vec<String> {
    match parse(source, "probe.toml") {
        Ok(_) => Vec::new(),
        Err(err) => err.problems().iter().map(|p| p.message.clone()).collect(),
    }
}

/// The list after "expected one of: " in the problem that starts with `start`.
fn expected(problems: &[String], start: &str) -> Option<Vec<String>> {
    let problem = problems.iter().find(|p| p.starts_with(start))?;
    let (_, list) = problem.split_once("; expected one of: ")?;
    Some(list.split(", ").map(str::to_owned).collect())
}

/// The keys `table` accepts, when it is a table whose keys the reader
/// checks: written with its enclosing arrays of tables before it, so that
/// it is the table the reader reads.
fn keys_of(parents: &[Table], table: &Table) -> Option<Vec<String>> {
    let mut source = String::new();
    for parent in parents.iter().filter(|p| p.array) {
        source += &format!("{}\n", parent.header());
    }
    source += &format!("{}\n{PROBE} = 1\n", table.header());
    let start = format!("unknown key `{PROBE}` in {}; ", table.header());
    expected(&problems(&source), &start)
}

/// Every key the reader accepts, as `section.key` (`mqtt.login.user`), with
/// the tables they are in; sections and tables are found as they are read.
fn accepted() -> (Vec<String>, Vec<Table>) {
    let sections = expected(
        &problems(&format!("[{PROBE}]\n")),
        &format!("unknown section `{PROBE}`"),
    )
    .expect("the reader names its sections when it meets an unknown one");
    let mut keys = Vec::new();
    let mut tables = Vec::new();
    let mut stack: Vec<(Vec<Table>, Vec<String>)> = sections
        .into_iter()
        .map(|s| (Vec::new(), vec![s]))
        .collect();
    while let Some((parents, path)) = stack.pop() {
        for array in [false, true] {
            let table = Table {
                path: path.clone(),
                array,
            };
            let Some(found) = keys_of(&parents, &table) else {
                continue;
            };
            let mut inner = parents.clone();
            inner.push(table.clone());
            for key in found {
                let mut child = path.clone();
                child.push(key);
                keys.push(child.join("."));
                stack.push((inner.clone(), child));
            }
            tables.push(table);
        }
    }
    keys.sort();
    (keys, tables)
}

/// The reference cut at its headers, commented out or not: each block is
/// the section it documents and its lines.
fn blocks() -> Vec<(String, Vec<&'static str>)> {
    let mut blocks = vec![(String::new(), Vec::new())];
    for line in REFERENCE.lines() {
        match header(line) {
            Some(name) => blocks.push((name, Vec::new())),
            None => blocks.last_mut().expect("a block").1.push(line),
        }
    }
    blocks
}

/// The table a line such as `[mqtt]`, `# [[mqtt.login]]` or
/// `# [http.tokens]   # comment` opens.
fn header(line: &str) -> Option<String> {
    let line = line.trim_start();
    let line = line.strip_prefix('#').unwrap_or(line).trim_start();
    let (open, close) = if line.starts_with("[[") {
        ("[[", "]]")
    } else {
        ("[", "]")
    };
    let rest = line.strip_prefix(open)?;
    let (name, after) = rest.split_once(close)?;
    let after = after.trim_start();
    let is_name = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c == '_' || c == '.');
    (is_name && (after.is_empty() || after.starts_with('#'))).then(|| name.to_owned())
}

/// Whether `line` sets `key`, commented out or not: `key = …`, `# key = …`.
fn sets(line: &str, key: &str) -> bool {
    let line = line.trim_start();
    let line = line.strip_prefix('#').unwrap_or(line).trim_start();
    line.strip_prefix(key)
        .is_some_and(|rest| rest.trim_start().starts_with('='))
}

/// Whether `line` sets `key` inside an inline table `table = { key = … }`.
fn sets_inline(line: &str, table: &str, key: &str) -> bool {
    if !sets(line, table) {
        return false;
    }
    let Some((_, inline)) = line.split_once('{') else {
        return false;
    };
    inline.split([',', '{']).any(|part| sets(part, key))
}

/// Whether the reference documents `key` (`mqtt.login.user`): set under its
/// table's header, given a header of its own (`[[mqtt.login]]`), or set in
/// an inline table (`circle = { lat = … }` under `[[geofence.fence]]`).
fn documented(blocks: &[(String, Vec<&str>)], key: &str) -> bool {
    let (table, name) = key.rsplit_once('.').expect("a section and a key");
    let in_table = blocks
        .iter()
        .filter(|(b, _)| b == table)
        .any(|(_, lines)| lines.iter().any(|l| sets(l, name)));
    let own_header = blocks.iter().any(|(b, _)| b == key);
    let inline = table.rsplit_once('.').is_some_and(|(outer, inner)| {
        blocks
            .iter()
            .filter(|(b, _)| b == outer)
            .any(|(_, lines)| lines.iter().any(|l| sets_inline(l, inner, name)))
    });
    in_table || own_header || inline
}

#[test]
fn every_key_the_reader_accepts_is_in_the_reference() {
    let (keys, _) = accepted();
    // The probe itself must see the nested tables, or it proves nothing.
    for key in [
        "gateway.id",
        "mqtt.login.user",
        "mqtt.topic.pattern",
        "access.token.scopes",
        "geofence.fence.circle.radius_m",
        "serial.baud",
        "group.devices",
        "uplink.url",
    ] {
        assert!(keys.iter().any(|k| k == key), "{key} not found: {keys:?}");
    }
    let blocks = blocks();
    let missing: Vec<&String> = keys.iter().filter(|k| !documented(&blocks, k)).collect();
    assert!(
        missing.is_empty(),
        "config/fixgate.toml is the configuration reference: document each of these \
         under its section's header (`key = default` or `# key = default`, with its \
         meaning): {missing:?}"
    );
}

#[test]
fn the_reference_documents_no_section_the_reader_does_not_know() {
    let (keys, tables) = accepted();
    let known: BTreeSet<String> = tables
        .iter()
        .map(Table::name)
        .chain(keys.iter().cloned())
        .collect();
    let unknown: Vec<String> = blocks()
        .into_iter()
        .map(|(name, _)| name)
        .filter(|name| !name.is_empty() && !known.contains(name))
        .collect();
    assert!(
        unknown.is_empty(),
        "headers the reader does not read: {unknown:?}"
    );
}

#[test]
fn the_check_finds_a_key_left_out() {
    let blocks = vec![
        (
            "feed".to_owned(),
            vec!["listen = \"0.0.0.0:8080\"", "# retry = \"3s\""],
        ),
        (
            "geofence.fence".to_owned(),
            vec!["# circle = { lat = 52.1, lon = 5.1, radius_m = 100 }"],
        ),
        ("mqtt.login".to_owned(), vec!["# user = \"bus-17\""]),
    ];
    assert!(documented(&blocks, "feed.listen"));
    assert!(documented(&blocks, "feed.retry"));
    assert!(!documented(&blocks, "feed.keepalive"));
    assert!(!documented(&blocks, "mqtt.listen"), "another section's key");
    assert!(documented(&blocks, "mqtt.login"), "a table by its header");
    assert!(documented(&blocks, "geofence.fence.circle.radius_m"));
    assert!(!documented(&blocks, "geofence.fence.circle.zz"));
    assert_eq!(header("# [[mqtt.login]]"), Some("mqtt.login".to_owned()));
    assert_eq!(
        header("# [http.tokens]   # its own"),
        Some("http.tokens".to_owned())
    );
    assert_eq!(header("# # [lon, lat] positions"), None);
    assert_eq!(header("[feed]"), Some("feed".to_owned()));
}
