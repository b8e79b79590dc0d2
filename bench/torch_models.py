"""The PyTorch modules of mnist-ae's presets. `mnist-ae export --torch` writes state dicts
for these, and `mnist-ae import` reads them. Every model has `encode(x)` (the code) and
`reconstruct(x)` (the activated output); outputs are logits before the final activation,
which is applied in `reconstruct`."""
import torch
from torch import nn


class AE(nn.Module):
    def __init__(self, encoder, decoder, act):
        super().__init__()
        self.encoder, self.decoder, self.act = encoder, decoder, act

    def encode(self, x):
        return self.encoder(x)

    def forward(self, x):
        return self.decoder(self.encode(x))

    def reconstruct(self, x):
        return self.act(self(x))


def conv64(latent=64):
    enc = nn.Sequential(
        nn.Conv2d(1, 16, 3, 2, 1), nn.ReLU(), nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU(),
        nn.Conv2d(32, latent, 3, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    dec = nn.Sequential(
        nn.Unflatten(1, (latent, 1, 1)), nn.ConvTranspose2d(latent, 32, 4, 1, 0), nn.ReLU(),
        nn.ConvTranspose2d(32, 16, 3, 2, 1), nn.ReLU(), nn.ConvTranspose2d(16, 8, 4, 2, 1), nn.ReLU(),
        nn.ConvTranspose2d(8, 1, 4, 2, 1))
    return AE(enc, dec, torch.sigmoid)


def conv7(latent=64):
    enc = nn.Sequential(
        nn.Conv2d(1, 16, 3, 2, 1), nn.ReLU(), nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU(),
        nn.Conv2d(32, latent, 7), nn.Flatten())
    dec = nn.Sequential(
        nn.Unflatten(1, (latent, 1, 1)), nn.ConvTranspose2d(latent, 32, 7), nn.ReLU(),
        nn.ConvTranspose2d(32, 16, 3, 2, 1, 1), nn.ReLU(), nn.ConvTranspose2d(16, 1, 3, 2, 1, 1))
    return AE(enc, dec, torch.sigmoid)


def _dense(sizes, relu_last):
    layers = []
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i + 2 < len(sizes) or relu_last:
            layers.append(nn.ReLU())
    return layers


def linear3(latent=3):
    enc = nn.Sequential(nn.Flatten(), *_dense([784, 128, 64, 12, latent], False))
    dec = nn.Sequential(*_dense([latent, 12, 64, 128, 784], False), nn.Unflatten(1, (1, 28, 28)))
    return AE(enc, dec, torch.sigmoid)


def mlp(latent=32):
    enc = nn.Sequential(nn.Flatten(), *_dense([784, 392, latent], True))
    dec = nn.Sequential(*_dense([latent, 392, 784], False), nn.Unflatten(1, (1, 28, 28)))
    for m in list(enc) + list(dec):
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
    return AE(enc, dec, torch.sigmoid)


def cae32(latent=32):
    enc = nn.Sequential(nn.Conv2d(1, 16, 3, 2, 1), nn.ReLU(), nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU(),
                        nn.Flatten(), nn.Linear(1568, latent))
    dec = nn.Sequential(nn.Linear(latent, 1568), nn.ReLU(), nn.Unflatten(1, (32, 7, 7)),
                        nn.ConvTranspose2d(32, 16, 3, 2, 1, 1), nn.ReLU(),
                        nn.ConvTranspose2d(16, 1, 3, 2, 1, 1))
    return AE(enc, dec, torch.tanh)


class VAE(AE):
    def __init__(self, latent=16):
        enc = nn.Sequential(nn.Conv2d(1, 32, 4, 2, 1), nn.ReLU(), nn.Conv2d(32, 64, 4, 2, 1), nn.ReLU(),
                            nn.Flatten())
        dec = nn.Sequential(nn.Linear(latent, 3136), nn.ReLU(), nn.Unflatten(1, (64, 7, 7)),
                            nn.ConvTranspose2d(64, 32, 4, 2, 1), nn.ReLU(), nn.ConvTranspose2d(32, 1, 4, 2, 1))
        super().__init__(enc, dec, torch.sigmoid)
        self.fc_mu = nn.Linear(3136, latent)
        self.fc_logvar = nn.Linear(3136, latent)

    def encode(self, x):
        return self.fc_mu(self.encoder(x))

    def elbo_parts(self, x, eps):
        """Decoder logits, mean and log-variance of the code, with `z = mu + exp(logvar / 2) * eps`."""
        h = self.encoder(x)
        mu, logvar = self.fc_mu(h), self.fc_logvar(h)
        return self.decoder(mu + torch.exp(0.5 * logvar) * eps), mu, logvar


PRESETS = {"conv64": conv64, "conv7": conv7, "linear3": linear3, "mlp": mlp, "cae32": cae32, "vae": VAE}
TANH = {"cae32"}
