"""A Hugging Face hub cache written by the tests, in huggingface_hub's own layout, so that weights are
resolved from it with HF_HUB_OFFLINE=1 and no network:

    $HF_HOME/hub/models--{owner}--{name}/blobs/{sha256 of the file}
                                        /snapshots/{commit}/{file name} -> ../../blobs/{sha256}
                                        /refs/{branch or tag}             (the commit hash)

huggingface_hub reads the constants HF_HOME / HF_HUB_OFFLINE when it is imported, so the code under
test runs in a fresh interpreter with hub_env().
"""
import hashlib
import os
from pathlib import Path


def add_snapshot(hf_home: Path, repo_id: str, commit: str, files: dict, refs=('main',)) -> Path:
    """Store files {name in the repository: local path} as commit of repo_id; refs point at it.
    Returns the snapshot directory."""
    assert len(commit) == 40 and all(c in '0123456789abcdef' for c in commit), commit
    repo = Path(hf_home) / 'hub' / f'models--{repo_id.replace("/", "--")}'
    (repo / 'blobs').mkdir(parents=True, exist_ok=True)
    snapshot = repo / 'snapshots' / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    for name, source in files.items():
        content = Path(source).read_bytes()
        blob = repo / 'blobs' / hashlib.sha256(content).hexdigest()
        blob.write_bytes(content)
        (snapshot / name).symlink_to(os.path.relpath(blob, snapshot))
    (repo / 'refs').mkdir(exist_ok=True)
    for ref in refs:
        (repo / 'refs' / ref).write_text(commit)
    return snapshot


def add_checkpoint(hf_home: Path, repo_id: str, commit: str, directory: Path, refs=('main',)) -> Path:
    """A transformers checkpoint directory (save_pretrained: config.json + model.safetensors) as a commit."""
    return add_snapshot(hf_home, repo_id, commit, {name: Path(directory) / name
                                                  for name in ('config.json', 'model.safetensors')}, refs)


def hub_env(hf_home: Path) -> dict:
    """The environment of a process that finds the hub cache through HF_HOME alone and never asks the hub."""
    env = {k: v for k, v in os.environ.items() if k not in ('HF_HUB_CACHE', 'HUGGINGFACE_HUB_CACHE')}
    return {**env, 'HF_HOME': str(hf_home), 'HF_HUB_OFFLINE': '1'}
