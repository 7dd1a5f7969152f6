"""Fine-tuning: supervised chat data with loss masks, LoRA, and the fine-tuning trainer."""
