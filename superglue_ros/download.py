"""Fetch the official SuperPoint / SuperGlue weights: presets into our cache (sha256 checked), Hugging Face
hub ids into the Hugging Face cache.

    python -m superglue_ros.download [NAME ...] [--dir DIR] [--force] [--mirror URL|DIR]

NAME: a preset (superpoint, indoor, outdoor; default: all three) or a Hugging Face hub id
owner/name[@revision] (e.g. magic-leap-community/superglue_indoor, .../superglue_outdoor, .../superpoint).

Presets are the files of the original release, magicleap/SuperGluePretrainedNetwork,
models/weights/{superpoint_v1,superglue_indoor,superglue_outdoor}.pth. Each file is streamed to a
temporary file next to its destination, checked against the pinned sha256 and only then renamed
into place, so a failed or corrupted download leaves nothing behind. Files already present with the
right checksum are skipped.

The pinned checksums were taken from public projects that verify these files (each is the sha256
of the file at SuperGluePretrainedNetwork commit ddcf11f4, whose weights are unchanged since the
2020 release): superpoint_v1.pth and superglue_outdoor.pth are pinned identically by several
independent projects; superglue_indoor.pth by one (the same script that pins the other two).

Hub ids are resolved by huggingface_hub (hub_snapshot): its cache ($HF_HUB_CACHE, else $HF_HOME/hub,
else ~/.cache/huggingface/hub), HF_HUB_OFFLINE, tokens and proxies are the hub's own; @revision pins a
branch, tag or commit. Only config.json and model.safetensors are fetched.
"""
import argparse
import hashlib
import http.client
import os
import re
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

DOWNLOAD_COMMAND = 'python -m superglue_ros.download'

# Preset name -> file name in weights_cache_dir().
PRESETS = {
    'superpoint': 'superpoint_v1.pth',
    'indoor': 'superglue_indoor.pth',
    'outdoor': 'superglue_outdoor.pth',
}

# File name -> sha256 of the official file.
MANIFEST = {
    'superpoint_v1.pth': '52b6708629640ca883673b5d5c097c4ddad37d8048b33f09c8ca0d69db12c40e',
    'superglue_indoor.pth': '0e710469be25ebe1e2ccf68edcae8b2945b0617c8e7e68412251d9d47f5052b1',
    'superglue_outdoor.pth': '2f5f5e9bb3febf07b69df633c4c3ff7a17f8af26a023aae2b9303d22339195bd',
}

OFFICIAL_BASE_URL = 'https://github.com/magicleap/SuperGluePretrainedNetwork/raw/master/models/weights'
MIRROR_ENV = 'SUPERGLUE_ROS_WEIGHTS_MIRROR'  # base URL (or local directory) that serves the same file names
LICENSE_URL = 'https://github.com/magicleap/SuperGluePretrainedNetwork/blob/master/LICENSE'
LICENSE_NOTICE = f"""\
The SuperPoint and SuperGlue weights are (c) Magic Leap, Inc. and licensed under the
"SOFTWARE LICENSE AGREEMENT - ACADEMIC OR NON-PROFIT ORGANIZATION NONCOMMERCIAL RESEARCH USE ONLY".
They may not be used commercially nor redistributed. By downloading them you agree to its terms:
{LICENSE_URL}"""

# A Hugging Face hub id: owner/name, optionally @revision (branch, tag or commit; may contain '/').
HUB_ID = re.compile(r'(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?:@(?P<revision>[\w.-]+(?:/[\w.-]+)*))?')
HUB_FILES = ('config.json', 'model.safetensors')  # a transformers checkpoint, as weights.py reads it
OFFICIAL_HUB_IDS = ('magic-leap-community/superpoint', 'magic-leap-community/superglue_indoor',
                    'magic-leap-community/superglue_outdoor')
WEIGHTS_SUFFIXES = ('.pth', '.pt', '.tar', '.ckpt', '.bin', '.safetensors')  # file names, never hub ids

TIMEOUT_S = 60
CHUNK_BYTES = 1 << 20


class DownloadError(RuntimeError):
    """A file could not be downloaded or verified; the message says which, why and what to do."""


def weights_cache_dir() -> Path:
    """$SUPERGLUE_ROS_WEIGHTS_DIR, else $XDG_CACHE_HOME/superglue_ros, else ~/.cache/superglue_ros."""
    if os.environ.get('SUPERGLUE_ROS_WEIGHTS_DIR'):
        return Path(os.environ['SUPERGLUE_ROS_WEIGHTS_DIR']).expanduser()
    if os.environ.get('XDG_CACHE_HOME'):
        return Path(os.environ['XDG_CACHE_HOME']).expanduser() / 'superglue_ros'
    return Path.home() / '.cache' / 'superglue_ros'


def preset_path(name: str) -> Path:
    """Cache path of a preset's file; ValueError for an unknown name."""
    if name not in PRESETS:
        raise ValueError(f'unknown weights preset {name!r}; known presets: {", ".join(PRESETS)}')
    return weights_cache_dir() / PRESETS[name]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(CHUNK_BYTES), b''):
            digest.update(chunk)
    return digest.hexdigest()


def mirror_url(mirror: str | None = None) -> str:
    """Base URL of the preset files: mirror, else $SUPERGLUE_ROS_WEIGHTS_MIRROR, else the official release.

    A mirror is an http(s):// URL with a host, a file:// URL or an existing local directory (given as its
    file:// URL). ValueError (one line: the value, where it came from, what to give) for anything else."""
    source = '--mirror' if mirror else f'${MIRROR_ENV}'
    mirror = mirror or os.environ.get(MIRROR_ENV) or OFFICIAL_BASE_URL
    try:
        url = urllib.parse.urlsplit(mirror)
        if url.scheme in ('http', 'https') and url.hostname or url.scheme == 'file':
            return mirror.rstrip('/')
    except ValueError:  # e.g. an unclosed [IPv6] host
        pass
    directory = Path(os.path.expanduser(mirror))  # os.path: '~unknown_user' stays as it is
    if directory.is_dir():
        return directory.resolve().as_uri()
    raise ValueError(f'{source} {mirror!r} is not an http(s):// URL with a host, a file:// URL or an '
                     f'existing directory: give the URL or the directory that holds {", ".join(PRESETS.values())}')


def _by_hand_hint(file_name: str, sha256: str, directory: Path) -> str:
    return (f'Check the network connection / proxy or use a mirror (--mirror URL|DIR or ${MIRROR_ENV}); '
            f'or copy {file_name} (sha256 {sha256}) by hand into {directory}/')


def fetch(url: str, destination: Path, sha256: str) -> None:
    """Download url to destination atomically; DownloadError (and nothing written) on any failure."""
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        fd, partial = tempfile.mkstemp(dir=destination.parent, prefix=f'.{destination.name}.', suffix='.part')
    except OSError as error:
        raise DownloadError(f'cannot write {destination}: {error}. Choose a writable directory with --dir '
                            'or $SUPERGLUE_ROS_WEIGHTS_DIR') from error
    try:
        digest = hashlib.sha256()
        try:
            with os.fdopen(fd, 'wb') as out, urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
                for chunk in iter(lambda: response.read(CHUNK_BYTES), b''):
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
        except (OSError, http.client.HTTPException) as error:  # HTTP status, refused, DNS, timeout, disk
            reason = error if isinstance(error, urllib.error.HTTPError) else getattr(error, 'reason', error)
            raise DownloadError(f'could not download {destination.name} from {url}: {reason}. '
                                + _by_hand_hint(destination.name, sha256, destination.parent)) from error
        if digest.hexdigest() != sha256:
            raise DownloadError(f'{destination.name} from {url} has sha256 {digest.hexdigest()}, expected '
                                f'{sha256}: the download is corrupted or not the official file; '
                                'nothing was saved. ' + _by_hand_hint(destination.name, sha256,
                                                                     destination.parent))
        os.replace(partial, destination)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)


def download_weights(names=None, directory: Path | None = None, base_url: str | None = None,
                     force: bool = False, manifest: dict[str, str] | None = None, log=print) -> list[Path]:
    """Make sure the given presets (default: all) are in directory (default: weights_cache_dir()).

    base_url: where the files are served, a URL or a local directory (mirror_url; default:
    $SUPERGLUE_ROS_WEIGHTS_MIRROR, else the official GitHub release); manifest: file name -> sha256
    (default: MANIFEST). Returns the file paths. ValueError for an unknown preset or a bad base_url,
    before anything is fetched; tries every file, then raises DownloadError listing those that failed.
    """
    names = list(names or PRESETS)
    unknown = [n for n in names if n not in PRESETS]
    if unknown:
        raise ValueError(f'unknown weights preset(s) {unknown}; choose from {", ".join(PRESETS)}')
    directory = Path(directory) if directory is not None else weights_cache_dir()
    base_url = mirror_url(base_url)
    manifest = MANIFEST if manifest is None else manifest

    paths, todo = [], []
    for name in names:
        file_name = PRESETS[name]
        path = directory / file_name
        paths.append(path)
        if path.is_file() and not force:
            if sha256_of(path) == manifest[file_name]:
                log(f'{file_name}: already present and verified ({path})')
                continue
            log(f'{file_name}: the file in {directory} has the wrong sha256, downloading it again')
        todo.append((file_name, path))
    if not todo:
        return paths

    log(LICENSE_NOTICE)
    errors = []
    for file_name, path in todo:
        url = f'{base_url}/{file_name}'
        log(f'{file_name}: downloading {url}')
        try:
            fetch(url, path, manifest[file_name])
            log(f'{file_name}: saved and verified ({path})')
        except DownloadError as error:
            errors.append(str(error))
    if errors:
        raise DownloadError('\n'.join(errors))
    return paths


def parse_hub_id(spec) -> tuple[str, str | None] | None:
    """(repo_id, revision or None) when spec is a Hugging Face hub id 'owner/name[@revision]', else None.

    Never a hub id: a Path object, a path that exists, a name starting with '.', '/' or '~', or one
    ending in a weights-file suffix (WEIGHTS_SUFFIXES: a missing file stays a missing file)."""
    if not isinstance(spec, str) or spec[:1] in ('.', '/', '~') or os.path.exists(spec):
        return None
    match = HUB_ID.fullmatch(spec)
    if match is None or match['repo'].lower().endswith(WEIGHTS_SUFFIXES):
        return None
    return match['repo'], match['revision']


def hub_snapshot(repo_id: str, revision: str | None = None, local_only: bool = False) -> Path:
    """The directory with config.json and model.safetensors of a hub checkpoint, in huggingface_hub's cache.

    local_only (loading weights: the CLI, the node, the demo): the cached snapshot of that revision,
    never the network, so that a robot does not reach for it at start-up; not cached: DownloadError
    naming the download command. Otherwise (the download command) huggingface_hub decides: a cached
    commit is used as is, a branch or tag is checked against the hub unless HF_HUB_OFFLINE is set, and
    missing files are downloaded (its retry warnings silenced: our one line says what failed).
    Raises DownloadError with the id, the reason and what to do (one line)."""
    # imported here, at the first hub id: huggingface_hub reads HF_HOME / HF_HUB_OFFLINE when it is imported
    from huggingface_hub.utils import logging as hf_logging
    spec = repo_id + (f'@{revision}' if revision else '')
    fetch_hint = f'{DOWNLOAD_COMMAND} {spec}'
    paths = []
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # its 'Retrying in 1s' lines: the error below says it all
    try:
        for file_name in HUB_FILES:
            paths.append(_hub_file(repo_id, file_name, revision, local_only, spec, fetch_hint))
    finally:
        hf_logging.set_verbosity(verbosity)
    directory = paths[0].parent
    if any(path.parent != directory for path in paths):  # both come from one commit: one snapshot folder
        raise DownloadError(f'hub id {spec}: {HUB_FILES} resolved to different snapshots {paths}; fetch it again')
    return directory


def _hub_file(repo_id: str, file_name: str, revision, local_only: bool, spec: str, fetch_hint: str) -> Path:
    """One file of a hub checkpoint through hf_hub_download, its errors as one-line DownloadErrors."""
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import (EntryNotFoundError, GatedRepoError, HfHubHTTPError, HFValidationError,
                                        LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError)
    try:
        return Path(hf_hub_download(repo_id, file_name, revision=revision, local_files_only=local_only))
    except LocalEntryNotFoundError:
        where = f'the Hugging Face cache {constants.HF_HUB_CACHE} ($HF_HUB_CACHE, else $HF_HOME/hub)'
        if local_only:
            raise DownloadError(f'hub id {spec}: {file_name} is not in {where}; weights are not downloaded '
                                f'while loading: fetch them once with: {fetch_hint}') from None
        if constants.is_offline_mode():
            raise DownloadError(f'hub id {spec}: {file_name} is not in {where}, and HF_HUB_OFFLINE is set so the '
                                f'hub is not asked: fetch it once with HF_HUB_OFFLINE unset: '
                                f'{fetch_hint}') from None
        raise DownloadError(f'hub id {spec}: {file_name} is not in {where}, and the hub cannot be reached: check '
                            f'the network / proxy, or fetch it on a machine that can ({fetch_hint}) and copy '
                            'the cache') from None
    except GatedRepoError:
        raise DownloadError(f'hub id {spec}: the repository is gated: accept its terms on the hub and log in '
                            '(hf auth login)') from None
    except RepositoryNotFoundError:
        raise DownloadError(f'hub id {spec}: no such Hugging Face repository (or a private one: log in with '
                            f'hf auth login); the official ones are {", ".join(OFFICIAL_HUB_IDS)}') from None
    except RevisionNotFoundError:
        raise DownloadError(f'hub id {spec}: {repo_id} has no revision {revision or "main"!r}: give a branch, '
                            'tag or commit of the repository') from None
    except EntryNotFoundError:
        raise DownloadError(f'hub id {spec}: the repository has no {file_name}; a SuperPoint / SuperGlue '
                            f'checkpoint in the transformers format has {" and ".join(HUB_FILES)}') from None
    except HFValidationError as e:
        raise DownloadError(f'hub id {spec}: not a valid repository id ({e})') from None
    except (HfHubHTTPError, OSError) as e:  # other HTTP statuses, disk full, unwritable cache
        reason = ' '.join(str(e).split())
        raise DownloadError(f'hub id {spec}: cannot fetch {file_name} ({type(e).__name__}: {reason})') from None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog=DOWNLOAD_COMMAND, description=__doc__.split('\n\n')[0],
                                     epilog=LICENSE_NOTICE,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('names', nargs='*', metavar='NAME',
                        help=f'presets to fetch ({", ".join(PRESETS)}; default: all) or Hugging Face hub ids '
                             f'owner/name[@revision] (e.g. {OFFICIAL_HUB_IDS[1]})')
    parser.add_argument('--dir', type=Path, default=None,
                        help='destination directory of presets (default: $SUPERGLUE_ROS_WEIGHTS_DIR, else '
                             '$XDG_CACHE_HOME/superglue_ros, else ~/.cache/superglue_ros); hub ids go to the '
                             'Hugging Face cache ($HF_HUB_CACHE, else $HF_HOME/hub)')
    parser.add_argument('--force', action='store_true', help='download presets even if a verified file is present')
    parser.add_argument('--mirror', metavar='URL|DIR', default=None,
                        help=f'http(s):// or file:// base URL, or local directory, serving the preset file names '
                             f'(default: ${MIRROR_ENV}, else {OFFICIAL_BASE_URL})')
    args = parser.parse_args(argv)
    hub_ids = {name: parse_hub_id(name) for name in args.names if name not in PRESETS}
    unknown = [name for name, hub in hub_ids.items() if hub is None]
    if unknown:
        parser.error(f'unknown name(s) {", ".join(unknown)}; give presets ({", ".join(PRESETS)}) or Hugging Face '
                     f'hub ids owner/name[@revision], e.g. {", ".join(OFFICIAL_HUB_IDS)}')
    presets = [name for name in args.names if name in PRESETS]
    errors = []
    try:
        if presets or not hub_ids:
            download_weights(presets, args.dir, args.mirror, args.force)
    except DownloadError as error:
        errors.append(str(error))
    except ValueError as error:  # a bad --mirror / $SUPERGLUE_ROS_WEIGHTS_MIRROR: a usage error, nothing fetched
        parser.error(str(error))
    if any(repo_id in OFFICIAL_HUB_IDS for repo_id, _ in hub_ids.values()):
        print(LICENSE_NOTICE)
    for name, (repo_id, revision) in hub_ids.items():
        try:
            print(f'{name}: {hub_snapshot(repo_id, revision)}')
        except DownloadError as error:
            errors.append(str(error))
    for error in errors:
        print(f'error: {error}', file=sys.stderr)
    return 1 if errors else 0


if __name__ == '__main__':
    sys.exit(main())
