#!/usr/bin/env python3
"""Content-hashed asset names for the default site (www/).

Every file in www/assets/ is named STEM.HASH.EXT, HASH being the first 8 hex digits of the
SHA-256 of its content, so the static plugin can serve /assets/ with
"Cache-Control: public, max-age=31536000, immutable": a changed file gets a new name.

    python3 tools/hash-assets.py            # rename what changed, rewrite the references
    python3 tools/hash-assets.py --check    # verify only: exit 1 and say what is wrong

To change an asset, edit the hashed file in place (www/assets/STEM.HASH.EXT, keeping its name),
then run the script: it renames the file to its new hash and rewrites every "assets/OLD-NAME" in
the site's HTML, CSS, JS, SVG, JSON and webmanifest files to the new name, repeating until nothing
changes (a CSS file naming an SVG changes when the SVG does). Do not drop a fresh STEM.EXT next
to an existing STEM.HASH.EXT to replace it: two versions of one asset are an error (the script
stops and names them). A brand-new asset may be added as www/assets/STEM.EXT, provided a page
already names it as "assets/STEM.EXT": the script hashes the name and rewrites those references
(--check fails for an asset that no page names). It also refreshes the copies of files kept
elsewhere in the repository (the benchmark chart from bench/chart.svg). Standard library only;
no network.
"""
import argparse
import hashlib
import re
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Assets copied from elsewhere in the repository: STEM.EXT in assets/ <- source file.
SOURCES = {"chart.svg": "bench/chart.svg"}
# Files whose text may name assets.
TEXT_SUFFIXES = {".html", ".css", ".js", ".mjs", ".svg", ".json", ".webmanifest"}
HASHED = re.compile(r"^(?P<stem>.+)\.(?P<hash>[0-9a-f]{8})\.(?P<ext>[A-Za-z0-9]+)$")
PLAIN = re.compile(r"^(?P<stem>[^.].*)\.(?P<ext>[A-Za-z0-9]+)$")
REFERENCE = re.compile(r"assets/([A-Za-z0-9_][A-Za-z0-9_.-]*\.[A-Za-z0-9]+)")


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:8]


def split(name: str):
    """(stem, hash or None, ext), or None for a name that is not an asset (no extension, dotfile)."""
    m = HASHED.match(name)
    if m:
        return m["stem"], m["hash"], m["ext"]
    m = PLAIN.match(name)
    if m:
        return m["stem"], None, m["ext"]
    return None


def assets(assets_dir: Path) -> dict:
    """{(stem, ext): [paths]} of the files in assets_dir."""
    found = {}
    for path in sorted(assets_dir.iterdir()):
        parts = split(path.name) if path.is_file() else None
        if parts:
            found.setdefault((parts[0], parts[2]), []).append(path)
    return found


def text_files(root: Path):
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.suffix in TEXT_SUFFIXES:
            yield path


def rewrite_references(root: Path, old: str, new: str) -> list:
    changed = []
    pattern = re.compile(r"(?<=assets/)" + re.escape(old) + r"(?![A-Za-z0-9_.-])")
    for path in text_files(root):
        text = path.read_text(encoding="utf-8")
        updated = pattern.sub(new, text)
        if updated != text:
            path.write_text(updated, encoding="utf-8")
            changed.append(path)
    return changed


def refresh_sources(assets_dir: Path, found: dict) -> list:
    """Copies each SOURCES file in when the asset is missing or differs; returns what it did."""
    done = []
    for name, source in SOURCES.items():
        stem, _, ext = split(name)
        src = REPO / source
        if not src.is_file():
            continue
        paths = found.get((stem, ext), [])
        if len(paths) == 1 and paths[0].read_bytes() == src.read_bytes():
            continue
        target = paths[0] if len(paths) == 1 else assets_dir / name
        shutil.copyfile(src, target)
        done.append(f"refreshed {target.relative_to(REPO) if target.is_relative_to(REPO) else target} from {source}")
    return done


def fix(root: Path) -> int:
    assets_dir = root / "assets"
    for line in refresh_sources(assets_dir, assets(assets_dir)):
        print(line)
    for _ in range(20):
        renamed = False
        for (stem, ext), paths in assets(assets_dir).items():
            if len(paths) > 1:
                print(f"error: several versions of {stem}.{ext} in {assets_dir}: "
                      + ", ".join(p.name for p in paths) + " (remove the old ones)", file=sys.stderr)
                return 1
            path = paths[0]
            want = f"{stem}.{digest(path)}.{ext}"
            if path.name == want:
                continue
            path.rename(assets_dir / want)
            touched = rewrite_references(root, path.name, want)
            print(f"{path.name} -> {want}" + (f" (references in {', '.join(str(p.relative_to(root)) for p in touched)})"
                                                if touched else ""))
            renamed = True
        if not renamed:
            return check(root, quiet=True)
    print("error: names still changing after 20 passes (assets naming each other in a cycle?)", file=sys.stderr)
    return 1


def check(root: Path, quiet=False) -> int:
    assets_dir = root / "assets"
    problems = []
    for (stem, ext), paths in assets(assets_dir).items():
        if len(paths) > 1:
            problems.append(f"several versions of {stem}.{ext}: " + ", ".join(p.name for p in paths))
        for path in paths:
            parts = split(path.name)
            want = digest(path)
            if parts[1] != want:
                problems.append(f"{path.name}: content hash is {want}, expected name {stem}.{want}.{ext}")
    for name, source in SOURCES.items():
        stem, _, ext = split(name)
        src = REPO / source
        paths = assets(assets_dir).get((stem, ext), [])
        if src.is_file() and paths and paths[0].read_bytes() != src.read_bytes():
            problems.append(f"{paths[0].name} differs from {source}")
    for path in text_files(root):
        if path.parent == assets_dir and path.suffix == ".svg":
            continue  # the chart and the logo name no assets
        for ref in REFERENCE.findall(path.read_text(encoding="utf-8")):
            if not (assets_dir / ref).is_file():
                problems.append(f"{path.relative_to(root)} names assets/{ref}, which does not exist")
    unused = []
    referenced = {ref for p in text_files(root) for ref in REFERENCE.findall(p.read_text(encoding="utf-8"))}
    for paths in assets(assets_dir).values():
        unused += [p.name for p in paths if p.name not in referenced]
    if unused:
        problems.append("not referenced by any page: " + ", ".join(unused))
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if not problems and not quiet:
        print(f"assets OK: {sum(len(p) for p in assets(assets_dir).values())} files in {assets_dir}")
    return 1 if problems else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="verify names and references, change nothing")
    parser.add_argument("--root", default=str(REPO / "www"), help="the site's root (default: www/ of this repository)")
    args = parser.parse_args()
    root = Path(args.root).resolve()
    if not (root / "assets").is_dir():
        print(f"error: no {root / 'assets'} directory", file=sys.stderr)
        return 1
    return check(root) if args.check else fix(root)


if __name__ == "__main__":
    sys.exit(main())
