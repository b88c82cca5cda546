"""DVC stage `fetch_external`: the evaluation sets from other sources into data/external, verified
against their committed manifests: the Kaggle TEST / TEST_SIMPLE fields and the PBC cells.

Downloads the pinned upstream archives in params.yaml and keeps only the listed files; with
WBC_MIRRORS set, copies them from its `dataset2-master/` and `pbc-dev/` folders instead.
"""

from pipeline.core import paths
from pipeline.core.params import Params
from pipeline.data.fetch import Limits, Source, fetch_files, mirror_for
from pipeline.stage import run_stage

SETS = {"published": (paths.PUBLISHED, paths.PUBLISHED_MANIFEST), "pbc": (paths.PBC, paths.PBC_MANIFEST)}


def main(params: Params) -> dict:
    p = params.external
    report = {}
    for name, (dest, manifest) in SETS.items():
        source = getattr(p, name)
        report[name] = fetch_files(
            dest,
            archive=Source(source.url, source.file),
            folder=source.folder,
            manifest_path=manifest,
            mirror=mirror_for(paths.MIRROR_FOLDERS[name]),
            limits=Limits.from_params(p),
        )
    return report


if __name__ == "__main__":
    run_stage("fetch_external", main, sections=("external",))
