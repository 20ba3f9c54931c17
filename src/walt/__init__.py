"""walt: a PyTorch implementation of W.A.L.T (Gupta et al. 2023, arXiv 2312.06662).

Stage 1, `walt.autoencoder`: a causal 3D CNN autoencoder (images and videos share one latent space).
Stage 2, `walt.denoiser` + `walt.diffusion`: a window-attention transformer trained with
v-prediction diffusion on those latents.
"""

__version__ = "0.1.0"
