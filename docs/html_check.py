"""Check the HTML previews in a real browser engine, by hand: what no test can see.

    python3 send_exec_reports.py --preview-dir /tmp/preview
    python3 docs/html_check.py /tmp/preview                 # every page, at 375 and 1024
    python3 docs/html_check.py /tmp/preview --shots ceo     # and docs/ceo-report-*.png

It lays each page out in headless Chromium (or Chrome: --browser) at a phone's
width and a desktop's, and names anything that sticks out past the right edge,
which on a phone means text cut off or sideways scrolling.  Headless Chromium
will not make a window narrower than 500 pixels, so each page is laid out in
an iframe of the width asked for, which has a viewport of its own; the
screenshots are cropped to it (by this script: the standard library can).

Needs only the standard library and the browser.  Not part of the tests or CI.
"""

import argparse
import pathlib
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib

WIDTHS = (375, 1024)
PROBE = """<script>
window.addEventListener('load', function () {
  var out = [];
  document.querySelectorAll('table,td,th,p,h1,h2').forEach(function (e) {
    var box = e.getBoundingClientRect();
    if (box.right > window.innerWidth + 0.5 && !e.querySelector('table,td,th,p,h1,h2'))
      out.push(e.tagName + ' ' + (e.textContent || '').trim().slice(0, 30));
  });
  var page = document.body.firstElementChild.getBoundingClientRect();
  parent.document.title = 'height=' + Math.ceil(page.bottom) +
                          ';overflow=' + out.join(' | ');
});
</script>"""


def lay_out(browser, page, width, workdir):
    """(height in pixels, [elements past the right edge]) of a page at this width."""
    probed = workdir / f"probe-{page.name}"
    probed.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    host = host_page(workdir, probed, width, 4000)
    dom = run_browser(browser, ["--dump-dom", host.as_uri()], 1200, 4000)
    found = re.search(r"<title>height=(\d+);overflow=(.*?)</title>", dom, re.S)
    if not found:
        raise SystemExit(f"html_check: {browser} did not lay out {page}")
    return int(found.group(1)), [e for e in found.group(2).split(" | ") if e]


def host_page(workdir, page, width, height):
    host = workdir / f"host-{width}-{page.name}"
    host.write_text(f'<!DOCTYPE html><html><head><title>-</title></head>'
                    f'<body style="margin:0"><iframe src="{page.name}" width="{width}" '
                    f'height="{height}" style="border:0;display:block"></iframe></body></html>')
    return host


def run_browser(browser, arguments, width, height):
    command = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               "--allow-file-access-from-files", "--disable-web-security",
               f"--window-size={max(width, 500)},{height}", "--virtual-time-budget=3000",
               *arguments]
    return subprocess.run(command, capture_output=True, text=True, timeout=120).stdout


def screenshot(browser, page, width, height, target, workdir):
    """A PNG of the page at this width, full length."""
    host = host_page(workdir, page, width, height)
    run_browser(browser, [f"--screenshot={target}", host.as_uri()], width, height)
    if width < 500:
        crop_png(target, width)


def crop_png(path, width):
    """Keep the left `width` pixels of an 8-bit RGB or RGBA PNG (what Chromium writes)."""
    data = path.read_bytes()
    chunks, position = [], 8
    while position < len(data):
        length, kind = struct.unpack(">I4s", data[position:position + 8])
        chunks.append((kind, data[position + 8:position + 8 + length]))
        position += 12 + length
    header = dict(chunks)[b"IHDR"]
    full_width, height, depth, color = struct.unpack(">IIBB", header[:10])
    channels = {2: 3, 6: 4}[color]
    assert depth == 8, "an 8-bit PNG"
    raw = zlib.decompress(b"".join(body for kind, body in chunks if kind == b"IDAT"))
    stride, previous, rows = full_width * channels, bytearray(full_width * channels), []
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1:start + 1 + stride])
        unfilter(kind, line, previous, channels)
        rows.append(b"\0" + bytes(line[:width * channels]))
        previous = line

    def chunk(kind, body):
        crc = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + crc

    path.write_bytes(data[:8] + chunk(b"IHDR", struct.pack(">II", width, height) + header[8:])
                     + chunk(b"IDAT", zlib.compress(b"".join(rows), 9)) + chunk(b"IEND", b""))


def unfilter(kind, line, previous, channels):
    """Undo one PNG row filter in place (None, Sub, Up, Average, Paeth)."""
    for i in range(len(line)):
        left = line[i - channels] if i >= channels else 0
        up = previous[i]
        if kind == 1:
            line[i] = (line[i] + left) & 255
        elif kind == 2:
            line[i] = (line[i] + up) & 255
        elif kind == 3:
            line[i] = (line[i] + (left + up) // 2) & 255
        elif kind == 4:
            corner = previous[i - channels] if i >= channels else 0
            estimate = left + up - corner
            nearest = min((abs(estimate - left), 0, left), (abs(estimate - up), 1, up),
                          (abs(estimate - corner), 2, corner))[2]
            line[i] = (line[i] + nearest) & 255


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("preview_dir", type=pathlib.Path)
    parser.add_argument("--browser", default=shutil.which("chromium") or
                        shutil.which("chromium-browser") or shutil.which("google-chrome"))
    parser.add_argument("--shots", metavar="REPORT",
                        help="also write docs/REPORT-report-375.png and -1024.png")
    args = parser.parse_args()
    if not args.browser:
        raise SystemExit("html_check: no Chromium or Chrome found; name one with --browser")
    pages = sorted(p for p in args.preview_dir.glob("*.html"))
    if not pages:
        raise SystemExit(f"html_check: no .html files in {args.preview_dir}")
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        workdir = pathlib.Path(tmp)
        for page in pages:
            shutil.copy(page, workdir / page.name)
            for width in WIDTHS:
                height, wide = lay_out(args.browser, workdir / page.name, width, workdir)
                failed += bool(wide)
                print(f"{page.name:<26} {width:>5}px  {height:>5}px tall  "
                      f"{'fits' if not wide else 'TOO WIDE: ' + '; '.join(wide[:3])}")
                if args.shots and page.stem == args.shots:
                    target = pathlib.Path(__file__).parent / f"{args.shots}-report-{width}.png"
                    screenshot(args.browser, workdir / page.name, width, height, target.resolve(),
                               workdir)
                    print(f"  wrote {target}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
