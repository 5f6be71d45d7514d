"""Download mechanics against a local HTTP server serving small fake checkpoints."""
import functools
import hashlib
import http.server
import re
import socket
import threading

import pytest

from superglue_ros import download
from superglue_ros.download import PRESETS, DownloadError, download_weights


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    """Talk to 127.0.0.1 directly even where a proxy is configured."""
    for var in ('http_proxy', 'HTTP_PROXY', 'https_proxy', 'HTTPS_PROXY', 'all_proxy', 'ALL_PROXY'):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def served(tmp_path):
    """(base_url, manifest of the real sha256 of the served files) for a server on 127.0.0.1."""
    root = tmp_path / 'server'
    root.mkdir()
    manifest = {}
    for file_name in PRESETS.values():
        content = f'fake checkpoint {file_name}'.encode() * 1000
        (root / file_name).write_bytes(content)
        manifest[file_name] = hashlib.sha256(content).hexdigest()

    class QuietHandler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0),
                                             functools.partial(QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f'http://127.0.0.1:{server.server_address[1]}', manifest
    server.shutdown()
    server.server_close()


@pytest.fixture
def refused_url():
    """A URL on 127.0.0.1 where nothing listens."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    return f'http://127.0.0.1:{port}'


def cache_listing(directory):
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def test_download_all_verified(served, tmp_path):
    base_url, manifest = served
    cache = tmp_path / 'cache'
    logged = []
    paths = download_weights(directory=cache, base_url=base_url, manifest=manifest, log=logged.append)
    assert paths == [cache / f for f in PRESETS.values()]
    assert cache_listing(cache) == sorted(PRESETS.values())  # no temporary files left
    for path in paths:
        assert download.sha256_of(path) == manifest[path.name]
    assert 'NONCOMMERCIAL RESEARCH USE ONLY' in '\n'.join(logged)


def test_checksum_mismatch_leaves_nothing(served, tmp_path):
    base_url, manifest = served
    cache = tmp_path / 'cache'
    wrong = dict(manifest, **{'superglue_indoor.pth': '0' * 64})
    with pytest.raises(DownloadError) as info:
        download_weights(['indoor'], cache, base_url, manifest=wrong, log=lambda _: None)
    message = str(info.value)
    assert 'superglue_indoor.pth' in message and manifest['superglue_indoor.pth'] in message
    assert str(cache) in message  # says where to put the file by hand
    assert cache_listing(cache) == []


def test_present_file_is_skipped(refused_url, served, tmp_path):
    _, manifest = served
    cache = tmp_path / 'cache'
    cache.mkdir()
    (cache / 'superpoint_v1.pth').write_bytes(b'fake checkpoint superpoint_v1.pth' * 1000)
    logged = []
    # The refused URL proves no network access is attempted.
    paths = download_weights(['superpoint'], cache, refused_url, manifest=manifest, log=logged.append)
    assert paths == [cache / 'superpoint_v1.pth']
    assert any('already present' in line for line in logged)


def test_wrong_present_file_is_replaced_and_force_downloads(served, tmp_path):
    base_url, manifest = served
    cache = tmp_path / 'cache'
    cache.mkdir()
    target = cache / 'superglue_outdoor.pth'
    target.write_bytes(b'truncated')
    download_weights(['outdoor'], cache, base_url, manifest=manifest, log=lambda _: None)
    assert download.sha256_of(target) == manifest['superglue_outdoor.pth']

    logged = []
    download_weights(['outdoor'], cache, base_url, force=True, manifest=manifest, log=logged.append)
    assert any('downloading' in line for line in logged)
    assert cache_listing(cache) == ['superglue_outdoor.pth']


def test_http_404_is_a_clear_error(served, tmp_path):
    base_url, manifest = served
    cache = tmp_path / 'cache'
    with pytest.raises(DownloadError) as info:
        download_weights(['indoor'], cache, base_url + '/missing', manifest=manifest, log=lambda _: None)
    message = str(info.value)
    assert f'{base_url}/missing/superglue_indoor.pth' in message and '404' in message
    assert 'by hand' in message and str(cache) in message
    assert cache_listing(cache) == []


def test_connection_refused_is_a_clear_error(refused_url, served, tmp_path):
    _, manifest = served
    with pytest.raises(DownloadError) as info:
        download_weights(['superpoint', 'outdoor'], tmp_path / 'cache', refused_url, manifest=manifest,
                         log=lambda _: None)
    message = str(info.value)
    for file_name in ('superpoint_v1.pth', 'superglue_outdoor.pth'):  # every file tried and reported
        assert f'{refused_url}/{file_name}' in message
    assert re.search('refused', message, re.IGNORECASE)


def test_cli_uses_env_dir_and_mirror(served, refused_url, tmp_path, monkeypatch, capsys):
    base_url, manifest = served
    cache = tmp_path / 'env_cache'
    monkeypatch.setattr(download, 'MANIFEST', manifest)
    monkeypatch.setenv('SUPERGLUE_ROS_WEIGHTS_DIR', str(cache))
    monkeypatch.setenv(download.MIRROR_ENV, base_url)
    assert download.main(['indoor']) == 0
    assert cache_listing(cache) == ['superglue_indoor.pth']
    assert download.preset_path('indoor') == cache / 'superglue_indoor.pth'

    assert download.main(['outdoor', '--mirror', refused_url]) == 1
    assert 'error: could not download superglue_outdoor.pth' in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        download.main(['bogus'])
    assert info.value.code == 2


def test_mirror_may_be_a_local_directory(served, tmp_path, monkeypatch):
    """A directory holding the files (absolute, relative or as file://) serves as the mirror."""
    _, manifest = served
    monkeypatch.setattr(download, 'MANIFEST', manifest)
    monkeypatch.chdir(tmp_path)
    for name, mirror in (('absolute', str(tmp_path / 'server')), ('relative', 'server'),
                         ('file_url', (tmp_path / 'server').as_uri())):
        assert download.main(['indoor', '--dir', name, '--mirror', mirror]) == 0, name
        assert cache_listing(tmp_path / name) == ['superglue_indoor.pth'], name
    assert download.mirror_url('server') == (tmp_path / 'server').as_uri()


@pytest.mark.parametrize('mirror', ['notaurl', 'http://', 'https:///weights', 'ftp://x', 'http://[::1', 'a_file'])
def test_bad_mirror_is_a_usage_error(mirror, tmp_path, monkeypatch, capsys):
    """Anything but an http(s) URL with a host, a file:// URL or an existing directory: exit 2 and one
    line naming the value and what to give, before anything is fetched; the same for $SUPERGLUE_ROS_WEIGHTS_MIRROR."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / 'a_file').write_text('not a directory')
    for argv, source in ((['--mirror', mirror], '--mirror'), ([], f'${download.MIRROR_ENV}')):
        monkeypatch.setenv(download.MIRROR_ENV, mirror)
        with pytest.raises(SystemExit) as info:
            download.main(['superpoint', '--dir', 'cache', *argv])
        assert info.value.code == 2
        error = capsys.readouterr().err.splitlines()[-1]
        assert f"error: {source} {mirror!r} is not an http(s):// URL with a host, a file:// URL or an existing " \
               'directory: give the URL or the directory that holds superpoint_v1.pth' in error, error
        assert cache_listing(tmp_path / 'cache') == []
    with pytest.raises(ValueError, match='is not an http'):
        download_weights(['superpoint'], tmp_path / 'cache', mirror, log=lambda _: None)


def test_cache_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.delenv('SUPERGLUE_ROS_WEIGHTS_DIR', raising=False)
    monkeypatch.delenv('XDG_CACHE_HOME', raising=False)
    monkeypatch.setenv('HOME', str(tmp_path / 'home'))
    assert download.weights_cache_dir() == tmp_path / 'home' / '.cache' / 'superglue_ros'
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'xdg'))
    assert download.weights_cache_dir() == tmp_path / 'xdg' / 'superglue_ros'
    monkeypatch.setenv('SUPERGLUE_ROS_WEIGHTS_DIR', str(tmp_path / 'explicit'))
    assert download.weights_cache_dir() == tmp_path / 'explicit'
    with pytest.raises(ValueError, match='unknown weights preset'):
        download.preset_path('nope')


def test_official_manifest_covers_every_preset():
    assert set(download.MANIFEST) == set(PRESETS.values())
    assert all(re.fullmatch('[0-9a-f]{64}', digest) for digest in download.MANIFEST.values())


def test_unwritable_directory_is_a_clear_error(served, tmp_path):
    base_url, manifest = served
    blocker = tmp_path / 'a_file'
    blocker.write_text('not a directory')
    with pytest.raises(DownloadError, match='cannot write .*--dir'):
        download_weights(['indoor'], blocker / 'cache', base_url, manifest=manifest, log=lambda _: None)


def test_hub_ids_go_to_the_hugging_face_cache(tmp_path):
    """python -m superglue_ros.download with hub ids, in a fresh process with HF_HOME and HF_HUB_OFFLINE=1:
    a cached id gives its snapshot directory, a missing one one error line with what to do (exit 1),
    a name that is neither a preset nor a hub id a usage error (exit 2)."""
    import os
    import subprocess
    import sys

    from hub_cache import add_snapshot, hub_env
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    files = {name: tmp_path / name for name in download.HUB_FILES}
    for path in files.values():
        path.write_text('{}')
    snapshot = add_snapshot(tmp_path / 'hf', 'magic-leap-community/superpoint', 'c' * 40, files)

    def run(*names):
        return subprocess.run([sys.executable, '-m', 'superglue_ros.download', *names], cwd=repo,
                              env=hub_env(tmp_path / 'hf'), capture_output=True, text=True, timeout=120)

    done = run('magic-leap-community/superpoint')
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == f'magic-leap-community/superpoint: {snapshot}'
    assert 'NONCOMMERCIAL RESEARCH USE ONLY' in done.stdout  # the official weights' license
    done = run('magic-leap-community/superpoint@' + 'c' * 40, 'magic-leap-community/superglue_outdoor@v1')
    assert done.returncode == 1
    assert done.stdout.splitlines()[-1] == f'magic-leap-community/superpoint@{"c" * 40}: {snapshot}'
    error, = done.stderr.splitlines()
    assert error.startswith('error: hub id magic-leap-community/superglue_outdoor@v1: config.json is not in the '
                            f'Hugging Face cache {tmp_path / "hf" / "hub"}'), error
    assert 'HF_HUB_OFFLINE is set' in error and error.endswith(
        f'{download.DOWNLOAD_COMMAND} magic-leap-community/superglue_outdoor@v1')
    done = run('superglue.pth')
    assert done.returncode == 2 and 'unknown name(s) superglue.pth' in done.stderr
