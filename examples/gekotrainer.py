"""GEKOTrainer on a tiny GPT-2 (the runnable version of the docs' `GEKOTrainer` block).

Run: python examples/gekotrainer.py  (offline, a few seconds on a CPU; writes ./geko_output)
bf16, gradient checkpointing and torch.compile are left off here so that it runs anywhere fast.
"""
from _tiny import copy_items, tiny_gpt2

from geko_state import GEKO_DEFAULT
from geko_torch import GEKOTrainer, GEKOTrainingArgs

model = tiny_gpt2()
train_dataset, eval_dataset = copy_items(128, seed=0), copy_items(32, seed=1)

args = GEKOTrainingArgs(
    output_dir="./geko_output",      # the run directory: state.arrow, history/, epochs.parquet, checkpoints
    num_epochs=3,
    batch_size=16,
    learning_rate=3e-3,
    gradient_accumulation_steps=2,   # effective batch = 32
    dataloader_num_workers=0,
    plots=False,
)
trainer = GEKOTrainer(
    model=model,                     # any nn.Module that returns logits (HF models do)
    train_dataset=train_dataset,     # items: dicts with 'input_ids' (+ 'labels', 'attention_mask', ...)
    eval_dataset=eval_dataset,
    config=GEKO_DEFAULT.replace(prune_frozen_after=2),
    args=args,
)
trainer.train()
print(trainer.get_efficiency_report())
print(trainer.get_pruned_count(), len(trainer.get_hard_samples()), len(trainer.get_frozen_samples()))
trainer.save_checkpoint("./geko_output/checkpoint-manual")
