"""Shared fixtures: the real corpora that the gensim wheel ships (found through the installed package)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "offline")


def _gensim_test_data() -> Path:
    gensim = pytest.importorskip("gensim", reason="the demo corpus comes with `pip install .[demo]`")
    return Path(gensim.__file__).parent / "test" / "test_data"


@pytest.fixture(scope="session")
def gensim_data() -> Path:
    """Folder of gensim's bundled test corpora."""
    return _gensim_test_data()


@pytest.fixture(scope="session")
def enwiki_dump(gensim_data: Path) -> Path:
    """A real English Wikipedia XML dump slice (.bz2): 206 pages, 100 of them redirects."""
    return gensim_data / "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"


@pytest.fixture(scope="session")
def bgwiki_dump(gensim_data: Path) -> Path:
    """A Bulgarian Wikipedia dump slice (non-Latin script)."""
    return gensim_data / "bgwiki-latest-pages-articles-shortened.xml.bz2"


@pytest.fixture(scope="session")
def lee_corpus(gensim_data: Path) -> Path:
    """299 news documents, one per line."""
    return gensim_data / "lee_background.cor"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("RUN_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: set RUN_SLOW=1 (make test-all)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
