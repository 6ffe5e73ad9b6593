"""Extraction speed: the engine against bare forward passes, in one run.

Cold extraction (cache off) at a middle layer of the bundled SmolLM2, on two workloads:

- **mixed**: short and medium prompts plus some long ones (500-800 tokens: safety prompts
  often carry documents);
- **templated**: chat-templated prompts that share a ~300-token system prompt.

Rows (each the best of ``--repeats`` interleaved runs; wall and process CPU time):

  mixed      engine fp32, fixed batches of 8 (the engine before token budgets: "today")
             engine fp32, token budget
             engine dtype="auto", token budget (bfloat16 on CPUs with AMX/AVX512-BF16)
             floor fp32 / floor auto: a bare forward truncated after the layer over the
             same length-sorted token-budget batches, in that dtype
  templated  engine auto without prefix reuse, engine auto with prefix reuse
             floor: bare truncated forwards, the prefix once and the suffixes on its KV

Targets on a CPU with native bfloat16: auto >= 2.5x faster than today on the mixed
workload, prefix reuse >= 2x on the templated one, each within 1.1x of its floor.

    python bench/extraction.py [--quick] [--n 64] [--n-templated 32] [--repeats 2]
        [--device cpu|cuda] [--layer 15] [--budgets 512,1024,2048,4096]
        [--random-weights]

``--quick`` is a small run (a few seconds of compute) to check the script works;
``--budgets`` instead times only the auto engine on the mixed workload at each token
budget (to choose ``extraction.DEFAULT_BATCH_TOKENS``); ``--random-weights`` builds a random
model of the bundled config (for GPU speed checks, where only timing matters).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time

os.environ.setdefault("LMPROBE_PROGRESS", "0")

WORDS = (
    "the model reads a prompt and the probe scores its hidden state for signs of misuse "
    "such as synthesis routes for dangerous chemicals or exploits against network services "
    "while ordinary homework questions about chemistry and programming should pass"
).split()


def words(rng: random.Random, k: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(k))


def mixed_prompts(n: int, seed: int = 0) -> list[str]:
    """Mostly 10-200 words, one in six a 'document' of 500-800 tokens."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        if i % 6 == 5:
            k = rng.randint(480, 760)  # ~1 token per word with this vocabulary
        else:
            k = max(8, int(rng.choice([10, 25, 50, 100, 200]) * rng.uniform(0.7, 1.3)))
        out.append(f"{i}: " + words(rng, k))
    return out


def templated_prompts(tokenizer, n: int, seed: int = 1) -> list[str]:
    """Chat-templated user turns after one ~300-token system prompt."""
    rng = random.Random(seed)
    system = "You are a safety-reviewed assistant. Policy: " + words(random.Random(7), 285)
    out = []
    for i in range(n):
        user = f"question {i}: " + words(rng, rng.randint(8, 60))
        msgs = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        out.append(tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True))
    return out


def sync(device):
    import torch

    if getattr(device, "type", str(device)).startswith("cuda"):
        torch.cuda.synchronize()


def timed_rows(fns: dict, repeats: int, device) -> tuple[dict, dict]:
    """Best wall time and best process CPU time of each function.

    Rows are interleaved (every row once, then again), and the minimum is kept: on a
    shared, loaded machine that is the figure least disturbed by other jobs. CPU time
    (all threads of this process) is printed too: it barely moves with the load.
    """
    wall: dict = {k: [] for k in fns}
    cpu: dict = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            sync(device)
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            sync(device)
            wall[k].append(time.perf_counter() - t0)
            cpu[k].append(time.process_time() - c0)
    return {k: min(v) for k, v in wall.items()}, {k: min(v) for k, v in cpu.items()}


def load(args, dtype):
    from lmprobe_jupyter.engine.extraction.models import DEFAULT_MODEL, LoadedModel, load_model

    if not args.random_weights:
        return load_model(DEFAULT_MODEL, device=args.device, dtype=dtype)
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from lmprobe_jupyter.engine.extraction.models import (
        resolve_device,
        resolve_dtype,
        resolve_model,
    )

    path = resolve_model(DEFAULT_MODEL)[1]
    cfg = AutoConfig.from_pretrained(path)
    dev = resolve_device(args.device)
    dt = resolve_dtype(dtype, dev)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg).to(dev, dt).eval()
    return LoadedModel(
        name="random-" + cfg.model_type,
        model=model,
        tokenizer=AutoTokenizer.from_pretrained(path),
        fingerprint="random",
        n_layers=cfg.num_hidden_layers,
        hidden_size=cfg.hidden_size,
        device=dev,
        dtype=dt,
        max_length=cfg.max_position_embeddings,
    )


class Floors:
    """Bare forward passes of one loaded model, truncated after ``layer``."""

    def __init__(self, loaded, layer: int):
        import torch

        from lmprobe_jupyter.engine.extraction.extractor import Extractor
        from lmprobe_jupyter.engine.extraction.models import decoder_layers

        self.loaded = loaded
        self.torch = torch
        self.base = getattr(loaded.model, loaded.model.base_model_prefix)
        self.blocks = decoder_layers(loaded.model)
        self.layer = layer
        # the engine's own collation and batch plan (as the budget rows: at most 64
        # prompts), so only the forward differs
        self.ext = Extractor(loaded, batch_size=64, progress=False, use_cache=False)

    def _truncated(self):
        torch = self.torch
        keep = self.base.layers
        self.base.layers = torch.nn.ModuleList(list(self.blocks)[: self.layer + 1])
        return keep

    def plain(self, seqs):
        torch, dev = self.torch, self.loaded.device
        keep = self._truncated()
        try:
            with torch.inference_mode():
                for b in self.ext.batch_plan([len(s) for s in seqs]):
                    x, m = self.ext.collate([seqs[i] for i in b])
                    self.base(input_ids=x.to(dev), attention_mask=m.to(dev), use_cache=False)
        finally:
            self.base.layers = keep

    def prefixed(self, seqs, n_prefix: int):
        """The prefix once (batch 1), then each batch of suffixes on its repeated KV."""
        from transformers import DynamicCache

        torch, dev = self.torch, self.loaded.device
        kv_arg = self.ext.kv_inputs(None)
        (name,) = kv_arg
        keep = self._truncated()
        try:
            with torch.inference_mode():
                pre = DynamicCache(config=self.loaded.model.config)
                ids = torch.tensor([seqs[0][:n_prefix]], device=dev)
                self.base(input_ids=ids, use_cache=True, **{name: pre})
                pairs = [(k, v) for k, v, *_ in pre][: self.layer + 1]
                suffix = [s[n_prefix:] for s in seqs]
                for b in self.ext.batch_plan([len(s) for s in suffix]):
                    x, m = self.ext.collate([suffix[i] for i in b], side="right")
                    kv = DynamicCache(config=self.loaded.model.config)
                    for i, (k, v) in enumerate(pairs):
                        kv.update(k.expand(len(b), -1, -1, -1), v.expand(len(b), -1, -1, -1), i)
                    full = torch.cat([torch.ones(len(b), n_prefix, dtype=m.dtype), m], 1)
                    pos = n_prefix + (m.cumsum(-1) - 1).clamp(min=0)
                    self.base(
                        input_ids=x.to(dev),
                        attention_mask=full.to(dev),
                        position_ids=pos.to(dev),
                        use_cache=True,
                        **{name: kv},
                    )
        finally:
            self.base.layers = keep


def shared_prefix_len(seqs) -> int:
    n = min(len(s) for s in seqs) - 1
    for s in seqs[1:]:
        k = 0
        while k < n and s[k] == seqs[0][k]:
            k += 1
        n = k
    return n


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="a small run (checks the script)")
    ap.add_argument("--n", type=int, default=64, help="mixed-workload prompts")
    ap.add_argument("--n-templated", type=int, default=32)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--layer", type=int, default=None, help="default: the middle layer")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument(
        "--budgets", default="", help="comma-separated token budgets to time (only those rows)"
    )
    ap.add_argument("--random-weights", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.n, args.n_templated, args.repeats = 12, 8, 1

    import torch

    from lmprobe_jupyter.engine.extraction.extractor import Extractor

    f32 = load(args, "float32")
    auto = load(args, "auto")
    layer = f32.n_layers // 2 if args.layer is None else args.layer
    tok = f32.tokenizer
    mixed = mixed_prompts(args.n)
    templ = templated_prompts(tok, args.n_templated)
    mixed_ids = [tok(p)["input_ids"] for p in mixed]
    templ_ids = [tok(p)["input_ids"] for p in templ]
    n_prefix = shared_prefix_len(templ_ids)
    dev = f32.device
    reps = args.repeats

    def engine(loaded, prompts, **kw):
        ext = Extractor(loaded, progress=False, use_cache=False, **kw)

        def run():
            out = ext.pooled(prompts, [layer], "mean")
            assert out[layer].shape == (len(prompts), loaded.hidden_size)

        return run

    floor32, floor_auto = Floors(f32, layer), Floors(auto, layer)
    # warm-up (allocator, oneDNN kernels compiled per shape on first use, the bfloat16
    # weights), on both paths: a one-repeat run otherwise charges that to the first row
    for lm in (f32, auto):
        engine(lm, mixed[:4])()
        engine(lm, templ[:3])()
    floor32.plain(mixed_ids[:4])
    floor_auto.plain(mixed_ids[:4])
    floor_auto.prefixed(templ_ids[:3], n_prefix)
    fns = (
        {}
        if args.budgets
        else {
            "today": engine(f32, mixed, batch_size=8, max_batch_tokens=None),
            "fp32_budget": engine(f32, mixed, batch_size=64),
            "auto_budget": engine(auto, mixed, batch_size=64),
            "floor_fp32": lambda: floor32.plain(mixed_ids),
            "floor_auto": lambda: floor_auto.plain(mixed_ids),
            "t_plain": engine(auto, templ, batch_size=64, share_prefix=False),
            "t_prefix": engine(auto, templ, batch_size=64),
            "t_floor": lambda: floor_auto.prefixed(templ_ids, n_prefix),
        }
    )
    for b in [int(x) for x in args.budgets.split(",") if x.strip()]:
        fns[f"budget {b}"] = engine(auto, mixed, batch_size=256, max_batch_tokens=b)
    rows, cpu = timed_rows(fns, reps, dev)
    if args.budgets:
        print(f"token budgets, engine auto ({auto.dtype_name}), mixed workload, layer {layer}:")
        for k in rows:
            print(f"  {k:14s} tokens: {rows[k]:8.3f} s wall  {cpu[k]:8.3f} s CPU")
        return 0
    if str(dev).startswith("cuda"):
        where = torch.cuda.get_device_name(dev)
    else:
        where = _cpu_name()
    r, c = rows, cpu

    def line(label, k):
        print(f"  {label:40s} {r[k]:8.3f} s wall  {c[k]:8.3f} s CPU")

    def ratio(label, a, b, target=""):
        print(f"  {label:26s} = {r[a] / r[b]:.2f}x wall, {c[a] / c[b]:.2f}x CPU  {target}")

    print(
        f"extraction bench: {f32.name} on {where}, layer {layer}/{f32.n_layers}, "
        f"auto dtype = {auto.dtype_name}, best of {reps} (interleaved), "
        f"torch threads {torch.get_num_threads()}"
    )
    print(
        f"mixed: {len(mixed)} prompts, {sum(map(len, mixed_ids))} tokens "
        f"(longest {max(map(len, mixed_ids))})"
    )
    line("engine fp32, fixed batches of 8 (today):", "today")
    line("engine fp32, token budget:", "fp32_budget")
    line("engine auto, token budget:", "auto_budget")
    line("floor fp32 (bare truncated forward):", "floor_fp32")
    line("floor auto:", "floor_auto")
    ratio("auto speed-up vs today", "today", "auto_budget", "(target >= 2.5x)")
    ratio("fp32 budget / fp32 floor", "fp32_budget", "floor_fp32", "(target <= 1.1x)")
    ratio("auto / auto floor", "auto_budget", "floor_auto", "(target <= 1.1x)")
    print(
        f"templated: {len(templ)} prompts, {sum(map(len, templ_ids))} tokens, shared prefix "
        f"{n_prefix} tokens"
    )
    line("engine auto, no prefix reuse:", "t_plain")
    line("engine auto, prefix reuse:", "t_prefix")
    line("floor (bare, prefix once + suffixes):", "t_floor")
    ratio("prefix speed-up", "t_plain", "t_prefix", "(target >= 2x)")
    ratio("prefix / floor", "t_prefix", "t_floor", "(target <= 1.1x)")
    for k in r:
        if k.startswith("budget "):
            line(f"{k} tokens (auto, mixed):", k)
    return 0


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip() + f" ({os.cpu_count()} CPUs)"
    except OSError:
        pass
    return "CPU"


if __name__ == "__main__":
    sys.exit(main())
