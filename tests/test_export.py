"""surmlab.save_pretrained / from_pretrained / push_to_hub (only the hub's network calls are replaced)."""

import shutil
from pathlib import Path

import httpx
import huggingface_hub
import pytest
import torch
from test_save_routes import LABELS, batch, tiny_bert

import surmlab
from surmlab import SurmConfig, inject


@pytest.fixture(autouse=True)
def offline_hub(monkeypatch, tmp_path):
    """No real hub: offline mode and an empty hub cache."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub-cache"))


@torch.no_grad()
def trained(config=None):
    model = inject(tiny_bert(), config or SurmConfig(hyper={"block_size": 16}))
    for p in model.parameters():
        if p.requires_grad:
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


@torch.no_grad()
def logits(model):
    return model.eval()(input_ids=batch()).logits


def placeholder_labels(model):
    model.config.id2label = {i: f"LABEL_{i}" for i in range(3)}
    model.config.label2id = {f"LABEL_{i}": i for i in range(3)}
    return model


def test_save_pretrained_round_trip_with_card_and_labels(tmp_path):
    model = trained(SurmConfig(budget=1000))
    folder = surmlab.save_pretrained(
        model, tmp_path / "out", metrics={"accuracy": 0.8125}, command="surmlab train --backbone tiny-bert"
    )
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "surm_config.json", "surm_model.safetensors"]
    card = (folder / "README.md").read_text()
    for fact in (
        "library_name: surmlab",
        "BertForSequenceClassification",
        "circulant (lora mode",
        f"block_size={model.surm_config.hyper['block_size']}",
        "| budget | 1,000 for the updates",
        f"{sum(p.numel() for p in model.parameters() if p.requires_grad):,} (head included)",
        "attention.self.query, attention.self.value",
        "negative, neutral, positive",
        "| accuracy | 0.8125 |",
        "surmlab train --backbone tiny-bert",
        "surmlab.from_pretrained(base,",
    ):
        assert fact in card, fact
    loaded = surmlab.from_pretrained(placeholder_labels(tiny_bert()), folder)  # the same base weights
    assert (logits(tiny_bert()) - logits(model)).abs().max() > 1e-3
    torch.testing.assert_close(logits(loaded), logits(model), rtol=0, atol=0)
    assert [loaded.config.id2label[i] for i in range(3)] == LABELS and loaded.config.label2id["positive"] == 2


class FakeHub:
    """The hub's network side: uploads land in a folder per repository, downloads read from it."""

    def __init__(self, root: Path):
        self.root, self.calls = root, []

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs.get("private")))
        (self.root / repo_id).mkdir(parents=True, exist_ok=True)

    def upload_folder(self, *, repo_id, folder_path, commit_message=None, **kwargs):
        self.calls.append(("upload_folder", repo_id, commit_message))
        shutil.copytree(folder_path, self.root / repo_id, dirs_exist_ok=True)
        return huggingface_hub.CommitInfo(
            commit_url=f"https://huggingface.co/{repo_id}/commit/1", commit_message=commit_message or "",
            commit_description="", oid="1", pr_url=None,
        )  # fmt: skip

    def snapshot_download(self, repo_id, revision=None, allow_patterns=None, **kwargs):
        folder = self.root / repo_id
        if not folder.exists():
            url = f"https://huggingface.co/api/models/{repo_id}"
            response = httpx.Response(404, request=httpx.Request("GET", url))
            raise huggingface_hub.errors.RepositoryNotFoundError(f"404 Client Error: {repo_id}", response=response)
        return str(folder)


def test_push_to_hub_then_from_pretrained_by_repo_id(monkeypatch, tmp_path):
    hub = FakeHub(tmp_path / "hub")
    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", lambda api, *a, **k: hub.create_repo(*a, **k))
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", lambda api, *a, **k: hub.upload_folder(*a, **k))
    monkeypatch.setattr(huggingface_hub, "snapshot_download", hub.snapshot_download)
    model = trained()
    url = surmlab.push_to_hub(model, "someone/tiny-surm", private=True, metrics={"accuracy": 0.5})
    assert url == "https://huggingface.co/someone/tiny-surm/commit/1"
    assert hub.calls == [
        ("create_repo", "someone/tiny-surm", True),
        ("upload_folder", "someone/tiny-surm", "SURM adapter for BertForSequenceClassification"),
    ]
    assert sorted(p.name for p in (tmp_path / "hub/someone/tiny-surm").iterdir()) == [
        "README.md",
        "surm_config.json",
        "surm_model.safetensors",
    ]
    loaded = surmlab.from_pretrained(tiny_bert(), "someone/tiny-surm")
    torch.testing.assert_close(logits(loaded), logits(model), rtol=0, atol=0)
    with pytest.raises(FileNotFoundError, match=r"'someone/missing' is not a local folder and could not be fetched"):
        surmlab.from_pretrained(tiny_bert(), "someone/missing")


def test_a_hub_id_that_is_not_there_offline_is_one_line(tmp_path):
    with pytest.raises(FileNotFoundError) as caught:
        surmlab.from_pretrained(tiny_bert(), "nobody/no-such-adapter")
    message = str(caught.value)
    assert "'nobody/no-such-adapter' is not a local folder and could not be fetched from the hub" in message
    assert "\n" not in message
    with pytest.raises(FileNotFoundError, match=r"'not//valid' is neither a local folder nor a valid hub"):
        surmlab.from_pretrained(tiny_bert(), "not//valid")


def test_push_to_hub_needs_an_injected_model():
    with pytest.raises(ValueError, match=r"no SURM layers; call inject\(\) first"):
        surmlab.push_to_hub(tiny_bert(), "someone/x")
