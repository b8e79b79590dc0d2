//! `report` end to end: every analysis on a short real run, then the page opened in headless
//! Chromium, which must load every picture and show every section.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{mnist_dir, ok, short_run};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// Chromium: `$MNIST_AE_CHROMIUM`, else `chromium` or `chromium-browser` on the PATH.
fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("MNIST_AE_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    [
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        "/usr/bin/google-chrome",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

const SECTIONS: [&str; 13] = [
    "config",
    "model",
    "training",
    "eval",
    "denoise",
    "interpolate",
    "samples",
    "anomaly",
    "classify-logistic",
    "classify-svm",
    "classify-rbf",
    "classify-mlp",
    "tsne",
];

#[test]
fn report_renders_every_section_in_chromium() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    copy_dir(&short_run(), &run);
    let data = mnist_dir();
    let out = ok(&[
        "report",
        run.to_str().unwrap(),
        "--analyze",
        "--tsne-count",
        "500",
        "--data-dir",
        data.to_str().unwrap(),
        "--no-download",
    ]);
    assert!(out.contains("13 sections"), "{out}");
    // Each analysis's headline numbers as it finishes, the same as its JSON says, and the
    // report's path last.
    let eval: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("eval.json")).unwrap()).unwrap();
    let mse = format!("test MSE {:.6}", eval["test"]["mse"].as_f64().unwrap());
    let line = |name: &str| {
        out.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} line: {out}"))
            .to_string()
    };
    assert!(line("eval ").contains(&mse), "{out}");
    for kind in ["logistic", "svm", "rbf", "mlp"] {
        let report: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(
                run.join(format!("classify-{kind}/classification_report.json")),
            )
            .unwrap(),
        )
        .unwrap();
        let acc = format!(
            "test accuracy {:.2}%",
            100.0 * report["report"]["accuracy"].as_f64().unwrap()
        );
        assert!(line(&format!("classify {kind}")).contains(&acc), "{out}");
    }
    assert!(line("t-SNE").contains("500 test codes mapped"), "{out}");
    assert!(
        out.trim_end().lines().last().unwrap().starts_with("wrote "),
        "{out}"
    );
    let html = std::fs::read_to_string(run.join("report.html")).unwrap();
    for s in SECTIONS {
        assert!(
            html.contains(&format!("<section id=\"{s}\">")),
            "section {s} missing"
        );
    }
    assert_eq!(
        html.matches("data:image/png;base64,").count(),
        12,
        "embedded pictures"
    );

    let Some(chrome) = chromium() else {
        assert!(
            std::env::var_os("MNIST_AE_SKIP_BROWSER").is_some(),
            "Chromium not found: install it (Debian: apt-get install chromium), point MNIST_AE_CHROMIUM at it, \
             or set MNIST_AE_SKIP_BROWSER=1 to skip the browser check"
        );
        eprintln!("SKIPPED the Chromium check (MNIST_AE_SKIP_BROWSER is set)");
        return;
    };
    // A copy with a probe that records, after load, how many sections are visible and
    // whether every picture decoded.
    let probe = "<script>window.addEventListener('load',()=>{const imgs=[...document.images];\
        const bad=imgs.filter(i=>!(i.complete&&i.naturalWidth>0)).length;\
        const vis=[...document.querySelectorAll('section')].filter(s=>s.getBoundingClientRect().height>0).map(s=>s.id);\
        document.body.setAttribute('data-probe',`images=${imgs.length} broken=${bad} sections=${vis.join(',')}`);});</script>";
    let probed = tmp.path().join("probed.html");
    std::fs::write(&probed, html.replace("</body>", &format!("{probe}</body>"))).unwrap();
    let profile = tmp.path().join("profile");
    let flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--virtual-time-budget=5000",
    ];
    let user_dir = format!("--user-data-dir={}", profile.display());
    let url = format!("file://{}", probed.display());
    let dom = Command::new(&chrome)
        .args(flags)
        .arg(&user_dir)
        .arg("--dump-dom")
        .arg(&url)
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&dom.stdout);
    let want = format!("images=12 broken=0 sections={}", SECTIONS.join(","));
    assert!(
        dom.contains(&want),
        "Chromium probe: expected '{want}' in the DOM; got {}",
        dom.lines()
            .find(|l| l.contains("data-probe"))
            .unwrap_or("no probe")
    );
    // A screenshot for people to look at.
    let shot = std::env::temp_dir().join("mnist-ae-report-test.png");
    let s = Command::new(&chrome)
        .args(flags)
        .arg(&user_dir)
        .arg(format!("--screenshot={}", shot.display()))
        .arg("--window-size=1200,3000")
        .arg(format!("file://{}", run.join("report.html").display()))
        .output()
        .unwrap();
    assert!(
        s.status.success()
            && std::fs::metadata(&shot)
                .map(|m| m.len() > 10_000)
                .unwrap_or(false)
    );
    eprintln!("report screenshot: {}", shot.display());
}
