"""Session-wide test setup: an isolated, offline Hugging Face environment, tiny models, and a local hub mirror.

- Every Hugging Face cache/home variable points into a temporary folder and ``HF_HUB_OFFLINE=1`` is the default, so
  no test can read or write the real caches or reach huggingface.co. A test that needs the hub sets
  ``HF_HUB_OFFLINE=0`` and ``HF_ENDPOINT=hub_mirror.url`` with ``monkeypatch`` (or uses the ``hub_online`` fixture).
- ``tiny_models``: family -> tiny random-weight diffusers folder ("sd1", "sd2", "sdxl-base", "sdxl-refiner"), each
  built on first use only.
- ``hub_mirror``: a :class:`support.hub_mirror.HubMirror` serving them as ``imagegen-test/tiny-<family>``.

Helpers import as ``from support.single_file import to_single_file``: ``tests/`` has no ``__init__.py``, so pytest
puts ``tests/`` itself on ``sys.path``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import MappingProxyType

import pytest

from support.hub_mirror import HubMirror, RepoListing
from support.tiny_models import FAMILIES, TinyModelCache

HUB_NAMESPACE = "imagegen-test"
#: Hub ids of the tiny models, and the download counts the mirror reports (distinct, so sorting is observable).
TINY_REPO_IDS = MappingProxyType({family: f"{HUB_NAMESPACE}/tiny-{family}" for family in FAMILIES})
_TINY_DOWNLOADS = MappingProxyType({"sd1": 4000, "sdxl-base": 3000, "sdxl-refiner": 2000, "sd2": 1000})

# Variables that would point tests at the user's caches, token or a real endpoint.
_HF_ENV_CLEARED = (
    "HF_ENDPOINT",
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "HF_TOKEN_PATH",
    "HF_HUB_CACHE",
    "HUGGINGFACE_HUB_CACHE",
    "HF_ASSETS_CACHE",
    "HF_XET_CACHE",
    "TRANSFORMERS_CACHE",
    "TRANSFORMERS_OFFLINE",
    "IMAGEGEN_MODELS_DIR",
)
_ENV_PATCH = pytest.StashKey[tuple[pytest.MonkeyPatch, Path]]()
_TRUE = frozenset({"1", "on", "yes", "true"})


def pytest_configure(config: pytest.Config) -> None:
    # huggingface_hub, transformers and diffusers copy HF_* variables into module constants when first imported, so
    # the isolated environment must exist before any test module imports them: hence here, not in a fixture.
    home = Path(tempfile.mkdtemp(prefix="imagegen-tests-home-"))
    patch = pytest.MonkeyPatch()
    for name in _HF_ENV_CLEARED:
        patch.delenv(name, raising=False)
    # Unset while the libraries import, so every copy they take says "online"; the session fixture below then makes
    # the variable (default 1) the only switch, read at call time by imagegen and by huggingface_hub alike.
    patch.delenv("HF_HUB_OFFLINE", raising=False)
    patch.setenv("HF_HOME", str(home / "huggingface"))
    patch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    patch.setenv("IMAGEGEN_HOME", str(home / "imagegen"))
    config.stash[_ENV_PATCH] = (patch, home)


def pytest_unconfigure(config: pytest.Config) -> None:
    patch, home = config.stash.get(_ENV_PATCH, (None, None))
    if patch is not None:
        patch.undo()
    if home is not None:
        shutil.rmtree(home, ignore_errors=True)


class _EnvFlag:
    """A truth value read from an environment variable each time it is tested."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __bool__(self) -> bool:
        return os.environ.get(self.name, "").strip().lower() in _TRUE

    def __repr__(self) -> str:
        return f"<{self.name}={bool(self)}>"


@pytest.fixture(autouse=True, scope="session")
def hf_hub_offline_by_default() -> Iterator[None]:
    """``HF_HUB_OFFLINE=1`` for the session (restored after); a test may override it with ``monkeypatch.setenv``.

    imagegen reads the variable at call time, but huggingface_hub froze it into ``constants.HF_HUB_OFFLINE`` at import
    and refuses every HTTP request while that is true. The constant is swapped for a flag that reads the environment
    whenever it is tested, so setting ``HF_HUB_OFFLINE=0`` in a test really lets requests through to the mirror.
    """
    import huggingface_hub.constants as hf_constants

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setattr(hf_constants, "HF_HUB_OFFLINE", _EnvFlag("HF_HUB_OFFLINE"))
        yield


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> TinyModelCache:
    """family -> tiny diffusers folder, built on first access (about 0.2-0.5 s each) and shared by the session."""
    return TinyModelCache(tmp_path_factory.mktemp("tiny-models"))


class _TinyRepos(Mapping[str, Path]):
    """Hub id -> tiny model folder, without building a model until the mirror is asked for it."""

    def __init__(self, models: TinyModelCache) -> None:
        self._models = models
        self._family = {repo_id: family for family, repo_id in TINY_REPO_IDS.items()}

    def __getitem__(self, repo_id: str) -> Path:
        return self._models[self._family[repo_id]]

    def __iter__(self) -> Iterator[str]:
        return iter(self._family)

    def __len__(self) -> int:
        return len(self._family)

    def __contains__(self, repo_id: object) -> bool:
        return repo_id in self._family


@pytest.fixture(scope="session")
def hub_mirror(tiny_models: TinyModelCache) -> Iterator[HubMirror]:
    """A local hub serving the tiny models as ``imagegen-test/tiny-<family>`` (see ``TINY_REPO_IDS``).

    Session-wide, so ``hub_mirror.requests`` accumulates: compare lengths, or call ``clear_requests()`` first.
    """
    listings = {TINY_REPO_IDS[f]: RepoListing(downloads=n, likes=n // 100) for f, n in _TINY_DOWNLOADS.items()}
    with HubMirror(_TinyRepos(tiny_models), listings=listings) as mirror:
        yield mirror


@pytest.fixture
def hub_online(monkeypatch: pytest.MonkeyPatch, hub_mirror: HubMirror) -> HubMirror:
    """For one test: hub access allowed, through the mirror only (``HF_HUB_OFFLINE=0``, ``HF_ENDPOINT``=mirror).

    huggingface_hub fixes its default endpoint at import (in ``constants`` and in the module-level ``HfApi`` behind
    ``huggingface_hub.model_info`` & co., which diffusers calls), so code that does not pass ``endpoint=`` is pointed
    at the mirror by patching those too.
    """
    import huggingface_hub.constants as hf_constants
    import huggingface_hub.hf_api as hf_api

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_ENDPOINT", hub_mirror.url)
    monkeypatch.setattr(hf_constants, "ENDPOINT", hub_mirror.url)
    template = hub_mirror.url + "/{repo_id}/resolve/{revision}/{filename}"
    monkeypatch.setattr(hf_constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
    monkeypatch.setattr(hf_api.api, "endpoint", hub_mirror.url)
    return hub_mirror
