"""Helpers shared by tests (importable because pytest puts tests/ on sys.path)."""

from __future__ import annotations

import fnmatch
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import yaml

#: Contrastive prompts the tiny-model probe tests train on.
POS = ["alpha alpha alpha", "alpha beta alpha", "alpha gamma", "alpha alpha", "beta alpha alpha"]
NEG = ["omega omega omega", "omega delta", "delta omega omega", "omega omega", "omega sigma"]


#: Prompts of mixed length (padding matters): extraction, distributed and device tests.
MIXED_PROMPTS = [
    "Hi",
    "The quick brown fox jumps over the lazy dog.",
    "A much longer prompt, with punctuation; several clauses, and a trailing question?",
    "Short one",
    "Numbers 1 2 3 4 5 6 7 8 9 10 11 12",
]
#: Prompts the backend-parity tests (transformers, nnsight, CUDA) extract.
BACKEND_PROMPTS = [
    "The capital of France is Paris.",
    "hi",
    "A much longer prompt, with punctuation, several words and numbers 1 2 3.",
    "Dogs bark.",
]
#: A sentiment pair the backend-parity tests train probes on.
SENTIMENT_POS = [
    "I love this, it is wonderful",
    "What a great day",
    "This is excellent news",
    "So happy",
]
SENTIMENT_NEG = [
    "I hate this, it is awful",
    "What a terrible day",
    "This is horrible news",
    "So sad",
]


def _save_tiny(
    path: Path,
    tokenizer_dir: Path,
    arch: str,
    *,
    n_layers: int,
    hidden: int,
    seed: int,
    adjust=None,
    **config,
):
    """Build a random-weight ``arch`` model (``"Llama"``, ``"Mixtral"``) with the tokenizer
    in ``tokenizer_dir`` (seeded, 4 heads, 2 KV heads, context 128, tied embeddings),
    ``adjust(model)`` it, and save model and tokenizer to ``path``."""
    import torch
    import transformers
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(seed)
    cfg = getattr(transformers, f"{arch}Config")(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=n_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        bos_token_id=tok.bos_token_id,
        tie_word_embeddings=True,
        **config,
    )
    model = getattr(transformers, f"{arch}ForCausalLM")(cfg)
    if adjust is not None:
        adjust(model)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def make_tiny_llama(
    path: Path, tokenizer_dir: Path, n_layers: int = 4, hidden: int = 32, seed: int = 0
):
    return _save_tiny(path, tokenizer_dir, "Llama", n_layers=n_layers, hidden=hidden, seed=seed)


def _spread_routers(model) -> None:
    """Random init leaves the router weights tiny; scale them so routing is not uniform."""
    import torch

    with torch.no_grad():
        for name, p in model.named_parameters():
            if "gate.weight" in name:
                p.normal_(0, 0.5)


def make_tiny_mixtral(
    path: Path, tokenizer_dir: Path, n_layers: int = 3, hidden: int = 32, seed: int = 0
):
    """A random-weight Mixtral (4 experts, top-2) with the bundled tokenizer."""
    return _save_tiny(
        path,
        tokenizer_dir,
        "Mixtral",
        n_layers=n_layers,
        hidden=hidden,
        seed=seed,
        adjust=_spread_routers,
        num_local_experts=4,
        num_experts_per_tok=2,
    )


BUNDLED = "HuggingFaceTB/SmolLM2-135M-Instruct"
#: Dog vs cat sentences the real-model hub, serialization and dataset tests share.
DOG_POS = [
    "The puppy wagged its tail and barked at the mailman.",
    "My dog loves fetching sticks in the park.",
    "The hound howled all night long.",
    "She took the golden retriever for a long walk.",
    "Woof! The beagle wants a treat.",
    "The dog chewed my favourite slippers.",
]
DOG_NEG = [
    "The kitten purred on the warm windowsill.",
    "My cat ignores me until dinner time.",
    "The tabby chased a mouse under the sofa.",
    "She bought a scratching post for her cat.",
    "Meow! The siamese wants to be fed.",
    "The cat knocked a glass off the table.",
]
DOG_TEST = ["Arf! Let's go outside and play ball!", "The cat napped in a sunbeam."]

# Dog vs cat sentences: the animal is one token of a short sentence. Held-out sentences use
# templates the probe never saw, so it must read the animal token, not the wording.
TRAIN_TEMPLATES = [
    "My {} sleeps on the sofa all afternoon.",
    "We took the {} to the vet yesterday.",
    "The {} is hungry again.",
    "A neighbour found our {} in the garden.",
    "Her {} hates the rain.",
    "I bought a new bed for the {}.",
    "The {} stared out of the window.",
    "Our {} is getting old.",
]
TEST_TEMPLATES = [
    "The {} knocked over my coffee.",
    "Grandma feeds the {} every morning.",
    "Someone left the {} outside overnight.",
    "That {} has the softest fur.",
    "The {} followed me into the kitchen.",
    "Every evening the {} waits by the door.",
    "The {} got lost in the park.",
    "He adopted a {} last spring.",
]
TRAIN_POS = [t.format(w) for t in TRAIN_TEMPLATES for w in ("dog", "puppy")]
TRAIN_NEG = [t.format(w) for t in TRAIN_TEMPLATES for w in ("cat", "kitten")]


class FakeHub:
    """A local folder standing in for the HuggingFace Hub, one folder per (type, repo)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.remote = root / "remote"
        self.cache = root / "hf-cache"  # where "downloads" land (the hub cache)
        self.repos: dict[tuple[str, str], dict] = {}
        self.commits: list[dict] = []
        self.downloads: list[tuple[str, str, str]] = []

    def repo_dir(self, repo_id: str, repo_type: str | None = "model") -> Path:
        return self.remote / (repo_type or "model") / repo_id

    def files(self, repo_id: str, repo_type: str = "model") -> list[str]:
        d = self.repo_dir(repo_id, repo_type)
        return sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file())

    def path(self, repo_id: str, filename: str, repo_type: str = "model") -> Path:
        return self.repo_dir(repo_id, repo_type) / filename

    def card(self, repo_id: str, repo_type: str = "model") -> tuple[dict, str]:
        text = self.path(repo_id, "README.md", repo_type).read_text()
        m = re.match(r"^---\n(.*?)\n---\n(.*)$", text, re.S)
        assert m, "README.md must start with YAML front matter"
        return yaml.safe_load(m.group(1)), m.group(2)

    @staticmethod
    def _not_found(msg: str):
        from huggingface_hub import errors

        response = SimpleNamespace(headers={}, status_code=404, request=None, url=msg)
        return errors.RepositoryNotFoundError(msg, response=response)

    # ---- patched HfApi methods
    def create_repo(
        self, api, repo_id, *, token=None, private=None, repo_type=None, exist_ok=False, **kw
    ):
        from huggingface_hub import RepoUrl

        key = (repo_type or "model", repo_id)
        if key in self.repos and not exist_ok:
            raise FileExistsError(repo_id)
        self.repos.setdefault(key, {"private": bool(private)})
        self.repo_dir(repo_id, repo_type).mkdir(parents=True, exist_ok=True)
        prefix = "datasets/" if repo_type == "dataset" else ""
        return RepoUrl(f"https://huggingface.co/{prefix}{repo_id}")

    def upload_folder(
        self,
        api,
        *,
        repo_id,
        folder_path,
        repo_type=None,
        commit_message=None,
        delete_patterns=None,
        **kw,
    ):
        if (repo_type or "model", repo_id) not in self.repos:
            raise self._not_found(repo_id)
        src = Path(folder_path)
        uploaded = sorted(str(p.relative_to(src)) for p in src.rglob("*") if p.is_file())
        dest = self.repo_dir(repo_id, repo_type)
        deleted = []
        for pattern in delete_patterns or []:
            for name in self.files(repo_id, repo_type or "model"):
                if fnmatch.fnmatch(name, pattern) and name not in uploaded:
                    (dest / name).unlink()
                    deleted.append(name)
        for name in uploaded:
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / name, dest / name)
        self.commits.append(
            {
                "repo_id": repo_id,
                "repo_type": repo_type or "model",
                "files": uploaded,
                "deleted": deleted,
                "message": commit_message,
            }
        )
        return SimpleNamespace(commit_url=f"https://huggingface.co/{repo_id}/commit/fake")

    def forbidden(self, *args, **kwargs):
        raise AssertionError("unexpected hub call: only create_repo + upload_folder are faked")

    # ---- patched download functions
    def hf_hub_download(self, repo_id, filename, *, repo_type=None, revision=None, **kw):
        from huggingface_hub import errors

        repo_type = repo_type or "model"
        if (repo_type, repo_id) not in self.repos:
            raise self._not_found(f"{repo_type} {repo_id}")
        src = self.path(repo_id, filename, repo_type)
        if not src.is_file():
            raise errors.EntryNotFoundError(f"{filename} not in {repo_id}")
        self.downloads.append((repo_type, repo_id, filename))
        dest = self.cache / repo_type / repo_id / (revision or "main") / filename
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest)
        return str(dest)

    def snapshot_download(self, repo_id, *, repo_type=None, revision=None, **kw):
        repo_type = repo_type or "model"
        if (repo_type, repo_id) not in self.repos:
            raise self._not_found(f"{repo_type} {repo_id}")
        for name in self.files(repo_id, repo_type):
            self.hf_hub_download(repo_id, name, repo_type=repo_type, revision=revision)
        return str(self.cache / repo_type / repo_id / (revision or "main"))
