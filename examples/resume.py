"""Stop a GEKOTrainer run after a few optimizer steps, then resume it from its checkpoint
(the runnable version of the docs' `load_checkpoint` block).

Run: python examples/resume.py  (offline, a few seconds on a CPU; writes ./geko_output)
"""
from _tiny import copy_items, tiny_gpt2

from geko_torch import GEKOTrainer, GEKOTrainingArgs

ds = copy_items(64)


def make_args(**kw) -> GEKOTrainingArgs:
    return GEKOTrainingArgs(output_dir="./geko_output", num_epochs=2, batch_size=16, learning_rate=3e-3,
                            dataloader_num_workers=0, plots=False, **kw)


GEKOTrainer(model=tiny_gpt2(), train_dataset=ds, args=make_args(max_steps=3)).train()   # stops: checkpoint-3

model, args = tiny_gpt2(), make_args()
trainer = GEKOTrainer(model=model, train_dataset=ds, args=args)
trainer.load_checkpoint("./geko_output/checkpoint-3")
trainer.train()   # continues at the same plan position, with the same weights and generator states
