"""`gateway finetune run`: a LoRA adapter on a registered base, gated by its licence."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gateway.cli.common import audit_log, load_settings, parse_facts

finetune_app = typer.Typer(help="Fine-tune LoRA adapters (licence-gated).", no_args_is_help=True)


@finetune_app.command("run")
def finetune_run(
    base: Annotated[str, typer.Option(help="Registered base model id, e.g. demo-tiny.")],
    images: Annotated[Path, typer.Option(help="Folder of training images (recursive).")],
    rights: Annotated[
        str, typer.Option(help="Rights in the images: owned|licensed|public_domain|unknown.")
    ],
    name: Annotated[str, typer.Option(help="The new adapter's model id, e.g. acme/brand-lora.")],
    rights_note: Annotated[
        str | None, typer.Option(help="Who owns the images / under which licence.")
    ] = None,
    intended_use: Annotated[
        str | None, typer.Option(help="Intended use of the adapter (default: policy default).")
    ] = None,
    steps: Annotated[int, typer.Option(min=1, max=100_000, help="Training steps.")] = 100,
    rank: Annotated[int, typer.Option(min=1, max=256, help="LoRA rank.")] = 4,
    resolution: Annotated[
        int | None, typer.Option(min=8, max=2048, help="Training size (default: base's first).")
    ] = None,
    learning_rate: Annotated[float, typer.Option(min=0.0, help="AdamW learning rate.")] = 1e-4,
    batch_size: Annotated[int, typer.Option(min=1, max=64)] = 1,
    seed: Annotated[int, typer.Option(help="Seed of every random draw.")] = 0,
    checkpoint_every: Annotated[int, typer.Option(min=0, help="Checkpoint period (0: off).")] = 50,
    fact: Annotated[
        list[str] | None, typer.Option(help="Facts for conditional licences, KEY=VALUE.")
    ] = None,
    author: Annotated[str, typer.Option(help="Who proposes it (cli:<author>).")] = "operator",
) -> None:
    """Check the base licence allows the adapter and its use, record the training set in the
    audit trail, train, check the adapter loads, and open a policy DRAFT registering it.

    Prints the draft id on the last line. A licence refusal names the clause and exits 3.
    An interrupted run resumes from its last checkpoint when started again with the same
    arguments.
    """
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from gateway.db.engine import make_engine, make_session_factory
    from gateway.db.migrate import upgrade
    from gateway.finetune.gate import RIGHTS, FinetuneRefused
    from gateway.finetune.job import Deps, FinetuneError, FinetuneSpec, run_finetune
    from gateway.finetune.train import TrainConfig, TrainingUnsupported
    from gateway.generation.loader import ModelUnavailable
    from gateway.provenance.stamp import ProvenanceService

    if rights not in RIGHTS:
        raise typer.BadParameter(f"must be one of {', '.join(RIGHTS)}", param_hint="--rights")
    settings = load_settings()
    if settings.torch_threads:  # as `gateway serve`: small models train faster on fewer
        import torch

        torch.set_num_threads(settings.torch_threads)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.resolved_database_url, settings.migrations_dir)
    engine = make_engine(settings.resolved_database_url)
    config = TrainConfig(
        steps=steps,
        rank=rank,
        resolution=resolution or 512,
        learning_rate=learning_rate,
        batch_size=batch_size,
        seed=seed,
        checkpoint_every=checkpoint_every,
    )
    spec = FinetuneSpec(
        base=base,
        images=images,
        rights=rights,
        name=name,
        rights_note=rights_note,
        intended_use=intended_use,
        config=config,
        resolution_given=resolution is not None,
        by=f"cli:{author}",
        facts=parse_facts(fact),
    )
    deps = Deps(
        make_session_factory(engine),
        audit_log(settings),
        settings.resolved_model_dir,
        settings.policy_dir,
        ProvenanceService.from_settings(settings),
    )
    bar = Progress(
        TextColumn("[bold]training"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} steps  loss {task.fields[loss]}"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=False,
        redirect_stdout=False,
    )
    task = bar.add_task("train", total=steps, loss="-")
    try:
        with bar:
            outcome = run_finetune(
                spec,
                deps,
                progress=lambda done, _total, loss: bar.update(
                    task, completed=done, loss=f"{loss:.4f}"
                ),
            )
    except FinetuneRefused as exc:
        typer.echo(f"refused: {exc}", err=True)
        raise typer.Exit(3) from None
    except (FinetuneError, ModelUnavailable, TrainingUnsupported) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    finally:
        engine.dispose()
    m = outcome.manifest
    typer.echo(
        f"training set: {m['count']} images ({m['unique']} unique, {m['total_bytes']} bytes, "
        f"rights {m['rights']}), manifest {m['manifest_sha256']} recorded in the audit trail"
    )
    if m["duplicates"]:
        typer.echo(f"duplicates (trained once): {m['duplicates']}")
    for flagged in m["ai_generated_or_c2pa"]:
        typer.echo(f"marked as generated or carrying C2PA: {flagged['path']}: {flagged['markers']}")
    t = outcome.train
    typer.echo(
        f"trained {t.steps} steps on {t.device} (resumed from {t.resumed_from}): "
        f"{t.seconds_per_step:.3f} s/step, peak memory {t.peak_memory_bytes / 2**20:.0f} MiB "
        f"({t.memory_kind}), final loss {t.final_loss:.4f}"
    )
    typer.echo(f"adapter {outcome.adapter} sha256 {outcome.adapter_sha256} ({outcome.licence})")
    typer.echo(
        f"draft {outcome.draft_id} registers {name} over {base}; legal submits it and a second "
        "person approves it before it is served"
    )
    typer.echo(str(outcome.draft_id))
