"""Speed and memory benchmarks of surmlab against PEFT LoRA, C3A and LoKr; see README.md."""
