"""Deep hashing methods: one training loop (trainer.py), backbones, and each method's head + loss."""
