//! The `graphcdc` binary's start-up checks: bad config fails at start with the field named.

use std::process::{Command, Output};

const MAPPING: &str = r#"
[[mappings]]
label = "Chunk"
collection = "chunks"
dimension = 4
"#;

fn run_with_config(text: &str, env: &[(&str, &str)], extra: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, text).unwrap();
    Command::new(env!("CARGO_BIN_EXE_graphcdc"))
        .args(["process", "--config"])
        .arg(&path)
        .args(extra)
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn assert_fails_naming(output: &Output, field: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(78),
        "a config error exits with EX_CONFIG: {stderr}"
    );
    assert!(
        stderr.contains(field),
        "error should name {field}: {stderr}"
    );
}

#[test]
fn an_unreachable_broker_exits_as_an_external_failure() {
    let out = run_with_config(
        &format!("[kafka]\nbootstrap_servers = \"127.0.0.1:1\"\n{MAPPING}"),
        &[],
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(69), "EX_UNAVAILABLE: {stderr}");
    assert!(stderr.contains("metadata"), "{stderr}");
}

#[test]
fn out_of_range_value_names_the_field() {
    let out = run_with_config(
        &format!("[processor]\nbatch_max_events = 0\n{MAPPING}"),
        &[],
        &[],
    );
    assert_fails_naming(&out, "processor.batch_max_events");
}

#[test]
fn mistyped_value_names_the_field() {
    let out = run_with_config(&format!("[kafka]\ngroup_id = 5\n{MAPPING}"), &[], &[]);
    assert_fails_naming(&out, "kafka.group_id");
}

#[test]
fn environment_override_is_validated_too() {
    let out = run_with_config(
        MAPPING,
        &[("GRAPHCDC_PROCESSOR__RETRY_MAX_MS", "soon")],
        &[],
    );
    assert_fails_naming(&out, "processor.retry_max_ms");
}

#[test]
fn missing_mapping_and_bad_dimension_are_named() {
    assert_fails_naming(&run_with_config("", &[], &[]), "mappings");
    let out = run_with_config(&MAPPING.replace("dimension = 4", "dimension = 0"), &[], &[]);
    assert_fails_naming(&out, "mappings[0].dimension");
}

#[test]
fn missing_config_file_is_named() {
    let out = Command::new(env!("CARGO_BIN_EXE_graphcdc"))
        .args(["process", "--config", "/nonexistent/graphcdc.toml"])
        .output()
        .unwrap();
    assert_fails_naming(&out, "--config");
}

#[test]
fn print_config_masks_secrets() {
    let text = format!(
        "[sink]\nkind = \"qdrant\"\nurl = \"http://q:6334\"\napi_key = \"s3cr3t-key\"\n\
         [kafka.properties]\n\"sasl.password\" = \"hunter2\"\n{MAPPING}\n\
         [mappings.embedding]\ntemplate = \"{{title}}\"\nprovider = \"openai\"\n\
         url = \"http://m/v1\"\nmodel = \"m\"\napi_key = \"emb3dd1ng-key\"\n"
    );
    let out = run_with_config(&text, &[], &["--print-config"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("url: \"http://q:6334\""), "{stdout}");
    assert!(
        !stdout.contains("s3cr3t-key")
            && !stdout.contains("hunter2")
            && !stdout.contains("emb3dd1ng-key"),
        "{stdout}"
    );
    assert!(stdout.contains("***"));
    assert!(
        stdout.contains("http://m/v1"),
        "the embedding section is printed: {stdout}"
    );
}

#[test]
fn json_logs_are_one_json_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_graphcdc"))
        .args([
            "--log-format",
            "json",
            "demo",
            "--chunks",
            "10",
            "--data-dir",
        ])
        .arg(dir.path())
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(!lines.is_empty(), "info logs expected");
    for line in lines {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            value["level"].is_string() && value["fields"].is_object(),
            "{line}"
        );
    }
}

#[test]
fn secrets_from_files_are_read_masked_and_a_missing_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("api-key");
    std::fs::write(&key_file, "from-a-file\n").unwrap();
    let text = format!("[sink]\nkind = \"qdrant\"\nurl = \"http://q:6334\"\n{MAPPING}");
    let key_path = key_file.display().to_string();
    let out = run_with_config(
        &text,
        &[("GRAPHCDC_SINK__API_KEY_FILE", key_path.as_str())],
        &["--print-config"],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("api_key: Some(") && stdout.contains("***"),
        "{stdout}"
    );
    assert!(!stdout.contains("from-a-file"), "{stdout}");
    let out = run_with_config(
        &text,
        &[("GRAPHCDC_SINK__API_KEY_FILE", "/nonexistent/api-key")],
        &["--print-config"],
    );
    assert_fails_naming(&out, "GRAPHCDC_SINK__API_KEY_FILE");
}

/// Accepts HTTP/1.1 requests on a real socket and records "METHOD path body-length".
fn http_recorder() -> (String, std::sync::mpsc::Receiver<String>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            loop {
                let mut request_line = String::new();
                if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
                    break;
                }
                let mut length = 0usize;
                loop {
                    let mut header = String::new();
                    reader.read_line(&mut header).unwrap();
                    if header.trim().is_empty() {
                        break;
                    }
                    if let Some(v) = header.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap();
                    }
                }
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                let mut parts = request_line.split_whitespace();
                let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                let _ = tx.send(format!("{method} {path} {length}"));
                let mut out = stream.try_clone().unwrap();
                let _ = out.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
            }
        }
    });
    (url, rx)
}

#[test]
fn traces_are_exported_over_otlp_http_when_the_endpoint_is_set() {
    let (endpoint, requests) = http_recorder();
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_graphcdc"))
        .args(["demo", "--chunks", "10", "--data-dir"])
        .arg(dir.path())
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let received: Vec<String> = requests.try_iter().collect();
    assert!(
        received
            .iter()
            .any(|r| r.starts_with("POST /v1/traces ") && !r.ends_with(" 0")),
        "no OTLP trace export received: {received:?}"
    );
}

#[test]
fn demo_prints_a_summary_with_dlq_reasons_and_repaired_drift() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_graphcdc"))
        .args(["demo", "--chunks", "200", "--inject-drift", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // "  <row>  <value>" lines of the summary table.
    let row = |name: &str| -> String {
        stdout
            .lines()
            .find(|l| l.trim_start().starts_with(name))
            .unwrap_or_else(|| panic!("no {name:?} row in\n{stdout}"))
            .trim_start()[name.len()..]
            .trim()
            .to_owned()
    };
    let dlq: u64 = row("sent to the DLQ").parse().unwrap();
    // Reason rows are indented under the DLQ row.
    let by_reason: u64 = stdout
        .lines()
        .filter(|l| l.starts_with("    "))
        .map(|l| l.split_whitespace().last().unwrap().parse::<u64>().unwrap())
        .sum();
    assert!(dlq > 0, "{stdout}");
    assert_eq!(
        by_reason, dlq,
        "the reasons add up to the DLQ total\n{stdout}"
    );
    let drift = row("drift found / repaired / left");
    let parts: Vec<u64> = drift.split(" / ").map(|n| n.parse().unwrap()).collect();
    assert_eq!(parts.len(), 3, "{drift}");
    assert!(
        parts[0] > 0 && parts[0] == parts[1] && parts[2] == 0,
        "{drift}"
    );
    // Off a terminal the progress comes as lines before the summary (at least the last).
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("demo: progress consumed=") && l.contains(" dlq=")),
        "{stdout}"
    );
    let applied: u64 = row("points applied").parse().unwrap();
    assert!(
        stdout.contains(&format!("demo: OK applied={applied} ")),
        "{stdout}"
    );
}

#[test]
fn shipped_configs_load() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    for file in ["deploy/config/graphcdc.toml", "deploy/k8s/graphcdc.toml"] {
        let output = Command::new(env!("CARGO_BIN_EXE_graphcdc"))
            .args(["process", "--print-config", "--config"])
            .arg(format!("{root}/{file}"))
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[test]
fn config_is_global_before_or_after_the_subcommand_and_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(
        &path,
        format!("[kafka]\ngroup_id = \"global-config-group\"\n{MAPPING}"),
    )
    .unwrap();
    let path = path.to_str().unwrap();
    let runs: [(&[&str], Option<&str>); 5] = [
        (&["--config", path, "process", "--print-config"], None),
        (&["process", "--config", path, "--print-config"], None),
        (&["process", "--print-config", "--config", path], None),
        (&["-c", path, "process", "--print-config"], None),
        (&["process", "--print-config"], Some(path)),
    ];
    for (args, env) in runs {
        let mut command = Command::new(env!("CARGO_BIN_EXE_graphcdc"));
        command.args(args).env_remove("GRAPHCDC_CONFIG");
        if let Some(path) = env {
            command.env("GRAPHCDC_CONFIG", path);
        }
        let out = command.output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("global-config-group"), "{args:?}: {stdout}");
    }
}

/// The repository's root.
fn repo() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The subcommand path and the options of one `graphcdc …` command line in the docs.
fn command_line(text: &str) -> Option<(Vec<String>, Vec<String>)> {
    const NESTED: [(&str, &[&str]); 2] = [
        ("offsets", &["show", "reset"]),
        ("dlq", &["list", "show", "redrive"]),
    ];
    const TOP: [&str; 10] = [
        "process",
        "reconcile",
        "relay",
        "backfill",
        "history",
        "replay",
        "offsets",
        "dlq",
        "demo",
        "search",
    ];
    let rest = [
        "graphcdc ",
        "target/release/graphcdc ",
        "cargo run --release -- ",
    ]
    .iter()
    .find_map(|prefix| text.trim().strip_prefix(prefix))?;
    let words: Vec<&str> = rest.split_whitespace().collect();
    let mut path = Vec::new();
    let mut i = words.iter().position(|w| TOP.contains(w))?;
    path.push(words[i].to_owned());
    if let Some((_, subs)) = NESTED.iter().find(|(top, _)| *top == words[i]) {
        if let Some(sub) = words.get(i + 1).filter(|w| subs.contains(w)) {
            path.push((*sub).to_owned());
            i += 1;
        }
    }
    let options = words[i + 1..]
        .iter()
        .chain(&words[..i])
        .flat_map(|w| w.split('|'))
        .map(|w| w.trim_start_matches(['[', '(']))
        .filter(|w| w.starts_with("--"))
        .map(|w| {
            w.split(['=', ']', ')', ',', '`'])
                .next()
                .unwrap_or(w)
                .to_owned()
        })
        .collect();
    Some((path, options))
}

#[test]
fn the_docs_use_only_options_the_binary_has() {
    let mut lines = Vec::new();
    for doc in ["README.md", "docs/runbooks.md", "deploy/neo4j/README.md"] {
        let text = std::fs::read_to_string(repo().join(doc)).unwrap();
        let mut in_code = false;
        for line in text.lines() {
            if line.trim_start().starts_with("```") {
                in_code = !in_code;
                continue;
            }
            if in_code {
                lines.push((doc, line.to_owned()));
            }
            // Inline code spans.
            for (i, span) in line.split('`').enumerate() {
                if i % 2 == 1 {
                    lines.push((doc, span.to_owned()));
                }
            }
        }
    }
    let mut checked = 0;
    let mut help_of = std::collections::HashMap::new();
    for (doc, line) in &lines {
        let Some((path, options)) = command_line(line) else {
            continue;
        };
        let help = help_of.entry(path.clone()).or_insert_with(|| {
            let out = Command::new(env!("CARGO_BIN_EXE_graphcdc"))
                .args(&path)
                .arg("--help")
                .output()
                .unwrap();
            assert!(out.status.success(), "{path:?} --help");
            String::from_utf8_lossy(&out.stdout).into_owned()
        });
        for option in options {
            let listed = help.lines().any(|l| {
                let l = l.trim_start();
                let l = l
                    .split_once(", ")
                    .filter(|(short, _)| short.len() == 2)
                    .map_or(l, |(_, long)| long);
                l == option || l.starts_with(&format!("{option} "))
            });
            assert!(
                listed,
                "{doc}: `{}` uses {option}, which `graphcdc {}` does not have",
                line.trim(),
                path.join(" ")
            );
            checked += 1;
        }
    }
    assert!(checked > 40, "checked {checked} options");
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    for needed in [
        "graphcdc dlq list",
        "graphcdc dlq show",
        "graphcdc dlq redrive",
        "--execute",
        "--from-datetime",
        "--by-duration",
        "--shift-by",
        "errors.tolerance",
        "errors.deadletterqueue.topic.name",
        "errors.deadletterqueue.context.headers.enable",
        "errors.retry.timeout",
    ] {
        assert!(readme.contains(needed), "README.md should mention {needed}");
    }
    let runbooks = std::fs::read_to_string(repo().join("docs/runbooks.md")).unwrap();
    assert!(runbooks.contains("graphcdc dlq redrive"));
}

#[test]
fn deploy_files_use_only_current_option_spellings() {
    let files = [
        "docker-compose.yml",
        "deploy/k8s/reconciler.yaml",
        "deploy/k8s/processor.yaml",
        "deploy/k8s/relay.yaml",
        "deploy/observability/alerts.yaml",
    ];
    for file in files {
        let text = std::fs::read_to_string(repo().join(file)).unwrap();
        for gone in ["--interval-s", "--grace-ms", "--from-time", "--to-time"] {
            assert!(!text.contains(gone), "{file} still uses {gone}");
        }
    }
}
