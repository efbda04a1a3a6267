"""The changelog the collection way: every release in changelogs/changelog.yaml is exactly the fragments it
lists, every fragment is in a release, and CHANGELOG.md is what antsibull-changelog generates from them."""

import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import yaml

from tests.lab.layout import REPO

CHANGELOGS = REPO / "changelogs"
FRAGMENTS = CHANGELOGS / "fragments"
ANTSIBULL = Path(sys.executable).parent / "antsibull-changelog"
FOLD_IN = "antsibull-changelog release --version {} --update-existing"


def load(path):
    return yaml.safe_load(path.read_text())


def releases():
    return load(CHANGELOGS / "changelog.yaml")["releases"]


def entries(changes):
    """A release's (or a fragment's) changes as countable (section, text) pairs."""
    found = Counter()
    for section, texts in changes.items():
        for text in [texts] if isinstance(texts, str) else texts:
            found[section, text.strip()] += 1
    return found


def test_every_release_is_exactly_the_fragments_it_lists():
    for version, release in releases().items():
        listed = release.get("fragments", [])
        assert listed, f"release {version} lists no fragments"
        missing = [name for name in listed if not (FRAGMENTS / name).is_file()]
        assert missing == [], f"release {version} lists fragments that are not in {FRAGMENTS}"
        from_fragments = sum((entries(load(FRAGMENTS / name)) for name in listed), Counter())
        in_release = entries(release.get("changes", {}))
        assert in_release == from_fragments, (
            f"release {version} differs from its fragments: only in the release "
            f"{sorted(in_release - from_fragments)}, only in the fragments {sorted(from_fragments - in_release)}; "
            "run antsibull-changelog generate --refresh-fragments")


def test_every_fragment_is_in_a_release_and_galaxy_version_is_one():
    version = load(REPO / "galaxy.yml")["version"]
    assert version in releases(), f"galaxy.yml's version {version} is not in changelogs/changelog.yaml: " \
        f"antsibull-changelog release --version {version}"
    listed = {name for release in releases().values() for name in release.get("fragments", [])}
    loose = sorted(path.name for path in FRAGMENTS.iterdir() if path.name not in listed)
    assert loose == [], f"fragments in no release: {loose}; fold them in with {FOLD_IN.format(version)}"


def test_changelog_md_is_what_antsibull_changelog_generates(tmp_path):
    """Generated in a copy (generate may rewrite the changes file); the plugin cache spares ansible-doc."""
    shutil.copytree(CHANGELOGS, tmp_path / "changelogs")
    shutil.copy(REPO / "galaxy.yml", tmp_path)
    env = dict(os.environ, PATH=f"{ANTSIBULL.parent}:{os.environ['PATH']}")
    done = subprocess.run([str(ANTSIBULL), "generate", "--output", "generated.md", "--output-format", "md"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "generated.md").read_text() == (REPO / "CHANGELOG.md").read_text(), \
        "CHANGELOG.md is not what antsibull-changelog generates: run antsibull-changelog generate"


def test_fragments_lint():
    done = subprocess.run([str(ANTSIBULL), "lint"], cwd=REPO, capture_output=True, text=True, timeout=120,
                          check=False)
    assert (done.returncode, done.stdout + done.stderr) == (0, "")
