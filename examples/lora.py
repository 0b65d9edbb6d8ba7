"""GEKOTrainer with a LoRA adapter (peft), the runnable version of the docs' LoRA block, on a tiny
LLaMA-shaped model (its attention has q_proj / v_proj).

Run: python examples/lora.py  (offline, a few seconds on a CPU; writes ./geko_output)
"""
import torch
from _tiny import copy_items
from peft import LoraConfig, TaskType
from transformers import LlamaConfig, LlamaForCausalLM

from geko_torch import GEKOTrainer, GEKOTrainingArgs

torch.manual_seed(0)
model = LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                     num_attention_heads=2, num_key_value_heads=2, vocab_size=32,
                                     max_position_embeddings=64, bos_token_id=0, eos_token_id=0, pad_token_id=0))
ds = copy_items(64)
args = GEKOTrainingArgs(output_dir="./geko_output", num_epochs=2, batch_size=16, learning_rate=3e-3,
                        dataloader_num_workers=0, plots=False)
trainer = GEKOTrainer(model=model, train_dataset=ds, args=args,
                      lora_config=LoraConfig(task_type=TaskType.CAUSAL_LM, r=16, lora_alpha=32,
                                             target_modules=["q_proj", "v_proj"], lora_dropout=0.05))
trainer.train()
