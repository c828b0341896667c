"""maefuse-convert: any supported checkpoint -> our safetensors format."""

from __future__ import annotations

from pathlib import Path

import click

from ..atomic import check_output
from ..errors import InputError
from ..hashing import file_sha256
from ..model.checkpoint import load_checkpoint, save_checkpoint
from ..model.config import Attention
from .common import note, report_errors


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("source", type=click.Path(path_type=Path))
@click.argument("target", type=click.Path(path_type=Path))
@click.option("--config", help="model config name, when the shapes do not identify it")
@click.option("--attention", type=click.Choice(["official", "tokens"]),
              help="attention semantics to record [default: the config's; the release is official]")
@click.option("--partial", is_flag=True, help="accept an MAE-only file (no fusion layer) as a training start")
@click.option("--trust-pickle", is_flag=True, help="unpickle arbitrary objects: only for files you trust")
@click.option("--overwrite", is_flag=True, help="replace TARGET if it exists (refused by default)")
@report_errors
def main(source: Path, target: Path, config: str | None, attention: Attention | None, partial: bool,
         trust_pickle: bool, overwrite: bool) -> None:
    """Convert a released MaeFuse / MAE checkpoint (or ours) to a .safetensors file with its config inside."""
    # TARGET is written as named or not at all: a silent rename (x.pth -> x.pth.safetensors) or a file beside a
    # folder is a file the user did not ask for.
    check_output(target, inputs=[source], overwrite=overwrite, what="TARGET")  # a folder TARGET included
    if target.suffix != ".safetensors":
        name = f"{target.stem}.safetensors" if target.suffix else "model.safetensors"  # ".safetensors" has no suffix
        raise InputError(f"TARGET {target} is not a .safetensors file name", fix=f"name it {name}")
    model, report = load_checkpoint(source, config, allow_partial=partial, trust_pickle=trust_pickle)
    if attention and attention != model.config.attention:
        model.config = model.config.replace(attention=attention)
        model.fusion.attention = attention
    save_checkpoint(model, target, {"maefuse.source_sha256": file_sha256(source), "maefuse.source_layout":
                                    report.layout})
    note(report.summary())
    click.echo(f"wrote {target} ({model.config.name}, attention={model.config.attention})")
