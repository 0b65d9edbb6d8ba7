"""GEKOHFTrainer: a transformers.Trainer script with one class name changed (the runnable version
of the docs' block), on a tiny GPT-2.

Run: python examples/hf_trainer.py  (offline, a few seconds on a CPU; writes ./hf_output)
"""
from _tiny import copy_items, tiny_gpt2
from transformers import TrainingArguments

from geko_state import GEKO_DEFAULT
from geko_torch import GEKOHFTrainer, GEKOSettings, PadCollator   # was: from transformers import Trainer

model = tiny_gpt2()
train, dev = copy_items(96, seed=0), copy_items(32, seed=1)
collator = PadCollator()
training_args = TrainingArguments(output_dir="./hf_output", num_train_epochs=2, per_device_train_batch_size=16,
                                  learning_rate=3e-3, use_cpu=True, report_to="none", save_strategy="no",
                                  dataloader_num_workers=0, disable_tqdm=True)

trainer = GEKOHFTrainer(                       # was: Trainer(
    model=model, args=training_args, train_dataset=train, eval_dataset=dev,
    data_collator=collator,
    geko_args=GEKOSettings(config=GEKO_DEFAULT),   # the only new argument (optional; this is its default)
)
trainer.train()
print(trainer.get_efficiency_report())
