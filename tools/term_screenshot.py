"""Turn a terminal capture (``tmux capture-pane -e -p``) into a PNG, for the docs.

    python tools/term_screenshot.py capture.ansi docs/images/status-wait.png

The ANSI text becomes a dark ``<pre>`` in an HTML page (SGR colours, bold and
reset are kept; any other escape is dropped), which headless Chromium renders
to the PNG. A real terminal's output, not a mock-up: capture it while the
command runs.
"""

from __future__ import annotations

import argparse
import html
import re
import subprocess
import sys
import tempfile
from pathlib import Path

# The xterm palette, as most dark terminal themes keep it.
PALETTE = ["#1e1e1e", "#e06c75", "#98c379", "#e5c07b", "#61afef", "#c678dd", "#56b6c2",
           "#d4d4d4", "#5c6370", "#ef7b84", "#a9d68a", "#f0cd8a", "#7cc0ff", "#d691e8",
           "#6fd0dc", "#ffffff"]
BACKGROUND, FOREGROUND = "#16181d", "#d4d4d4"
ESCAPE = re.compile(r"\x1b\[([0-9;]*)([A-Za-z])")


def color_256(n: int) -> str:
    """One of the 256 xterm colours: the palette, a 6x6x6 cube, then 24 greys."""
    if n < 16:
        return PALETTE[n]
    if n < 232:
        n -= 16
        levels = [0 if v == 0 else 55 + 40 * v for v in (n // 36, n // 6 % 6, n % 6)]
        return "#" + "".join(f"{v:02x}" for v in levels)
    grey = 8 + 10 * (n - 232)
    return f"#{grey:02x}{grey:02x}{grey:02x}"


class Style:
    """The SGR state while reading a line: colours and boldness."""

    def __init__(self) -> None:
        self.fg: str | None = None
        self.bg: str | None = None
        self.bold = False

    def apply(self, params: str) -> None:
        codes = [int(c) if c else 0 for c in params.split(";")] if params else [0]
        i = 0
        while i < len(codes):
            i = self._one(codes, i)

    def _one(self, codes: list[int], i: int) -> int:
        """Apply the code at ``i``; returns the index of the next one."""
        code = codes[i]
        if code == 0:
            self.fg, self.bg, self.bold = None, None, False
        elif code == 1:
            self.bold = True
        elif code == 22:
            self.bold = False
        elif 30 <= code <= 37 or 90 <= code <= 97:
            self.fg = PALETTE[code - 30 if code < 90 else code - 82]
        elif 40 <= code <= 47 or 100 <= code <= 107:
            self.bg = PALETTE[code - 40 if code < 100 else code - 92]
        elif code == 39:
            self.fg = None
        elif code == 49:
            self.bg = None
        elif code in (38, 48) and i + 2 < len(codes) and codes[i + 1] == 5:
            setattr(self, "fg" if code == 38 else "bg", color_256(codes[i + 2]))
            return i + 3
        elif code in (38, 48) and i + 4 < len(codes) and codes[i + 1] == 2:
            red, green, blue = codes[i + 2:i + 5]
            setattr(self, "fg" if code == 38 else "bg", f"#{red:02x}{green:02x}{blue:02x}")
            return i + 5
        return i + 1

    def css(self) -> str:
        rules = [f"color:{self.fg}"] if self.fg else []
        rules += [f"background:{self.bg}"] if self.bg else []
        rules += ["font-weight:bold"] if self.bold else []
        return ";".join(rules)


def to_html(ansi: str) -> str:
    """The capture as HTML spans; trailing blank lines are dropped."""
    style = Style()
    out: list[str] = []
    lines = ansi.replace("\r\n", "\n").rstrip("\n").split("\n")
    while lines and not ESCAPE.sub("", lines[-1]).strip():
        lines.pop()
    for line in lines:
        position = 0
        for match in ESCAPE.finditer(line):
            out.append(_span(line[position:match.start()], style))
            if match.group(2) == "m":
                style.apply(match.group(1))
            position = match.end()
        out.append(_span(line[position:], style))
        out.append("\n")
    return "".join(out)


def _span(text: str, style: Style) -> str:
    if not text:
        return ""
    css = style.css()
    escaped = html.escape(text)
    return f'<span style="{css}">{escaped}</span>' if css else escaped


def page(body: str, title: str) -> str:
    bar = (f'<div class="bar"><i></i><i></i><i></i><span>{html.escape(title)}</span></div>'
           if title else "")
    return f"""<!doctype html><meta charset="utf-8"><style>
html, body {{ margin: 0; background: {BACKGROUND}; }}
.bar {{ background: #2a2d34; color: #9da5b4; font: 13px sans-serif; padding: 7px 12px; }}
.bar i {{ display: inline-block; width: 11px; height: 11px; border-radius: 50%;
          background: #5c6370; margin-right: 6px; vertical-align: middle; }}
.bar span {{ margin-left: 10px; vertical-align: middle; }}
pre {{ margin: 0; padding: 14px 16px; color: {FOREGROUND};
       font: 15px/1.35 "DejaVu Sans Mono", monospace; white-space: pre; }}
</style>{bar}<pre>{body}</pre>"""


def screenshot(html_text: str, out: Path, width: int, height: int,
               chromium: str = "chromium") -> None:
    """Render the page with headless Chromium into ``out``."""
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "terminal.html"
        source.write_text(html_text, encoding="utf-8")
        subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu",
                        "--disable-background-networking", "--disable-component-update",
                        "--disable-sync", "--no-first-run", "--hide-scrollbars",
                        "--run-all-compositor-stages-before-draw", "--virtual-time-budget=2000",
                        f"--user-data-dir={Path(folder) / 'profile'}",
                        f"--screenshot={out.resolve()}", f"--window-size={width},{height}",
                        source.as_uri()],
                       check=True, capture_output=True, timeout=60)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("capture", type=Path, help="ANSI text, as tmux capture-pane -e -p")
    parser.add_argument("out", type=Path, help="the PNG to write")
    parser.add_argument("--width", type=int, default=900)
    parser.add_argument("--height", type=int, default=300)
    parser.add_argument("--title", default="", help="a window title bar above the text")
    parser.add_argument("--chromium", default="chromium")
    args = parser.parse_args(argv)
    body = to_html(args.capture.read_text(encoding="utf-8"))
    screenshot(page(body, args.title), args.out, args.width, args.height, args.chromium)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
