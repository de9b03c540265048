#!/usr/bin/env python3
"""Checks a `qat compare` report directory (python3 standard library only).

    check_report.py DIR

- DIR/results.json parses as JSON;
- DIR/report.html: start and end tags balance, every inline <svg> is
  well-formed XML, nothing is loaded from outside (no scripts, links, images,
  url(), or http addresses other than the SVG namespace);
- every cell of the summary and sensitivity tables that shows a number
  carries a data-key, and the number equals results.json's value at the
  precision shown (percentages and "points" are fractions x 100 in the JSON,
  "-" is null); text cells (spec, method, calibrator, unit) match too, and the
  star marks exactly the runs with "chosen": true.

Prints the problems and exits 1 if there are any, else prints a summary and
exits 0.
"""
import json
import re
import sys
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
SVG_NS = "http://www.w3.org/2000/svg"
POINTS = {"test_accuracy_drop", "accuracy_drop"}  # fractions shown as percentage points
RUN_KEYS = {"spec", "method", "calib", "val_accuracy", "test_accuracy", "int8_test_accuracy", "test_accuracy_drop",
            "model_bytes", "compression_vs_float", "int8_images_per_s", "top1_agreement", "logit_agreement",
            "max_logit_diff_steps", "seconds"}
SENS_KEYS = {"rank", "unit", "val_accuracy", "accuracy_drop", "sqnr_db", "weight_params"}


class Page(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack, self.problems, self.cells = [], [], []
        self.row = None      # ("run", i) / ("float", None) / ("sens", i) while inside such a <tr>
        self.cell = None     # [row, key, text, has_star]
        self.in_star = 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag not in VOID:
            self.stack.append((tag, self.getpos()))
        if tag in ("script", "iframe", "object", "img", "link", "embed"):
            self.problems.append(f"<{tag}> at line {self.getpos()[0]}: the page must be self-contained")
        for k, v in attrs:
            if k in ("src", "srcset") or (k == "href" and v and re.match(r"[a-z]+:", v)):
                self.problems.append(f"external reference {k}={v!r} at line {self.getpos()[0]}")
        if tag == "tr":
            if "data-run" in a:
                self.row = ("float", None) if a["data-run"] == "float" else ("run", int(a["data-run"]))
            elif "data-sens" in a:
                self.row = ("sens", int(a["data-sens"]))
            else:
                self.row = None
        elif tag == "td" and self.row is not None:
            self.cell = [self.row, a.get("data-key"), "", False]
        elif tag == "span" and self.cell is not None and "star" in (a.get("class") or "").split():
            self.cell[3] = True
            self.in_star += 1

    def handle_startendtag(self, tag, attrs):
        # <line .../> inside SVG: not pushed
        if tag in ("script", "img", "link", "iframe"):
            self.problems.append(f"<{tag}/> at line {self.getpos()[0]}")

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self.stack:
            self.problems.append(f"</{tag}> at line {self.getpos()[0]} closes nothing")
            return
        top, pos = self.stack.pop()
        if top != tag:
            self.problems.append(f"</{tag}> at line {self.getpos()[0]} closes <{top}> opened at line {pos[0]}")
        if tag == "span" and self.in_star:
            self.in_star -= 1
        elif tag == "td" and self.cell is not None:
            self.cells.append(self.cell)
            self.cell = None
        elif tag == "tr":
            self.row = None

    def handle_data(self, data):
        if self.cell is not None and not self.in_star:
            self.cell[2] += data


def close(v, text, key):
    """Does JSON value v, shown as text, match at the precision shown?"""
    t = text.replace("\u2248", "").replace(",", "").replace("\u00d7", "").strip()
    pct = t.endswith("%")
    t = t.rstrip("%").strip()
    if not re.fullmatch(r"-?\d+(\.\d+)?", t):
        return False, f"cannot read a number from {text!r}"
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return False, f"JSON has {v!r}"
    scale = 100.0 if (pct or key in POINTS) else 1.0
    decimals = len(t.split(".")[1]) if "." in t else 0
    want = v * scale
    tol = 0.5 * 10 ** -decimals + 1e-9 * max(1.0, abs(want))
    if abs(want - float(t)) > tol:
        return False, f"shows {text!r}, JSON {v!r} (x{scale:g} = {want:.6f})"
    return True, ""


def main():
    if len(sys.argv) != 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    d = sys.argv[1]
    problems = []
    try:
        with open(f"{d}/results.json", encoding="utf-8") as f:
            res = json.load(f)
    except (OSError, ValueError) as e:
        print(f"results.json: {e}")
        return 1
    with open(f"{d}/report.html", encoding="utf-8") as f:
        html = f.read()

    if not html.startswith("<!DOCTYPE html>"):
        problems.append("report.html does not start with <!DOCTYPE html>")
    page = Page()
    page.feed(html)
    page.close()
    problems += page.problems
    for tag, pos in page.stack:
        problems.append(f"<{tag}> opened at line {pos[0]} is never closed")
    for m in re.finditer(r"https?://[^\s\"'<>)]+", html):
        if m.group(0) != SVG_NS:
            problems.append(f"address {m.group(0)!r}: the page must not load anything")
    for bad in ("url(", "@import"):
        if bad in html:
            problems.append(f"{bad!r} in the page")

    svgs = re.findall(r"<svg\b.*?</svg>", html, re.S)
    for k, s in enumerate(svgs):
        try:
            root = ET.fromstring(s)
            if root.tag != "{%s}svg" % SVG_NS:
                problems.append(f"svg #{k}: root is {root.tag}")
        except ET.ParseError as e:
            problems.append(f"svg #{k} is not well-formed XML: {e}")

    seen = {"run": {}, "sens": {}, "float": {}}
    for (kind, idx), key, text, star in page.cells:
        text = " ".join(text.split())
        where = f"{kind}{'' if idx is None else ' ' + str(idx)} {key or '(no key)'}"
        if key is None:
            if re.search(r"\d", text):
                problems.append(f"{where}: shows {text!r} but has no data-key to check it against")
            continue
        if kind == "float":
            obj = res
        else:
            arr = res["runs"] if kind == "run" else res["sensitivity"]
            if not 0 <= idx < len(arr):
                problems.append(f"{where}: no such entry in results.json")
                continue
            obj = arr[idx]
        seen[kind].setdefault(idx, set()).add(key)
        if key not in obj:
            problems.append(f"{where}: key missing from results.json")
            continue
        v = obj[key]
        if key == "calib" and kind == "run":
            if star != bool(obj.get("chosen")) or (star and obj.get("method") != "ptq"):
                problems.append(f"{where}: star {star}, chosen {obj.get('chosen')} method {obj.get('method')}")
        approx = "\u2248" in text
        if key == "model_bytes" and kind == "run" and approx == bool(obj.get("exported")):
            problems.append(f"{where}: estimated mark shown {approx}, exported {obj.get('exported')}")
        if isinstance(v, str):
            if text.lower() != v.lower():
                problems.append(f"{where}: shows {text!r}, JSON {v!r}")
        elif text in ("-", "\u221e"):
            if v is not None:
                problems.append(f"{where}: shows {text!r}, JSON {v!r}")
        else:
            ok, why = close(v, text, key)
            if not ok:
                problems.append(f"{where}: {why}")

    if set(seen["run"]) != set(range(len(res["runs"]))):
        problems.append(f"summary rows {sorted(seen['run'])} != runs 0..{len(res['runs']) - 1}")
    for i, keys in seen["run"].items():
        if keys != RUN_KEYS:
            problems.append(f"run {i}: columns {sorted(RUN_KEYS ^ keys)} missing or extra")
    if not seen["float"]:
        problems.append("no float baseline row")
    if set(seen["sens"]) != set(range(len(res["sensitivity"]))):
        problems.append(f"sensitivity rows {sorted(seen['sens'])} != 0..{len(res['sensitivity']) - 1}")
    for i, keys in seen["sens"].items():
        if keys != SENS_KEYS:
            problems.append(f"sensitivity {i}: columns {sorted(SENS_KEYS ^ keys)} missing or extra")

    for p in problems:
        print(p)
    if problems:
        return 1
    print(f"ok: {len(page.cells)} cells, {len(svgs)} svg, {len(res['runs'])} runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
