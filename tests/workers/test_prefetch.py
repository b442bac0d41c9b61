"""The planner's prefetch hint: the next model's files are read ahead into the page cache."""

from scheduler.settings import ModelSpec
from workers.prefetch import Prefetcher, warm_page_cache


def test_warming_asks_for_every_safetensors_file(tmp_path):
    (tmp_path / "model-00001.safetensors").write_bytes(b"x" * 4096)
    (tmp_path / "model-00002.safetensors").write_bytes(b"y" * 100)
    (tmp_path / "notes.txt").write_text("not weights")
    assert warm_page_cache(tmp_path) == 4196


def test_a_hint_is_acted_on_once_and_unknown_models_are_ignored(settings, tmp_path):
    model = tmp_path / "next"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"z" * 10)
    settings = settings.model_copy(update={"models": {"next": ModelSpec(source=str(model)),
                                                      "hub": ModelSpec(source="org/some-model")}})
    prefetcher = Prefetcher(settings)
    prefetcher.hint("hub")  # nothing local to read
    assert prefetcher.warmed is None
    prefetcher.hint("next")
    assert prefetcher.warmed == "next"
    prefetcher.hint(None)
    assert prefetcher.warmed == "next"
