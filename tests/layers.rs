//! The arrows between modules run one way (README, "Layout"): vocabulary ←
//! engine ← config ← market, store ← notify, health ← server ← instance ←
//! front ends. A module that needs something from a higher layer is handed
//! it (a closure, a channel, a trait object), not allowed to import it. This
//! reads every `crate::MODULE` path outside test modules and holds the rule,
//! and that the top-level modules import each other in no circle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Each top-level module's layer, lowest first. A module may import its own
/// layer or lower ones.
const LAYERS: &[(&str, &[&str])] = &[
    ("vocabulary", &["time", "types", "event", "view", "hub", "net", "protocol", "logging"]),
    ("engine", &["engine"]),
    ("config", &["config"]),
    ("inputs and storage", &["market", "store", "metrics", "restore"]),
    ("delivery and checks", &["notify", "health"]),
    ("commands and serving", &["dead", "control", "server"]),
    ("the instance and the client", &["instance", "client"]),
    ("front ends", &["headless", "console", "tui", "tail", "replay", "backtest", "cli", "shutdown", "sweep", "status"]),
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|(_, mods)| mods.contains(&module))
}

/// The module a source file belongs to: `src/store/outbox.rs` is `store`.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    Some(first.strip_suffix(".rs").unwrap_or(first).to_string())
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `crate::NAME` paths in the code before the file's test module (comments
/// name modules freely).
fn imports(text: &str) -> BTreeSet<String> {
    let code = text.split("#[cfg(test)]\nmod ").next().unwrap_or(text);
    let code: String = code.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n");
    let code = code.as_str();
    let mut found = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        // Not `pipwatch::crate::` or a word ending in "crate".
        if code[..at].chars().next_back().is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let name: String =
            code[at + "crate::".len()..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        if !name.is_empty() {
            found.insert(name);
        }
    }
    found
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let Some(module) = module_of(&src, &file) else { continue };
        // The crate root and the binary wire everything together.
        if module == "lib" || module == "main" {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let deps = graph.entry(module.clone()).or_default();
        deps.extend(imports(&text).into_iter().filter(|d| *d != module));
    }
    graph
}

#[test]
fn no_module_imports_from_a_higher_layer() {
    let graph = graph();
    let mut wrong = Vec::new();
    for (module, deps) in &graph {
        let Some(mine) = layer_of(module) else {
            wrong.push(format!("{module} has no layer: add it to LAYERS in tests/layers.rs and README's Layout"));
            continue;
        };
        for dep in deps {
            match layer_of(dep) {
                Some(theirs) if theirs > mine => wrong.push(format!(
                    "{module} ({}) imports {dep} ({}), a higher layer",
                    LAYERS[mine].0, LAYERS[theirs].0
                )),
                Some(_) => {}
                None => wrong.push(format!("{module} imports {dep}, which has no layer")),
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // The rule is only worth something while the graph is really read.
    assert!(graph.get("instance").is_some_and(|d| d.contains("store") && d.contains("hub")), "{graph:?}");
}

/// Within a layer, a few arrows are ruled out on purpose: the store keeps
/// records, not the console's view (the restart view is built in
/// `instance::restore`); the console is handed its feed, never the instance.
#[test]
fn the_store_keeps_records_and_the_console_is_handed_its_feed() {
    let graph = graph();
    for (module, forbidden) in
        [("store", "view"), ("tui", "instance"), ("tui", "headless"), ("tui", "console"), ("event", "view")]
    {
        let deps = graph.get(module).unwrap_or_else(|| panic!("no module {module}"));
        assert!(!deps.contains(forbidden), "{module} imports {forbidden}: {deps:?}");
    }
}

#[test]
fn the_modules_import_each_other_in_no_circle() {
    let graph = graph();
    // Depth-first search for a back edge; the path names the circle.
    fn visit<'a>(
        node: &'a str,
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<String> {
        if let Some(at) = path.iter().position(|n| *n == node) {
            return Some(format!("{} -> {node}", path[at..].join(" -> ")));
        }
        if done.contains(node) {
            return None;
        }
        path.push(node);
        for dep in graph.get(node).into_iter().flatten() {
            if let Some(circle) = visit(dep, graph, path, done) {
                return Some(circle);
            }
        }
        path.pop();
        done.insert(node);
        None
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        if let Some(circle) = visit(node, &graph, &mut Vec::new(), &mut done) {
            panic!("a circle of imports: {circle}");
        }
    }
}

#[test]
fn the_reader_finds_imports_and_skips_test_modules() {
    let text = "use crate::store::Store;\n/// see `crate::tui`\nfn f() { crate::hub::Hub::new(1); }\n#[cfg(test)]\nmod tests { use crate::tui; }\n";
    let found: Vec<String> = imports(text).into_iter().collect();
    assert_eq!(found, ["hub", "store"]);
}
