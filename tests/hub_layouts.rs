//! Loading from the hub in every checkpoint layout, against a local server that answers as the
//! Hugging Face hub does for hf-hub's client (no network): `model.safetensors`, only
//! `pytorch_model.bin`, `pytorch_model.bin` shards, and weights only on a `refs/pr/1` revision;
//! files come back from the cache offline; when no weights are found, every file tried is named.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

const TINY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tiny-a");
const TINY_PTH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tiny-a-pth");

/// Files of one revision of one repository, by name.
type Revision = HashMap<String, Vec<u8>>;

/// A hub imitation: `GET /{owner}/{name}/resolve/{revision}/{file}` with `Range` requests, the
/// `etag` and `x-repo-commit` headers hf-hub reads, and 404 for what is absent.
struct Hub {
    endpoint: String,
    /// Paths asked for, in order.
    log: Arc<Mutex<Vec<String>>>,
}

impl Hub {
    fn start(repos: HashMap<(String, String), Revision>) -> Hub {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let log = Arc::new(Mutex::new(Vec::new()));
        let (repos, served) = (Arc::new(repos), log.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (repos, served) = (repos.clone(), served.clone());
                std::thread::spawn(move || answer(stream, &repos, &served));
            }
        });
        Hub { endpoint, log }
    }

    fn requests(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

/// FNV-1a of `bytes`.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// A revision's commit hash, as the hub sends it in `x-repo-commit` (40 hex digits).
fn commit_of(revision: &str) -> String {
    let h = fnv(revision.as_bytes());
    format!("{h:016x}{h:016x}{:08x}", h as u32)
}

fn answer(
    mut stream: TcpStream,
    repos: &HashMap<(String, String), Revision>,
    log: &Mutex<Vec<String>>,
) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request = String::new();
    if reader.read_line(&mut request).is_err() {
        return;
    }
    let mut range = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("range") {
                range = v.trim().strip_prefix("bytes=").map(str::to_string);
            }
        }
    }
    let path = request.split_whitespace().nth(1).unwrap_or("").to_string();
    log.lock().unwrap().push(path.clone());
    // /{owner}/{name}/resolve/{revision, '/' sent as %2F}/{file}
    let parts: Vec<&str> = path.trim_start_matches('/').splitn(5, '/').collect();
    let found = match parts.as_slice() {
        [owner, name, "resolve", rev, file] => {
            let rev = rev.replace("%2F", "/");
            repos
                .get(&(format!("{owner}/{name}"), rev.clone()))
                .and_then(|files| files.get(*file))
                .map(|bytes| (bytes, rev))
        }
        _ => None,
    };
    let Some((bytes, rev)) = found else {
        let _ = stream.write_all(
            b"HTTP/1.1 404 Not Found\r\nx-error-code: EntryNotFound\r\ncontent-length: 15\r\n\
              connection: close\r\n\r\nEntry not found",
        );
        return;
    };
    let size = bytes.len();
    // "a-b" or "a-": the bytes asked for.
    let (start, end) = match range.as_deref().and_then(|r| r.split_once('-')) {
        Some((a, b)) => (
            a.parse().unwrap_or(0),
            b.parse::<usize>().map_or(size, |b| (b + 1).min(size)),
        ),
        None => (0, size),
    };
    let body = &bytes[start.min(size)..end.max(start).min(size)];
    // The content's hash: hf-hub names the cached blob after it.
    let etag = format!("{:016x}", fnv(bytes));
    let head = format!(
        "HTTP/1.1 206 Partial Content\r\netag: \"{etag}\"\r\nx-repo-commit: {}\r\n\
         content-range: bytes {start}-{}/{size}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        commit_of(&rev),
        end.saturating_sub(1),
        body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body);
}

/// `names` read from `dir`.
fn files(dir: &str, names: &[&str]) -> Revision {
    names
        .iter()
        .map(|n| {
            (
                n.to_string(),
                std::fs::read(Path::new(dir).join(n)).unwrap(),
            )
        })
        .collect()
}

const TEXT_FILES: [&str; 3] = ["config.json", "tokenizer.json", "generation_config.json"];

fn repos() -> HashMap<(String, String), Revision> {
    let key = |repo: &str, rev: &str| (repo.to_string(), rev.to_string());
    let mut safetensors = files(TINY, &TEXT_FILES);
    safetensors.extend(files(TINY, &["model.safetensors"]));
    let mut bin = files(TINY, &TEXT_FILES);
    bin.extend(files(TINY_PTH, &["pytorch_model.bin"]));
    let mut shards = files(TINY, &TEXT_FILES);
    shards.extend(files(
        TINY_PTH,
        &[
            "pytorch_model.bin.index.json",
            "pytorch_model-00001-of-00002.bin",
            "pytorch_model-00002-of-00002.bin",
        ],
    ));
    HashMap::from([
        (key("test/tiny-st", "main"), safetensors.clone()),
        (key("test/tiny-bin", "main"), bin),
        (key("test/tiny-shards", "main"), shards),
        // Main holds no weights; the pull request adds them.
        (key("test/tiny-pr", "main"), files(TINY, &TEXT_FILES)),
        (key("test/tiny-pr", "refs/pr/1"), safetensors),
    ])
}

/// Runs baton against `hub` (or offline when `hub` is `None`) with the hub cache in `home`.
fn baton(hub: Option<&Hub>, home: &Path, args: &[&str]) -> Output {
    let bin = std::env::var("BATON_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_baton").into());
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .env("NO_COLOR", "1")
        .env("HF_HOME", home)
        .env_remove("HF_TOKEN")
        .env_remove("HF_HUB_OFFLINE");
    // hf-hub's client honours proxy variables: the local hub must be reached directly.
    for proxy in ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"] {
        cmd.env_remove(proxy).env_remove(proxy.to_lowercase());
    }
    match hub {
        Some(hub) => cmd.env("HF_ENDPOINT", &hub.endpoint),
        // CI sets HF_HUB_OFFLINE=1 for every test; the online runs above unset it.
        None => cmd
            .env("HF_HUB_OFFLINE", "1")
            .env("HF_ENDPOINT", "http://127.0.0.1:9"),
    };
    cmd.output().unwrap()
}

fn ok(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The parameter lines of `baton info` (the same weights give the same lines).
fn weight_lines(info: &str) -> Vec<String> {
    info.lines()
        .filter(|l| l.starts_with("weights"))
        .map(str::to_string)
        .collect()
}

/// Renders a short greedy take with `model` into `out` and returns its bytes.
fn render(hub: Option<&Hub>, home: &Path, model: &[&str], out: &Path) -> Vec<u8> {
    let mut args = vec![
        "render",
        "--prompt",
        "a tone",
        "--max-new-tokens",
        "12",
        "--greedy",
    ];
    args.extend_from_slice(model);
    args.extend_from_slice(&["--out", out.to_str().unwrap()]);
    ok(&baton(hub, home, &args));
    std::fs::read(out).unwrap()
}

#[test]
fn every_weight_layout_loads_from_the_hub_and_again_offline() {
    let hub = Hub::start(repos());
    let home = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let h = home.path();

    let st = ok(&baton(Some(&hub), h, &["info", "--model", "test/tiny-st"]));
    assert!(!weight_lines(&st).is_empty(), "{st}");
    let want = render(
        Some(&hub),
        h,
        &["--model", "test/tiny-st"],
        &dir.path().join("st.wav"),
    );

    for repo in ["test/tiny-bin", "test/tiny-shards"] {
        let info = ok(&baton(Some(&hub), h, &["info", "--model", repo]));
        assert_eq!(weight_lines(&info), weight_lines(&st), "{repo}");
        // The same weights make the same take.
        let wav = dir.path().join(format!("{}.wav", &repo[5..]));
        assert_eq!(
            render(Some(&hub), h, &["--model", repo], &wav),
            want,
            "{repo}"
        );
        // From the cache alone.
        let offline = ok(&baton(None, h, &["info", "--model", repo]));
        assert_eq!(weight_lines(&offline), weight_lines(&st), "{repo} offline");
    }
    // The safetensors repo was never asked for a PyTorch file; the .bin one found nothing before
    // pytorch_model.bin; the sharded one took its index and both shards.
    let asked = hub.requests();
    let asked_for = |repo: &str, file: &str| {
        asked
            .iter()
            .any(|p| p == &format!("/{repo}/resolve/main/{file}"))
    };
    assert!(!asked_for("test/tiny-st", "pytorch_model.bin"), "{asked:?}");
    assert!(
        asked_for("test/tiny-bin", "model.safetensors.index.json"),
        "{asked:?}"
    );
    assert!(
        asked_for("test/tiny-shards", "pytorch_model-00002-of-00002.bin"),
        "{asked:?}"
    );
    assert!(
        asked_for("test/tiny-shards", "pytorch_model.bin.index.json"),
        "{asked:?}"
    );
}

#[test]
fn a_revision_is_fetched_and_reused_and_missing_weights_name_every_file_tried() {
    let hub = Hub::start(repos());
    let home = tempfile::tempdir().unwrap();
    let h = home.path();

    let out = baton(Some(&hub), h, &["info", "--model", "test/tiny-pr"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    for name in [
        "model.safetensors",
        "model.safetensors.index.json",
        "pytorch_model.bin",
        "pytorch_model.bin.index.json",
    ] {
        assert!(stderr.contains(name), "{stderr}");
    }
    assert!(stderr.contains("test/tiny-pr"), "{stderr}");

    let rev = ["--model", "test/tiny-pr", "--revision", "refs/pr/1"];
    let info = ok(&baton(Some(&hub), h, &[&["info"][..], &rev].concat()));
    assert!(info.contains("test/tiny-pr@refs/pr/1"), "{info}");
    assert!(
        hub.requests()
            .contains(&"/test/tiny-pr/resolve/refs%2Fpr%2F1/model.safetensors".to_string()),
        "{:?}",
        hub.requests()
    );
    // Offline, from the cache, on a verb that loads the model.
    let dir = tempfile::tempdir().unwrap();
    render(None, h, &rev, &dir.path().join("pr.wav"));
    // `baton fad` takes the revision too (its codec comes from the same cache).
    for (k, hz) in [(0, 220.0f32), (1, 330.0)] {
        let clip: Vec<f32> = (0..3200)
            .map(|i| (i as f32 / 32000.0 * hz * std::f32::consts::TAU).sin() * 0.3)
            .collect();
        let path = dir.path().join(format!("set/t{k}.wav"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        baton::audio::write_wav(&path, &clip, 32000, baton::audio::SampleFormat::Float32).unwrap();
    }
    let set = dir.path().join("set");
    let set = set.to_str().unwrap();
    let fad = ok(&baton(None, h, &[&["fad", set, set][..], &rev].concat()));
    assert!(fad.contains("encodec (16 dimensions)"), "{fad}");
    // Main still has no weights offline either: the revision is not mixed up with it.
    let out = baton(None, h, &["info", "--model", "test/tiny-pr"]);
    assert!(!out.status.success());
    // A revision on a local folder is refused.
    let out = baton(None, h, &["info", "--model", TINY, "--revision", "main"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("local folder"), "{stderr}");
}

#[test]
fn a_local_folder_with_pytorch_weights_loads_the_same_model() {
    let home = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (from, names) in [
        (TINY, &TEXT_FILES[..]),
        (TINY_PTH, &["pytorch_model.bin"][..]),
    ] {
        for n in names {
            std::fs::copy(Path::new(from).join(n), dir.path().join(n)).unwrap();
        }
    }
    let folder = dir.path().to_str().unwrap();
    let want = ok(&baton(None, home.path(), &["info", "--model", TINY]));
    let got = ok(&baton(None, home.path(), &["info", "--model", folder]));
    assert_eq!(weight_lines(&got), weight_lines(&want));
    // Without weights, the folder's error names every layout tried.
    std::fs::remove_file(dir.path().join("pytorch_model.bin")).unwrap();
    let out = baton(None, home.path(), &["info", "--model", folder]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("tried model.safetensors, model.safetensors.index.json, pytorch_model.bin, pytorch_model.bin.index.json"),
        "{stderr}"
    );
}
