//! The module map as a contract: every module of peer-svc sits in a layer,
//! and may use (`crate::…`) only modules of its own layer or below — arrows
//! only downward — and the modules' use graph has no cycle. Test modules
//! (after `#[cfg(test)]`) may use anything. A new file must be given a
//! layer here, which is the point: its place in the map is decided, not
//! grown into.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

/// The layers, lowest first (DESIGN order: binaries → composition root →
/// services → outbound/inbound/history sync → delivery → sessions →
/// membership → net/store/directory/console/identity → pure core → config).
const LAYERS: &[&[&str]] = &[
    &["config"],
    &[
        "hlc",
        "backoff",
        "rate",
        "checks",
        "handshake_mac",
        "feed_order",
        "rerun",
        "names",
    ],
    &[
        "net",
        "store",
        "directory",
        "console",
        "identity",
        "credential",
        "removals",
        "feeds",
        "authorship",
        "discovery_client",
        "control_socket",
        "control_client",
    ],
    &["membership", "admission", "authors"],
    &[
        "session",
        "peers",
        "envelope",
        "handshake_ahead",
        "handshaker",
    ],
    &["delivery"],
    &[
        "inbound",
        "outbound",
        "history_sync",
        "removal_sync",
        "feed_sync",
    ],
    &["service"],
    &["lib"],
];

/// The layer of a module, by its top-level name.
fn layer(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

/// The top-level module a source file belongs to (`delivery/stream.rs` →
/// `delivery`, `lib.rs` → `lib`); binaries are not modules of the library.
fn module_of(relative: &Path) -> Option<String> {
    let first = relative.components().next()?.as_os_str().to_str()?;
    match first.trim_end_matches(".rs") {
        "bin" => None,
        // The composition root is lib.rs and its server wiring.
        "servers" => Some("lib".to_owned()),
        module => Some(module.to_owned()),
    }
}

/// The top-level modules named by `crate::` paths in `code`, including each
/// item of a `crate::{a::b, c}` group.
fn used_modules(code: &str) -> BTreeSet<String> {
    let ident = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut used = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level items of the group: split at commas outside braces.
            let (mut depth, mut start) = (0usize, 0usize);
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        used.insert(ident(&group[start..i]));
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        used.insert(ident(&group[start..i]));
                        start = i + 1;
                    }
                    _ => {}
                }
            }
        } else {
            used.insert(ident(rest));
        }
    }
    used.retain(|m| !m.is_empty());
    used
}

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// module → the other modules it uses, from the non-test code.
fn use_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let Some(module) = module_of(file.strip_prefix(&src).expect("under src")) else {
            continue;
        };
        let text = std::fs::read_to_string(&file).expect("read source");
        if text.starts_with("#![cfg(test)]") {
            continue; // test support: may use anything, like test modules
        }
        let code: String = text
            .split("#[cfg(test)]")
            .next()
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        let uses = graph.entry(module.clone()).or_default();
        for used in used_modules(&code) {
            // The crate root's own items (`crate::Parts`) count as `lib`.
            let used = if layer(&used).is_some() {
                used
            } else {
                "lib".to_owned()
            };
            if used != module {
                uses.insert(used);
            }
        }
    }
    graph
}

#[test]
fn every_module_uses_only_its_own_layer_or_lower_ones() {
    let graph = use_graph();
    for (module, uses) in &graph {
        let own = layer(module)
            .unwrap_or_else(|| panic!("module {module} has no layer: add it to LAYERS"));
        for used in uses {
            let theirs = layer(used).expect("checked when the graph was built");
            assert!(
                theirs <= own,
                "{module} (layer {own}) uses {used} (layer {theirs}): an arrow upward"
            );
        }
    }
}

#[test]
fn the_use_graph_has_no_cycle() {
    let graph = use_graph();
    // Depth-first search; a module met again while on the path is a cycle.
    fn visit(
        module: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) {
        if done.contains(module) {
            return;
        }
        if let Some(at) = path.iter().position(|m| m == module) {
            panic!("import cycle: {} -> {module}", path[at..].join(" -> "));
        }
        path.push(module.to_owned());
        for next in graph.get(module).into_iter().flatten() {
            visit(next, graph, path, done);
        }
        path.pop();
        done.insert(module.to_owned());
    }
    let mut done = BTreeSet::new();
    for module in graph.keys() {
        visit(module, &graph, &mut Vec::new(), &mut done);
    }
}

#[test]
fn the_use_parser_reads_groups_and_plain_paths() {
    let used =
        used_modules("use crate::{\n    a::b,\n    c::{d, e},\n    f,\n};\nlet x = crate::g::h();");
    let want: BTreeSet<String> = ["a", "c", "f", "g"].iter().map(|s| s.to_string()).collect();
    assert_eq!(used, want);
}
