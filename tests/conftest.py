# Helper modules (tests/helpers: tiny_models, kernel_cases, the naive oracle) import by bare
# name through pytest's `pythonpath` setting in pyproject.toml.
import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def _token_cache_in_tmp(tmp_path_factory):
    """Runs under test write their token cache (data/token_cache.py) to a temporary folder, never
    the user's; subprocesses inherit it. A test that needs an empty cache sets its own."""
    os.environ["FEATPRUNE_TOKEN_CACHE"] = str(tmp_path_factory.mktemp("token_cache"))
    yield
    os.environ.pop("FEATPRUNE_TOKEN_CACHE", None)


# -- shared models for the engine tests (built once per session) -------------------------------
@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory):
    from tiny_models import build_tokenizer

    path = tmp_path_factory.mktemp("tiny_tokenizer")
    build_tokenizer(path)
    return path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, tiny_tokenizer_dir):
    """tiny_model(family, sharded=False) -> directory of a random tiny model (cached per session).
    Treat it as read-only: tests check that pruning never modifies it."""
    from tiny_models import build_tiny_model

    cache = {}

    def get(family: str, sharded: bool = False):
        key = (family, sharded)
        if key not in cache:
            path = tmp_path_factory.mktemp(f"tiny_{family}{'_sharded' if sharded else ''}")
            build_tiny_model(family, path, tokenizer_dir=tiny_tokenizer_dir,
                             max_shard_size="20KB" if sharded else None)
            cache[key] = path
        return cache[key]

    return get


@pytest.fixture(scope="session")
def calib_jsonl(tmp_path_factory):
    from tiny_models import write_calibration_jsonl

    return write_calibration_jsonl(tmp_path_factory.mktemp("calib") / "calib.jsonl")


def _zoo_model(fn_name: str, cache_name: str):
    """The converted model from featprune's cache when it is complete there (no PyPI package
    needed), else converted from its package; skip only when neither is available."""
    from featprune_ext.data import zoo

    cached = zoo.cache_root() / cache_name
    if (cached / "config.json").is_file() and any(cached.glob("*.safetensors")):
        return cached
    try:
        return getattr(zoo, fn_name)()
    except zoo.ModelPackageMissing as exc:
        pytest.skip(f"{exc} (and no converted copy in {cached})")


@pytest.fixture(scope="session")
def smollm2_dir():
    """Real SmolLM2 135M as fp32 safetensors (cached copy, else from its PyPI package; else skip)."""
    return _zoo_model("smollm2_dir", "smollm2-135m")


@pytest.fixture(scope="session")
def gemma3_dir():
    """Real Gemma 3 270M as fp32 safetensors (cached copy, else from its PyPI package; else skip)."""
    return _zoo_model("gemma3_270m_dir", "gemma3-270m")
