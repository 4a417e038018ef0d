"""Instruction tuning (``owl tune``): data preparation, training recipes and adapter export."""
