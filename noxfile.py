"""Developer tasks: `nox` runs the tests, the linters and the type checker."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "stall", "browser", "deploy", "cluster", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True

PYPROJECT = nox.project.load_toml("pyproject.toml")


def group(name: str) -> list[str]:
    """The requirements of one dependency group of pyproject.toml."""
    return list(nox.project.dependency_groups(PYPROJECT, name))


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite against the installed package (not the checkout)."""
    session.install(".", *group("test"))
    session.run(
        "pytest",
        *("--ignore=tests/test_browser.py", "--ignore=tests/test_web_units.py"),
        "--ignore=tests/test_deploy.py",
        *("--ignore=tests/test_backplane.py", "--ignore=tests/test_shared_hub.py"),
        "--ignore=tests/test_cluster.py",
        "--ignore=tests/test_workers.py",
        *("-m", "not scale"),
        *session.posargs,
    )


@nox.session
def stall(session: nox.Session) -> None:
    """The hostile mass stall at full scale: 1,500 members stop reading at once."""
    session.install(".", *group("test"))
    session.run("pytest", "tests/test_mass_stall.py", "-m", "scale", *session.posargs)


@nox.session
def browser(session: nox.Session) -> None:
    """The web client in Debian's Chromium against the installed server, and
    its pure modules' unit tests, which run in the same Chromium."""
    session.install(".", *group("browser"))
    session.run("pytest", "tests/test_browser.py", "tests/test_web_units.py", *session.posargs)


@nox.session
def deploy(session: nox.Session) -> None:
    """The files of `deploy/` at work: Debian's nginx on the committed site
    file, with TLS (a certificate made by the test), in front of `trio-chat
    serve`, driven by Debian's Chromium and raw `wss://` clients."""
    session.install(".", *group("deploy"))
    session.run("pytest", "tests/test_deploy.py", *session.posargs)


@nox.session
def cluster(session: nox.Session) -> None:
    """The Redis backplane, the shared hub, several `trio-chat serve` processes
    sharing rooms, and `serve --workers`, against a real `redis-server`
    (Debian's `redis-server`), which the tests start on a free port."""
    session.install(".", *group("test"))
    session.run(
        "pytest",
        *("tests/test_backplane.py", "tests/test_shared_hub.py"),
        *("tests/test_cluster.py", "tests/test_workers.py"),
        *session.posargs,
    )


@nox.session
def lint(session: nox.Session) -> None:
    """Ruff: lint (flake8-async rules included) and formatting."""
    session.install(*group("lint"))
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict over the package, the tests and this file."""
    session.install("-e", ".", *group("typecheck"))
    session.run("mypy", "trio_chat", "tests", "benchmarks", "noxfile.py")


@nox.session(default=False)
def bench(session: nox.Session) -> None:
    """Measure a fresh server: a short standard scenario (a measurement, not a test).

    Each run starts its own server (`benchmarks/run.py`), pinned to core 0
    with the generator on the other cores where `taskset` exists. Extra
    arguments go to both runs, e.g. `nox -s bench -- --no-pin`, or
    `nox -s bench -- --backplane` (a fresh `redis-server` for each run).
    """
    session.install(".")
    # 100 clients, 10 senders, 200 msg/s: a steady 20,000 deliveries/s.
    session.run(
        "python",
        "benchmarks/run.py",
        *("--connections", "100", "--senders", "10", "--rate", "200", "--duration", "5s"),
        *session.posargs,
    )
    session.run("python", "benchmarks/run.py", "--idle", "--connections", "1000", *session.posargs)
