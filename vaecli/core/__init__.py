"""The core: the VAE (encode -> mu, logvar; reparameterize; decode), its loss terms, the data, latent codes."""
