import pytest

# Gemma 3's tiny model has one key/value group; these tests cut groups, so it gets two.
OVERRIDES = {"gemma3": dict(num_attention_heads=4, num_key_value_heads=2, head_dim=8)}


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory, tiny_tokenizer_dir):
    """model_dir(family) -> a tiny random model for the structured tests, built once per session.
    Read-only for the tests."""
    from tiny_models import build_tiny_model

    cache = {}

    def get(family):
        if family not in cache:
            cache[family] = build_tiny_model(family, tmp_path_factory.mktemp(f"st_{family}"),
                                             tokenizer_dir=tiny_tokenizer_dir, overrides=OVERRIDES.get(family))
        return cache[family]

    return get
