//! The documentation's transcripts, run against the built `fedreg`.
//!
//! Every ```` ```console ```` block of `README.md` and `docs/*.md` is
//! executed, and so is every ```` ```sh ```` block that calls grpcurl; other
//! ```` ```sh ```` and ```` ```text ```` blocks are illustrative and are not
//! (PostgreSQL URLs, long benchmarks, tools beside the repository).
//!
//! grpcurl itself is not needed: in the shell, `grpcurl` is a function that
//! hands the call to `fedreg call`, which knows only what the server's
//! reflection tells it, as grpcurl does. A grpcurl block's output is not
//! compared, but every grpcurl call in it must succeed.
//!
//! A block of another language whose opening line names a file after the
//! language (```` ```toml fedreg.toml ````) is written to that file, in its
//! place among the commands, for the commands after it to use.
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
//! Servers the transcripts start in the background use fixed loopback ports,
//! one range of ten per document, below the ephemeral range: README 29051,
//! peering 29061, operations 29071, configuration 29081, api 29091; the
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
    "docs/configuration.md",
    "docs/peering.md",
    "docs/operations.md",
    "docs/performance.md",
];

fn readme() {
    run_document("README.md");
}

fn api() {
    run_document("docs/api.md");
}

fn configuration() {
    run_document("docs/configuration.md");
}

fn peering() {
    run_document("docs/peering.md");
}

fn operations() {
    run_document("docs/operations.md");
}

fn performance() {
    run_document("docs/performance.md");
}

/// No document in `docs/` escapes the tests above.
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

/// One command of a transcript and the output it should print, or a
/// block of grpcurl calls.
#[derive(Debug)]
struct Step {
    /// 1-based line of the command in the document.
    line: usize,
    command: String,
    /// The transcript's output; `None` for a grpcurl block, whose calls
    /// must succeed instead.
    expected: Option<Vec<String>>,
}

/// Runs `grpcurl` calls as `fedreg call`: the options the documents use
/// (`-plaintext`, `-cacert`, `-H`, `-d`), the address, then `list`,
/// `describe` or a method. A failed call is noted in
/// `$FEDREG_DOCS_FAILED`.
const GRPCURL: &str = r#"grpcurl() {
    local scheme=http cacert= call=()
    while [ $# -gt 0 ]; do
        case $1 in
            -plaintext) shift ;;
            -cacert) scheme=https cacert=$2; shift 2 ;;
            -H|-d) call+=("$1" "$2"); shift 2 ;;
            -*) echo "grpcurl stand-in: $1 is not supported" >&2; return 2 ;;
            *) break ;;
        esac
    done
    local address=$1 status=0
    shift
    fedreg --server "$scheme://$address" ${cacert:+--cacert "$cacert"} call "${call[@]}" "$@" \
        || status=$?
    if [ $status -ne 0 ]; then
        echo "grpcurl $address $* failed (exit $status)" >> "$FEDREG_DOCS_FAILED"
    fi
    return $status
}
"#;

/// The commands of every ```` ```console ```` block of `text`, the
/// ```` ```sh ```` blocks that call grpcurl, and the files of the blocks
/// that name one, in order.
fn parse(text: &str) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    let mut in_console = false;
    let mut in_other = false;
    let mut sh_block: Option<Step> = None;
    let mut continuing = false;
    // The file a block names and the block's lines so far.
    let mut file: Option<(usize, String, Vec<&str>)> = None;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") {
            if let Some(block) = sh_block.take() {
                if block.command.contains("grpcurl ") {
                    steps.push(block);
                }
            } else if in_console || in_other {
                in_console = false;
                in_other = false;
                if let Some((at, name, lines)) = file.take() {
                    steps.push(Step {
                        line: at,
                        command: format!(
                            "cat > '{name}' <<'END_OF_FILE'\n{}\nEND_OF_FILE",
                            lines.join("\n")
                        ),
                        expected: Some(Vec::new()),
                    });
                }
            } else if trimmed.trim_end() == "```console" {
                in_console = true;
            } else if trimmed.trim_end() == "```sh" {
                sh_block = Some(Step {
                    line: i + 2,
                    command: String::new(),
                    expected: None,
                });
            } else {
                in_other = true;
                let mut info = trimmed.trim_start_matches('`').split_whitespace();
                if let (Some(_language), Some(name)) = (info.next(), info.next()) {
                    file = Some((i + 1, name.to_owned(), Vec::new()));
                }
            }
            continuing = false;
            continue;
        }
        if let Some(block) = &mut sh_block {
            block.command.push_str(line);
            block.command.push('\n');
            continue;
        }
        if let Some((_, _, lines)) = &mut file {
            lines.push(line);
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
                expected: Some(Vec::new()),
            });
            continuing = line.ends_with('\\');
        } else if let Some(Step {
            expected: Some(expected),
            ..
        }) = steps.last_mut()
        {
            expected.push(line.to_string());
        } else {
            panic!("line {}: output before any command", i + 1);
        }
    }
    assert!(
        !in_console && sh_block.is_none(),
        "a code block is not closed"
    );
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
    script.push_str(GRPCURL);
    for (n, step) in steps.iter().enumerate() {
        let file = out.join(format!("{n}.cmd"));
        std::fs::write(&file, &step.command).unwrap();
        writeln!(
            script,
            "echo {n} > '{out}/current'; FEDREG_DOCS_FAILED='{out}/{n}.failed' \
             eval \"$(cat '{cmd}')\" > '{out}/{n}.out' 2>&1",
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
        let Some(expected) = &step.expected else {
            if let Ok(failed) = std::fs::read_to_string(out.join(format!("{n}.failed"))) {
                let tail = &actual[actual.len().saturating_sub(30)..];
                writeln!(
                    failures,
                    "\n{document}:{}: grpcurl calls failed:\n{failed}--- the block's last lines\n{}\n---",
                    step.line,
                    tail.join("\n"),
                )
                .unwrap();
            }
            continue;
        };
        let expected = normalize(expected.iter().map(String::as_str));
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
    assert_eq!(steps[0].expected, Some(vec!["a b".to_string()]));
    assert_eq!(steps[1].line, 6);
    let steps = parse("```sh\nX=1\ngrpcurl -plaintext a list\n```\n```sh\nls\n```\n");
    assert_eq!(steps.len(), 1);
    assert_eq!(steps[0].line, 2);
    assert_eq!(steps[0].command, "X=1\ngrpcurl -plaintext a list\n");
    assert_eq!(steps[0].expected, None);
    let steps = parse("```toml a.toml\nx = 1\n\ny = 2\n```\n```toml\nnot = \"written\"\n```\n");
    assert_eq!(steps.len(), 1);
    assert_eq!(steps[0].line, 1);
    assert_eq!(
        steps[0].command,
        "cat > 'a.toml' <<'END_OF_FILE'\nx = 1\n\ny = 2\nEND_OF_FILE"
    );
}

tests!(
    readme,
    api,
    configuration,
    peering,
    operations,
    performance,
    every_document_is_tested,
    patterns,
);
