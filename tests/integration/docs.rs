//! The documentation's transcripts, run against the built `fedreg`.
//!
//! Every ```` ```console ```` block of `README.md` and `docs/*.md` is
//! executed; ```` ```sh ```` and ```` ```text ```` blocks are illustrative and
//! are not (grpcurl, PostgreSQL URLs, long benchmarks, outputs that need
//! objects only grpcurl creates).
//!
//! In a console block, a line starting with `$ ` is a command (a line ending
//! with `\` continues it on the next line); the lines after it, up to the
//! next command or the end of the block, are its expected output, stdout and
//! stderr together. As in trycmd, `[..]` in an expected line matches any text
//! within the line (secrets, times, ports, ids), and a line holding only
//! `...` matches any number of lines. Trailing blank lines are ignored.
//!
//! The blocks of one document run in order in one bash shell, so that
//! variables, `cd` and background servers carry over from block to block, in
//! a fresh temporary directory that is also `HOME`, with `fedreg` (a symlink
//! to the binary cargo built) first on `PATH` and no `FEDREG_*` variable set.
//! Servers the transcripts start in the background use fixed loopback ports
//! (29051 and up, one range per document, below the ephemeral range); the
//! shell's process group is killed when the document is done. A document
//! that takes longer than [`DOC_TIMEOUT`] fails, naming the command that was
//! running.
//!
//! The transcripts need bash and the usual tools (`grep`, `stat`, `sleep`,
//! `openssl` for TLS, `curl` for the metrics).
//!
//! A stale transcript fails the test with the document, its line, the
//! command, and the expected and actual outputs.

use std::fmt::Write as _;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The longest a document may run.
const DOC_TIMEOUT: Duration = Duration::from_secs(50);

/// The documents, relative to the repository; each has a test below.
const DOCUMENTS: &[&str] = &[
    "README.md",
    "docs/api.md",
    "docs/peering.md",
    "docs/operations.md",
    "docs/performance.md",
];

#[test]
fn readme() {
    run_document("README.md");
}

#[test]
fn api() {
    run_document("docs/api.md");
}

#[test]
fn peering() {
    run_document("docs/peering.md");
}

#[test]
fn operations() {
    run_document("docs/operations.md");
}

#[test]
fn performance() {
    run_document("docs/performance.md");
}

/// No document in `docs/` escapes the tests above.
#[test]
fn every_document_is_tested() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
    let mut found: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".md"))
        .map(|name| format!("docs/{name}"))
        .collect();
    found.sort();
    let mut listed: Vec<String> = DOCUMENTS
        .iter()
        .filter(|d| d.starts_with("docs/"))
        .map(|d| d.to_string())
        .collect();
    listed.sort();
    assert_eq!(
        found, listed,
        "every document in docs/ needs a test in tests/integration/docs.rs"
    );
}

/// One command of a transcript and the output it should print.
#[derive(Debug)]
struct Step {
    /// 1-based line of the command in the document.
    line: usize,
    command: String,
    expected: Vec<String>,
}

/// The commands of every ```` ```console ```` block of `text`, in order.
fn parse(text: &str) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    let mut in_console = false;
    let mut in_other = false;
    let mut continuing = false;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") {
            if in_console || in_other {
                in_console = false;
                in_other = false;
            } else if trimmed.trim_end() == "```console" {
                in_console = true;
            } else {
                in_other = true;
            }
            continuing = false;
            continue;
        }
        if !in_console {
            continue;
        }
        if continuing {
            let step = steps.last_mut().unwrap();
            step.command.push('\n');
            step.command.push_str(line);
            continuing = line.ends_with('\\');
        } else if let Some(command) = line.strip_prefix("$ ") {
            steps.push(Step {
                line: i + 1,
                command: command.to_string(),
                expected: Vec::new(),
            });
            continuing = line.ends_with('\\');
        } else if let Some(step) = steps.last_mut() {
            step.expected.push(line.to_string());
        } else {
            panic!("line {}: output before any command", i + 1);
        }
    }
    assert!(!in_console, "a ```console block is not closed");
    steps
}

/// Whether `actual` matches the `pattern` line (`[..]`: any text).
fn line_matches(pattern: &str, actual: &str) -> bool {
    let parts: Vec<&str> = pattern.split("[..]").collect();
    if parts.len() == 1 {
        return pattern == actual;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !actual.starts_with(first) {
        return false;
    }
    let mut rest = &actual[first.len()..];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// Whether the `actual` lines match the `expected` ones (`...`: any lines).
fn lines_match(expected: &[String], actual: &[String]) -> bool {
    match expected.split_first() {
        None => actual.is_empty(),
        Some((first, rest)) if first.trim() == "..." => {
            (0..=actual.len()).any(|skip| lines_match(rest, &actual[skip..]))
        }
        Some((first, rest)) => match actual.split_first() {
            Some((line, actual_rest)) => {
                line_matches(first, line) && lines_match(rest, actual_rest)
            }
            None => false,
        },
    }
}

/// Lines without trailing spaces, and without trailing blank lines.
fn normalize<'a>(lines: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut lines: Vec<String> = lines.map(|l| l.trim_end().to_string()).collect();
    while lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    lines
}

/// Runs the console blocks of `document` and fails with a diff of every
/// command whose output differs from its transcript.
fn run_document(document: &str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join(document)).unwrap();
    let steps = parse(&text);
    if steps.is_empty() {
        return;
    }

    let scratch = tempfile::tempdir().unwrap();
    let bin = scratch.path().join("bin");
    let work = scratch.path().join("work");
    let out = scratch.path().join("out");
    for dir in [&bin, &work, &out] {
        std::fs::create_dir(dir).unwrap();
    }
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_fedreg"), bin.join("fedreg")).unwrap();

    // One file per command, run by `eval` in the same shell, its output to
    // out/N; out/current names the command running.
    let mut script = String::from("exec < /dev/null\n");
    for (n, step) in steps.iter().enumerate() {
        let file = out.join(format!("{n}.cmd"));
        std::fs::write(&file, &step.command).unwrap();
        writeln!(
            script,
            "echo {n} > '{out}/current'; eval \"$(cat '{cmd}')\" > '{out}/{n}.out' 2>&1",
            out = out.display(),
            cmd = file.display(),
        )
        .unwrap();
    }
    script.push_str("echo done > '");
    script.push_str(&out.display().to_string());
    script.push_str("/current'\n");
    let script_file = scratch.path().join("script.sh");
    std::fs::write(&script_file, script).unwrap();

    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into())
    );
    let mut child = Command::new("bash")
        .arg(&script_file)
        .current_dir(&work)
        .env_clear()
        .env("PATH", path)
        .env("HOME", &work)
        .env("LANG", "C.UTF-8")
        .env("NO_COLOR", "1")
        .env("TERM", "dumb")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("bash runs the transcripts");
    let group = child.id();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > DOC_TIMEOUT {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    kill_group(group);
    let _ = child.wait();

    let mut failures = String::new();
    if status.is_none() {
        let current = std::fs::read_to_string(out.join("current")).unwrap_or_default();
        let at = current
            .trim()
            .parse::<usize>()
            .ok()
            .and_then(|n| steps.get(n))
            .map(|s| format!("{document}:{}: $ {}", s.line, s.command))
            .unwrap_or_else(|| "before the first command".into());
        writeln!(
            failures,
            "{document} did not finish within {DOC_TIMEOUT:?}; running: {at}"
        )
        .unwrap();
    }
    for (n, step) in steps.iter().enumerate() {
        let Ok(actual) = std::fs::read_to_string(out.join(format!("{n}.out"))) else {
            break;
        };
        let actual = normalize(actual.lines());
        let expected = normalize(step.expected.iter().map(String::as_str));
        if !lines_match(&expected, &actual) {
            writeln!(
                failures,
                "\n{document}:{}: the output of\n$ {}\ndiffers from the transcript.\n\
                 --- expected\n{}\n--- actual\n{}\n---",
                step.line,
                step.command,
                expected.join("\n"),
                actual.join("\n"),
            )
            .unwrap();
        }
    }
    if !failures.is_empty() {
        panic!("{failures}");
    }
}

/// Ends the servers a transcript left running: the shell's process group,
/// asked first, then forced.
fn kill_group(group: u32) {
    let signal = |sig: &str| {
        let _ = Command::new("kill")
            .args([sig, "--", &format!("-{group}")])
            .stderr(Stdio::null())
            .status();
    };
    signal("-TERM");
    for _ in 0..50 {
        let alive = Command::new("kill")
            .args(["-0", "--", &format!("-{group}")])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !alive {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    signal("-KILL");
}

#[test]
fn patterns() {
    let lines = |s: &str| s.lines().map(String::from).collect::<Vec<_>>();
    assert!(line_matches("token [..] created", "token 2 created"));
    assert!(line_matches("[..]", "anything"));
    assert!(line_matches("a[..]b[..]c", "a-b-c"));
    assert!(!line_matches("a[..]b", "a-c"));
    assert!(!line_matches("ab[..]ba", "aba"));
    assert!(lines_match(&lines("a\n...\nd"), &lines("a\nb\nc\nd")));
    assert!(lines_match(&lines("a\n...\nd"), &lines("a\nd")));
    assert!(lines_match(&lines("..."), &[]));
    assert!(!lines_match(&lines("a\nb"), &lines("a\nb\nc")));
    let steps =
        parse("text\n```console\n$ echo a \\\n  b\na b\n$ true\n```\n```sh\n$ not run\n```\n");
    assert_eq!(steps.len(), 2);
    assert_eq!(steps[0].command, "echo a \\\n  b");
    assert_eq!(steps[0].expected, vec!["a b"]);
    assert_eq!(steps[1].line, 6);
}
