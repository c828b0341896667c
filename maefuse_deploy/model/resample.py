"""Warm-start a MaeFuse of another patch size or head count from trained weights (the real-time model's start).

Patch size. A ViT with patch ``k * p`` run on an image equals, at initialisation, the patch-``p`` model run on the
image shrunk ``k`` times (box filter) and its output enlarged ``k`` times (nearest): the patch embedding's kernel is
spread over ``k x k`` pixels (divided by ``k * k``, so it averages them), the prediction head's rows are
repeated for the ``k x k`` pixels each one now covers, and everything between (blocks, norms, fusion layer) is
shared, token for token, because the sin-cos positions depend on the token grid alone.

Head count. Splitting a block's width into fewer heads changes no tensor (qkv and proj keep their shapes), only
how the query/key dot products are grouped: the new model starts with every trained weight and one attention map
where there were several. Fewer heads cost fewer softmax rows, which is most of attention's time on a CPU.

Either way fine-tuning at the new shape then starts from a model that already fuses instead of from random weights.
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


HEAD_FIELDS = ("num_heads", "decoder_num_heads", "fusion_num_heads")


def warm_start(model: MaeFuse, config: MaeFuseConfig) -> tuple[MaeFuse, str]:
    """``model`` -> a new MaeFuse of ``config`` and a line saying what changed; eval mode.

    ``config`` may differ from the model's in head counts (the same tensors regrouped), in the block attention
    (softmax or linear: the same tensors) and in a whole-factor patch size (:func:`resample_patch`); anything else
    (widths, depths) is a CheckpointError.
    """
    old = model.config
    heads = {field: getattr(config, field) for field in HEAD_FIELDS if getattr(config, field) != getattr(old, field)}
    reshaped = old.replace(
        name=config.name, policy=config.policy, patch_size=config.patch_size, img_size=config.img_size,
        block_attention=config.block_attention, **heads
    )
    if reshaped != config or config.patch_size % old.patch_size:
        raise CheckpointError(
            f"cannot warm-start {config.name} from {old.name}: only head counts and the patch size (by a whole "
            "factor) may differ",
            fix="start from a checkpoint of the same widths and depths",
        )
    # Same tensors at the old patch size; the sin-cos positions are rebuilt for the new grid, never loaded.
    started = build_model(config.replace(patch_size=old.patch_size))
    state = {key: value for key, value in model.state_dict().items() if not key.endswith("pos_embed")}
    missing, unexpected = started.load_state_dict(state, strict=False)
    if unexpected or any(not key.endswith("pos_embed") for key in missing):
        raise CheckpointError(f"warm start left {missing or unexpected}", fix="report this as a bug")
    model = started.eval()
    notes = []
    if heads:
        notes.append("attention regrouped into " + ", ".join(f"{field} {value}" for field, value in heads.items()))
    if old.block_attention != config.block_attention:
        notes.append(f"block attention {old.block_attention} -> {config.block_attention} (the same tensors)")
    if old.patch_size != config.patch_size:
        model = resample_patch(model, config)
        factor = config.patch_size // old.patch_size
        notes.append(f"resampled to patch {config.patch_size}: starts as that model on frames shrunk {factor}x")
    return model, f"warm start from {old.name}: " + "; ".join(notes or ["the same tensors"])
