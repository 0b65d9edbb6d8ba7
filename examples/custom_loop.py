"""A plain PyTorch training loop with GEKO. The GEKO lines are marked ``# GEKO``.

Run: python examples/custom_loop.py  (tiny GPT-2 built from a config, offline, ~20 s on a CPU)
     python examples/custom_loop.py --epochs 2 --out /tmp/run
"""
import argparse

import torch
from torch.utils.data import DataLoader
from transformers import GPT2Config, GPT2LMHeadModel

from geko_state import GEKOConfig, StateStore
from geko_torch import (
    GEKODataset,
    GEKOSampler,
    GEKOTracker,
    PadCollator,
    save_checkpoint,
)

cli = argparse.ArgumentParser()
cli.add_argument("--epochs", type=int, default=8)
cli.add_argument("--out", default="runs/custom_loop")
opts = cli.parse_args()
out = opts.out

torch.manual_seed(0)
model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=2, n_embd=64, vocab_size=32, n_positions=64,
                                   bos_token_id=0, eos_token_id=0))
# Toy SFT data: a 3-token "prompt" (masked from the loss) and a response that repeats it; every
# 8th sample has a random response instead (noise the model cannot learn: it stays FOCUS/HARD).
g = torch.Generator().manual_seed(0)
items = []
for i in range(256):
    prompt = torch.randint(1, 32, (3,), generator=g)
    response = torch.randint(1, 32, (3,), generator=g) if i % 8 == 0 else prompt
    ids = torch.cat([prompt, response])
    labels = ids.clone()
    labels[:3] = -100
    items.append({"input_ids": ids, "labels": labels})

epochs = opts.epochs
store = StateStore.create(len(items), f"{out}/state.arrow", GEKOConfig(), overwrite=True)  # GEKO
sampler = GEKOSampler(store, seed=0, total_epochs=epochs)                                            # GEKO
tracker = GEKOTracker(store, sampler=sampler, run_dir=out)                            # GEKO
loader = DataLoader(GEKODataset(items), batch_size=16, sampler=sampler, collate_fn=PadCollator())    # GEKO: wrapper + sampler
opt = torch.optim.AdamW(model.parameters(), lr=3e-3)

for epoch in range(epochs):
    for batch in loader:                                  # the plan skips FREEZE samples: epochs shrink
        ids = batch.pop("sample_id")                                                                 # GEKO
        logits = model(input_ids=batch["input_ids"]).logits
        loss = tracker.loss(ids, logits, batch["labels"]).mean()  # GEKO: per-sample losses, recorded
        loss.backward()
        opt.step()
        opt.zero_grad()
    stats = tracker.end_epoch()                          # GEKO: repartition + history
    print(f"epoch {epoch + 1}: trained {tracker.store.last_stats.observations} samples | {stats.format_line()}")

save_checkpoint(f"{out}/checkpoint", store=store, model=model, optimizer=opt,              # GEKO
                sampler=sampler, tracker=tracker, run_dir=out)
print(f"try: geko report {out}")
