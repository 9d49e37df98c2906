"""What a local (`file://`) pip index needs mounted: the index directory, or the mirror around it.

A PEP 503 mirror often serves `simple/` and keeps the files beside it, its pages linking
`../../files/x.whl`: mounting `simple/` alone leaves every link dangling. The directory to mount is
the one holding the index and what a sample of its pages link to, at most `UP` levels above the
index (the mirror's root), read-only. Never HOME or a directory above it, never `/`, never one
holding the project (a read-only mount over it would hide what the install may write): such a
mirror is refused in one line with what to do instead.
"""
from __future__ import annotations

import os
import re
from urllib.parse import unquote, urlsplit

from sbox_shim.errors import UsageError

UP = 2  # how far above the index directory its files may lie
SAMPLE = 3  # project pages read to learn where the files are
_HREF = re.compile(r"""href\s*=\s*["']([^"'#?]+)""", re.IGNORECASE)


def index_root(index: str, home: str, project_root: str) -> str:
    """The directory to mount for the local index at `index` (an existing directory)."""
    from sbox_shim.ecosystems import read_text
    from sbox_shim.lean import inside

    index = os.path.normpath(index)
    targets = [os.path.dirname(t) for page in _pages(index) for t in _links(page, read_text(page))]
    root = os.path.commonpath([index, *targets]) if targets else index
    if root == index:
        return index
    home = os.path.normpath(home)
    why = ("lies more than %d levels above it" % UP if _depth(index, root) > UP else
           "is HOME or above it" if root == "/" or home != "/" and inside(home, root) else
           "holds the project" if inside(project_root, root) else "")
    if why:
        raise UsageError(f"{index}: the pip index's pages link to files under {root}, which {why}; sbox does not "
                         "mount it: serve the mirror over http on loopback or move its files next to the index")
    return root


def _depth(index: str, root: str) -> int:
    """How many levels `root` lies above `index`."""
    return len(os.path.relpath(index, root).split(os.sep))


def _pages(index: str) -> list[str]:
    """The index page and the first project pages (`simple/x/index.html`)."""
    pages = [os.path.join(index, "index.html")]
    try:
        with os.scandir(index) as entries:
            for entry in entries:
                if len(pages) > SAMPLE:
                    break
                if entry.is_dir(follow_symlinks=False):
                    pages.append(os.path.join(entry.path, "index.html"))
    except OSError:
        pass
    return [p for p in pages if os.path.isfile(p)]


def _links(page: str, text: str) -> list[str]:
    """The local files a page links to, as absolute paths (relative links resolved from the page)."""
    out = []
    for href in _HREF.findall(text):
        if href.startswith("file://"):
            path = unquote(urlsplit(href).path)
        elif re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", href):
            continue  # http(s): not a file of the mirror
        else:
            path = os.path.join(os.path.dirname(page), unquote(href))
        if path.endswith((".whl", ".tar.gz", ".zip", ".tar.bz2", ".tgz")):
            out.append(os.path.normpath(path))
    return out
