"""examples/custom_loop.py under torch.distributed: DistributedDataParallel, one GEKO replica per rank.

Run: torchrun --nproc-per-node 2 examples/ddp_custom_loop.py            (gloo on CPUs, nccl on GPUs)
     torchrun --nproc-per-node 1 examples/ddp_custom_loop.py            (the same global batches, one rank)

``--batch-size`` is the global batch: each rank trains ``batch_size / world_size`` samples a step,
so any world size trains the same global batches and ends with the same state. The GEKO lines are
marked ``# GEKO``.
"""
import argparse
import os

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader
from transformers import GPT2Config, GPT2LMHeadModel

from geko_state import GEKO_DEFAULT, StateStore
from geko_torch import GEKODataset, GEKOSampler, GEKOTracker, PadCollator, replica_path, save_checkpoint

cli = argparse.ArgumentParser()
cli.add_argument("--epochs", type=int, default=6)
cli.add_argument("--batch-size", type=int, default=16, help="global batch (all ranks together)")
cli.add_argument("--out", default="runs/ddp_custom_loop")
opts = cli.parse_args()
out, epochs = opts.out, opts.epochs

cuda = torch.cuda.is_available()
dist.init_process_group("nccl" if cuda else "gloo")
rank, world = dist.get_rank(), dist.get_world_size()
if opts.batch_size % world:
    raise SystemExit(f"--batch-size {opts.batch_size} must be a multiple of the world size {world}")
device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if cuda else torch.device("cpu")
if cuda:
    torch.cuda.set_device(device)

torch.manual_seed(0)  # the same initial weights on every rank
model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=2, n_embd=64, vocab_size=32, n_positions=64, bos_token_id=0,
                                   eos_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)).to(device)
model = DDP(model, device_ids=[device.index] if cuda else None)
g = torch.Generator().manual_seed(0)
items = []
for i in range(256):  # toy SFT: the response repeats the 3-token prompt; every 8th is noise
    prompt = torch.randint(1, 32, (3,), generator=g)
    response = torch.randint(1, 32, (3,), generator=g) if i % 8 == 0 else prompt
    ids = torch.cat([prompt, response])
    labels = ids.clone()
    labels[:3] = -100
    items.append({"input_ids": ids, "labels": labels})

store = StateStore.create(len(items), replica_path(f"{out}/state.arrow"), GEKO_DEFAULT, overwrite=True)  # GEKO: rank 0's replica is the file
sampler = GEKOSampler(store, seed=0, total_epochs=epochs, replacement=False)          # GEKO: this rank's shard of the plan
tracker = GEKOTracker(store, sampler=sampler, run_dir=out)                            # GEKO: all-gathers observations; rank 0 writes history
loader = DataLoader(GEKODataset(items), batch_size=opts.batch_size // world, sampler=sampler, collate_fn=PadCollator())
opt = torch.optim.AdamW(model.parameters(), lr=3e-3)

for epoch in range(epochs):
    for batch in loader:                                  # every rank builds the same plan and takes its shard
        ids = batch.pop("sample_id")                                                                 # GEKO
        logits = model(input_ids=batch["input_ids"].to(device)).logits
        losses = tracker.loss(ids, logits, batch["labels"].to(device))                               # GEKO
        loss = tracker.global_mean(losses)               # GEKO: the global batch's mean (DDP averages ranks)
        loss.backward()
        opt.step()
        opt.zero_grad()
    stats = tracker.end_epoch()                          # GEKO: exchange the rest, repartition everywhere
    if rank == 0:
        print(f"epoch {epoch + 1}: trained {tracker.store.last_stats.observations} samples | {stats.format_line()}")

save_checkpoint(f"{out}/checkpoint", store=store, model=model, optimizer=opt,  # GEKO: call on every rank, rank 0 writes
                sampler=sampler, tracker=tracker, run_dir=out)
if rank == 0:
    print(f"try: geko report {out}")
dist.destroy_process_group()
