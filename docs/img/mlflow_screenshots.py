"""Screenshots of the MLflow UI for docs/mlflow.md, through a headless Chromium driven over the
DevTools protocol (aiohttp's websocket client; no browser-automation package). Plain
``chromium --screenshot`` cannot first close MLflow 3's assistant panel, switch the UI to
"Model training", expand the study's parent run, widen a column, fold chart sections or scroll
a table; this can.

    python docs/img/mlflow_screenshots.py URL STUDY OUTDIR

URL is a running MLflow server holding the study (docs/img/make_mlflow_screenshots.sh starts
one and runs the study first). The UI's routes are hash routes: ``#/experiments/<id>/runs``,
``#/experiments/<id>/runs/<run id>/model-metrics``, ``.../artifacts/<path>``.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from mlflow.tracking import MlflowClient

PORT = 9333
WAIT = float(os.environ.get("SHOT_WAIT", "8"))  # seconds a page gets to load its data and charts


class Tab:
    def __init__(self, ws):
        self.ws = ws
        self.ids = itertools.count(1)

    async def call(self, method: str, **params):
        i = next(self.ids)
        await self.ws.send_str(json.dumps({"id": i, "method": method, "params": params}))
        async for msg in self.ws:
            data = json.loads(msg.data)
            if data.get("id") == i:
                if "error" in data:
                    raise RuntimeError(f"{method}: {data['error']}")
                return data.get("result", {})
        raise RuntimeError("the browser closed the connection")

    async def eval(self, js: str):
        res = await self.call("Runtime.evaluate", expression=js, awaitPromise=True,
                              returnByValue=True)
        if "exceptionDetails" in res:
            raise RuntimeError(f"JavaScript failed: {res['exceptionDetails'].get('text')}")
        return res["result"].get("value")

    async def goto(self, url: str, width: int, height: int) -> None:
        await self.call("Emulation.setDeviceMetricsOverride", width=width, height=height,
                        deviceScaleFactor=1, mobile=False)
        await self.call("Page.navigate", url=url)
        await asyncio.sleep(WAIT)

    async def drag(self, x: float, y: float, dx: float) -> None:
        """Press the mouse at (x, y), move it dx to the right, release (a column's width)."""
        for kind, px in (("mousePressed", x), ("mouseMoved", x + dx / 2), ("mouseMoved", x + dx),
                         ("mouseReleased", x + dx)):
            await self.call("Input.dispatchMouseEvent", type=kind, x=px, y=y, button="left",
                            buttons=0 if kind == "mouseReleased" else 1, clickCount=1)
            await asyncio.sleep(0.2)
        await self.call("Input.dispatchMouseEvent", type="mouseMoved", x=5, y=5)  # no tooltip
        await asyncio.sleep(1)

    async def reload(self) -> None:
        await self.call("Page.reload", ignoreCache=False)
        await asyncio.sleep(WAIT)

    async def shot(self, out: Path) -> None:
        data = (await self.call("Page.captureScreenshot", format="png"))["data"]
        out.write_bytes(base64.b64decode(data))
        print(f"wrote {out}")


def study_ids(url: str, study: str) -> tuple[str, str, str]:
    """The experiment, the study's parent run and one Ask-n-Learn cell run."""
    client = MlflowClient(url)
    exp = client.get_experiment_by_name(study)
    runs = client.search_runs([exp.experiment_id])
    parent = next(r for r in runs if "asknlearn.study_run" in r.data.tags)
    cell = next(r for r in runs if r.data.tags.get("asknlearn.cell", "").endswith(
        "ask-n-learn-vwcc/seed0/noise0"))
    return exp.experiment_id, parent.info.run_id, cell.info.run_id


def settings_js() -> str:
    """The UI settings, kept in the browser's localStorage: the "Model training" UI, no
    assistant panel."""
    items = {
        "mlflow.workflowType_v1": json.dumps("machine_learning"),
        "mlflow.assistant.panelOpen_v1": "false",
        "mlflow.assistant.fab.autoOpenedOnFirstLoad_v1": "true",
    }
    return "".join(f"localStorage.setItem({json.dumps(k)}, {json.dumps(v)});"
                   for k, v in items.items()) + "true"


EXPAND_PARENT_JS = """(async () => {
  const b = document.querySelector('.ag-row button[data-component-id*="runnamecellrenderer"]');
  if (b) b.click();
  return !!b;
})()"""

# where the Run Name column's resize handle is
RUN_NAME_EDGE_JS = """(() => {
  const h = document.querySelector('.ag-header-cell[col-id="attributes.`Run Name`"]');
  const r = h.getBoundingClientRect();
  return [r.right - 2, r.top + r.height / 2];
})()"""

# scroll the rounds.csv preview right, from the cell's keys to the round, labels and metrics
SCROLL_TABLE_JS = """(async () => {
  const boxes = Array.from(document.querySelectorAll('div'))
    .filter(d => d.scrollWidth > d.clientWidth + 200 && getComputedStyle(d).overflowX != 'visible');
  boxes.forEach(d => { d.scrollLeft = 1000; });
  return boxes.length;
})()"""

# collapse the diag/, time/ and train/ sections of a run's charts, so that the test/ section
# shows in full between the section headers
COLLAPSE_JS = """(async () => {
  const done = [];
  for (const h of document.querySelectorAll('div[role=button]')) {
    const m = /^(diag|time|train)\\n\\(/.exec(h.innerText || '');
    if (m && !done.includes(m[1])) {
      h.click();
      done.push(m[1]);
      await new Promise(r => setTimeout(r, 300));
    }
  }
  return done;
})()"""


async def main(url: str, study: str, outdir: Path) -> None:
    exp, parent, cell = study_ids(url, study)
    base = f"{url}/#/experiments/{exp}"
    ml = "?workflowType=machine_learning"
    profile = tempfile.mkdtemp(prefix="mlflow-shots-")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or "chromium"
    browser = subprocess.Popen(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         f"--remote-debugging-port={PORT}", f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(60):
                try:
                    async with http.put(f"http://127.0.0.1:{PORT}/json/new?about:blank") as r:
                        target = await r.json(content_type=None)
                    break
                except aiohttp.ClientError:
                    time.sleep(0.5)
            else:
                raise RuntimeError("chromium did not start")
            async with http.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                tab = Tab(ws)
                await tab.call("Page.enable")
                await tab.goto(f"{base}/runs{ml}", 1280, 800)
                await tab.eval(settings_js())
                await tab.goto(f"{base}/runs{ml}", 1280, 540)
                await tab.reload()
                print("parent expanded:", await tab.eval(EXPAND_PARENT_JS))
                x, y = await tab.eval(RUN_NAME_EDGE_JS)
                await tab.drag(x, y, 90)  # room for the cells' names
                await asyncio.sleep(WAIT)
                await tab.shot(outdir / "mlflow_runs.png")
                await tab.goto(f"{base}/runs/{cell}/model-metrics{ml}", 1280, 1040)
                print("collapsed:", await tab.eval(COLLAPSE_JS))
                await asyncio.sleep(WAIT)
                await tab.shot(outdir / "mlflow_cell_metrics.png")
                await tab.goto(f"{base}/runs/{cell}/artifacts/rounds.csv{ml}", 1280, 600)
                print("table scrolled:", await tab.eval(SCROLL_TABLE_JS))
                await asyncio.sleep(2)
                await tab.shot(outdir / "mlflow_cell_artifacts.png")
                await tab.goto(f"{base}/runs/{parent}/artifacts/figures/digits_noise0.png{ml}",
                               1280, 480)
                await tab.shot(outdir / "mlflow_study_artifacts.png")
    finally:
        os.killpg(browser.pid, signal.SIGTERM)
        browser.wait(timeout=30)
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1].rstrip("/"), sys.argv[2], Path(sys.argv[3])))
