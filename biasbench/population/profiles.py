"""Population profiles: a directory of tables plus a manifest saying where every number comes from.

Why a manifest with hashes: a published bias figure must be traceable to the exact tables its
personas were drawn from. Loading a profile checks every file against the sha256 in its manifest,
so a table edited without re-running the conversion fails loudly instead of silently producing a
pool that its recorded provenance does not describe. The profile's name, version and hashes are
what a pool records (`provenance`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from importlib.abc import Traversable
from types import MappingProxyType
from typing import Any, Final

from biasbench.data import DataFileError
from biasbench.errors import InvalidConfig

PROFILES: Final = ("de", "world")
"""Every shipped profile; `de` (people living in Germany, the original study's) is the default."""

DEFAULT_POPULATION: Final = "de"


@dataclass(frozen=True, slots=True)
class Profile:
    """A loaded, verified profile: `files` maps each file (a path under biasbench/data/) to its
    sha256, `assumed` lists what is not backed by a published table."""

    name: str
    version: str
    files: Mapping[str, str]
    assumed: tuple[str, ...]
    manifest: Mapping[str, Any]
    root: Traversable

    def provenance(self) -> dict[str, Any]:
        """What a pool records about the tables it was drawn from."""
        return {
            "name": self.name,
            "version": self.version,
            "files": dict(self.files),
            "assumed": list(self.assumed),
        }

    def read_text(self, file: str) -> str:
        """A file of the profile, after its hash was checked at load time."""
        for path in (f"profiles/{self.name}/{file}", file):
            if path in self.files:
                return _resolve(self.root, path).read_text(encoding="utf-8")
        raise KeyError(f"{file!r} is not listed in profile {self.name!r}'s manifest")


def check_population(name: object, field: str = "population") -> str:
    """The profile name, or InvalidConfig naming the field."""
    if not isinstance(name, str) or name not in PROFILES:
        raise InvalidConfig(field, f"unknown population {name!r}; one of {', '.join(PROFILES)}")
    return name


def _resolve(root: Traversable, relative: str) -> Traversable:
    """A manifest path: relative to biasbench/data/, where the world profile's files have always
    been (a profile's own files sit in profiles/<name>/)."""
    return root.joinpath(*relative.split("/"))


@cache
def load_profile(name: str) -> Profile:
    """The verified shipped profile (cached): DataFileError if a file's hash differs from the
    manifest."""
    check_population(name)
    return read_profile(name, resources.files("biasbench.data"))


def read_profile(name: str, root: Traversable) -> Profile:
    """The profile `name` under a data directory laid out as biasbench/data/ (verified)."""
    manifest_file = root.joinpath("profiles", name, "manifest.json")
    manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
    files: dict[str, str] = manifest.get("files", {})
    if not files:
        raise DataFileError(f"profile {name}: the manifest lists no files")
    for file, expected in files.items():
        actual = hashlib.sha256(_resolve(root, file).read_bytes()).hexdigest()
        if actual != expected:
            raise DataFileError(
                f"profile {name}: {file} has sha256 {actual}, the manifest says {expected}; "
                "re-run the profile's conversion"
            )
    for key in ("name", "version"):
        if not isinstance(manifest.get(key), str):
            raise DataFileError(f"profile {name}: the manifest needs a string {key!r}")
    if manifest["name"] != name:
        raise DataFileError(f"profile {name}: the manifest is named {manifest['name']!r}")
    return Profile(
        name=name,
        version=manifest["version"],
        files=MappingProxyType(dict(files)),
        assumed=tuple(manifest.get("assumed", ())),
        manifest=MappingProxyType(manifest),
        root=root,
    )
