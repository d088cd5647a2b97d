"""Shipping: the packaged demo, `artannot demo`, --version, desktop metadata, the wheel, the PyInstaller bundle."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGING = REPO / "packaging"
VENV_SITE = Path(sys.prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"


def test_version_from_the_script_and_python_m(capsys):
    from artannot import __version__
    from artannot.cli import main

    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == f"artannot {__version__}"
    out = subprocess.run([sys.executable, "-m", "artannot", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"artannot {__version__}"


def test_demo_collection_lives_in_the_package():
    from artannot.demo import demo_folder

    folder = demo_folder()
    assert folder.is_relative_to(REPO / "artannot") and (folder / "LICENSE.md").is_file()
    assert len(list(folder.rglob("*.png"))) >= 280
    assert not (REPO / "resources" / "demo").exists()


def test_artannot_demo_writes_a_labelled_tagged_project(tmp_path, capsys):
    from artannot.cli import main
    from artannot.project import Project
    from artannot.store import tags as tag_store

    assert main(["demo", str(tmp_path / "d")]) == 0
    path = tmp_path / "d" / "demo.artannot"
    assert str(path) in capsys.readouterr().out
    with Project(path) as p:
        n = p.conn.execute("SELECT COUNT(*) FROM images").fetchone()[0]
        assert n >= 280 and tag_store.tag_names(p.conn)
    assert main(["demo", str(tmp_path / "d")]) == 2  # never over an existing project
    err = capsys.readouterr().err.strip()
    assert "already exists" in err and "\n" not in err


def test_gui_offers_the_demo_when_no_project_is_open(qtbot, tmp_path, monkeypatch):
    import artannot.demo
    from artannot.gui.app import offer_demo
    from artannot.gui.main_window import MainWindow

    small = tmp_path / "mini"
    shutil.copytree(artannot.demo.DEMO_DIR / "fish", small / "fish")
    shutil.copy2(artannot.demo.DEMO_DIR / "tags.csv", small / "tags.csv")
    monkeypatch.setattr(artannot.demo, "DEMO_DIR", small)  # a quick stand-in for the whole collection
    w = MainWindow()
    w.confirm_close = lambda: True
    qtbot.addWidget(w)
    box = offer_demo(w, tmp_path / "data")
    assert box.isVisible()
    next(b for b in box.buttons() if b.text() == "Open the demo project").click()
    qtbot.waitUntil(lambda: w.project is not None, timeout=60_000)
    assert w.project.path == (tmp_path / "data" / "demo.artannot").resolve()
    w.close()


def test_desktop_entry_and_appstream_metadata_validate(tmp_path):
    from artannot.gui.app import DESKTOP_ID

    if not shutil.which("desktop-file-validate") or not shutil.which("appstreamcli"):
        pytest.skip("desktop-file-validate / appstreamcli missing: apt-get install desktop-file-utils appstream")
    desktop = tmp_path / f"{DESKTOP_ID}.desktop"  # validated under the id `make install-desktop` installs it as
    shutil.copy2(PACKAGING / "artannot.desktop", desktop)
    r = subprocess.run(["desktop-file-validate", str(desktop)], capture_output=True, text=True)
    assert r.returncode == 0 and "error" not in r.stdout.lower(), r.stdout + r.stderr
    r = subprocess.run(["appstreamcli", "validate", "--no-net", str(PACKAGING / f"{DESKTOP_ID}.metainfo.xml")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"<launchable type=\"desktop-id\">{DESKTOP_ID}.desktop" in (PACKAGING / f"{DESKTOP_ID}.metainfo.xml").read_text()
    assert (PACKAGING / "artannot.svg").read_text().lstrip().startswith("<svg")


def test_make_install_desktop_follows_xdg(tmp_path):
    if not shutil.which("make"):
        pytest.skip("make is not installed")
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "share")}
    subprocess.run(["make", "-s", "install-desktop"], cwd=REPO, env=env, check=True, capture_output=True)
    for rel in ("applications/io.github.artannot.ArtAnnot.desktop", "metainfo/io.github.artannot.ArtAnnot.metainfo.xml",
                "icons/hicolor/scalable/apps/io.github.artannot.ArtAnnot.svg"):
        assert (tmp_path / "share" / rel).is_file(), rel


@pytest.mark.slow
def test_wheel_installs_into_a_fresh_venv_and_trains_on_the_demo(tmp_path):
    """The wheel carries the demo; torch & co. come from this venv through a .pth file, artannot from the wheel."""
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(wheels)], check=True, capture_output=True)
    wheel = next(wheels.glob("artannot-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python*/site-packages"))
    (site / "zz_reuse_dev_venv.pth").write_text(f"{VENV_SITE}\n")
    py = venv / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                   check=True, capture_output=True)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = lambda *a: subprocess.run([str(py), *a], capture_output=True, text=True, env=env, cwd=tmp_path)  # noqa: E731
    where = run("-c", "import artannot; print(artannot.__file__)")
    assert Path(where.stdout.strip()).is_relative_to(venv), where.stdout + where.stderr
    cli = ["-m", "artannot"]
    assert run(*cli, "--version").returncode == 0
    r = run(*cli, "demo", str(tmp_path / "d"))
    assert r.returncode == 0, r.stderr
    r = run(*cli, "train", str(tmp_path / "d" / "demo.artannot"), "--method", "linear", "--device", "cpu")
    assert r.returncode == 0 and "test top-1" in r.stdout, r.stdout + r.stderr


BUNDLE = REPO / "dist" / "artannot" / "artannot"


@pytest.mark.slow
def test_pyinstaller_bundle_runs_and_opens_the_window():
    try:
        import PyInstaller  # noqa: F401
    except ImportError:
        pytest.skip("pyinstaller is not installed (pip install -e '.[dist]'), so no bundle can be built")
    if not BUNDLE.is_file():
        if os.environ.get("ARTANNOT_BUILD_BUNDLE") != "1":
            pytest.skip("no bundle in dist/: run `make dist` (or set ARTANNOT_BUILD_BUNDLE=1 to build it here)")
        started = time.perf_counter()
        subprocess.run(["make", "dist"], cwd=REPO, check=True)
        print(f"bundle built in {time.perf_counter() - started:.0f}s")
    out = subprocess.run([str(BUNDLE), "--version"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.startswith("artannot "), out.stderr
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "ARTANNOT_QUIT_AFTER_MS": "500"}
    r = subprocess.run([str(BUNDLE), "gui"], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
