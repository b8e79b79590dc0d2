"""Screenshots of the explorer's panels for the README, taken from the real page in headless
Chromium through chromedriver (WebDriver over HTTP, standard library only).

    python3 bench/explorer_screenshots.py target/release/mnist-ae docs/images RUN [RUN…]

Starts `mnist-ae serve RUN… --port 0`, draws a digit on the canvas, hovers the map, moves two
sliders, then saves explorer-draw.png, explorer-map.png, explorer-sliders.png and
explorer-training.png into the output folder.
"""
import base64
import json
import os
import socket
import subprocess
import sys
import tempfile
import urllib.request

KEY = "element-6066-11e4-a52e-4f735466cecf"


def http(method, url, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read())["value"]


def main():
    binary, out, runs = sys.argv[1], sys.argv[2], sys.argv[3:]
    server = subprocess.Popen([binary, "serve", *runs, "--port", "0", "--no-download"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    driver = subprocess.Popen(["chromedriver", f"--port={port}"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        url = next(w for w in server.stdout.readline().split() if w.startswith("http://"))
        while "successfully" not in driver.stdout.readline():
            pass
        base = f"http://127.0.0.1:{port}"
        profile = tempfile.mkdtemp()
        caps = {"capabilities": {"alwaysMatch": {"goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": [
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--window-size=1500,3000", "--hide-scrollbars", f"--user-data-dir={profile}"]}}}}
        sid = http("POST", f"{base}/session", caps)["sessionId"]
        S = f"{base}/session/{sid}"
        cmd = lambda path, body: http("POST", f"{S}/{path}", body)  # noqa: E731
        http("POST", f"{S}/timeouts", {"script": 60000})

        def until(script):
            ok = cmd("execute/async", {"script": "const done = arguments[arguments.length-1]; const t0 = Date.now();"
                     f"(function p(){{let ok=false; try {{ ok = !!(function(){{ {script} }})(); }} catch(e) {{}}"
                     "if (ok) done(true); else if (Date.now()-t0 > 55000) done(false); else requestAnimationFrame(p);})();", "args": []})
            assert ok, script

        def element(css):
            return cmd("element", {"using": "css selector", "value": css})

        def pointer(actions):
            cmd("actions", {"actions": [{"type": "pointer", "id": "m", "parameters": {"pointerType": "mouse"}, "actions": actions}]})

        cmd("url", {"url": url})
        until("return document.querySelectorAll('#sliders input').length === 8")
        pad = {KEY: element("#pad")[KEY]}
        # A "2": an arc over the top, a diagonal down to the left, a stroke along the bottom.
        pts = [(-60, -60), (-40, -85), (0, -95), (40, -85), (60, -55), (50, -20), (20, 15), (-20, 50), (-60, 85),
               (-20, 85), (20, 85), (60, 85), (75, 85)]
        acts = [{"type": "pointerMove", "origin": pad, "x": pts[0][0], "y": pts[0][1], "duration": 0},
                {"type": "pointerDown", "button": 0}]
        acts += [{"type": "pointerMove", "origin": pad, "x": x, "y": y, "duration": 40} for x, y in pts[1:]]
        acts += [{"type": "pointerUp", "button": 0}]
        pointer(acts)
        until(f"return document.querySelectorAll('#results .result').length === {len(runs)}")
        mp = {KEY: element("#map")[KEY]}
        pointer([{"type": "pointerMove", "origin": mp, "x": -60, "y": 40, "duration": 0}])
        until("return document.getElementById('map-method').textContent.length > 0")
        pointer([{"type": "pointerMove", "origin": mp, "x": -120, "y": -40, "duration": 0},
                 {"type": "pointerDown", "button": 0}, {"type": "pointerUp", "button": 0},
                 {"type": "pointerMove", "origin": mp, "x": 110, "y": 60, "duration": 0},
                 {"type": "pointerDown", "button": 0}, {"type": "pointerUp", "button": 0},
                 {"type": "pointerMove", "origin": mp, "x": 30, "y": -90, "duration": 0}])
        until("return document.querySelectorAll('#strip canvas').length === 10")
        cmd("execute/sync", {"script": "const s=document.querySelectorAll('#sliders input'); s[0].value=1.5; s[1].value=-2; s[1].dispatchEvent(new Event('input'));", "args": []})
        until("return document.getElementById('training-panel').querySelector('#train-status').textContent.length > 0")
        for panel, name in [("#draw-panel", "draw"), ("#map-panel", "map"), ("#slider-panel", "sliders"), ("#training-panel", "training")]:
            e = element(panel)[KEY]
            png = http("GET", f"{S}/element/{e}/screenshot")
            with open(os.path.join(out, f"explorer-{name}.png"), "wb") as f:
                f.write(base64.b64decode(png))
        http("DELETE", S)
    finally:
        driver.terminate()
        server.terminate()


if __name__ == "__main__":
    main()
