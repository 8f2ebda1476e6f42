import pytest


@pytest.fixture(scope="session")
def vocab_model(tmp_path_factory):
    """vocab_model(family, tied, arch="llama", **extra_config) -> a tiny model directory with a
    `family` tokenizer (tiny_tokenizers), built once per session. Read-only for the tests."""
    from tiny_tokenizers import build_model

    cache = {}

    def get(family: str, tied: bool, arch: str = "llama", **extra):
        key = (family, tied, arch, tuple(sorted(extra.items())))
        if key not in cache:
            path = tmp_path_factory.mktemp(f"vocab_{family}_{'tied' if tied else 'untied'}_{arch}")
            cache[key] = build_model(family, path, tied=tied, arch=arch, extra_config=extra or None)
        return cache[key]

    return get
