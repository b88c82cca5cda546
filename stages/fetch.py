"""DVC stage `fetch`: the raw BCCD images, XML boxes and labels.csv into data/raw, verified.

Downloads from the upstream addresses in params.yaml; with WBC_MIRRORS set, the same files are
copied from its `bccd/` folder instead (offline machines, CI).
"""

from pipeline.core import paths
from pipeline.core.params import Params
from pipeline.data.fetch import Limits, Source, fetch_bccd, mirror_for
from pipeline.stage import run_stage


def main(params: Params) -> dict:
    p = params.fetch
    return fetch_bccd(
        paths.RAW,
        archive=Source(p.archive.url, p.archive.file),
        labels=Source(p.labels.url, p.labels.file),
        manifest_path=paths.BCCD_MANIFEST,
        mirror=mirror_for(paths.MIRROR_FOLDERS["bccd"]),
        limits=Limits.from_params(p),
    )


if __name__ == "__main__":
    run_stage("fetch", main)
