"""Training of the learned compose methods: SIMAT heads, CLIP4Cir (fine-tuning + Combiner), SEARLE (OTI + phi)."""
