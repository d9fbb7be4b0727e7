//! The malformed-request and bad-flag corpus (issue 21): each case is a command line, the exit
//! it must have and a fragment its stderr must hold. Every run has a deadline, so a hang fails
//! the test instead of stalling CI; no case may panic, abort, die of a signal, or exit 0 with
//! wrong output. All cases use the tiny models in `tests/data/models`; GPU cases skip when no
//! adapter exists.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use wllm::loaders::GgufFile;
use wllm::loaders::gguf::GgufWriter;

fn data(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data").join(rel)
}

fn tiny() -> PathBuf {
    data("models/tiny-llama-q8_0.gguf")
}

fn have_gpu() -> bool {
    match wllm::engine::Gpu::new(&wllm::engine::DeviceOptions::default()) {
        Ok(_) => true,
        Err(e) => {
            eprintln!("GPU cases skipped: {e}");
            false
        }
    }
}

fn scratch_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("wllm-hardening-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The binary under test; `WLLM_HARDENING_BIN` points the corpus at another build (an older
/// one, to see which cases it fails).
fn wllm() -> Command {
    let bin = std::env::var_os("WLLM_HARDENING_BIN")
        .map_or_else(|| env!("CARGO_BIN_EXE_wllm").into(), PathBuf::from);
    let mut c = Command::new(bin);
    c.env("XDG_RUNTIME_DIR", std::env::temp_dir()).env_remove("WLLM_BACKEND").env_remove("WLLM_GPU_MEMORY");
    c
}

struct Outcome {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `cmd` to completion or kills it at `deadline` (and then fails, naming `what`).
fn run_with_deadline(what: &str, mut cmd: Command, deadline: Duration) -> Outcome {
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: still running after {deadline:?} (a hang)");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Outcome { code: status.code(), stdout: t_out.join().unwrap(), stderr: t_err.join().unwrap() }
}

/// What a case must do.
enum Expect {
    /// Exit non-zero (not by a signal), with this in stderr.
    Fails(&'static str),
    /// Exit 0, with this in stderr (a warning or note; "" for anything).
    Succeeds(&'static str),
}

struct Case {
    args: Vec<String>,
    env: Vec<(&'static str, &'static str)>,
    expect: Expect,
    /// Stderr must not hold this (a wrong hint).
    not: Option<&'static str>,
}

fn case<S: AsRef<str>>(args: &[S], expect: Expect) -> Case {
    Case { args: args.iter().map(|s| s.as_ref().to_string()).collect(), env: Vec::new(), expect, not: None }
}

fn check(c: &Case) -> Result<(), String> {
    let what = format!(
        "wllm {}{}",
        c.args.join(" "),
        c.env.iter().map(|(k, v)| format!(" [{k}={v}]")).collect::<String>()
    );
    let mut cmd = wllm();
    cmd.args(&c.args);
    for (k, v) in &c.env {
        cmd.env(k, v);
    }
    let o = run_with_deadline(&what, cmd, Duration::from_secs(60));
    let Some(code) = o.code else {
        return Err(format!("{what}: killed by a signal\nstderr: {}", o.stderr));
    };
    if o.stderr.contains("panicked") || o.stderr.contains("RUST_BACKTRACE") {
        return Err(format!("{what}: panicked\nstderr: {}", o.stderr));
    }
    if code == 101 || code > 128 {
        return Err(format!("{what}: exit {code} (panic or abort)\nstderr: {}", o.stderr));
    }
    let (want_ok, fragment) = match c.expect {
        Expect::Fails(f) => (false, f),
        Expect::Succeeds(f) => (true, f),
    };
    if want_ok != (code == 0) {
        return Err(format!(
            "{what}: exit {code}, wanted {}\nstdout: {}\nstderr: {}",
            if want_ok { "0" } else { "non-zero" },
            o.stdout,
            o.stderr
        ));
    }
    if !o.stderr.contains(fragment) {
        return Err(format!("{what}: stderr lacks {fragment:?}\nstderr: {}", o.stderr));
    }
    if let Some(bad) = c.not
        && o.stderr.contains(bad)
    {
        return Err(format!("{what}: stderr holds {bad:?}\nstderr: {}", o.stderr));
    }
    Ok(())
}

fn run_all(cases: &[Case]) {
    let failures: Vec<String> = cases.iter().filter_map(|c| check(c).err()).collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}

/// tiny-llama with every norm weight NaN: every logit is NaN.
fn nan_model(dir: &Path) -> PathBuf {
    let src = GgufFile::open(tiny()).unwrap();
    let mut w = GgufWriter::new();
    for k in src.keys() {
        if k != "general.alignment" {
            w.add_metadata(k, src.value(k).unwrap()).unwrap();
        }
    }
    for t in src.tensors() {
        let bytes = src.tensor_data(t).to_vec();
        let bytes = if t.name.ends_with("norm.weight") {
            bytes.chunks(4).flat_map(|_| f32::NAN.to_le_bytes()).collect()
        } else {
            bytes
        };
        w.add_tensor(t.name.clone(), t.ggml_type, &t.dims, bytes).unwrap();
    }
    let p = dir.join("tiny-llama-nan-norms.gguf");
    w.write_file(&p).unwrap();
    p
}

const NON_FINITE: &str = "the model produced non-finite logits (NaN) at position";

/// Issue 21, bad 1: NaN weights stop with one clear error on every path (CPU logits, CPU
/// greedy, GPU greedy on the device, GPU logits read back, a split), never token 0 or an id
/// outside the vocabulary, never exit 0.
#[test]
fn non_finite_logits_are_an_error_on_every_path() {
    let dir = scratch_dir("nan");
    let m = nan_model(&dir);
    let m = m.to_str().unwrap();
    let mut placements = vec!["0"];
    if have_gpu() {
        placements.extend(["all", "1"]);
    }
    let mut cases = Vec::new();
    for ngl in placements {
        for extra in [
            &["--temp", "0"][..],
            &["--temp", "0", "--json"],
            &["--temp", "0.8", "--seed", "1"],
            &["--temp", "0", "--dump-logits", "/dev/null"],
        ] {
            let mut args = vec!["run", m, "--prompt", "hello", "-n", "8", "--gpu-layers", ngl];
            args.extend(extra);
            cases.push(case(&args, Expect::Fails(NON_FINITE)));
        }
        cases.push(case(
            &["bench", m, "-p", "8", "-n", "4", "-r", "1", "--gpu-layers", ngl],
            Expect::Fails(NON_FINITE),
        ));
    }
    run_all(&cases);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Issue 21, bad 2 and the bad-flag corpus: sizes from the command line that overflow or
/// cannot be honoured are refused before anything is allocated, naming the flag and its range.
#[test]
fn bad_flags_are_refused_naming_the_flag() {
    let dir = scratch_dir("flags");
    let m = tiny();
    let m = m.to_str().unwrap();
    let missing_dir = dir.join("no/such/dir/out.bin");
    let missing = missing_dir.to_str().unwrap();
    let run = |extra: &[&str]| -> Vec<String> {
        let a = ["run", m, "--prompt", "hi", "-n", "2", "--gpu-layers", "0"];
        a.iter().chain(extra).map(|s| s.to_string()).collect()
    };
    let mut cases = vec![
        // Overflow: 4294967290 + 100 wrapped to a context of 102, then 17 GB were allocated.
        Case {
            not: Some("--ctx"),
            ..case(&["bench", m, "-p", "4294967290", "-n", "100"], Expect::Fails("-p"))
        },
        Case { not: Some("--ctx"), ..case(&["bench", m, "-n", "4294967295"], Expect::Fails("--n-gen")) },
        case(&["bench", m, "-p", "-5"], Expect::Fails("0 to 1048576")),
        case(&["bench", m, "-r", "0"], Expect::Fails("--repetitions")),
        case(&["profile", m, "--prompt", "hi", "-n", "18446744073709551615"], Expect::Fails("--n-predict")),
        case(&run(&["--ctx", "0"]), Expect::Fails("--ctx")),
        case(&["plan", m, "--ctx", "0"], Expect::Fails("context of 0 tokens")),
        case(&run(&["--ctx", "-1"]), Expect::Fails("1 or more")),
        case(&run(&["--ctx", "4294967296"]), Expect::Fails("--ctx")),
        case(&run(&["-b", "0"]), Expect::Fails("--batch-size")),
        case(&run(&["-b", "4294967295"]), Expect::Fails("--batch-size")),
        case(&run(&["-n", "-1"]), Expect::Fails("--n-predict")),
        // Negative and out-of-range sampling numbers: named, with the range, never accepted.
        case(&run(&["--temp=-1"]), Expect::Fails("--temp")),
        case(&run(&["--temp", "-1"]), Expect::Fails("0 or more")),
        case(&run(&["--temp", "nan"]), Expect::Fails("--temp")),
        case(&run(&["--top-p", "1.5"]), Expect::Fails("0 to 1")),
        case(&run(&["--min-p", "-0.1"]), Expect::Fails("--min-p")),
        case(&run(&["--top-k", "-1"]), Expect::Fails("--top-k")),
        case(&run(&["--repeat-penalty", "0"]), Expect::Fails("--repeat-penalty")),
        case(&run(&["--presence-penalty", "-3"]), Expect::Fails("-2 to 2")),
        case(&run(&["--threads", "-2"]), Expect::Fails("--threads")),
        case(&run(&["--memory-budget", "lots"]), Expect::Fails("--memory-budget")),
        case(&run(&["--gpu-layers", "many"]), Expect::Fails("--gpu-layers")),
        case(&run(&["--backend", "cuda"]), Expect::Fails("--backend")),
        case(&run(&["--logit-bias", "abc"]), Expect::Fails("")),
        case(&run(&["--prompt-tokens", "1,x"]), Expect::Fails("--prompt-tokens")),
        case(
            &["run", m, "--prompt-tokens", "999999", "-n", "1", "--gpu-layers", "0"],
            Expect::Fails("outside the vocabulary"),
        ),
        // Output paths are checked before the work.
        case(&run(&["--dump-logits", missing]), Expect::Fails("--dump-logits")),
        case(
            &["profile", m, "--prompt", "hi", "-n", "1", "--gpu-layers", "0", "--trace", missing],
            Expect::Fails("--trace"),
        ),
        // Environment variables are named in their errors.
        Case {
            env: vec![("WLLM_BACKEND", "cuda")],
            ..case(&["run", m, "--prompt", "hi", "-n", "1"], Expect::Fails("WLLM_BACKEND"))
        },
        Case {
            env: vec![("WLLM_GPU_MEMORY", "lots")],
            ..case(&["run", m, "--prompt", "hi", "-n", "1"], Expect::Fails("WLLM_GPU_MEMORY"))
        },
        // --chat-template: a file that is not there and no template either.
        case(
            &run(&["--chat", "--chat-template", "no-such-template.jinja"]),
            Expect::Fails("--chat-template"),
        ),
        // Files that are not models.
        case(&["run", "/no/such/model.gguf", "--prompt", "hi"], Expect::Fails("/no/such/model.gguf")),
        case(&["info", "/dev/null"], Expect::Fails("/dev/null")),
        case(&["run", data("models").to_str().unwrap(), "--prompt", "hi"], Expect::Fails("models")),
    ];
    if cfg!(not(target_vendor = "apple")) {
        // Metal cannot exist here: say so instead of advising a Vulkan driver.
        cases.push(Case {
            not: Some("lavapipe"),
            ..case(
                &["run", m, "--prompt", "hi", "-n", "1", "--backend", "metal"],
                Expect::Fails("Metal exists only on macOS"),
            )
        });
    }
    run_all(&cases);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Requests that are fine but need a word on stderr: capped threads, a context beyond the
/// trained one, the ChatML fallback, which chat template was used, why a run stopped.
#[test]
fn warnings_and_notes_reach_stderr() {
    let m = tiny();
    let m = m.to_str().unwrap();
    let run = |extra: &[&str]| -> Vec<String> {
        let a = ["run", m, "--prompt", "hi", "--gpu-layers", "0", "--temp", "0", "--ignore-eos"];
        a.iter().chain(extra).map(|s| s.to_string()).collect()
    };
    let cases = vec![
        // 1000 threads on a small machine made a run hang; capped with a warning.
        case(&run(&["-n", "4", "--threads", "1000"]), Expect::Succeeds("CPU threads asked for")),
        case(
            &run(&["-n", "4", "--ctx", "4096"]),
            Expect::Succeeds("more than the 2048 the model was trained for"),
        ),
        // tiny-llama has no template: ChatML is used, and said so.
        case(&run(&["-n", "4", "--chat"]), Expect::Succeeds("no chat template; using ChatML")),
        case(
            &run(&[
                "-n",
                "4",
                "--chat",
                "--chat-template",
                "{% for m in messages %}{{ m.content }}{% endfor %}",
            ]),
            Expect::Succeeds("chat template: the inline text"),
        ),
        case(&run(&["--ctx", "3", "-n", "50"]), Expect::Succeeds("the context of 3 tokens is full")),
    ];
    run_all(&cases);
}

/// Stop reasons in `--json` are the documented words, not Rust debug text.
#[test]
fn json_stop_reasons_are_stable_words() {
    let m = tiny();
    let m = m.to_str().unwrap();
    for (extra, want) in [(&["-n", "3"][..], "length"), (&["--ctx", "3", "-n", "50"], "context_full")] {
        let mut cmd = wllm();
        cmd.args(["run", m, "--prompt", "hi", "--gpu-layers", "0", "--temp", "0", "--json", "--ignore-eos"])
            .args(extra);
        let o = run_with_deadline("run --json", cmd, Duration::from_secs(60));
        assert_eq!(o.code, Some(0), "{}", o.stderr);
        let j: serde_json::Value = serde_json::from_str(o.stdout.trim().lines().last().unwrap()).unwrap();
        assert_eq!(j["stop_reason"], want, "{}", o.stdout);
    }
}

/// `wllm info M | head -1` and friends: a reader that leaves early is no panic.
#[test]
fn a_closed_stdout_is_no_panic() {
    let m = tiny();
    let m = m.to_str().unwrap();
    let commands: [&[&str]; 5] = [
        &["info", m],
        &["info", m, "--json"],
        &["tokenize", m, "hello world"],
        &["bench", m, "-p", "4", "-n", "2", "-r", "1", "--gpu-layers", "0"],
        &["profile", m, "--prompt", "hi", "-n", "2", "--gpu-layers", "0"],
    ];
    for args in commands {
        let mut child = wllm().args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        // Like `head -1`: read one line (or nothing), then close the pipe.
        let mut first = String::new();
        {
            let mut out = BufReader::new(child.stdout.take().unwrap());
            let _ = out.read_line(&mut first);
        }
        let mut err = String::new();
        child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        let status = child.wait().unwrap();
        assert!(!err.contains("panicked"), "wllm {}: {err}", args.join(" "));
        assert_eq!(status.code(), Some(0), "wllm {}: {status:?} {err}", args.join(" "));
    }
}

/// A FIFO as the model path is refused at once, not waited on in `open()`.
#[cfg(unix)]
#[test]
fn a_fifo_model_path_is_refused() {
    let dir = scratch_dir("fifo");
    let p = dir.join("model.gguf");
    if !Command::new("mkfifo").arg(&p).status().is_ok_and(|s| s.success()) {
        eprintln!("no mkfifo: skipped");
        return;
    }
    let p = p.to_str().unwrap();
    run_all(&[
        case(&["run", p, "--prompt", "hi"], Expect::Fails("FIFO")),
        case(&["info", p], Expect::Fails("FIFO")),
        case(&["plan", p], Expect::Fails("FIFO")),
        case(&["tokenize", p, "hi"], Expect::Fails("FIFO")),
    ]);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Issue 21, bad 4: a model file written in place or truncated while a session reads it from
/// its memory map is noticed at the next step, with an error naming the file, instead of
/// silently changed output or a SIGBUS.
#[test]
fn a_model_file_changed_in_use_is_an_error() {
    let dir = scratch_dir("changed");
    for how in ["overwrite", "truncate"] {
        let p = dir.join(format!("{how}.gguf"));
        std::fs::copy(tiny(), &p).unwrap();
        let mut child = wllm()
            .args(["chat", p.to_str().unwrap(), "-n", "4", "--temp", "0", "--gpu-layers", "0"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        writeln!(stdin, "hello").unwrap();
        let mut reply = String::new();
        out.read_line(&mut reply).unwrap();
        // Change the file the way `cp new.gguf model.gguf` would (same inode).
        let len = std::fs::metadata(&p).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        match how {
            "overwrite" => {
                std::thread::sleep(Duration::from_millis(20));
                use std::os::unix::fs::FileExt;
                f.write_all_at(&vec![0x7Fu8; 4096], len / 2).unwrap();
                f.set_modified(std::time::SystemTime::now() + Duration::from_secs(5)).unwrap();
            }
            _ => f.set_len(len / 3).unwrap(),
        }
        drop(f);
        let _ = writeln!(stdin, "again");
        drop(stdin);
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "{how}: hung");
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut err = String::new();
        child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        assert!(status.code().is_some_and(|c| c != 0), "{how}: {status:?} {err}");
        assert!(err.contains(p.to_str().unwrap()) && err.contains("while in use"), "{how}: {err}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
