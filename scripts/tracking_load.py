"""Concurrent writers against one MLflow tracking server: does anything get lost?

    python scripts/tracking_load.py --writers 8 --runs 10            # starts its own PostgreSQL server
    python scripts/tracking_load.py --uri http://team:5000 --writers 4

Each writer is its own process, like a stage on another machine: it makes `--runs` runs, each with
params, a metric history of `--steps` points per metric, a batch of final metrics, an artifact, a
tag, and ends it. Then every run is read back from the server and counted; the figures are printed
(writers, runs, metric points written and read back, lost, seconds, runs/s on this machine).
"""

import argparse
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # scripts.team_server when run as a script

METRICS = ("loss", "accuracy", "val_loss", "val_accuracy")


def write(job: tuple[str, str, int, int, int]) -> list[str]:
    """One writer: its runs' ids."""
    import mlflow

    uri, experiment, writer, runs, steps = job
    client = mlflow.MlflowClient(tracking_uri=uri)
    exp_id = client.get_experiment_by_name(experiment).experiment_id
    made = []
    for n in range(runs):
        run = client.create_run(exp_id, run_name=f"writer-{writer}/run-{n}", tags={"writer": str(writer)})
        rid = run.info.run_id
        client.log_batch(rid, params=[mlflow.entities.Param(f"p{i}", str(i * writer)) for i in range(20)])
        for step in range(steps):
            now = int(time.time() * 1000)
            metrics = [mlflow.entities.Metric(m, step / (i + 1), now, step) for i, m in enumerate(METRICS)]
            client.log_batch(rid, metrics=metrics)
        client.log_dict(rid, {"writer": writer, "run": n}, "report.json")
        client.set_terminated(rid, "FINISHED")
        made.append(rid)
    return made


def load(uri: str, writers: int, runs: int, steps: int) -> dict:
    """Run the writers at once, read everything back, count what is missing."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = f"load-{time.time_ns()}"
    client.create_experiment(experiment)
    started = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(writers) as pool:  # each a fresh process
        ids = [rid for made in pool.map(write, [(uri, experiment, w, runs, steps) for w in range(writers)])
               for rid in made]  # fmt: skip
    seconds = time.perf_counter() - started
    lost = {"runs": 0, "unfinished": 0, "params": 0, "metric_points": 0, "artifacts": 0}
    points = 0
    for rid in ids:
        try:
            run = client.get_run(rid)
        except mlflow.exceptions.MlflowException:
            lost["runs"] += 1
            continue
        lost["unfinished"] += run.info.status != "FINISHED"
        lost["params"] += 20 - len(run.data.params)
        for m in METRICS:
            got = len(client.get_metric_history(rid, m))
            points += got
            lost["metric_points"] += steps - got
        lost["artifacts"] += "report.json" not in {f.path for f in client.list_artifacts(rid)}
    return {
        "writers": writers, "runs": len(ids), "metric_points_written": len(ids) * steps * len(METRICS),
        "metric_points_read": points, "lost": lost, "seconds": round(seconds, 1),
        "runs_per_second": round(len(ids) / seconds, 2),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--uri", help="a running server (default: one on PostgreSQL in a temp folder)")
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--runs", type=int, default=10, help="runs per writer")
    parser.add_argument("--steps", type=int, default=20, help="points per metric history")
    args = parser.parse_args()
    if args.uri:
        print(load(args.uri, args.writers, args.runs, args.steps))
        return
    from scripts.team_server import start, stop

    with tempfile.TemporaryDirectory(prefix="wbc-load-") as tmp:
        Path(tmp).chmod(0o755)  # the postgres user must enter it when this runs as root
        server = start(Path(tmp) / "server", workers=4)
        try:
            print(load(server.uri, args.writers, args.runs, args.steps))
        finally:
            stop(server.folder)


if __name__ == "__main__":
    main()
