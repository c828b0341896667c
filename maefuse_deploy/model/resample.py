"""Warm-start a MaeFuse of another patch size from trained weights (the real-time model's starting point).

A ViT with patch ``k * p`` run on an image equals, at initialisation, the patch-``p`` model run on the image
shrunk ``k`` times (box filter) and its output enlarged ``k`` times (nearest): the patch embedding's kernel is
spread over ``k x k`` pixels (divided by ``k * k``, so it averages them), the prediction head's rows are
repeated for the ``k x k`` pixels each one now covers, and everything between (blocks, norms, fusion layer) is
shared, token for token, because the sin-cos positions depend on the token grid alone. Fine-tuning at the new
patch size then starts from a model that already fuses instead of from random weights.
"""

from __future__ import annotations

from ..errors import CheckpointError
from .config import MaeFuseConfig
from .maefuse import MaeFuse, build_model


def resample_patch(model: MaeFuse, config: MaeFuseConfig) -> MaeFuse:
    """``model`` (patch p) -> a new MaeFuse of ``config`` (patch k*p, otherwise the same network), eval mode.

    Refuses (CheckpointError) when the configs differ in anything but the patch size (and image size, name,
    policy, which shape no weight), or when the new patch is not a whole multiple of the old one.
    """
    old = model.config
    factor, rest = divmod(config.patch_size, old.patch_size)
    same_otherwise = old.replace(
        name=config.name, policy=config.policy, patch_size=config.patch_size, img_size=config.img_size
    ) == config
    if rest or factor < 1 or not same_otherwise:
        raise CheckpointError(
            f"cannot resample {old.name} (patch {old.patch_size}) into {config.name} (patch {config.patch_size}): "
            "only the patch size may differ, by a whole factor",
            fix="start from a checkpoint of the same widths and depths",
        )
    resampled = build_model(config)
    state = {key: value for key, value in model.state_dict().items() if not key.endswith("pos_embed")}
    kernel = state["mae.patch_embed.proj.weight"]  # (D, C, p, p)
    state["mae.patch_embed.proj.weight"] = (
        kernel.repeat_interleave(factor, dim=2).repeat_interleave(factor, dim=3) / (factor * factor)
    )
    # Prediction rows are ordered (row, column, channel) within a patch (vit.patchify): each old row becomes the
    # k x k new rows of the pixels it covered.
    p, chans = old.patch_size, old.in_chans
    for key in ("mae.decoder_pred.weight", "mae.decoder_pred.bias"):
        value = state[key]
        grid = value.reshape(p, p, chans, *value.shape[1:])
        state[key] = grid.repeat_interleave(factor, dim=0).repeat_interleave(factor, dim=1).reshape(
            p * factor * p * factor * chans, *value.shape[1:]
        )
    missing, unexpected = resampled.load_state_dict(state, strict=False)
    if unexpected or any(not key.endswith("pos_embed") for key in missing):
        raise CheckpointError(f"resampling left {missing or unexpected}", fix="report this as a bug")
    return resampled.eval()

