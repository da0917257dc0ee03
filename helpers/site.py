"""The course as a website (`make site`): the notebooks `make run` executed, as HTML pages.

`build_site` copies build/notebooks/*.ipynb into a Sphinx source folder with an index page (the
README's opening paragraph and notebook 00_welcome's map of the course, each notebook linked) and
builds it with docs/site/conf.py (myst-nb, sphinx-book-theme), warnings as errors. Then it checks
what a reader's browser would fetch: `broken_links` (every page's links and assets inside the
site resolve) and `external_references` (nothing is loaded from another host at view time).

Usage: `python -m helpers.site [EXECUTED_FOLDER] [OUT_FOLDER]` (default build/notebooks -> build/site).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

from .settings import REPO_ROOT

CONF = REPO_ROOT / "docs" / "site"
NOTEBOOK = re.compile(r"[0-9][0-9]_\w+\.ipynb")
#: (tag, attribute) pairs a browser fetches when it shows a page
FETCHED = {("script", "src"), ("link", "href"), ("img", "src"), ("iframe", "src"), ("source", "src"),
           ("video", "src"), ("audio", "src"), ("embed", "src"), ("object", "data")}


class SiteError(RuntimeError):
    """The site cannot be built from what is there, or what was built is broken."""


def index_page(notebooks: list[str]) -> str:
    """The front page: README's title and opening paragraph, notebook 00_welcome's course map with each
    notebook's name a link, and the table of contents."""
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8").split("\n## ", 1)[0].strip()
    cells = json.loads((REPO_ROOT / "notebooks" / "00_welcome.ipynb").read_text(encoding="utf-8"))["cells"]
    course_map = next("".join(c["source"]) for c in cells if "".join(c["source"]).startswith("## The map of the course"))
    table = "\n".join(line for line in course_map.splitlines() if line.startswith("|"))
    for stem in (Path(n).stem for n in notebooks):
        table = table.replace(f"`{stem}`", f"[{stem}]({stem}.ipynb)")
    toc = "\n".join(Path(n).stem for n in notebooks)
    return f"{readme}\n\n## The map of the course\n\n{table}\n\n```{{toctree}}\n:hidden:\n:maxdepth: 1\n\n{toc}\n```\n"


def build_site(executed: Path = REPO_ROOT / "build" / "notebooks", out: Path = REPO_ROOT / "build" / "site") -> Path:
    """Build the site from the executed notebooks in `executed`; returns the HTML folder."""
    notebooks = sorted(p.name for p in Path(executed).glob("*.ipynb") if NOTEBOOK.fullmatch(p.name))
    if not notebooks:
        raise SiteError(f"no executed notebooks in {executed}: run `make run` (SCALE=quick for the short run) first")
    src, html = Path(out) / "src", Path(out) / "html"
    shutil.rmtree(src, ignore_errors=True)
    shutil.rmtree(html, ignore_errors=True)
    src.mkdir(parents=True)
    for name in notebooks:   # without the widgets' saved state: no page can run a widget (conf.py)
        nb = json.loads((Path(executed) / name).read_text(encoding="utf-8"))
        nb.get("metadata", {}).pop("widgets", None)
        (src / name).write_text(json.dumps(nb), encoding="utf-8")
    (src / "index.md").write_text(index_page(notebooks), encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
                           "-c", str(CONF), str(src), str(html)], capture_output=True, text=True)
    if done.returncode:
        raise SiteError("sphinx-build failed: " + (done.stderr.strip() or done.stdout.strip()).replace("\n", " | "))
    return html


class _References(HTMLParser):
    def __init__(self):
        super().__init__()
        self.fetched, self.links, self.ids = [], [], set()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        for t, attribute in FETCHED:
            if tag == t and attrs.get(attribute):
                self.fetched.append(attrs[attribute])
        if tag == "a" and attrs.get("href"):
            self.links.append(attrs["href"])


def _pages(html: Path) -> list[Path]:
    """The site's pages (the theme's _static/ holds template fragments, not pages)."""
    return sorted(p for p in Path(html).rglob("*.html") if "_static" not in p.relative_to(html).parts)


def _references(page: Path) -> _References:
    parser = _References()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser


def external_references(html: Path) -> list[str]:
    """'page: url' for each script, stylesheet, font or image a page would fetch from another host
    (also url(...) and @import inside the site's CSS files)."""
    found = []
    for page in _pages(html):
        found += [f"{page.relative_to(html)}: {url}" for url in _references(page).fetched
                  if urlsplit(url).scheme in ("http", "https") or url.startswith("//")]
    for css in sorted(Path(html).rglob("*.css")):
        text = css.read_text(encoding="utf-8", errors="replace")
        found += [f"{css.relative_to(html)}: {url}" for url in re.findall(r"(?:url\(\s*['\"]?|@import\s+['\"])((?:https?:)?//[^'\")\s]+)", text)]
    return found


def broken_links(html: Path) -> list[str]:
    """'page: link' for each link or asset inside the site whose file, or #anchor, is missing."""
    broken, pages = [], {}
    for page in _pages(html):
        pages[page] = _references(page)
    for page, refs in pages.items():
        for url in refs.links + refs.fetched:
            parts = urlsplit(url)
            if parts.scheme or url.startswith("//"):   # another host, mailto:, data:
                continue
            target = (page.parent / unquote(parts.path)).resolve() if parts.path else page
            if not target.exists():
                broken.append(f"{page.relative_to(html)}: {url}")
            elif parts.fragment and target.suffix == ".html" and target in pages \
                    and unquote(parts.fragment) not in pages[target].ids:
                broken.append(f"{page.relative_to(html)}: {url} (no such anchor)")
    return broken


def main(argv: list[str]) -> int:
    executed = Path(argv[0]) if argv else REPO_ROOT / "build" / "notebooks"
    out = Path(argv[1]) if len(argv) > 1 else REPO_ROOT / "build" / "site"
    try:
        html = build_site(executed, out)
    except SiteError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    problems = [f"external: {p}" for p in external_references(html)] + [f"broken: {p}" for p in broken_links(html)]
    for line in problems:
        print(line, file=sys.stderr)
    pages = len([p for p in html.glob("*.html") if NOTEBOOK.fullmatch(p.stem + ".ipynb")])
    size = sum(p.stat().st_size for p in html.rglob("*") if p.is_file())
    print(f"site: {pages} notebook pages in {html} ({size / 1e6:.1f} MB); open {html / 'index.html'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
