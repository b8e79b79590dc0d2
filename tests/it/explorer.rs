//! The explorer (`serve`) over HTTP, in a real browser (headless Chromium driven through
//! chromedriver), and `reconstruct` on a picture file.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::{json, Value};

use crate::common::{mnist_dir, ok, short_run};

/// A running `mnist-ae serve`, stopped when dropped.
struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A copy of the shared short run, named `run`, so that what the explorer writes into a run
/// folder (its classifier cache) stays out of the run other tests read.
fn copy_run(into: &Path) -> PathBuf {
    let run = into.join("run");
    std::fs::create_dir(&run).unwrap();
    for f in ["config.json", "model.safetensors", "metrics.jsonl"] {
        std::fs::copy(short_run().join(f), run.join(f)).unwrap();
    }
    run
}

/// Starts `serve` on a free port and waits for the line that gives its address.
fn serve(runs: &[&Path]) -> Server {
    let data = mnist_dir();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mnist-ae"));
    cmd.arg("serve");
    cmd.args(runs);
    cmd.args(["--port", "0", "--no-download", "--data-dir"])
        .arg(&data);
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting mnist-ae serve");
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    Server { child, url }
}

/// Status and JSON body of an answer, error statuses included.
fn answer(url: &str, r: Result<ureq::Response, ureq::Error>) -> (u16, Value) {
    let r = match r {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{url}: {e}"),
    };
    (
        r.status(),
        serde_json::from_str(&r.into_string().unwrap()).unwrap(),
    )
}

fn get(url: &str) -> (u16, Value) {
    answer(url, ureq::get(url).call())
}

fn post(url: &str, body: &str) -> (u16, Value) {
    let r = ureq::post(url)
        .set("Content-Type", "application/json")
        .send_string(body);
    answer(url, r)
}

/// A POST that declares a body over the explorer's limit; the answer is read before any body
/// is sent (the server refuses on the declared length, and may close the connection without
/// reading a body, which would break a client still writing one).
fn oversized(base: &str, path: &str) -> (u16, Value) {
    use std::io::{Read, Write};
    let addr = base.trim_start_matches("http://").trim_end_matches('/');
    let mut tcp = std::net::TcpStream::connect(addr).unwrap();
    write!(
        tcp,
        "POST /{path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: 300000\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).unwrap();
    let status = answer.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or("");
    (
        status,
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {answer}")),
    )
}

/// The API answers a real run's images sensibly, and every bad request with a 4xx and one
/// line of JSON.
#[test]
fn the_api_reconstructs_decodes_maps_and_refuses_bad_requests() {
    let tmp = tempfile::tempdir().unwrap();
    let run = copy_run(tmp.path());
    let s = serve(&[&run]);
    let u = &s.url;
    let (st, runs) = get(&format!("{u}api/runs"));
    assert_eq!(st, 200);
    assert_eq!(runs[0]["name"], "run");
    assert_eq!(runs[0]["latent_dim"], 16);
    let (_, t) = get(&format!("{u}api/run/test/0"));
    let label = t["label"].as_u64().unwrap() as usize;
    let pixels = t["pixels"].clone();
    let (st, r) = post(
        &format!("{u}api/run/reconstruct"),
        &json!({ "pixels": pixels }).to_string(),
    );
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["reconstruction"].as_array().unwrap().len(), 784);
    let (c1, c2): (Vec<f64>, Vec<f64>) = (
        serde_json::from_value(r["code"].clone()).unwrap(),
        serde_json::from_value(t["code"].clone()).unwrap(),
    );
    assert!(
        c1.iter().zip(&c2).all(|(a, b)| (a - b).abs() <= 1e-4 * (1.0 + b.abs())),
        "the code of a test image is its stored code (up to rounding between batch sizes): {c1:?} {c2:?}"
    );
    let p: Vec<f64> = serde_json::from_value(r["probabilities"].clone()).unwrap();
    assert_eq!(p.len(), 10);
    assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-6);
    let best = p
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .unwrap()
        .0;
    assert_eq!(
        best, label,
        "the first test image (a 7) is classified right: {p:?}"
    );
    let pct = r["anomaly"]["percentile"].as_f64().unwrap();
    assert!((0.0..=100.0).contains(&pct), "{r}");
    let nb = r["neighbours"].as_array().unwrap();
    assert_eq!(nb.len(), 8);
    let d: Vec<f64> = nb.iter().map(|n| n["distance"].as_f64().unwrap()).collect();
    assert!(d.windows(2).all(|w| w[0] <= w[1]), "nearest first: {d:?}");

    // Decoding the code gives the reconstruction.
    let (st, dec) = post(
        &format!("{u}api/run/decode"),
        &json!({ "code": r["code"] }).to_string(),
    );
    assert_eq!(st, 200);
    let a: Vec<f64> = serde_json::from_value(dec["pixels"].clone()).unwrap();
    let b: Vec<f64> = serde_json::from_value(r["reconstruction"].clone()).unwrap();
    assert!(a.iter().zip(&b).all(|(x, y)| (x - y).abs() < 1e-5));

    let (st, m) = get(&format!("{u}api/run/map"));
    assert_eq!(st, 200);
    assert_eq!(m["points"].as_array().unwrap().len(), 10_000);
    assert_eq!(m["pca"]["axes"].as_array().unwrap().len(), 8);
    let (st, md) = get(&format!("{u}api/run/map/decode?x=0.5&y=-0.25"));
    assert_eq!(
        (st, md["method"].as_str()),
        (200, Some("pca-inverse")),
        "{md}"
    );
    let (st, h) = get(&format!("{u}api/run/metrics"));
    assert_eq!(st, 200);
    assert_eq!(h["history"].as_array().unwrap().len(), 2);
    // An epoch that ends while the explorer runs (a run still training) shows at once.
    let metrics = run.join("metrics.jsonl");
    let text = std::fs::read_to_string(&metrics).unwrap();
    let last = text
        .lines()
        .last()
        .unwrap()
        .replace("\"epoch\":2", "\"epoch\":3");
    std::fs::write(&metrics, format!("{text}{last}\n")).unwrap();
    let (_, h) = get(&format!("{u}api/run/metrics"));
    assert_eq!(h["history"][2]["epoch"], 3, "{h}");

    // Bad requests.
    let one_line = |(st, v): (u16, Value), want: u16, says: &str| {
        assert_eq!(st, want, "{v}");
        let e = v["error"].as_str().unwrap_or_else(|| panic!("{v}"));
        assert!(!e.contains('\n') && e.contains(says), "{e}");
    };
    one_line(
        post(&format!("{u}api/run/reconstruct"), r#"{"pixels":[0.5]}"#),
        400,
        "expected 784",
    );
    one_line(
        post(&format!("{u}api/run/reconstruct"), "{nope"),
        400,
        "malformed JSON",
    );
    let big = format!(r#"{{"pixels":[{}]}}"#, vec!["2.0"; 784].join(","));
    one_line(
        post(&format!("{u}api/run/reconstruct"), &big),
        400,
        "not in 0..1",
    );
    one_line(
        post(&format!("{u}api/run/decode"), r#"{"code":[1,2]}"#),
        400,
        "expected 16",
    );
    one_line(oversized(u, "api/run/decode"), 413, "limit");
    one_line(
        post(&format!("{u}api/other/decode"), r#"{"code":[]}"#),
        404,
        "no run named 'other'",
    );
    one_line(
        get(&format!("{u}api/run/test/10000")),
        404,
        "no test image 10000",
    );
    one_line(
        get(&format!("{u}api/run/map/decode?x=nan&y=1")),
        400,
        "finite",
    );
    for index in ["-1", "abc", "99999999999999999999999"] {
        one_line(
            get(&format!("{u}api/run/test/{index}")),
            400,
            "not an index",
        );
    }
    one_line(get(&format!("{u}api/run/decode")), 405, "does not take GET");
    let huge = format!(r#"{{"code":[1e300{}]}}"#, ",0".repeat(15));
    one_line(
        post(&format!("{u}api/run/decode"), &huge),
        400,
        "code[0] is too large",
    );
    one_line(
        post(&format!("{u}api/run/decode"), r#"{"code":"all"}"#),
        400,
        "not what this endpoint takes",
    );
    one_line(get(&format!("{u}../../etc/passwd")), 404, "no such page");
    // Still serving after all that.
    assert_eq!(get(&format!("{u}api/runs")).0, 200);
    drop(s);

    // The classifier was saved in the run folder and serves the next start, to the bit.
    let cache = run.join("explorer-classifier.json");
    let text = std::fs::read_to_string(&cache).unwrap();
    assert!(text.contains("weights_sha256"), "{text}");
    let s2 = serve(&[&run]);
    let (_, r2) = post(
        &format!("{}api/run/reconstruct", s2.url),
        &json!({ "pixels": pixels }).to_string(),
    );
    assert_eq!(r2["probabilities"], r["probabilities"]);
    assert_eq!(
        std::fs::read_to_string(&cache).unwrap(),
        text,
        "read, not refitted"
    );
}

/// A WebDriver session on chromedriver (the W3C protocol over HTTP).
struct Browser {
    driver: Child,
    base: String,
    session: String,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = ureq::delete(&format!("{}/session/{}", self.base, self.session)).call();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn chromedriver() -> Option<PathBuf> {
    std::env::var_os("MNIST_AE_CHROMEDRIVER")
        .map(PathBuf::from)
        .or_else(|| Some(PathBuf::from("/usr/bin/chromedriver")).filter(|p| p.exists()))
}

impl Browser {
    fn start(profile: &Path) -> Browser {
        let exe = chromedriver().expect(
            "chromedriver not found: run the tests with scripts/test.sh (it installs it), \
             install it (Debian: apt-get install chromium-driver), or point MNIST_AE_CHROMEDRIVER at it",
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut driver = Command::new(exe)
            .arg(format!("--port={port}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting chromedriver");
        // chromedriver prints "... started successfully on port N" when it listens.
        let out = driver.stdout.take().unwrap();
        let mut lines = BufReader::new(out).lines();
        loop {
            match lines.next() {
                Some(Ok(l)) if l.contains("successfully") => break,
                Some(Ok(_)) => continue,
                _ => panic!("chromedriver did not start"),
            }
        }
        let base = format!("http://127.0.0.1:{port}");
        let caps = json!({"capabilities": {"alwaysMatch": {
            "goog:chromeOptions": {
                "binary": std::env::var("MNIST_AE_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()),
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                         "--no-first-run", "--disable-background-networking",
                         "--disable-component-update", "--disable-sync",
                         "--window-size=1400,1200",
                         format!("--user-data-dir={}", profile.display())]
            }
        }}});
        let (st, v) = post(&format!("{base}/session"), &caps.to_string());
        assert_eq!(st, 200, "new session: {v}");
        let session = v["value"]["sessionId"].as_str().unwrap().to_string();
        Browser {
            driver,
            base,
            session,
        }
    }

    fn cmd(&self, path: &str, body: Value) -> Value {
        let (st, v) = post(
            &format!("{}/session/{}/{path}", self.base, self.session),
            &body.to_string(),
        );
        assert_eq!(st, 200, "{path}: {v}");
        v["value"].clone()
    }

    fn js(&self, script: &str) -> Value {
        self.cmd("execute/sync", json!({"script": script, "args": []}))
    }

    /// Waits (up to a minute) until `script` returns true: the page's own answer, no sleeps.
    fn until(&self, what: &str, script: &str) {
        self.cmd("timeouts", json!({"script": 60_000}));
        let v = self.cmd(
            "execute/async",
            json!({"script": format!(
                "const done = arguments[arguments.length - 1];
                 const t0 = Date.now();
                 (function poll() {{
                   let ok = false; try {{ ok = !!(function() {{ {script} }})(); }} catch (e) {{}}
                   if (ok) done(true); else if (Date.now() - t0 > 55000) done(false); else requestAnimationFrame(poll);
                 }})();"), "args": []}),
        );
        assert_eq!(v, json!(true), "timed out waiting for {what}");
    }

    fn element(&self, css: &str) -> Value {
        self.cmd("element", json!({"using": "css selector", "value": css}))
    }

    fn pointer(&self, actions: Vec<Value>) {
        self.cmd(
            "actions",
            json!({"actions": [{"type": "pointer", "id": "mouse", "parameters": {"pointerType": "mouse"}, "actions": actions}]}),
        );
    }
}

/// Drawing a stroke on the canvas shows each run's reconstruction and probabilities; moving
/// over the map decodes what is under the pointer; a slider changes the decoded image.
#[test]
fn the_page_draws_maps_and_slides_in_chromium() {
    if chromedriver().is_none() && std::env::var_os("MNIST_AE_SKIP_BROWSER").is_some() {
        eprintln!("SKIPPED the explorer page in Chromium (MNIST_AE_SKIP_BROWSER is set)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let run = copy_run(tmp.path());
    let s = serve(&[&run]);
    let b = Browser::start(&tmp.path().join("profile"));
    b.cmd("url", json!({"url": s.url}));
    b.until(
        "the map and sliders",
        "return document.querySelectorAll('#sliders input').length === 8",
    );

    // A vertical stroke: a "1".
    let pad = b.element("#pad");
    let key = "element-6066-11e4-a52e-4f735466cecf";
    let origin = json!({ key: pad[key] });
    let mut acts = vec![
        json!({"type": "pointerMove", "origin": origin, "x": 0, "y": -90, "duration": 0}),
        json!({"type": "pointerDown", "button": 0}),
    ];
    for y in (-80..=90).step_by(10) {
        acts.push(json!({"type": "pointerMove", "origin": origin, "x": 2, "y": y, "duration": 20}));
    }
    acts.push(json!({"type": "pointerUp", "button": 0}));
    b.pointer(acts);
    b.until(
        "a reconstruction with probabilities",
        "const r = document.querySelector('#results .result'); return r && r.querySelector('canvas.recon') && r.querySelectorAll('.bar').length === 10 && r.querySelectorAll('.nb').length === 8",
    );
    let ink = b.js("const c = document.querySelector('#results canvas.recon'); const d = c.getContext('2d').getImageData(0,0,c.width,c.height).data; let s = 0; for (let i = 0; i < d.length; i += 4) s += d[i]; return s / (d.length / 4);");
    assert!(
        ink.as_f64().unwrap() > 5.0,
        "the reconstruction of a stroke is not black: {ink}"
    );

    // Two places on the map decode to two different images.
    let map = b.element("#map");
    let morigin = json!({ key: map[key] });
    let snapshot = "return document.getElementById('map-dec').toDataURL()";
    b.pointer(vec![
        json!({"type": "pointerMove", "origin": morigin, "x": -120, "y": 0, "duration": 0}),
    ]);
    b.until(
        "a decoded map point",
        "return document.getElementById('map-method').textContent.length > 0",
    );
    let first = b.js(snapshot);
    b.pointer(vec![
        json!({"type": "pointerMove", "origin": morigin, "x": 150, "y": 120, "duration": 0}),
    ]);
    b.until(
        "another decoded map point",
        &format!("return document.getElementById('map-dec').toDataURL() !== {first}"),
    );

    // A slider moves the decoded code.
    let before = b.js("return document.getElementById('slider-dec').toDataURL()");
    b.js("const s = document.querySelector('#sliders input'); s.value = 3; s.dispatchEvent(new Event('input'));");
    b.until(
        "the slider's decoded image to change",
        &format!("return document.getElementById('slider-dec').toDataURL() !== {before}"),
    );
    assert_eq!(
        b.js("return document.getElementById('error').textContent"),
        json!("")
    );
}

/// `reconstruct` reads a picture of one's own (dark ink on white, any size) and reports it.
#[test]
fn reconstruct_reads_a_picture_of_ones_own() {
    let tmp = tempfile::tempdir().unwrap();
    let run = copy_run(tmp.path());
    // A test image of MNIST (a 7), turned into dark ink on white and enlarged 4×.
    let (_, data) = {
        let r = mnist_ae::run::Run::open(&run, &burn::tensor::Device::flex()).unwrap();
        let d = r.data(Some(&mnist_dir()), false).unwrap();
        ((), d)
    };
    let img = image::GrayImage::from_fn(112, 112, |x, y| {
        image::Luma([255 - data.test.image(0)[(y / 4 * 28 + x / 4) as usize]])
    });
    let file = tmp.path().join("seven.png");
    img.save(&file).unwrap();
    let out = tmp.path().join("out");
    let text = ok(&[
        "reconstruct",
        run.to_str().unwrap(),
        file.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--data-dir",
        mnist_dir().to_str().unwrap(),
        "--no-download",
    ]);
    assert!(text.contains("seven.png: 7"), "{text}");
    let j: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("reconstruct.json")).unwrap())
            .unwrap();
    assert_eq!(j[0]["class"], "7");
    assert_eq!(j[0]["code"].as_array().unwrap().len(), 16);
    assert!(out.join("reconstruct-seven.png").exists());
    let e = crate::common::fails(&[
        "reconstruct",
        run.to_str().unwrap(),
        run.join("config.json").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        e.contains("config.json") && e.contains("not a picture"),
        "{e}"
    );
    // A picture that cannot be read stops the command before any is written.
    let later = tmp.path().join("later");
    let e = crate::common::fails(&[
        "reconstruct",
        run.to_str().unwrap(),
        file.to_str().unwrap(),
        run.join("config.json").to_str().unwrap(),
        "--out",
        later.to_str().unwrap(),
    ]);
    assert!(e.contains("not a picture"), "{e}");
    assert!(!later.exists(), "nothing written, no folder left");
    // Two pictures of the same name from different folders get pictures of their own.
    std::fs::create_dir(tmp.path().join("sub")).unwrap();
    let twin = tmp.path().join("sub").join("seven.png");
    std::fs::copy(&file, &twin).unwrap();
    let both = tmp.path().join("both");
    ok(&[
        "reconstruct",
        run.to_str().unwrap(),
        file.to_str().unwrap(),
        twin.to_str().unwrap(),
        "--out",
        both.to_str().unwrap(),
        "--data-dir",
        mnist_dir().to_str().unwrap(),
        "--no-download",
    ]);
    let j: Value =
        serde_json::from_str(&std::fs::read_to_string(both.join("reconstruct.json")).unwrap())
            .unwrap();
    let pngs: Vec<&str> = (0..2).map(|i| j[i]["png"].as_str().unwrap()).collect();
    assert_ne!(pngs[0], pngs[1]);
    assert!(
        pngs.iter().all(|p| std::path::Path::new(p).exists()),
        "{pngs:?}"
    );
}
